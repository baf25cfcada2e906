"""Errors of the uplink protocol and the WebSocket close codes that report them."""

from __future__ import annotations

from enum import IntEnum

MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is <= 125 bytes, 2 for the code


class CloseCode(IntEnum):
    """WebSocket close codes the relay (and the sender) use to end an uplink connection.

    4xxx codes are in the range RFC 6455 leaves to applications; the last three digits echo
    the nearest HTTP status so a person reading a log can guess the meaning.
    """

    NORMAL = 1000  # clean end (after BYE)
    GOING_AWAY = 1001  # server shutting down / client navigating away
    MALFORMED = 4400  # bad length, truncated message, trailing bytes
    UNKNOWN_TYPE = 4401  # first byte is not a known message type
    BAD_VALUE = 4402  # a field is out of range (enum, flags, zero time base, bad UTF-8, ...)
    SESSION_EXPIRED = 4408  # the relay no longer holds this session
    PROTOCOL_ORDER = 4409  # message not allowed in the current state
    REPLACED = 4410  # another connection took over the session
    TOO_LARGE = 4413  # message longer than the receiver accepts
    UNSUPPORTED_VERSION = 4426  # protocol version this peer does not speak


class ProtocolError(Exception):
    """The peer broke the uplink protocol; close that one connection with `code` and `detail`.

    `detail` names what was wrong and where, e.g. "MEDIA payload length 5000000 exceeds
    4194269". `close_reason()` is `detail` cut to what a WebSocket close frame can carry.
    """

    def __init__(self, code: CloseCode, detail: str) -> None:
        super().__init__(f"{code.name} ({int(code)}): {detail}")
        self.code = code
        self.detail = detail

    def close_reason(self) -> str:
        """`detail` truncated to MAX_CLOSE_REASON_BYTES of UTF-8, on a character boundary."""
        return truncate_utf8(self.detail, MAX_CLOSE_REASON_BYTES)


def truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `max_bytes`."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")
