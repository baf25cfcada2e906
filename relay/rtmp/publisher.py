"""The publishing side of an RTMP connection, as a state machine without I/O.

``RtmpPublisher(target, now=...)`` queues C0+C1 at once; the caller writes
:meth:`data_to_send` to the platform, passes what the platform sends to
:meth:`receive` (``now`` in seconds, any clock), calls :meth:`handle_timer` now and then,
and reports the end of the byte stream with :meth:`eof`. Events come back as values.

The sequence (RTMP specification 1.0, §5.2 handshake, §7.2 commands; the FCPublish and
releaseStream calls are not in the specification but every encoder sends them and some
platforms expect them):

1. C0 (version 3) + C1 (time, zero, 1528 random bytes) -> S0 S1 S2; C2 echoes S1.
2. Set Chunk Size, then ``connect`` (txn 1) with app, type "nonprivate", flashVer, tcUrl;
   ``_result`` -> :class:`Connected`; ``_error`` -> :class:`PublishRefused`.
3. ``releaseStream`` (2), ``FCPublish`` (3), ``createStream`` (4) -> ``_result`` with the
   message stream id.
4. ``publish(name, "live")`` on that stream -> ``onStatus`` NetStream.Publish.Start:
   :class:`PublishStarted`, the only event after which the destination counts as connected.
   An ``onStatus`` of level "error" (NetStream.Publish.BadName, ...), an ``_error``, a
   protocol error or the end of the stream before that: :class:`PublishRefused` with the
   platform's code and description. No answer within ``reply_timeout_s`` of a request:
   :class:`PublishRefused` too.
5. Then :meth:`send_tag` carries FLV tags: audio as type 8, video as type 9, script data as
   type 18 prefixed with ``@setDataFrame`` (what FFmpeg and OBS send, so the platform keeps
   the metadata for its viewers).

All along it answers Window Acknowledgement Size by acknowledging every window of bytes
received (§5.4.3-4), Set Peer Bandwidth with its own Window Acknowledgement Size (§5.4.5),
and User Control Ping Request with Ping Response (§6.2, events 6 and 7). Set Peer
Bandwidth's limit on unacknowledged output is not enforced (FFmpeg and OBS do not either).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from relay.rtmp import amf0
from relay.rtmp.chunk import (
    MSG_ACKNOWLEDGEMENT,
    MSG_AUDIO,
    MSG_COMMAND_AMF0,
    MSG_DATA_AMF0,
    MSG_SET_PEER_BANDWIDTH,
    MSG_USER_CONTROL,
    MSG_VIDEO,
    MSG_WINDOW_ACK_SIZE,
    PROTOCOL_CSID,
    ChunkError,
    ChunkReader,
    ChunkWriter,
    Message,
)
from relay.rtmp.flv import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO, FlvTag
from relay.rtmp.url import RtmpTarget

RTMP_VERSION = 3
HANDSHAKE_BYTES = 1536
HANDSHAKE_RANDOM_BYTES = HANDSHAKE_BYTES - 8
CHUNK_SIZE_BYTES = 4096  # what nginx-rtmp and OBS use; fewer headers than the default 128
REPLY_TIMEOUT_S_DEFAULT = 10.0
WINDOW_ACK_SIZE_BYTES = 2_500_000  # what we announce when asked for one
FLASH_VER = "FMLE/3.0 (compatible; steadycast)"
PUBLISH_START = "NetStream.Publish.Start"
SET_DATA_FRAME = "@setDataFrame"
# replies read by a client never carry media: a small message bound is enough
REPLY_MAX_MESSAGE_BYTES = 1 << 20

COMMAND_CSID = 3
AUDIO_CSID = 4
DATA_CSID = 5
VIDEO_CSID = 6
STREAM_COMMAND_CSID = 8

TXN_CONNECT = 1
TXN_RELEASE_STREAM = 2
TXN_FC_PUBLISH = 3
TXN_CREATE_STREAM = 4
TXN_PUBLISH = 5

UC_STREAM_BEGIN = 0
UC_PING_REQUEST = 6
UC_PING_RESPONSE = 7


class PublisherState(StrEnum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"  # connect sent
    CREATING_STREAM = "creating_stream"  # createStream sent
    PUBLISHING = "publishing"  # publish sent
    PUBLISHED = "published"  # NetStream.Publish.Start received: media may flow
    CLOSED = "closed"


@dataclass(frozen=True)
class Connected:
    """The platform accepted ``connect`` (NetConnection.Connect.Success)."""


@dataclass(frozen=True)
class PublishStarted:
    """The platform accepted the publish: media may flow."""

    stream_id: int


@dataclass(frozen=True)
class PublishRefused:
    """The platform did not accept the publish; ``reason`` is what it said (or did)."""

    reason: str


@dataclass(frozen=True)
class Closed:
    """A published session ended from the platform's side."""

    reason: str


Event = Connected | PublishStarted | PublishRefused | Closed


def _status_text(info: Any) -> str:
    """``code: description`` of an onStatus/_error info object, whatever its shape."""
    if not isinstance(info, dict):
        return "no reason given"
    code = str(info.get("code", "")).strip()
    description = str(info.get("description", "")).strip()
    text = ": ".join(x for x in (code, description) if x)
    return text[:300] or "no reason given"


class RtmpPublisher:
    def __init__(self, target: RtmpTarget, *, now: float,
                 reply_timeout_s: float = REPLY_TIMEOUT_S_DEFAULT,
                 c1_random: bytes | None = None) -> None:
        self.target = target
        self.reply_timeout_s = reply_timeout_s
        self.state = PublisherState.HANDSHAKE
        self.stream_id = 0
        self.bytes_received = 0
        self.peer_acked_bytes = 0  # the platform's last Acknowledgement sequence number
        self.ack_window_bytes = 0  # the platform's Window Acknowledgement Size (0: none)
        self._acked_at = 0
        self._announced_window = 0
        self._out = bytearray()
        self._in = bytearray()  # handshake bytes until S0 S1 S2 are complete
        self._writer = ChunkWriter()
        self._reader = ChunkReader(max_message_bytes=REPLY_MAX_MESSAGE_BYTES)
        self._epoch = now
        self._deadline: float | None = now + reply_timeout_s
        self._waiting_for = "the handshake (S0 S1 S2)"
        self._c2_sent = False
        random = c1_random if c1_random is not None else os.urandom(HANDSHAKE_RANDOM_BYTES)
        if len(random) != HANDSHAKE_RANDOM_BYTES:
            raise ValueError(f"c1_random must be {HANDSHAKE_RANDOM_BYTES} bytes")
        self._c1 = struct.pack(">II", 0, 0) + random
        self._out += bytes((RTMP_VERSION,)) + self._c1

    # -- the caller's side -------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive(self, data: bytes, now: float) -> list[Event]:
        if self.state == PublisherState.CLOSED or not data:
            return []
        if self.state == PublisherState.HANDSHAKE:
            self._in += data
            events = self._handshake(now)
            if self.state == PublisherState.HANDSHAKE or not self._in:
                return events
            data = bytes(self._in)
            self._in.clear()
            if self.state == PublisherState.CLOSED:
                return events
        else:
            events = []
        self.bytes_received += len(data)
        try:
            messages = self._reader.feed(data)
        except ChunkError as exc:
            return events + self._fail(f"protocol error from the platform: {exc}")
        for msg in messages:
            events += self._message(msg, now)
            if self.state == PublisherState.CLOSED:
                break
        self._maybe_ack()
        return events

    def handle_timer(self, now: float) -> list[Event]:
        """PublishRefused once the platform has not answered in time."""
        if self._deadline is not None and now >= self._deadline and self.state not in (
                PublisherState.PUBLISHED, PublisherState.CLOSED):
            return self._fail(f"no answer to {self._waiting_for} within "
                              f"{self.reply_timeout_s:g} s")
        return []

    @property
    def deadline(self) -> float | None:
        """When :meth:`handle_timer` will give up waiting (None: nothing awaited)."""
        return self._deadline

    def eof(self) -> list[Event]:
        """The platform closed the connection."""
        return self._fail("the platform closed the connection")

    def send_tag(self, tag: FlvTag) -> None:
        """Queue one FLV tag as an RTMP message on the published stream."""
        if self.state != PublisherState.PUBLISHED:
            raise RuntimeError(f"cannot send media in state {self.state.value}")
        if tag.tag_type == TAG_AUDIO:
            csid, type_id, payload = AUDIO_CSID, MSG_AUDIO, tag.data
        elif tag.tag_type == TAG_VIDEO:
            csid, type_id, payload = VIDEO_CSID, MSG_VIDEO, tag.data
        elif tag.tag_type == TAG_SCRIPT:
            csid, type_id, payload = DATA_CSID, MSG_DATA_AMF0, tag.data
            if not tag.data.startswith(amf0.encode(SET_DATA_FRAME)):
                payload = amf0.encode(SET_DATA_FRAME) + tag.data
        else:
            raise ValueError(f"FLV tag type {tag.tag_type} is not audio, video or script data")
        self._out += self._writer.message(csid, tag.timestamp_ms, type_id, self.stream_id,
                                          payload)

    def close(self) -> None:
        """End the session on purpose: FCUnpublish and deleteStream, then nothing more."""
        if self.state == PublisherState.PUBLISHED:
            self._command(amf0.encode_all("FCUnpublish", 6, None, self.target.stream_name))
            self._command(amf0.encode_all("deleteStream", 7, None, self.stream_id))
        self.state = PublisherState.CLOSED
        self._deadline = None

    # -- inside ----------------------------------------------------------------------------

    def _fail(self, reason: str) -> list[Event]:
        if self.state == PublisherState.CLOSED:
            return []
        was_published = self.state == PublisherState.PUBLISHED
        self.state = PublisherState.CLOSED
        self._deadline = None
        return [Closed(reason) if was_published else PublishRefused(reason)]

    def _await(self, what: str, now: float) -> None:
        self._waiting_for = what
        self._deadline = now + self.reply_timeout_s

    def _handshake(self, now: float) -> list[Event]:
        buf = self._in
        if buf[0] != RTMP_VERSION:
            return self._fail(f"the platform answered RTMP version {buf[0]} (expected "
                              f"{RTMP_VERSION}); is this an RTMP server?")
        if not self._c2_sent and len(buf) >= 1 + HANDSHAKE_BYTES:
            s1 = bytes(buf[1:1 + HANDSHAKE_BYTES])
            now_ms = int((now - self._epoch) * 1000) & 0xFFFFFFFF
            self._out += s1[:4] + struct.pack(">I", now_ms) + s1[8:]  # C2 (§5.2.6)
            self._c2_sent = True
        if len(buf) < 1 + 2 * HANDSHAKE_BYTES:
            return []
        # S2 echoes C1's random bytes; servers that use the digest scheme do not, and the
        # specification asks nothing of the client if it differs: accept it either way.
        del buf[:1 + 2 * HANDSHAKE_BYTES]
        self._out += self._writer.set_chunk_size(CHUNK_SIZE_BYTES)
        t = self.target
        self._command(amf0.encode_all("connect", TXN_CONNECT, {
            "app": t.app, "type": "nonprivate", "flashVer": FLASH_VER, "tcUrl": t.tc_url}))
        self.state = PublisherState.CONNECTING
        self._await("connect", now)
        return []

    def _command(self, body: bytes, stream_id: int = 0) -> None:
        csid = STREAM_COMMAND_CSID if stream_id else COMMAND_CSID
        self._out += self._writer.message(csid, 0, MSG_COMMAND_AMF0, stream_id, body)

    def _protocol(self, type_id: int, body: bytes) -> None:
        self._out += self._writer.message(PROTOCOL_CSID, 0, type_id, 0, body)

    def _maybe_ack(self) -> None:
        if self.ack_window_bytes and self.bytes_received - self._acked_at >= self.ack_window_bytes:
            self._acked_at = self.bytes_received
            self._protocol(MSG_ACKNOWLEDGEMENT,
                           struct.pack(">I", self.bytes_received & 0xFFFFFFFF))

    def _message(self, msg: Message, now: float) -> list[Event]:
        body = msg.payload
        if msg.type_id == MSG_WINDOW_ACK_SIZE and len(body) >= 4:
            self.ack_window_bytes = struct.unpack(">I", body[:4])[0]
        elif msg.type_id == MSG_ACKNOWLEDGEMENT and len(body) >= 4:
            self.peer_acked_bytes = struct.unpack(">I", body[:4])[0]
        elif msg.type_id == MSG_SET_PEER_BANDWIDTH and len(body) >= 4:
            size = struct.unpack(">I", body[:4])[0]
            if size != self._announced_window:
                self._announced_window = size
                self._protocol(MSG_WINDOW_ACK_SIZE, struct.pack(">I", size))
        elif msg.type_id == MSG_USER_CONTROL and len(body) >= 2:
            event = struct.unpack(">H", body[:2])[0]
            if event == UC_PING_REQUEST and len(body) >= 6:
                self._protocol(MSG_USER_CONTROL, struct.pack(">H", UC_PING_RESPONSE) + body[2:6])
        elif msg.type_id == MSG_COMMAND_AMF0:
            try:
                values = amf0.decode_all(body)
            except amf0.Amf0Error as exc:
                return self._fail(f"unreadable command from the platform: {exc}")
            return self._command_in(values, now)
        return []

    def _command_in(self, values: list[Any], now: float) -> list[Event]:
        if not values or not isinstance(values[0], str):
            return self._fail("a command from the platform without a name")
        name = values[0]
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else None
        info = values[3] if len(values) > 3 else (values[2] if len(values) > 2 else None)
        if name == "_error" and txn in (TXN_RELEASE_STREAM, TXN_FC_PUBLISH):
            return []  # optional calls some servers do not know
        if name == "_error":
            return self._fail(f"the platform refused: {_status_text(info)}")
        if name == "_result" and txn == TXN_CONNECT and self.state == PublisherState.CONNECTING:
            key = self.target.stream_name
            self._command(amf0.encode_all("releaseStream", TXN_RELEASE_STREAM, None, key))
            self._command(amf0.encode_all("FCPublish", TXN_FC_PUBLISH, None, key))
            self._command(amf0.encode_all("createStream", TXN_CREATE_STREAM, None))
            self.state = PublisherState.CREATING_STREAM
            self._await("createStream", now)
            return [Connected()]
        if (name == "_result" and txn == TXN_CREATE_STREAM
                and self.state == PublisherState.CREATING_STREAM):
            sid = values[3] if len(values) > 3 else None
            if not isinstance(sid, float) or not 0 < sid < 2**31 or sid != int(sid):
                return self._fail(f"createStream answered without a valid stream id ({sid!r})")
            self.stream_id = int(sid)
            self._command(amf0.encode_all("publish", TXN_PUBLISH, None,
                                          self.target.stream_name, "live"), self.stream_id)
            self.state = PublisherState.PUBLISHING
            self._await("publish", now)
            return []
        if name == "onStatus":
            status = values[3] if len(values) > 3 else None
            code = status.get("code") if isinstance(status, dict) else None
            level = status.get("level") if isinstance(status, dict) else None
            if code == PUBLISH_START and self.state == PublisherState.PUBLISHING:
                self.state = PublisherState.PUBLISHED
                self._deadline = None
                return [PublishStarted(self.stream_id)]
            if level == "error" or (isinstance(code, str) and code.endswith(
                    (".Failed", ".BadName", ".Rejected", ".Denied"))):
                return self._fail(f"the platform refused: {_status_text(status)}"
                                  if self.state != PublisherState.PUBLISHED
                                  else f"the platform ended the session: "
                                       f"{_status_text(status)}")
        return []
