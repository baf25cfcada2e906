"""AMF0 encoding and a strict, bounded decoder (Adobe "AMF 0" specification, 2007, §2).

Only the markers RTMP commands and FLV metadata use are supported: number (0x00), boolean
(0x01), string (0x02), object (0x03), null (0x05), undefined (0x06), ECMA array (0x08),
object end (0x09), strict array (0x0A), date (0x0B) and long string (0x0C). Anything else
(references, XML, typed objects, AVM+ switch) is an :class:`Amf0Error` naming the marker and
the offset. Nesting deeper than ``MAX_DEPTH`` and more than ``MAX_ITEMS`` values in one
decode are errors too, so a hostile message costs bounded work.
"""

from __future__ import annotations

import math
import struct
from typing import Any

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
NULL = 0x05
UNDEFINED = 0x06
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C

MAX_DEPTH = 16
MAX_ITEMS = 4096  # values (and object properties) in one decode call
U16_MAX = 0xFFFF


class Amf0Error(ValueError):
    """Bytes that are not AMF0 this decoder accepts; the message says what and where."""


class Undefined:
    """The AMF0 undefined value (marker 0x06); ``None`` is null (0x05)."""

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED_VALUE = Undefined()


def _string_body(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > U16_MAX:
        raise Amf0Error(f"string of {len(raw)} bytes is too long for a property name")
    return struct.pack(">H", len(raw)) + raw


def encode(value: Any) -> bytes:
    """One value: float/int -> number, bool, str -> string or long string, dict -> object,
    list/tuple -> strict array, None -> null, UNDEFINED_VALUE -> undefined."""
    if isinstance(value, bool):
        return bytes((BOOLEAN, 1 if value else 0))
    if isinstance(value, int | float):
        return bytes((NUMBER,)) + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) <= U16_MAX:
            return bytes((STRING,)) + struct.pack(">H", len(raw)) + raw
        return bytes((LONG_STRING,)) + struct.pack(">I", len(raw)) + raw
    if value is None:
        return bytes((NULL,))
    if isinstance(value, Undefined):
        return bytes((UNDEFINED,))
    if isinstance(value, dict):
        return bytes((OBJECT,)) + _properties(value)
    if isinstance(value, list | tuple):
        return (bytes((STRICT_ARRAY,)) + struct.pack(">I", len(value))
                + b"".join(encode(v) for v in value))
    raise TypeError(f"AMF0 cannot encode {type(value).__name__}")


def encode_ecma_array(props: dict[str, Any]) -> bytes:
    """An ECMA array (marker 0x08): what onMetaData carries."""
    return bytes((ECMA_ARRAY,)) + struct.pack(">I", len(props)) + _properties(props)


def _properties(props: dict[str, Any]) -> bytes:
    out = bytearray()
    for key, v in props.items():
        out += _string_body(str(key))
        out += encode(v)
    out += b"\x00\x00" + bytes((OBJECT_END,))
    return bytes(out)


def encode_all(*values: Any) -> bytes:
    """Several values back to back, as an RTMP command message carries them."""
    return b"".join(encode(v) for v in values)


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.items = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Amf0Error(f"truncated at offset {self.pos}: need {n} bytes, "
                            f"{len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def count(self) -> None:
        self.items += 1
        if self.items > MAX_ITEMS:
            raise Amf0Error(f"more than {MAX_ITEMS} values")

    def utf8(self, n: int) -> str:
        at = self.pos
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise Amf0Error(f"string at offset {at} is not UTF-8") from None

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise Amf0Error(f"nested deeper than {MAX_DEPTH} at offset {self.pos}")
        self.count()
        at = self.pos
        marker = self.take(1)[0]
        if marker == NUMBER:
            return struct.unpack(">d", self.take(8))[0]
        if marker == BOOLEAN:
            return self.take(1)[0] != 0
        if marker == STRING:
            return self.utf8(struct.unpack(">H", self.take(2))[0])
        if marker == LONG_STRING:
            return self.utf8(struct.unpack(">I", self.take(4))[0])
        if marker == NULL:
            return None
        if marker == UNDEFINED:
            return UNDEFINED_VALUE
        if marker == OBJECT:
            return self.properties(depth)
        if marker == ECMA_ARRAY:
            self.take(4)  # the count is a hint only (§2.10); the end marker ends it
            return self.properties(depth)
        if marker == STRICT_ARRAY:
            n = struct.unpack(">I", self.take(4))[0]
            if n > MAX_ITEMS:
                raise Amf0Error(f"strict array of {n} values at offset {at}")
            return [self.value(depth + 1) for _ in range(n)]
        if marker == DATE:
            ms = struct.unpack(">d", self.take(8))[0]
            self.take(2)  # time zone, reserved (§2.13)
            if not math.isfinite(ms):
                raise Amf0Error(f"date at offset {at} is not a finite number")
            return ms
        raise Amf0Error(f"unsupported AMF0 marker 0x{marker:02x} at offset {at}")

    def properties(self, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            name = self.utf8(struct.unpack(">H", self.take(2))[0])
            if not name and self.pos < len(self.data) and self.data[self.pos] == OBJECT_END:
                self.pos += 1
                return out
            out[name] = self.value(depth + 1)


def decode_all(data: bytes) -> list[Any]:
    """Every value in ``data`` (an RTMP command or data message body), in order."""
    d = _Decoder(bytes(data))
    out = []
    while d.pos < len(d.data):
        out.append(d.value(0))
    return out
