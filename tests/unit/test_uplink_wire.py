"""Uplink wire format: exact layouts, round trips, and every malformed case with its close code."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from uplink import (
    MAX_EXTRADATA_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_SACK_RANGES,
    MAX_SEQ,
    MEDIA_HEADER_BYTES,
    PROTOCOL_VERSION,
    Ack,
    Bye,
    CloseCode,
    Codec,
    Hello,
    Media,
    Message,
    ProtocolError,
    SenderStats,
    TrackConfig,
    TrackKind,
    Welcome,
    decode,
    encode,
)
from uplink.wire import (
    ACK_HEADER_BYTES,
    BYE_HEADER_BYTES,
    HELLO_BYTES,
    MAX_CHANNELS,
    MAX_DIMENSION_PX,
    MAX_SAMPLE_RATE_HZ,
    MAX_TIME_BASE_TERM,
    MIN_SAMPLE_RATE_HZ,
    STATS_BYTES,
    TRACK_HEADER_BYTES,
    WELCOME_BYTES,
)

SESSION = bytes(range(16))
VIDEO = TrackConfig(
    track_id=0,
    kind=TrackKind.VIDEO,
    codec=Codec.H264,
    time_base_num=1,
    time_base_den=90000,
    width=1280,
    height=720,
    sample_rate=0,
    channels=0,
    extradata=b"\x01\x64\x00\x1f",
)
AUDIO = TrackConfig(
    track_id=1,
    kind=TrackKind.AUDIO,
    codec=Codec.AAC,
    time_base_num=1,
    time_base_den=48000,
    width=0,
    height=0,
    sample_rate=48000,
    channels=2,
    extradata=b"\x11\x90",
)
MEDIA = Media(
    seq=7,
    track_id=0,
    keyframe=True,
    pts=-3000,
    dts=-6000,
    capture_time_us=1_700_000_000_123_456,
    payload=b"\x00\x00\x00\x01\x65frame",
)

ALL_MESSAGES: list[Message] = [
    Hello(session_id=SESSION),
    Hello(session_id=SESSION, acked_seq=2**64 - 1),
    Welcome(resumed=True, next_seq=12345, buffer_ms=5000),
    Welcome(resumed=False, next_seq=0, buffer_ms=0),
    VIDEO,
    AUDIO,
    TrackConfig(7, TrackKind.AUDIO, Codec.OPUS, 1, 48000, 0, 0, 48000, 1, b""),
    TrackConfig(
        2, TrackKind.VIDEO, Codec.H264, 1001, 30000, 1, 1, 0, 0, b"x" * MAX_EXTRADATA_BYTES
    ),
    MEDIA,
    Media(MAX_SEQ, 7, False, 2**63 - 1, -(2**63), 2**64 - 1, b"x", backfill=True),
    Ack(next_seq=10, buffer_ms=4800, arrival_kbps=2500),
    Ack(next_seq=10, buffer_ms=1, arrival_kbps=1, sack_ranges=((12, 15), (20, 21))),
    Ack(0, 0, 0, tuple((10 * i + 1, 10 * i + 5) for i in range(MAX_SACK_RANGES))),
    SenderStats(backlog_bytes=2**64 - 1, backlog_ms=12000, target_kbps=800),
    Bye(),
    Bye("encoder stopped: ünïcode ✓"),
    Bye("x" * 123),
]


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_type_round_trips(msg: Message) -> None:
    data = encode(msg)
    assert decode(data) == msg
    assert encode(decode(data)) == data


def test_fixed_sizes_match_the_specification() -> None:
    assert HELLO_BYTES == 26
    assert WELCOME_BYTES == 15
    assert TRACK_HEADER_BYTES == 23
    assert MEDIA_HEADER_BYTES == 35
    assert ACK_HEADER_BYTES == 18
    assert STATS_BYTES == 17
    assert BYE_HEADER_BYTES == 2
    assert MAX_MESSAGE_BYTES == 4 * 1024 * 1024
    assert MAX_PAYLOAD_BYTES == MAX_MESSAGE_BYTES - MEDIA_HEADER_BYTES
    assert MAX_EXTRADATA_BYTES == 16 * 1024


def test_hello_byte_layout() -> None:
    data = encode(Hello(session_id=SESSION, acked_seq=0x0102030405060708))
    assert data == b"\x01\x01" + SESSION + bytes([1, 2, 3, 4, 5, 6, 7, 8])


def test_media_byte_layout_is_big_endian_with_flags() -> None:
    data = encode(MEDIA)
    expected = struct.pack(">BQBBqqQ", 4, 7, 0, 0x01, -3000, -6000, 1_700_000_000_123_456)
    assert data == expected + MEDIA.payload
    backfill = encode(Media(1, 3, False, 0, 0, 0, b"z", backfill=True))
    assert backfill[9:11] == b"\x03\x02"  # track_id 3, flags = backfill only


def test_ack_byte_layout_with_sack_ranges() -> None:
    data = encode(Ack(5, 300, 1200, ((7, 9),)))
    assert data == struct.pack(">BQIIBQQ", 5, 5, 300, 1200, 1, 7, 9)


def test_track_and_welcome_and_stats_and_bye_layouts() -> None:
    assert (
        encode(AUDIO)
        == struct.pack(">BBBBIIHHIBH", 3, 1, 1, 2, 1, 48000, 0, 0, 48000, 2, 2) + b"\x11\x90"
    )
    assert encode(Welcome(True, 9, 5000)) == struct.pack(">BBBQI", 2, 1, 1, 9, 5000)
    assert encode(SenderStats(1, 2, 3)) == struct.pack(">BQII", 6, 1, 2, 3)
    assert encode(Bye("ok")) == b"\x07\x02ok"


# ---------------------------------------------------------------------------------------------
# malformed input


def _expect(data: bytes, code: CloseCode, *words: str, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(data, max_bytes)
    assert info.value.code == code, info.value.detail
    for word in words:
        assert word in info.value.detail, info.value.detail


def _patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


def test_empty_message_is_malformed() -> None:
    _expect(b"", CloseCode.MALFORMED, "empty")


@pytest.mark.parametrize("type_byte", [0, 8, 0x7F, 0xFF])
def test_unknown_type_is_refused(type_byte: int) -> None:
    _expect(bytes([type_byte]) + b"\x01" * 20, CloseCode.UNKNOWN_TYPE, f"type {type_byte}")


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_every_truncation_is_malformed_and_names_the_field(msg: Message) -> None:
    data = encode(msg)
    for cut in range(1, len(data)):
        if isinstance(msg, Media) and cut >= MEDIA_HEADER_BYTES:
            continue  # the payload is the rest of the message: a shorter one is still valid
        with pytest.raises(ProtocolError) as info:
            decode(data[:cut])
        assert info.value.code == CloseCode.MALFORMED, (cut, info.value.detail)
        assert "truncated at" in info.value.detail


def test_truncation_detail_names_field_and_offsets() -> None:
    _expect(encode(MEDIA)[:15], CloseCode.MALFORMED, "MEDIA truncated at pts", "11..18", "has 15")
    _expect(encode(AUDIO)[:-1], CloseCode.MALFORMED, "TRACK truncated at extradata")
    ack = encode(Ack(1, 0, 0, ((3, 4), (6, 8))))
    _expect(ack[:-5], CloseCode.MALFORMED, "ACK truncated at ranges", "n_ranges 2")
    _expect(b"\x07\x05abc", CloseCode.MALFORMED, "BYE truncated at reason")


@pytest.mark.parametrize(
    "msg", [m for m in ALL_MESSAGES if not isinstance(m, Media)], ids=lambda m: type(m).__name__
)
def test_trailing_bytes_are_malformed(msg: Message) -> None:
    _expect(encode(msg) + b"\x00", CloseCode.MALFORMED, "1 trailing bytes")


def test_hello_with_another_version_is_unsupported_even_if_longer() -> None:
    hello = encode(Hello(SESSION))
    _expect(_patch(hello, 1, b"\x02"), CloseCode.UNSUPPORTED_VERSION, "HELLO version 2")
    _expect(_patch(hello, 1, b"\x02") + b"future fields", CloseCode.UNSUPPORTED_VERSION)
    _expect(_patch(hello, 1, b"\x00"), CloseCode.UNSUPPORTED_VERSION, "version 0")
    _expect(b"\x01", CloseCode.MALFORMED, "HELLO truncated at version")


def test_welcome_with_another_version_or_bad_resumed() -> None:
    welcome = encode(Welcome(True, 1, 1))
    _expect(_patch(welcome, 1, b"\x07"), CloseCode.UNSUPPORTED_VERSION, "WELCOME version 7")
    _expect(_patch(welcome, 2, b"\x02"), CloseCode.BAD_VALUE, "WELCOME resumed 2")


@pytest.mark.parametrize(
    ("offset", "value", "words"),
    [
        (1, b"\x08", ["track_id 8", "0..7"]),
        (2, b"\x02", ["kind 2"]),
        (3, b"\x00", ["codec 0"]),
        (3, b"\x04", ["codec 4"]),
        (3, b"\x02", ["codec AAC", "not a video codec"]),
        (4, b"\x00\x00\x00\x00", ["time_base_num"]),
        (8, b"\x00\x00\x00\x00", ["time_base_den"]),
        (12, b"\x00\x00", ["video width/height 0x720"]),
        (14, b"\x00\x00", ["video width/height 1280x0"]),
        (16, b"\x00\x00\xac\x44", ["video sample_rate/channels 44100/0"]),
        (20, b"\x01", ["video sample_rate/channels 0/1"]),
    ],
)
def test_video_track_out_of_range_fields_are_bad_values(
    offset: int, value: bytes, words: list[str]
) -> None:
    _expect(_patch(encode(VIDEO), offset, value), CloseCode.BAD_VALUE, "TRACK", *words)


@pytest.mark.parametrize(
    ("offset", "value", "words"),
    [
        (3, b"\x01", ["codec H264", "not an audio codec"]),
        (12, b"\x00\x10", ["audio width/height 16x0"]),
        (16, b"\x00\x00\x00\x00", ["audio sample_rate/channels 0/2"]),
        (20, b"\x00", ["audio sample_rate/channels 48000/0"]),
    ],
)
def test_audio_track_out_of_range_fields_are_bad_values(
    offset: int, value: bytes, words: list[str]
) -> None:
    _expect(_patch(encode(AUDIO), offset, value), CloseCode.BAD_VALUE, "TRACK", *words)


_U32 = struct.Struct(">I")


@pytest.mark.parametrize(
    ("track", "offset", "value", "words"),
    [
        (VIDEO, 4, _U32.pack(MAX_TIME_BASE_TERM + 1), ["time_base_num 2147483648", "2147483647"]),
        (AUDIO, 8, _U32.pack(2**32 - 1), ["time_base_den 4294967295", "1..2147483647"]),
        (VIDEO, 12, struct.pack(">H", MAX_DIMENSION_PX + 1), ["width/height 8193x720", "8192"]),
        (VIDEO, 14, struct.pack(">H", 2**16 - 1), ["width/height 1280x65535", "8192"]),
        (AUDIO, 16, _U32.pack(2**32 - 1), ["sample_rate 4294967295", "8000..96000 Hz"]),
        (AUDIO, 16, _U32.pack(MAX_SAMPLE_RATE_HZ + 1), ["sample_rate 96001", "8000..96000"]),
        (AUDIO, 16, _U32.pack(MIN_SAMPLE_RATE_HZ - 1), ["sample_rate 7999", "8000..96000"]),
        (AUDIO, 20, bytes([MAX_CHANNELS + 1]), ["channels 9", "1..8"]),
        (AUDIO, 20, b"\xff", ["channels 255", "1..8"]),
    ],
)
def test_track_values_beyond_what_the_media_stack_takes_are_bad_values(
    track: TrackConfig, offset: int, value: bytes, words: list[str]
) -> None:
    """A time base or sample rate above 2^31 - 1 raised OverflowError in the relay's decoder
    and recorder (issue 13, fault 4): the parser refuses it, naming the field and its bound."""
    _expect(_patch(encode(track), offset, value), CloseCode.BAD_VALUE, "TRACK", *words)
    with pytest.raises(ValueError):
        encode(decode_unchecked_track(_patch(encode(track), offset, value)))


def decode_unchecked_track(data: bytes) -> TrackConfig:
    """The TRACK these bytes spell, without the range checks (to feed encode)."""
    f = struct.unpack_from(">BBBBIIHHIBH", data)
    return TrackConfig(f[1], TrackKind(f[2]), Codec(f[3]), *f[4:10])


@pytest.mark.parametrize(
    "track",
    [
        replace(VIDEO, time_base_num=MAX_TIME_BASE_TERM, time_base_den=MAX_TIME_BASE_TERM),
        replace(VIDEO, width=MAX_DIMENSION_PX, height=MAX_DIMENSION_PX),
        replace(VIDEO, width=1, height=1),
        replace(AUDIO, sample_rate=MIN_SAMPLE_RATE_HZ, channels=1),
        replace(AUDIO, sample_rate=MAX_SAMPLE_RATE_HZ, channels=MAX_CHANNELS),
        replace(AUDIO, codec=Codec.OPUS, sample_rate=48000, channels=2),
    ],
)
def test_track_values_at_their_bounds_are_accepted(track: TrackConfig) -> None:
    assert decode(encode(track)) == track


def test_track_extradata_longer_than_the_bound_is_refused_before_reading_it() -> None:
    too_long = struct.pack(">H", MAX_EXTRADATA_BYTES + 1)
    _expect(
        _patch(encode(VIDEO), 21, too_long), CloseCode.BAD_VALUE, "extradata_len 16385", "16384"
    )


def test_media_reserved_flag_bits_are_bad_values() -> None:
    for flags in (0x04, 0x80, 0xFF):
        _expect(_patch(encode(MEDIA), 10, bytes([flags])), CloseCode.BAD_VALUE, "flags", "reserved")


def test_media_bad_track_empty_payload_and_reserved_seq() -> None:
    data = encode(MEDIA)
    _expect(_patch(data, 9, b"\x09"), CloseCode.BAD_VALUE, "MEDIA track_id 9")
    _expect(data[:MEDIA_HEADER_BYTES], CloseCode.BAD_VALUE, "MEDIA payload is empty")
    _expect(_patch(data, 1, b"\xff" * 8), CloseCode.BAD_VALUE, "MEDIA seq", "reserved")


def test_oversized_message_is_too_large() -> None:
    big = encode(Media(1, 0, False, 0, 0, 0, b"x" * MAX_PAYLOAD_BYTES))
    assert len(big) == MAX_MESSAGE_BYTES
    assert decode(big) is not None
    _expect(big + b"x", CloseCode.TOO_LARGE, "message length 4194305 exceeds 4194304")
    _expect(encode(MEDIA), CloseCode.TOO_LARGE, "exceeds 40", max_bytes=40)


@pytest.mark.parametrize(
    ("ranges", "words"),
    [
        (((9, 12),), ["range 0 start 9 must be >= next_seq 10"]),
        (((5, 7),), ["range 0 start 5"]),
        (((20, 30), (12, 14)), ["range 1 start 12 must be > range 0 end 30"]),
        (((12, 20), (15, 25)), ["range 1 start 15"]),
        (((12, 20), (20, 25)), ["range 1 start 20", "non-adjacent"]),
        (((12, 12),), ["range 0 is empty"]),
        (((14, 12),), ["range 0 is empty or reversed"]),
    ],
)
def test_ack_ranges_unsorted_overlapping_or_empty_are_bad_values(
    ranges: tuple[tuple[int, int], ...], words: list[str]
) -> None:
    header = struct.pack(">BQIIB", 5, 10, 0, 0, len(ranges))
    data = header + b"".join(struct.pack(">QQ", s, e) for s, e in ranges)
    _expect(data, CloseCode.BAD_VALUE, "ACK", *words)


def test_ack_first_range_may_start_at_next_seq_received_but_not_yet_kept() -> None:
    # v1 relaxation (spec 4.5): [next_seq, end) is "received, not yet in the archive"
    ack = Ack(next_seq=10, buffer_ms=0, arrival_kbps=0, sack_ranges=((10, 12), (14, 15)))
    assert decode(encode(ack)) == ack


def test_ack_with_too_many_ranges_is_refused() -> None:
    header = struct.pack(">BQIIB", 5, 0, 0, 0, MAX_SACK_RANGES + 1)
    _expect(header, CloseCode.BAD_VALUE, "ACK n_ranges 33 exceeds 32")


def test_bye_reason_bad_utf8_or_too_long() -> None:
    _expect(b"\x07\x02\xc3\x28", CloseCode.BAD_VALUE, "BYE reason is not valid UTF-8 at byte 0")
    _expect(b"\x07\x7c" + b"x" * 124, CloseCode.BAD_VALUE, "BYE reason_len 124 exceeds 123")


# ---------------------------------------------------------------------------------------------
# encode validates too


@pytest.mark.parametrize(
    ("msg", "words"),
    [
        (Hello(session_id=b"short"), ["session_id must be 16 bytes"]),
        (Hello(session_id=SESSION, acked_seq=-1), ["acked_seq -1 out of range"]),
        (Welcome(True, 2**64, 0), ["WELCOME next_seq"]),
        (Welcome(True, 0, -1), ["WELCOME buffer_ms -1"]),
        (Media(0, 0, False, 0, 0, 0, b""), ["payload is empty"]),
        (Media(0, 8, False, 0, 0, 0, b"x"), ["track_id 8"]),
        (Media(0, 0, False, 2**63, 0, 0, b"x"), ["MEDIA pts"]),
        (Media(0, 0, False, 0, 0, -1, b"x"), ["MEDIA capture_time_us"]),
        (Media(MAX_SEQ + 1, 0, False, 0, 0, 0, b"x"), ["reserved"]),
        (Media(0, 0, False, 0, 0, 0, b"x" * (MAX_PAYLOAD_BYTES + 1)), ["payload length"]),
        (Ack(3, 0, 0, ((2, 5),)), ["range 0 start 2"]),
        (Ack(3, 0, 0, tuple((10 * i + 5, 10 * i + 6) for i in range(33))), ["n_ranges 33"]),
        (Ack(3, 2**32, 0), ["ACK buffer_ms"]),
        (SenderStats(0, 0, -5), ["STATS target_kbps -5"]),
        (Bye("é" * 62), ["124 bytes"]),
        (TrackConfig(0, TrackKind.VIDEO, Codec.AAC, 1, 1, 1, 1, 0, 0), ["not a video codec"]),
        (TrackConfig(0, TrackKind.VIDEO, Codec.H264, 0, 1, 1, 1, 0, 0), ["time_base_num"]),
        (TrackConfig(9, TrackKind.VIDEO, Codec.H264, 1, 1, 1, 1, 0, 0), ["track_id 9"]),
        (TrackConfig(0, TrackKind.VIDEO, Codec.H264, 1, 1, 70000, 1, 0, 0), ["70000x1"]),
        (
            TrackConfig(0, TrackKind.VIDEO, Codec.H264, 1, 1, 1, 1, 0, 0, b"x" * 16385),
            ["extradata length 16385"],
        ),
        (TrackConfig(0, 5, Codec.H264, 1, 1, 1, 1, 0, 0), ["TRACK", "5"]),  # type: ignore[arg-type]
    ],
)
def test_encode_refuses_out_of_range_fields_with_value_error(
    msg: Message, words: list[str]
) -> None:
    with pytest.raises(ValueError) as info:
        encode(msg)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_protocol_error_carries_code_detail_and_a_close_reason_that_fits() -> None:
    err = ProtocolError(CloseCode.BAD_VALUE, "ü" * 100)
    assert err.code == CloseCode.BAD_VALUE == 4402
    assert err.detail == "ü" * 100
    assert "BAD_VALUE (4402)" in str(err)
    assert len(err.close_reason().encode("utf-8")) <= 123
    assert err.close_reason() == "ü" * 61


def test_close_codes_have_the_agreed_numbers() -> None:
    assert {c.name: int(c) for c in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "MALFORMED": 4400,
        "UNKNOWN_TYPE": 4401,
        "BAD_VALUE": 4402,
        "SESSION_EXPIRED": 4408,
        "PROTOCOL_ORDER": 4409,
        "REPLACED": 4410,
        "TOO_LARGE": 4413,
        "UNSUPPORTED_VERSION": 4426,
    }
    assert PROTOCOL_VERSION == 1
