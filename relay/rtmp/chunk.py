"""The RTMP chunk stream (RTMP specification 1.0, §5.3): a writer and a strict, bounded reader.

A message (timestamp in ms, type id, message stream id, payload) travels as chunks of at
most the sender's chunk size, each with a basic header (format 0-3 and chunk stream id 2..
65599, §5.3.1.1) and a message header whose size depends on the format (§5.3.1.2):

* format 0 (11 bytes): absolute timestamp, length, type id, stream id (little-endian);
* format 1 (7 bytes): timestamp delta, length, type id: same stream id as before;
* format 2 (3 bytes): timestamp delta only;
* format 3 (none): everything as before; a continuation chunk of a message, or a new message
  with the same delta (after a format 0 header the "delta" is its absolute timestamp, as
  the examples of §5.3.2 imply and FFmpeg and librtmp read it).

A timestamp field of 0xFFFFFF means a 4-byte extended timestamp follows (§5.3.1.3); it is
repeated in the format 3 chunks that follow such a header. The reader applies Set Chunk Size
(type 1) and Abort (type 2, §5.4.1-2) itself, because they change how the bytes after them
are cut. It never holds more than ``max_chunk_streams`` chunk streams, a message longer than
``max_message_bytes`` or a chunk size above ``max_chunk_size``: each is a
:class:`ChunkError` naming what and where, and the connection must be closed (the reader is
unusable after an error).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

DEFAULT_CHUNK_SIZE = 128  # §5.4.1: until a Set Chunk Size says otherwise
MAX_CHUNK_SIZE_SPEC = 0x7FFFFFFF  # §5.4.1: 31 bits
EXTENDED_TIMESTAMP = 0xFFFFFF
TIMESTAMP_MOD = 1 << 32  # timestamps are 32-bit milliseconds and wrap (§5.3.1.2)
CSID_MIN, CSID_MAX = 2, 65599
PROTOCOL_CSID = 2  # §5.4: protocol control messages go on chunk stream 2, message stream 0

MSG_SET_CHUNK_SIZE = 1
MSG_ABORT = 2
MSG_ACKNOWLEDGEMENT = 3
MSG_USER_CONTROL = 4
MSG_WINDOW_ACK_SIZE = 5
MSG_SET_PEER_BANDWIDTH = 6
MSG_AUDIO = 8
MSG_VIDEO = 9
MSG_DATA_AMF0 = 18
MSG_COMMAND_AMF0 = 20

MESSAGE_HEADER_BYTES = {0: 11, 1: 7, 2: 3, 3: 0}

READER_MAX_CHUNK_SIZE = 1 << 24  # 16 MiB: above what FFmpeg (0xFFFFFF) or nginx ever sets
READER_MAX_MESSAGE_BYTES = 8 << 20  # a 1080p keyframe is well under 1 MiB
READER_MAX_CHUNK_STREAMS = 64  # a publisher uses a handful (control, commands, a/v, data)


class ChunkError(ValueError):
    """The peer broke the chunk stream rules; the message says which and where."""


@dataclass(frozen=True)
class Message:
    """One reassembled RTMP message."""

    csid: int
    timestamp_ms: int
    type_id: int
    stream_id: int
    payload: bytes


def _basic_header(fmt: int, csid: int) -> bytes:
    if not CSID_MIN <= csid <= CSID_MAX:
        raise ValueError(f"chunk stream id {csid} outside {CSID_MIN}..{CSID_MAX}")
    if csid < 64:
        return bytes((fmt << 6 | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    rest = csid - 64
    return bytes((fmt << 6 | 1, rest & 0xFF, rest >> 8))


@dataclass
class _Sent:
    timestamp_ms: int
    length: int
    type_id: int
    stream_id: int
    ts_field: int  # the last timestamp field written: absolute (format 0) or delta


class ChunkWriter:
    """Cuts messages into chunks, compressing headers against the previous message on the
    same chunk stream. Chunk size changes only through :meth:`set_chunk_size`, which returns
    the Set Chunk Size message announcing it (the peer must get it first)."""

    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._last: dict[int, _Sent] = {}

    def set_chunk_size(self, size: int) -> bytes:
        if not 1 <= size <= MAX_CHUNK_SIZE_SPEC:
            raise ValueError(f"chunk size {size} outside 1..{MAX_CHUNK_SIZE_SPEC}")
        out = self.message(PROTOCOL_CSID, 0, MSG_SET_CHUNK_SIZE, 0, struct.pack(">I", size))
        self.chunk_size = size
        return out

    def message(self, csid: int, timestamp_ms: int, type_id: int, stream_id: int,
                payload: bytes) -> bytes:
        timestamp_ms %= TIMESTAMP_MOD
        length = len(payload)
        if length > 0xFFFFFF:
            raise ValueError(f"message of {length} bytes exceeds the 24-bit length field")
        prev = self._last.get(csid)
        if prev is None or prev.stream_id != stream_id or timestamp_ms < prev.timestamp_ms:
            fmt, field = 0, timestamp_ms
        else:
            delta = timestamp_ms - prev.timestamp_ms
            if prev.length != length or prev.type_id != type_id:
                fmt, field = 1, delta
            elif delta != prev.ts_field:
                fmt, field = 2, delta
            else:
                fmt, field = 3, delta
        extended = field >= EXTENDED_TIMESTAMP
        if fmt == 3:
            extended = prev is not None and prev.ts_field >= EXTENDED_TIMESTAMP
        ext = struct.pack(">I", field) if extended else b""
        ts3 = (EXTENDED_TIMESTAMP if extended else field).to_bytes(3, "big")
        if fmt == 0:
            head = ts3 + length.to_bytes(3, "big") + bytes((type_id,)) + struct.pack(
                "<I", stream_id)
        elif fmt == 1:
            head = ts3 + length.to_bytes(3, "big") + bytes((type_id,))
        elif fmt == 2:
            head = ts3
        else:
            head = b""
        self._last[csid] = _Sent(timestamp_ms, length, type_id, stream_id, field)
        out = bytearray(_basic_header(fmt, csid) + head + ext)
        out += payload[:self.chunk_size]
        continuation = _basic_header(3, csid) + ext
        for at in range(self.chunk_size, length, self.chunk_size):
            out += continuation
            out += payload[at:at + self.chunk_size]
        return bytes(out)


@dataclass
class _Stream:
    """What the reader knows of one chunk stream."""

    timestamp_ms: int = 0
    ts_field: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    partial: bytearray | None = None  # the message being reassembled


class ChunkReader:
    """Reassembles messages from the peer's chunk stream. ``feed`` takes any split of the
    bytes and returns the messages completed by them, in order."""

    def __init__(self, max_chunk_size: int = READER_MAX_CHUNK_SIZE,
                 max_message_bytes: int = READER_MAX_MESSAGE_BYTES,
                 max_chunk_streams: int = READER_MAX_CHUNK_STREAMS) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_chunk_size = max_chunk_size
        self.max_message_bytes = max_message_bytes
        self.max_chunk_streams = max_chunk_streams
        self.bytes_consumed = 0  # offset of the next unparsed byte in the whole stream
        self._buf = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._partial_bytes = 0
        self._failed: ChunkError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held: unparsed input plus partly reassembled messages."""
        return len(self._buf) + self._partial_bytes

    def feed(self, data: bytes) -> list[Message]:
        if self._failed is not None:
            raise self._failed
        self._buf += data
        out: list[Message] = []
        try:
            while True:
                msg, done = self._one_chunk()
                if not done:
                    break
                if msg is not None:
                    out.append(msg)
        except ChunkError as exc:
            self._failed = exc
            raise
        return out

    def _error(self, text: str) -> ChunkError:
        return ChunkError(f"RTMP chunk at stream offset {self.bytes_consumed}: {text}")

    def _one_chunk(self) -> tuple[Message | None, bool]:
        """Parse one chunk if all of it is buffered: (completed message or None, parsed)."""
        buf = self._buf
        if not buf:
            return None, False
        fmt, csid = buf[0] >> 6, buf[0] & 0x3F
        pos = 1
        if csid == 0:
            if len(buf) < 2:
                return None, False
            csid, pos = 64 + buf[1], 2
        elif csid == 1:
            if len(buf) < 3:
                return None, False
            csid, pos = 64 + buf[1] + (buf[2] << 8), 3
        head_len = MESSAGE_HEADER_BYTES[fmt]
        if len(buf) < pos + head_len:
            return None, False
        st = self._streams.get(csid)
        if st is None:
            if fmt != 0:
                raise self._error(f"chunk stream {csid} starts with a format {fmt} header "
                                  "(a new chunk stream needs format 0)")
            if len(self._streams) >= self.max_chunk_streams:
                raise self._error(f"more than {self.max_chunk_streams} chunk streams")
        h = buf[pos:pos + head_len]
        pos += head_len
        field = int.from_bytes(h[0:3], "big") if fmt < 3 else None
        extended = (field == EXTENDED_TIMESTAMP) if field is not None else bool(
            st and st.extended)
        if extended:
            if len(buf) < pos + 4:
                return None, False
            ext_value = struct.unpack(">I", buf[pos:pos + 4])[0]
            pos += 4
            if field is not None:
                field = ext_value
        new_message = st is None or st.partial is None
        if fmt < 3 and not new_message:
            raise self._error(f"format {fmt} header on chunk stream {csid} in the middle of a "
                              "message")
        if fmt in (0, 1):
            length = int.from_bytes(h[3:6], "big")
            type_id = h[6]
        else:
            assert st is not None
            length, type_id = st.length, st.type_id
        stream_id = struct.unpack("<I", h[7:11])[0] if fmt == 0 else (st.stream_id if st else 0)
        if new_message and length > self.max_message_bytes:
            raise self._error(f"message of {length} bytes on chunk stream {csid} exceeds "
                              f"{self.max_message_bytes}")
        have = 0 if new_message else len(st.partial)  # type: ignore[union-attr, arg-type]
        take = min(self.chunk_size, length - have)
        if len(buf) < pos + take:
            return None, False
        # the whole chunk is here: commit
        if st is None:
            st = self._streams[csid] = _Stream()
        if new_message:
            if fmt == 0:
                assert field is not None
                st.timestamp_ms, st.ts_field = field, field
            else:
                if field is not None:
                    st.ts_field = field
                st.timestamp_ms = (st.timestamp_ms + st.ts_field) % TIMESTAMP_MOD
            st.length, st.type_id, st.stream_id = length, type_id, stream_id
            if fmt < 3:
                st.extended = extended
            st.partial = bytearray()
        assert st.partial is not None
        st.partial += buf[pos:pos + take]
        self._partial_bytes += take
        pos += take
        del buf[:pos]
        self.bytes_consumed += pos
        if len(st.partial) < st.length:
            return None, True
        payload = bytes(st.partial)
        self._partial_bytes -= len(payload)
        st.partial = None
        msg = Message(csid, st.timestamp_ms, st.type_id, st.stream_id, payload)
        self._control(msg)
        return msg, True

    def _control(self, msg: Message) -> None:
        """Apply the messages that change how the following chunks are cut."""
        if msg.type_id == MSG_SET_CHUNK_SIZE:
            if len(msg.payload) != 4:
                raise self._error(f"Set Chunk Size of {len(msg.payload)} bytes (must be 4)")
            size = struct.unpack(">I", msg.payload)[0]
            if size & 0x80000000 or size == 0:
                raise self._error(f"Set Chunk Size {size} (must be 1..{MAX_CHUNK_SIZE_SPEC})")
            if size > self.max_chunk_size:
                raise self._error(f"Set Chunk Size {size} exceeds {self.max_chunk_size}")
            self.chunk_size = size
        elif msg.type_id == MSG_ABORT:
            if len(msg.payload) != 4:
                raise self._error(f"Abort of {len(msg.payload)} bytes (must be 4)")
            target = self._streams.get(struct.unpack(">I", msg.payload)[0])
            if target is not None and target.partial is not None:
                self._partial_bytes -= len(target.partial)
                target.partial = None
