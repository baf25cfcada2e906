"""The RTMP cores without I/O: AMF0, the chunk stream, FLV tags and the publisher's state
machine, driven by a scripted platform built from the same chunk writer."""

from __future__ import annotations

import struct

import pytest

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
    ChunkError,
    ChunkReader,
    ChunkWriter,
    Message,
)
from relay.rtmp.flv import FlvError, FlvReader, FlvTag
from relay.rtmp.publisher import (
    HANDSHAKE_BYTES,
    HANDSHAKE_RANDOM_BYTES,
    Closed,
    Connected,
    PublisherState,
    PublishRefused,
    PublishStarted,
    RtmpPublisher,
)
from relay.rtmp.url import split_rtmp_url
from uplink.backoff import next_backoff_s

TARGET = split_rtmp_url("rtmp://127.0.0.1:1935/live/SECRET-KEY-123")
C1_RANDOM = bytes(range(256)) * 5 + bytes(HANDSHAKE_RANDOM_BYTES - 1280)


# -- AMF0 ------------------------------------------------------------------------------------

def test_amf0_round_trip_of_command_values() -> None:
    values = ["connect", 1.0, {"app": "live", "nested": {"x": [1.0, True, None]}}, None, ""]
    assert amf0.decode_all(amf0.encode_all(*values)) == values
    assert amf0.decode_all(amf0.encode_ecma_array({"width": 320.0})) == [{"width": 320.0}]
    long = "x" * 70000
    assert amf0.decode_all(amf0.encode(long)) == [long]


@pytest.mark.parametrize("data, why", [
    (b"\x02\x00\x05ab", "truncated"),
    (b"\x0d", "unsupported AMF0 marker 0x0d"),
    (b"\x02\x00\x01\xff", "not UTF-8"),
    (b"\x03\x00\x01a" * 40, "nested deeper"),
    (b"\x0a\xff\xff\xff\xff", "strict array of"),
])
def test_amf0_bad_input_is_an_amf0_error(data: bytes, why: str) -> None:
    with pytest.raises(amf0.Amf0Error, match=why):
        amf0.decode_all(data)


# -- chunk stream ----------------------------------------------------------------------------

def _roundtrip(messages: list[Message], chunk_size: int, split: int) -> list[Message]:
    w = ChunkWriter()
    data = w.set_chunk_size(chunk_size) if chunk_size != 128 else b""
    for m in messages:
        data += w.message(m.csid, m.timestamp_ms, m.type_id, m.stream_id, m.payload)
    r = ChunkReader()
    out: list[Message] = []
    for at in range(0, len(data), split):
        out += r.feed(data[at:at + split])
    return [m for m in out if m.type_id != 1]


@pytest.mark.parametrize("chunk_size, split", [(128, 1), (128, 7), (4096, 1000), (1, 3)])
def test_chunk_writer_and_reader_agree_on_every_header_format(chunk_size: int,
                                                              split: int) -> None:
    messages = [
        Message(4, 0, MSG_AUDIO, 1, b"a" * 10),
        Message(4, 23, MSG_AUDIO, 1, b"b" * 10),  # format 2 (new delta)
        Message(4, 46, MSG_AUDIO, 1, b"c" * 10),  # format 3 (same delta)
        Message(4, 69, MSG_AUDIO, 1, b"d" * 300),  # format 1 (new length), several chunks
        Message(6, 0x1000000, MSG_VIDEO, 1, b"v" * 500),  # extended timestamp, continuation
        Message(6, 0x1000021, MSG_VIDEO, 1, b"w" * 500),
        Message(6, 5, MSG_VIDEO, 1, b"x"),  # backwards: format 0 again
        Message(300, 7, MSG_DATA_AMF0, 2, b""),  # 2-byte chunk stream id, empty message
        Message(65599, 2**32 - 1, MSG_COMMAND_AMF0, 0, b"z" * 129),  # 3-byte id
    ]
    assert _roundtrip(messages, chunk_size, split) == messages


def test_chunk_reader_applies_set_chunk_size_and_abort() -> None:
    w = ChunkWriter()
    data = w.message(4, 0, MSG_AUDIO, 1, b"a" * 200)[:150]  # first chunk and part of next
    r = ChunkReader()
    assert r.feed(data[:128 + 12]) == []
    abort = ChunkWriter().message(2, 0, 2, 0, struct.pack(">I", 4))
    assert [m.type_id for m in r.feed(abort)] == [2]
    assert r.buffered_bytes == 0


@pytest.mark.parametrize("data, why", [
    (b"\x44" + bytes(7), "starts with a format 1 header"),
    (ChunkWriter().message(4, 0, MSG_AUDIO, 1, b"a" * 300)[:140] + b"\x04" + bytes(11),
     "in the middle of a message"),
    (b"\x04" + bytes(3) + (9 << 20).to_bytes(3, "big") + b"\x08" + bytes(4), "exceeds"),
    (ChunkWriter().message(2, 0, 1, 0, struct.pack(">I", 1 << 30)), "Set Chunk Size"),
    (ChunkWriter().message(2, 0, 1, 0, struct.pack(">I", 0)), "Set Chunk Size 0"),
])
def test_chunk_reader_rejects_what_breaks_the_rules(data: bytes, why: str) -> None:
    with pytest.raises(ChunkError, match=why):
        ChunkReader().feed(data)


def test_chunk_reader_bounds_chunk_streams() -> None:
    w = ChunkWriter()
    data = b"".join(w.message(csid, 0, MSG_AUDIO, 1, b"xx" * 100) for csid in range(3, 70))
    with pytest.raises(ChunkError, match="more than 64 chunk streams"):
        ChunkReader().feed(data)


# -- FLV -------------------------------------------------------------------------------------

def _flv_tag(tag_type: int, ts: int, data: bytes) -> bytes:
    head = bytes((tag_type,)) + len(data).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(
        3, "big") + bytes((ts >> 24,)) + bytes(3)
    return head + data + struct.pack(">I", 11 + len(data))


FLV_HEADER = b"FLV\x01\x05" + struct.pack(">I", 9) + bytes(4)


def test_flv_reader_splits_tags_from_any_split() -> None:
    stream = FLV_HEADER + _flv_tag(18, 0, b"meta") + _flv_tag(9, 0x1234567, b"v" * 50) + \
        _flv_tag(8, 40, b"")
    expected = [FlvTag(18, 0, b"meta"), FlvTag(9, 0x1234567, b"v" * 50), FlvTag(8, 40, b"")]
    for split in (1, 5, 64, len(stream)):
        r = FlvReader()
        tags: list[FlvTag] = []
        for at in range(0, len(stream), split):
            tags += r.feed(stream[at:at + split])
        assert tags == expected


@pytest.mark.parametrize("data, why", [
    (b"FLX", "does not start with 'FLV'"),
    (FLV_HEADER + _flv_tag(7, 0, b"x"), "tag type 7"),
    (FLV_HEADER + _flv_tag(9, 0, b"x")[:-1] + b"\x00", "PreviousTagSize"),
    (FLV_HEADER + b"\x09\x90\x00\x00" + bytes(7), "exceeds"),
])
def test_flv_reader_rejects_what_is_not_flv(data: bytes, why: str) -> None:
    with pytest.raises(FlvError, match=why):
        FlvReader().feed(data)


# -- the publisher ---------------------------------------------------------------------------

class ScriptedPlatform:
    """The server side, written by hand from the specification's message sequence."""

    def __init__(self) -> None:
        self.w = ChunkWriter()
        self.r = ChunkReader()
        self.received: list[Message] = []
        self._hs = bytearray()

    def handshake(self, client_bytes: bytes) -> bytes:
        assert client_bytes[0] == 3 and len(client_bytes) == 1 + HANDSHAKE_BYTES
        c1 = client_bytes[1:]
        return b"\x03" + bytes(8) + b"S" * (HANDSHAKE_BYTES - 8) + c1

    def take(self, data: bytes) -> list[Message]:
        msgs = self.r.feed(data)
        self.received += msgs
        return msgs

    def command(self, *values: object, stream_id: int = 0) -> bytes:
        return self.w.message(3, 0, MSG_COMMAND_AMF0, stream_id, amf0.encode_all(*values))

    def commands(self) -> list[list[object]]:
        return [amf0.decode_all(m.payload) for m in self.received
                if m.type_id == MSG_COMMAND_AMF0]


def _to_connect(pub: RtmpPublisher, srv: ScriptedPlatform, now: float = 0.0) -> None:
    events = pub.receive(srv.handshake(pub.data_to_send()), now)
    assert events == []
    c2_and_rest = pub.data_to_send()
    assert len(c2_and_rest) > HANDSHAKE_BYTES and c2_and_rest[8:HANDSHAKE_BYTES] == \
        b"S" * (HANDSHAKE_BYTES - 8)
    srv.take(c2_and_rest[HANDSHAKE_BYTES:])
    assert srv.commands()[-1][0] == "connect"


def test_publisher_is_connected_only_when_the_publish_is_accepted() -> None:
    pub = RtmpPublisher(TARGET, now=0.0, c1_random=C1_RANDOM)
    srv = ScriptedPlatform()
    _to_connect(pub, srv)
    connect = srv.commands()[-1]
    assert connect[2] == {"app": "live", "type": "nonprivate",
                          "flashVer": "FMLE/3.0 (compatible; steadycast)",
                          "tcUrl": "rtmp://127.0.0.1:1935/live"}
    ev = pub.receive(
        srv.w.message(2, 0, MSG_WINDOW_ACK_SIZE, 0, struct.pack(">I", 100))
        + srv.w.message(2, 0, MSG_SET_PEER_BANDWIDTH, 0, struct.pack(">IB", 5000, 2))
        + srv.command("_result", 1.0, {"fmsVer": "x"},
                      {"level": "status", "code": "NetConnection.Connect.Success"}), 0.1)
    assert ev == [Connected()]
    assert pub.state == PublisherState.CREATING_STREAM
    srv.take(pub.data_to_send())
    assert [c[0] for c in srv.commands()][-3:] == ["releaseStream", "FCPublish", "createStream"]
    assert srv.commands()[-2][3] == "SECRET-KEY-123"
    # the window ack size answered Set Peer Bandwidth; 100 bytes received were acknowledged
    assert any(m.type_id == MSG_WINDOW_ACK_SIZE for m in srv.received)
    assert any(m.type_id == MSG_ACKNOWLEDGEMENT for m in srv.received)
    assert pub.receive(srv.command("_result", 4.0, None, 1.0), 0.2) == []
    srv.take(pub.data_to_send())
    publish = srv.received[-1]
    assert publish.stream_id == 1 and amf0.decode_all(publish.payload) == [
        "publish", 5.0, None, "SECRET-KEY-123", "live"]
    with pytest.raises(RuntimeError, match="cannot send media"):
        pub.send_tag(FlvTag(9, 0, b"v"))
    ev = pub.receive(srv.command("onStatus", 0.0, None,
                                 {"level": "status", "code": "NetStream.Publish.Start"},
                                 stream_id=1), 0.3)
    assert ev == [PublishStarted(1)] and pub.state == PublisherState.PUBLISHED
    pub.send_tag(FlvTag(18, 0, amf0.encode("onMetaData") + amf0.encode_ecma_array({})))
    pub.send_tag(FlvTag(9, 0, b"video"))
    pub.send_tag(FlvTag(8, 21, b"audio"))
    msgs = [m for m in srv.take(pub.data_to_send()) if m.type_id != MSG_ACKNOWLEDGEMENT]
    assert [(m.type_id, m.stream_id, m.timestamp_ms) for m in msgs] == [
        (MSG_DATA_AMF0, 1, 0), (MSG_VIDEO, 1, 0), (MSG_AUDIO, 1, 21)]
    assert amf0.decode_all(msgs[0].payload)[:2] == ["@setDataFrame", "onMetaData"]
    # a ping is answered with its timestamp
    pub.receive(srv.w.message(2, 0, MSG_USER_CONTROL, 0, struct.pack(">HI", 6, 777)), 1.0)
    pong = [m for m in srv.take(pub.data_to_send()) if m.type_id == MSG_USER_CONTROL]
    assert [m.payload for m in pong] == [struct.pack(">HI", 7, 777)]
    assert pub.eof() == [Closed("the platform closed the connection")]


def _to_publish(pub: RtmpPublisher, srv: ScriptedPlatform) -> None:
    _to_connect(pub, srv)
    pub.receive(srv.command("_result", 1.0, None, {"code": "NetConnection.Connect.Success"}), 0)
    pub.receive(srv.command("_result", 4.0, None, 1.0), 0)
    srv.take(pub.data_to_send())


@pytest.mark.parametrize("answer, reason", [
    (("onStatus", 0.0, None, {"level": "error", "code": "NetStream.Publish.BadName",
                              "description": "Already publishing"}),
     "NetStream.Publish.BadName: Already publishing"),
    (("_error", 5.0, None, {"level": "error", "code": "NetStream.Publish.Denied"}),
     "NetStream.Publish.Denied"),
])
def test_a_refused_publish_is_never_started(answer: tuple[object, ...], reason: str) -> None:
    pub = RtmpPublisher(TARGET, now=0.0)
    srv = ScriptedPlatform()
    _to_publish(pub, srv)
    events = pub.receive(srv.command(*answer), 1.0)
    assert events == [PublishRefused(f"the platform refused: {reason}")]
    assert pub.state == PublisherState.CLOSED
    with pytest.raises(RuntimeError):
        pub.send_tag(FlvTag(9, 0, b"v"))


def test_a_refused_connect_and_a_closed_connection_are_refusals() -> None:
    pub = RtmpPublisher(TARGET, now=0.0)
    srv = ScriptedPlatform()
    _to_connect(pub, srv)
    events = pub.receive(srv.command("_error", 1.0, None, {
        "level": "error", "code": "NetConnection.Connect.Rejected"}), 0.5)
    assert events == [PublishRefused("the platform refused: NetConnection.Connect.Rejected")]
    pub2 = RtmpPublisher(TARGET, now=0.0)
    assert pub2.eof() == [PublishRefused("the platform closed the connection")]


def test_a_platform_that_never_answers_is_refused_after_the_reply_timeout() -> None:
    pub = RtmpPublisher(TARGET, now=100.0, reply_timeout_s=5.0)
    assert pub.handle_timer(104.9) == []
    assert pub.handle_timer(105.0) == [
        PublishRefused("no answer to the handshake (S0 S1 S2) within 5 s")]
    pub2 = RtmpPublisher(TARGET, now=0.0, reply_timeout_s=5.0)
    srv = ScriptedPlatform()
    _to_publish(pub2, srv)
    assert pub2.handle_timer(4.0) == []
    assert pub2.handle_timer(5.0) == [PublishRefused("no answer to publish within 5 s")]


def test_garbage_from_the_platform_is_a_refusal_not_a_crash() -> None:
    pub = RtmpPublisher(TARGET, now=0.0)
    assert pub.receive(b"HTTP/1.1 400 Bad Request\r\n", 0.0) == [PublishRefused(
        "the platform answered RTMP version 72 (expected 3); is this an RTMP server?")]


def test_backoff_of_a_failing_destination_grows_1_2_4_5() -> None:
    delays, prev = [], None
    for _ in range(5):
        prev = next_backoff_s(prev, 1.0, 5.0)
        delays.append(prev)
    assert delays == [1, 2, 4, 5, 5]


def test_url_splits_app_and_key() -> None:
    t = split_rtmp_url("rtmps://live-api-s.facebook.com:443/rtmp/FB-1-2?s_bl=1")
    assert (t.host, t.port, t.app, t.stream_name, t.tls) == (
        "live-api-s.facebook.com", 443, "rtmp", "FB-1-2?s_bl=1", True)
    assert t.tc_url == "rtmps://live-api-s.facebook.com:443/rtmp"
    assert split_rtmp_url("rtmp://h/live2").port == 1935
    with pytest.raises(ValueError, match="no application"):
        split_rtmp_url("rtmp://h/")
