"""Fuzzing the RTMP parsers: the chunk reader, the FLV reader and the AMF0 decoder only ever
raise their own error, whatever arrives and however it is split, and hold bounded state; the
publisher turns any reply into events, never an exception. Bounded and seeded: fast in the
default suite."""

from __future__ import annotations

import contextlib
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.rtmp import amf0
from relay.rtmp.chunk import (
    MSG_AUDIO,
    MSG_COMMAND_AMF0,
    ChunkError,
    ChunkReader,
    ChunkWriter,
)
from relay.rtmp.flv import FlvError, FlvReader
from relay.rtmp.publisher import HANDSHAKE_BYTES, RtmpPublisher
from relay.rtmp.url import split_rtmp_url

FAST = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
MUTATIONS = 2000
TARGET = split_rtmp_url("rtmp://127.0.0.1/live/key")


def _valid_chunks(rng: random.Random) -> bytes:
    w = ChunkWriter()
    out = w.set_chunk_size(rng.choice([64, 128, 4096]))
    for _ in range(rng.randint(1, 12)):
        out += w.message(rng.choice([3, 4, 6, 70, 400]), rng.randint(0, 2**32 - 1),
                         rng.choice([MSG_AUDIO, MSG_COMMAND_AMF0, 9, 18, 4]), rng.randint(0, 3),
                         rng.randbytes(rng.randint(0, 600)))
    return out


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        at = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(at, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            b[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 2:
            del b[at:at + rng.randint(1, 16)]
        else:
            b = b[:at]
    return bytes(b)


def _feed_split(reader: ChunkReader | FlvReader, data: bytes, rng: random.Random) -> None:
    at = 0
    while at < len(data):
        n = rng.randint(1, 300)
        reader.feed(data[at:at + n])
        at += n


def test_chunk_reader_on_mutated_streams_raises_only_chunk_error() -> None:
    rng = random.Random(13)
    errors = 0
    for _ in range(MUTATIONS):
        reader = ChunkReader(max_message_bytes=4096, max_chunk_streams=8, max_chunk_size=8192)
        try:
            _feed_split(reader, _mutate(rng, _valid_chunks(rng)), rng)
        except ChunkError:
            errors += 1
            continue
        # what it holds is bounded by its limits (one partial message per chunk stream)
        assert reader.buffered_bytes <= 8 * 4096 + 8192 + 18
    assert 0 < errors < MUTATIONS  # the mutations hit both ways


@FAST
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_chunk_reader_on_random_bytes_raises_only_chunk_error(data: bytes, split: int) -> None:
    reader = ChunkReader(max_message_bytes=1024, max_chunk_streams=4)
    try:
        for at in range(0, len(data), split):
            reader.feed(data[at:at + split])
    except ChunkError:
        pass


def _valid_flv(rng: random.Random) -> bytes:
    out = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
    for _ in range(rng.randint(0, 10)):
        data = rng.randbytes(rng.randint(0, 300))
        ts = rng.randint(0, 2**32 - 1)
        out += bytes((rng.choice([8, 9, 18]),)) + len(data).to_bytes(3, "big") + \
            (ts & 0xFFFFFF).to_bytes(3, "big") + bytes((ts >> 24, 0, 0, 0)) + data + \
            (11 + len(data)).to_bytes(4, "big")
    return out


def test_flv_reader_on_mutated_streams_raises_only_flv_error() -> None:
    rng = random.Random(17)
    for _ in range(MUTATIONS):
        reader = FlvReader(max_tag_bytes=1024)
        try:
            _feed_split(reader, _mutate(rng, _valid_flv(rng)), rng)
        except FlvError:
            continue


@FAST
@given(st.binary(max_size=600))
def test_amf0_decoder_on_random_bytes_raises_only_amf0_error(data: bytes) -> None:
    with contextlib.suppress(amf0.Amf0Error):
        amf0.decode_all(data)


def test_amf0_decoder_on_mutated_commands_raises_only_amf0_error() -> None:
    rng = random.Random(19)
    base = amf0.encode_all("_result", 1.0, {"fmsVer": "FMS/3,0", "caps": 31.0},
                           {"level": "status", "code": "NetConnection.Connect.Success",
                            "data": amf0.UNDEFINED_VALUE, "list": [1.0, "x", None]})
    for _ in range(MUTATIONS):
        try:
            amf0.decode_all(_mutate(rng, base))
        except amf0.Amf0Error:
            continue


def test_publisher_turns_any_reply_into_events_never_an_exception() -> None:
    rng = random.Random(23)
    server = ChunkWriter()
    reply = server.message(3, 0, MSG_COMMAND_AMF0, 0, amf0.encode_all(
        "_result", 1.0, None, {"code": "NetConnection.Connect.Success"})) + server.message(
        3, 0, MSG_COMMAND_AMF0, 0, amf0.encode_all("_result", 4.0, None, 1.0)) + server.message(
        3, 0, MSG_COMMAND_AMF0, 1, amf0.encode_all(
            "onStatus", 0.0, None, {"level": "status", "code": "NetStream.Publish.Start"}))
    for _ in range(MUTATIONS // 2):
        pub = RtmpPublisher(TARGET, now=0.0)
        c = pub.data_to_send()
        stream = b"\x03" + bytes(HANDSHAKE_BYTES) + c[1:] + _mutate(rng, reply)
        at = 0
        while at < len(stream):
            n = rng.randint(1, 700)
            pub.receive(stream[at:at + n], 0.0)
            pub.data_to_send()
            at += n
        pub.handle_timer(100.0)
        pub.eof()
