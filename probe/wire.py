"""The probe's wire format: FILLER/PING from the client, ACK/PONG from the relay (see the
package docstring)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from uplink import CloseCode, ProtocolError

FILLER = 0x01
PING = 0x02
ACK = 0x81
PONG = 0x82
PROBE_MAX_FILLER_BYTES = 64 * 1024  # payload of one FILLER message
PROBE_MAX_MESSAGE_BYTES = 1 + PROBE_MAX_FILLER_BYTES
_U64 = struct.Struct(">BQ")
_U64_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Filler:
    size: int  # the whole message, type byte included


@dataclass(frozen=True, slots=True)
class Ping:
    ping_id: int


@dataclass(frozen=True, slots=True)
class Ack:
    received_bytes: int


@dataclass(frozen=True, slots=True)
class Pong:
    ping_id: int


def encode_ping(ping_id: int) -> bytes:
    return _U64.pack(PING, ping_id & _U64_MAX)


def encode_pong(ping_id: int) -> bytes:
    return _U64.pack(PONG, ping_id)


def encode_ack(received_bytes: int) -> bytes:
    return _U64.pack(ACK, min(received_bytes, _U64_MAX))


def encode_filler(payload_bytes: int) -> bytes:
    """A FILLER of ``payload_bytes`` (1..PROBE_MAX_FILLER_BYTES) of zero bytes."""
    if not 1 <= payload_bytes <= PROBE_MAX_FILLER_BYTES:
        raise ValueError(f"payload_bytes={payload_bytes}: must be 1..{PROBE_MAX_FILLER_BYTES}")
    return bytes([FILLER]) + bytes(payload_bytes)


def parse_client_message(data: bytes) -> Filler | Ping:
    """A message the client sent (at the relay). Raises ProtocolError."""
    if not data:
        raise ProtocolError(CloseCode.MALFORMED, "empty probe message")
    kind = data[0]
    if kind == FILLER:
        if len(data) < 2:
            raise ProtocolError(CloseCode.MALFORMED, "FILLER without payload")
        if len(data) > PROBE_MAX_MESSAGE_BYTES:
            raise ProtocolError(CloseCode.TOO_LARGE, f"FILLER of {len(data)} bytes exceeds "
                                                     f"{PROBE_MAX_MESSAGE_BYTES}")
        return Filler(len(data))
    if kind == PING:
        if len(data) != _U64.size:
            raise ProtocolError(CloseCode.MALFORMED, f"PING must be {_U64.size} bytes, "
                                                     f"got {len(data)}")
        return Ping(_U64.unpack(data)[1])
    raise ProtocolError(CloseCode.UNKNOWN_TYPE, f"unknown probe message type 0x{kind:02x} "
                                                "(FILLER 0x01 and PING 0x02 are valid)")


def parse_relay_message(data: bytes) -> Ack | Pong:
    """A message the relay sent (at the client). Raises ProtocolError."""
    if not data:
        raise ProtocolError(CloseCode.MALFORMED, "empty probe message")
    kind = data[0]
    if kind not in (ACK, PONG):
        raise ProtocolError(CloseCode.UNKNOWN_TYPE, f"unknown probe message type 0x{kind:02x} "
                                                    "(ACK 0x81 and PONG 0x82 are valid)")
    if len(data) != _U64.size:
        raise ProtocolError(CloseCode.MALFORMED, f"{'ACK' if kind == ACK else 'PONG'} must be "
                                                 f"{_U64.size} bytes, got {len(data)}")
    value = _U64.unpack(data)[1]
    return Ack(value) if kind == ACK else Pong(value)
