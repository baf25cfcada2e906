"""Uplink wire format: the messages, `encode(msg) -> bytes` and a strict `decode(data)`.

Every message is one binary WebSocket message. It starts with a 1-byte type; all integers are
big-endian. The layouts are specified in docs/uplink-protocol.md. `decode` accepts exactly one
well-formed message and raises `ProtocolError` (with the close code to use) for anything else;
`encode` raises `ValueError` for a message that could not be decoded by a conforming peer.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import cast

from .errors import CloseCode, ProtocolError

PROTOCOL_VERSION = 1
SESSION_ID_BYTES = 16
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # whole message, type byte included
MAX_SEQ = 2**64 - 2  # the largest media seq: next_seq = seq + 1 must still fit a u64
MAX_TRACK_ID = 7  # track ids 0..7
MAX_EXTRADATA_BYTES = 16 * 1024  # codec config (SPS/PPS, AudioSpecificConfig) is far smaller
MAX_SACK_RANGES = 32
# TRACK bounds: what the media stack behind a relay takes and what real encoders produce.
# FFmpeg keeps a time base as an AVRational of two C ints and a sample rate as a C int, so
# anything above 2^31 - 1 overflows PyAV (OverflowError) before any check of its own.
MAX_TIME_BASE_TERM = 2**31 - 1  # time_base_num and time_base_den: 1..2^31 - 1
# The AAC sampling-frequency table (ISO/IEC 14496-3, 1.6.3.4) tops at 96 kHz; Opus (RFC 6716,
# section 2) codes 8..48 kHz. No encoder in use produces a rate outside 8 000..96 000 Hz.
MIN_SAMPLE_RATE_HZ = 8_000
MAX_SAMPLE_RATE_HZ = 96_000
# AAC channel configuration 7 is 7.1 (8 channels, ISO/IEC 14496-3 table 1.19); Opus mapping
# family 1 also stops at 8 (RFC 7845, 5.1.1.2).
MAX_CHANNELS = 8
# H.264 level 6.2 allows 139 264 macroblocks a frame, e.g. 8192 x 4320 (ITU-T H.264 table A-1);
# no phone or laptop encoder produces more than 8192 pixels on a side.
MAX_DIMENSION_PX = 8192
MAX_BYE_REASON_BYTES = 123  # fits a WebSocket close reason

FLAG_KEYFRAME = 0x01
FLAG_BACKFILL = 0x02
_MEDIA_FLAGS_KNOWN = FLAG_KEYFRAME | FLAG_BACKFILL


class MessageType(IntEnum):
    HELLO = 1
    WELCOME = 2
    TRACK = 3
    MEDIA = 4
    ACK = 5
    STATS = 6
    BYE = 7


class TrackKind(IntEnum):
    VIDEO = 0
    AUDIO = 1


class Codec(IntEnum):
    H264 = 1
    AAC = 2
    OPUS = 3  # reserved for a browser sender; defined on the wire, an audio codec


_VIDEO_CODECS = frozenset({Codec.H264})
_AUDIO_CODECS = frozenset({Codec.AAC, Codec.OPUS})


# ---------------------------------------------------------------------------------------------
# Messages


@dataclass(frozen=True, slots=True)
class Hello:
    """Sender -> relay, first message on every connection.

    `acked_seq`: every seq below it was acknowledged by a relay and is no longer held by the
    sender (0 for a new session); a relay that lost the session starts counting there.
    """

    session_id: bytes
    acked_seq: int = 0
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Welcome:
    """Relay -> sender, answer to HELLO. Every seq below `next_seq` has been received."""

    resumed: bool
    next_seq: int
    buffer_ms: int
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class TrackConfig:
    """Sender -> relay: how to interpret MEDIA on `track_id` from here on."""

    track_id: int
    kind: TrackKind
    codec: Codec
    time_base_num: int
    time_base_den: int
    width: int  # video: > 0; audio: 0
    height: int  # video: > 0; audio: 0
    sample_rate: int  # audio: > 0 (Hz); video: 0
    channels: int  # audio: > 0; video: 0
    extradata: bytes = b""


@dataclass(frozen=True, slots=True)
class Media:
    """Sender -> relay: one encoded access unit. pts/dts are in the track's time base."""

    seq: int
    track_id: int
    keyframe: bool
    pts: int
    dts: int
    capture_time_us: int  # sender wall clock, microseconds since the Unix epoch
    payload: bytes
    backfill: bool = False  # sent late: for the archive, not for the live edge


@dataclass(frozen=True, slots=True)
class Ack:
    """Relay -> sender. Every seq below `next_seq` is kept (received and, where the relay
    records, in its archive). `sack_ranges`: half-open [start, end) ranges received at or
    above next_seq; the first may start at next_seq (received, not yet kept)."""

    next_seq: int
    buffer_ms: int
    arrival_kbps: int
    sack_ranges: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class SenderStats:
    """Sender -> relay: the sender's backlog and its current target bitrate."""

    backlog_bytes: int
    backlog_ms: int
    target_kbps: int


@dataclass(frozen=True, slots=True)
class Bye:
    """Either way: a clean end of the session (not just of this connection)."""

    reason: str = ""


Message = Hello | Welcome | TrackConfig | Media | Ack | SenderStats | Bye


# ---------------------------------------------------------------------------------------------
# Fixed-size layouts. Each field is named so that errors can say which one was wrong.


class _Layout:
    def __init__(self, name: str, fields: list[tuple[str, str]]) -> None:
        self.name = name
        self.fields = fields
        self.struct = struct.Struct(">" + "".join(fmt for _, fmt in fields))
        self.size = self.struct.size
        self.offsets: list[tuple[str, int, int]] = []
        offset = 0
        for field_name, fmt in fields:
            size = struct.calcsize(">" + fmt)
            self.offsets.append((field_name, offset, size))
            offset += size

    def unpack(self, data: bytes | bytearray | memoryview) -> tuple[int | bytes, ...]:
        if len(data) < self.size:
            for field_name, offset, size in self.offsets:
                if offset + size > len(data):
                    raise ProtocolError(
                        CloseCode.MALFORMED,
                        f"{self.name} truncated at {field_name}: needs bytes "
                        f"{offset}..{offset + size - 1}, message has {len(data)}",
                    )
        return self.struct.unpack_from(data, 0)

    def pack(self, *values: int | bytes) -> bytes:
        for (field_name, fmt), value in zip(self.fields, values, strict=True):
            _check_field(self.name, field_name, fmt, value)
        return self.struct.pack(*values)


_INT_RANGES = {
    "B": (0, 2**8 - 1),
    "H": (0, 2**16 - 1),
    "I": (0, 2**32 - 1),
    "Q": (0, 2**64 - 1),
    "q": (-(2**63), 2**63 - 1),
}


def _check_field(msg: str, field_name: str, fmt: str, value: int | bytes) -> None:
    if fmt.endswith("s"):
        size = int(fmt[:-1])
        if not isinstance(value, bytes | bytearray | memoryview) or len(value) != size:
            raise ValueError(f"{msg} {field_name} must be {size} bytes")
        return
    low, high = _INT_RANGES[fmt]
    if not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{msg} {field_name} {value!r} out of range {low}..{high}")


_TYPE_ONLY = struct.Struct(">B")
_HELLO = _Layout(
    "HELLO",
    [("type", "B"), ("version", "B"), ("session_id", f"{SESSION_ID_BYTES}s"), ("acked_seq", "Q")],
)
_WELCOME = _Layout(
    "WELCOME",
    [("type", "B"), ("version", "B"), ("resumed", "B"), ("next_seq", "Q"), ("buffer_ms", "I")],
)
_TRACK = _Layout(
    "TRACK",
    [
        ("type", "B"),
        ("track_id", "B"),
        ("kind", "B"),
        ("codec", "B"),
        ("time_base_num", "I"),
        ("time_base_den", "I"),
        ("width", "H"),
        ("height", "H"),
        ("sample_rate", "I"),
        ("channels", "B"),
        ("extradata_len", "H"),
    ],
)
_MEDIA = _Layout(
    "MEDIA",
    [
        ("type", "B"),
        ("seq", "Q"),
        ("track_id", "B"),
        ("flags", "B"),
        ("pts", "q"),
        ("dts", "q"),
        ("capture_time_us", "Q"),
    ],
)
_ACK = _Layout(
    "ACK",
    [
        ("type", "B"),
        ("next_seq", "Q"),
        ("buffer_ms", "I"),
        ("arrival_kbps", "I"),
        ("n_ranges", "B"),
    ],
)
_SACK_RANGE = _Layout("ACK range", [("start", "Q"), ("end", "Q")])
_STATS = _Layout(
    "STATS", [("type", "B"), ("backlog_bytes", "Q"), ("backlog_ms", "I"), ("target_kbps", "I")]
)
_BYE = _Layout("BYE", [("type", "B"), ("reason_len", "B")])

HELLO_BYTES = _HELLO.size  # 26
WELCOME_BYTES = _WELCOME.size  # 15
TRACK_HEADER_BYTES = _TRACK.size  # 23, then extradata
MEDIA_HEADER_BYTES = _MEDIA.size  # 35, then payload
ACK_HEADER_BYTES = _ACK.size  # 18, then n_ranges x 16
SACK_RANGE_BYTES = _SACK_RANGE.size  # 16
STATS_BYTES = _STATS.size  # 17
BYE_HEADER_BYTES = _BYE.size  # 2, then reason
MAX_PAYLOAD_BYTES = MAX_MESSAGE_BYTES - MEDIA_HEADER_BYTES  # 4194269


# ---------------------------------------------------------------------------------------------
# Semantic checks shared by encode (ValueError) and decode (ProtocolError BAD_VALUE).


def _track_problem(track: TrackConfig) -> str | None:
    if not 0 <= track.track_id <= MAX_TRACK_ID:
        return f"TRACK track_id {track.track_id} out of range 0..{MAX_TRACK_ID}"
    for field_name, term in (("time_base_num", track.time_base_num),
                             ("time_base_den", track.time_base_den)):
        if not 1 <= term <= MAX_TIME_BASE_TERM:
            return f"TRACK {field_name} {term} out of range 1..{MAX_TIME_BASE_TERM}"
    if track.kind == TrackKind.VIDEO:
        if track.codec not in _VIDEO_CODECS:
            return f"TRACK codec {Codec(track.codec).name} is not a video codec"
        if not (1 <= track.width <= MAX_DIMENSION_PX and 1 <= track.height <= MAX_DIMENSION_PX):
            return (
                f"TRACK video width/height {track.width}x{track.height} out of range "
                f"1..{MAX_DIMENSION_PX}"
            )
        if track.sample_rate != 0 or track.channels != 0:
            return (
                f"TRACK video sample_rate/channels {track.sample_rate}/{track.channels} must be 0"
            )
    else:
        if track.codec not in _AUDIO_CODECS:
            return f"TRACK codec {Codec(track.codec).name} is not an audio codec"
        if track.width != 0 or track.height != 0:
            return f"TRACK audio width/height {track.width}x{track.height} must be 0"
        if track.sample_rate <= 0 or track.channels <= 0:
            return (
                f"TRACK audio sample_rate/channels {track.sample_rate}/{track.channels} must be > 0"
            )
        if not MIN_SAMPLE_RATE_HZ <= track.sample_rate <= MAX_SAMPLE_RATE_HZ:
            return (
                f"TRACK audio sample_rate {track.sample_rate} out of range "
                f"{MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz"
            )
        if track.channels > MAX_CHANNELS:
            return f"TRACK audio channels {track.channels} out of range 1..{MAX_CHANNELS}"
    if len(track.extradata) > MAX_EXTRADATA_BYTES:
        return f"TRACK extradata length {len(track.extradata)} exceeds {MAX_EXTRADATA_BYTES}"
    return None


def _media_problem(media: Media) -> str | None:
    if media.seq == MAX_SEQ + 1:
        return f"MEDIA seq {media.seq} is reserved (max {MAX_SEQ})"
    if not 0 <= media.track_id <= MAX_TRACK_ID:
        return f"MEDIA track_id {media.track_id} out of range 0..{MAX_TRACK_ID}"
    if len(media.payload) == 0:
        return "MEDIA payload is empty (must be 1 or more bytes)"
    if len(media.payload) > MAX_PAYLOAD_BYTES:
        return f"MEDIA payload length {len(media.payload)} exceeds {MAX_PAYLOAD_BYTES}"
    return None


def _ack_problem(ack: Ack) -> str | None:
    if len(ack.sack_ranges) > MAX_SACK_RANGES:
        return f"ACK n_ranges {len(ack.sack_ranges)} exceeds {MAX_SACK_RANGES}"
    # The first range may start at next_seq (received there, not yet kept: spec section 7.2);
    # each further range starts above the end of the one before (sorted, non-adjacent).
    for i, (start, end) in enumerate(ack.sack_ranges):
        if i == 0 and start < ack.next_seq:
            return (
                f"ACK range 0 start {start} must be >= next_seq {ack.next_seq}"
                " (ranges sorted, non-overlapping, non-adjacent)"
            )
        if i > 0 and start <= ack.sack_ranges[i - 1][1]:
            return (
                f"ACK range {i} start {start} must be > range {i - 1} end "
                f"{ack.sack_ranges[i - 1][1]} (ranges sorted, non-overlapping, non-adjacent)"
            )
        if end <= start:
            return f"ACK range {i} is empty or reversed: start {start}, end {end}"
    return None


def _bye_reason_bytes(reason: str) -> bytes:
    raw = reason.encode("utf-8")
    if len(raw) > MAX_BYE_REASON_BYTES:
        raise ValueError(f"BYE reason is {len(raw)} bytes of UTF-8, max {MAX_BYE_REASON_BYTES}")
    return raw


# ---------------------------------------------------------------------------------------------
# encode


def media_header(media: Media) -> bytes:
    """The MEDIA_HEADER_BYTES that precede `media.payload`; ValueError if anything is out of
    range. Cheap: lets a sender validate a frame when it is queued without copying the payload."""
    problem = _media_problem(media)
    if problem:
        raise ValueError(problem)
    flags = (FLAG_KEYFRAME if media.keyframe else 0) | (FLAG_BACKFILL if media.backfill else 0)
    return _MEDIA.pack(
        MessageType.MEDIA,
        media.seq,
        media.track_id,
        flags,
        media.pts,
        media.dts,
        media.capture_time_us,
    )


def encode(msg: Message) -> bytes:
    """The bytes of one WebSocket binary message carrying `msg`. ValueError if out of range."""
    if isinstance(msg, Media):
        return media_header(msg) + bytes(msg.payload)
    if isinstance(msg, Ack):
        problem = _ack_problem(msg)
        if problem:
            raise ValueError(problem)
        parts = [
            _ACK.pack(
                MessageType.ACK, msg.next_seq, msg.buffer_ms, msg.arrival_kbps, len(msg.sack_ranges)
            )
        ]
        parts.extend(_SACK_RANGE.pack(start, end) for start, end in msg.sack_ranges)
        return b"".join(parts)
    if isinstance(msg, Hello):
        return _HELLO.pack(MessageType.HELLO, msg.version, bytes(msg.session_id), msg.acked_seq)
    if isinstance(msg, Welcome):
        return _WELCOME.pack(
            MessageType.WELCOME, msg.version, int(bool(msg.resumed)), msg.next_seq, msg.buffer_ms
        )
    if isinstance(msg, TrackConfig):
        try:
            kind, codec = TrackKind(msg.kind), Codec(msg.codec)
        except ValueError as exc:
            raise ValueError(f"TRACK {exc}") from None
        problem = _track_problem(msg)
        if problem:
            raise ValueError(problem)
        header = _TRACK.pack(
            MessageType.TRACK,
            msg.track_id,
            kind,
            codec,
            msg.time_base_num,
            msg.time_base_den,
            msg.width,
            msg.height,
            msg.sample_rate,
            msg.channels,
            len(msg.extradata),
        )
        return header + bytes(msg.extradata)
    if isinstance(msg, SenderStats):
        return _STATS.pack(MessageType.STATS, msg.backlog_bytes, msg.backlog_ms, msg.target_kbps)
    if isinstance(msg, Bye):
        reason = _bye_reason_bytes(msg.reason)
        return _BYE.pack(MessageType.BYE, len(reason)) + reason
    raise TypeError(f"not an uplink message: {type(msg).__name__}")


# ---------------------------------------------------------------------------------------------
# decode


def _no_trailing(name: str, data: bytes | bytearray | memoryview, expected: int) -> None:
    if len(data) != expected:
        raise ProtocolError(
            CloseCode.MALFORMED,
            f"{name} has {len(data) - expected} trailing bytes (length {len(data)}, "
            f"expected {expected})",
        )


def _check_version(name: str, data: bytes | bytearray | memoryview) -> None:
    # The version byte is checked before the length: a later version may be longer.
    if len(data) < 2:
        raise ProtocolError(
            CloseCode.MALFORMED, f"{name} truncated at version: needs byte 1, message has 1"
        )
    if data[1] != PROTOCOL_VERSION:
        raise ProtocolError(
            CloseCode.UNSUPPORTED_VERSION,
            f"{name} version {data[1]} is not supported (this peer speaks {PROTOCOL_VERSION})",
        )


def _ints(values: tuple[int | bytes, ...]) -> tuple[int, ...]:
    return tuple(v for v in values if isinstance(v, int))


def _bad(detail: str) -> ProtocolError:
    return ProtocolError(CloseCode.BAD_VALUE, detail)


def _decode_hello(data: bytes | bytearray | memoryview) -> Hello:
    _check_version("HELLO", data)
    _, version, session_id, acked_seq = _HELLO.unpack(data)
    _no_trailing("HELLO", data, _HELLO.size)
    return Hello(
        session_id=cast(bytes, session_id),
        acked_seq=cast(int, acked_seq),
        version=cast(int, version),
    )


def _decode_welcome(data: bytes | bytearray | memoryview) -> Welcome:
    _check_version("WELCOME", data)
    _, version, resumed, next_seq, buffer_ms = _ints(_WELCOME.unpack(data))
    _no_trailing("WELCOME", data, _WELCOME.size)
    if resumed not in (0, 1):
        raise _bad(f"WELCOME resumed {resumed} must be 0 or 1")
    return Welcome(
        resumed=bool(resumed),
        next_seq=next_seq,
        buffer_ms=buffer_ms,
        version=version,
    )


def _decode_track(data: bytes | bytearray | memoryview) -> TrackConfig:
    (_, track_id, kind_raw, codec_raw, tb_num, tb_den, width, height, rate, channels, ext_len) = (
        _ints(_TRACK.unpack(data))
    )
    if ext_len > MAX_EXTRADATA_BYTES:
        raise _bad(f"TRACK extradata_len {ext_len} exceeds {MAX_EXTRADATA_BYTES}")
    end = _TRACK.size + ext_len
    if len(data) < end:
        raise ProtocolError(
            CloseCode.MALFORMED,
            f"TRACK truncated at extradata: extradata_len {ext_len} needs {end} bytes, "
            f"message has {len(data)}",
        )
    _no_trailing("TRACK", data, end)
    try:
        kind = TrackKind(kind_raw)
    except ValueError:
        raise _bad(f"TRACK kind {kind_raw} is not 0 (video) or 1 (audio)") from None
    try:
        codec = Codec(codec_raw)
    except ValueError:
        raise _bad(f"TRACK codec {codec_raw} is not 1 (H264), 2 (AAC) or 3 (OPUS)") from None
    track = TrackConfig(
        track_id=track_id,
        kind=kind,
        codec=codec,
        time_base_num=tb_num,
        time_base_den=tb_den,
        width=width,
        height=height,
        sample_rate=rate,
        channels=channels,
        extradata=bytes(data[_TRACK.size : end]),
    )
    problem = _track_problem(track)
    if problem:
        raise _bad(problem)
    return track


def _decode_media(data: bytes | bytearray | memoryview) -> Media:
    _, seq, track_id, flags, pts, dts, capture_time_us = _ints(_MEDIA.unpack(data))
    if seq == MAX_SEQ + 1:
        raise _bad(f"MEDIA seq {seq} is reserved (max {MAX_SEQ})")
    if flags & ~_MEDIA_FLAGS_KNOWN:
        raise _bad(f"MEDIA flags 0x{flags:02x} has reserved bits set (only 0x03 defined)")
    if track_id > MAX_TRACK_ID:
        raise _bad(f"MEDIA track_id {track_id} out of range 0..{MAX_TRACK_ID}")
    payload_len = len(data) - _MEDIA.size
    if payload_len == 0:
        raise _bad("MEDIA payload is empty (must be 1 or more bytes)")
    if payload_len > MAX_PAYLOAD_BYTES:
        raise ProtocolError(
            CloseCode.TOO_LARGE,
            f"MEDIA payload length {payload_len} exceeds {MAX_PAYLOAD_BYTES}",
        )
    return Media(
        seq=seq,
        track_id=track_id,
        keyframe=bool(flags & FLAG_KEYFRAME),
        pts=pts,
        dts=dts,
        capture_time_us=capture_time_us,
        payload=bytes(data[_MEDIA.size :]),
        backfill=bool(flags & FLAG_BACKFILL),
    )


def _decode_ack(data: bytes | bytearray | memoryview) -> Ack:
    _, next_seq, buffer_ms, arrival_kbps, n_ranges = _ints(_ACK.unpack(data))
    if n_ranges > MAX_SACK_RANGES:
        raise _bad(f"ACK n_ranges {n_ranges} exceeds {MAX_SACK_RANGES}")
    end = _ACK.size + n_ranges * _SACK_RANGE.size
    if len(data) < end:
        raise ProtocolError(
            CloseCode.MALFORMED,
            f"ACK truncated at ranges: n_ranges {n_ranges} needs {end} bytes, "
            f"message has {len(data)}",
        )
    _no_trailing("ACK", data, end)
    ranges = tuple(
        (start, stop) for start, stop in _SACK_RANGE.struct.iter_unpack(data[_ACK.size : end])
    )
    ack = Ack(
        next_seq=next_seq,
        buffer_ms=buffer_ms,
        arrival_kbps=arrival_kbps,
        sack_ranges=ranges,
    )
    problem = _ack_problem(ack)
    if problem:
        raise _bad(problem)
    return ack


def _decode_stats(data: bytes | bytearray | memoryview) -> SenderStats:
    _, backlog_bytes, backlog_ms, target_kbps = _ints(_STATS.unpack(data))
    _no_trailing("STATS", data, _STATS.size)
    return SenderStats(backlog_bytes=backlog_bytes, backlog_ms=backlog_ms, target_kbps=target_kbps)


def _decode_bye(data: bytes | bytearray | memoryview) -> Bye:
    _, reason_len = _ints(_BYE.unpack(data))
    if reason_len > MAX_BYE_REASON_BYTES:
        raise _bad(f"BYE reason_len {reason_len} exceeds {MAX_BYE_REASON_BYTES}")
    end = _BYE.size + reason_len
    if len(data) < end:
        raise ProtocolError(
            CloseCode.MALFORMED,
            f"BYE truncated at reason: reason_len {reason_len} needs {end} bytes, "
            f"message has {len(data)}",
        )
    _no_trailing("BYE", data, end)
    try:
        reason = bytes(data[_BYE.size : end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"BYE reason is not valid UTF-8 at byte {exc.start}") from None
    return Bye(reason=reason)


_Buffer = bytes | bytearray | memoryview
_DECODERS: dict[MessageType, Callable[[_Buffer], Message]] = {
    MessageType.HELLO: _decode_hello,
    MessageType.WELCOME: _decode_welcome,
    MessageType.TRACK: _decode_track,
    MessageType.MEDIA: _decode_media,
    MessageType.ACK: _decode_ack,
    MessageType.STATS: _decode_stats,
    MessageType.BYE: _decode_bye,
}


def decode(data: bytes | bytearray | memoryview, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse exactly one message. Raises ProtocolError for anything but one valid message."""
    if len(data) > max_bytes:
        raise ProtocolError(CloseCode.TOO_LARGE, f"message length {len(data)} exceeds {max_bytes}")
    if len(data) == 0:
        raise ProtocolError(CloseCode.MALFORMED, "empty message (no type byte)")
    (type_raw,) = _TYPE_ONLY.unpack_from(data, 0)
    try:
        msg_type = MessageType(type_raw)
    except ValueError:
        raise ProtocolError(
            CloseCode.UNKNOWN_TYPE, f"unknown message type {type_raw} (known: 1..7)"
        ) from None
    return _DECODERS[msg_type](data)


def message_name(msg: Message) -> str:
    """The wire name of a message (HELLO, MEDIA, ...) for logs and errors."""
    return _NAMES[type(msg)]


_NAMES: dict[type, str] = {
    Hello: "HELLO",
    Welcome: "WELCOME",
    TrackConfig: "TRACK",
    Media: "MEDIA",
    Ack: "ACK",
    SenderStats: "STATS",
    Bye: "BYE",
}
