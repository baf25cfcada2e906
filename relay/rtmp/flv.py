"""FLV tags from a byte stream (Adobe "Video File Format Specification" v10, annex E).

An FLV file is a 9-byte (or longer) header ``"FLV" version flags header_size``, then
``PreviousTagSize0`` (u32, 0), then tags: ``type`` (8 audio, 9 video, 18 script data; the
filter bit must be 0), ``data_size`` (u24), ``timestamp`` (u24 plus an upper byte
``timestamp_extended``: milliseconds, 32 bits), ``stream_id`` (u24, always 0), the data,
and the tag's ``PreviousTagSize`` (u32, 11 + data_size). The reader takes any split of the
stream and returns whole tags; a tag larger than ``max_tag_bytes`` or a header, type or
trailing size that breaks these rules is an :class:`FlvError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18
TAG_TYPES = (TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT)
FILE_HEADER_MIN_BYTES = 9
TAG_HEADER_BYTES = 11
PREVIOUS_TAG_SIZE_BYTES = 4
MAX_TAG_BYTES = 8 << 20
MAX_FILE_HEADER_BYTES = 1024  # the header size field could claim 4 GiB; v1 writes 9


class FlvError(ValueError):
    """Bytes that are not an FLV stream; the message says what and where."""


@dataclass(frozen=True)
class FlvTag:
    tag_type: int
    timestamp_ms: int
    data: bytes


class FlvReader:
    """Splits an FLV byte stream into tags. ``feed(data) -> list[FlvTag]``."""

    def __init__(self, max_tag_bytes: int = MAX_TAG_BYTES) -> None:
        self.max_tag_bytes = max_tag_bytes
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._header_done = False
        self._failed: FlvError | None = None

    def feed(self, data: bytes) -> list[FlvTag]:
        if self._failed is not None:
            raise self._failed
        self._buf += data
        try:
            return self._parse()
        except FlvError as exc:
            self._failed = exc
            raise

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._offset += n

    def _parse(self) -> list[FlvTag]:
        buf = self._buf
        out: list[FlvTag] = []
        if not self._header_done:
            if len(buf) < FILE_HEADER_MIN_BYTES:
                if buf and not b"FLV".startswith(bytes(buf[:3])):
                    raise FlvError("not an FLV stream: it does not start with 'FLV'")
                return out
            if buf[:3] != b"FLV":
                raise FlvError("not an FLV stream: it does not start with 'FLV'")
            header_size = struct.unpack(">I", buf[5:9])[0]
            if not FILE_HEADER_MIN_BYTES <= header_size <= MAX_FILE_HEADER_BYTES:
                raise FlvError(f"FLV header size {header_size} outside "
                               f"{FILE_HEADER_MIN_BYTES}..{MAX_FILE_HEADER_BYTES}")
            if len(buf) < header_size + PREVIOUS_TAG_SIZE_BYTES:
                return out
            if struct.unpack(">I", buf[header_size:header_size + 4])[0] != 0:
                raise FlvError("PreviousTagSize0 is not 0")
            self._consume(header_size + PREVIOUS_TAG_SIZE_BYTES)
            self._header_done = True
        while len(buf) >= TAG_HEADER_BYTES:
            head = buf[:TAG_HEADER_BYTES]
            tag_type = head[0]
            if tag_type & 0x20:
                raise FlvError(f"encrypted (filtered) tag at offset {self._offset}")
            if tag_type not in TAG_TYPES:
                raise FlvError(f"tag type {tag_type} at offset {self._offset} (valid: 8 audio, "
                               "9 video, 18 script data)")
            size = int.from_bytes(head[1:4], "big")
            if size > self.max_tag_bytes:
                raise FlvError(f"tag of {size} bytes at offset {self._offset} exceeds "
                               f"{self.max_tag_bytes}")
            timestamp = int.from_bytes(head[4:7], "big") | head[7] << 24
            total = TAG_HEADER_BYTES + size + PREVIOUS_TAG_SIZE_BYTES
            if len(buf) < total:
                break
            previous = struct.unpack(">I", buf[total - 4:total])[0]
            if previous != TAG_HEADER_BYTES + size:
                raise FlvError(f"PreviousTagSize {previous} after the tag at offset "
                               f"{self._offset} (expected {TAG_HEADER_BYTES + size})")
            out.append(FlvTag(tag_type, timestamp, bytes(buf[TAG_HEADER_BYTES:total - 4])))
            self._consume(total)
        return out
