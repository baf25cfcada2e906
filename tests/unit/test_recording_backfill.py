"""The relay's archive stays complete and in seq order when backfill arrives after the live edge.

`SeqReorder` is driven directly; the real `Recorder` is fed units of a real H.264 + AAC encode
in live-first order, and the MPEG-TS file it writes is decoded to read the frame numbers back.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import pytest

from encoder.av_encoder import AUDIO_TRACK_ID, VIDEO_TRACK_ID, EncodedUnit, MediaEncoder
from encoder.framecode import read_frame_code_gray
from encoder.testpattern import TestPattern, ToneGenerator
from relay.archive.recording import Recorder
from relay.archive.reorder import HELD_HEADER, SeqReorder, pack_held, unpack_held
from uplink import (
    Hello,
    Media,
    MediaReceived,
    Spool,
    TrackConfig,
    UplinkReceiver,
    encode,
)

SESSION = b"R" * 16
EPOCH_US = 1_763_820_000_000_000
WIDTH, HEIGHT, FPS = 320, 180, 30
SAMPLE_RATE = 48000


def unit(seq: int, size: int = 100, backfill: bool = False) -> Media:
    payload = (seq.to_bytes(4, "big") * (size // 4 + 1))[:size]
    return Media(seq, 0, seq % 30 == 0, seq, seq, EPOCH_US + seq, payload, backfill)


def seqs(units: list[Media]) -> list[int]:
    return [m.seq for m in units]


# ---------------------------------------------------------------------------------------------
# SeqReorder


def test_in_order_units_pass_straight_through() -> None:
    reorder = SeqReorder()
    for seq in range(5, 15):  # a session may start at any seq
        assert seqs(reorder.push(unit(seq))) == [seq]
    assert reorder.held == 0 and reorder.next_seq == 15 and reorder.take_gaps() == []


def test_units_above_a_gap_wait_until_backfill_fills_it() -> None:
    reorder = SeqReorder()
    out = [m for seq in range(10) for m in reorder.push(unit(seq))]
    for seq in range(30, 40):  # live edge after the jump
        assert reorder.push(unit(seq)) == []
    assert reorder.held == 10 and reorder.missing() == [(10, 30)]
    for seq in range(10, 29):  # backfill
        out += reorder.push(unit(seq, backfill=True))
    assert reorder.held == 10
    out += reorder.push(unit(29, backfill=True))
    assert seqs(out) == list(range(40))
    assert [m.payload for m in out] == [unit(seq).payload for seq in range(40)]
    assert reorder.held == 0 and reorder.next_seq == 40 and reorder.take_gaps() == []


def test_first_unit_above_the_receivers_next_seq_waits_for_what_is_below() -> None:
    reorder = SeqReorder()
    assert reorder.push(unit(50), received_below=20) == []  # live first, 20..49 still to come
    out = [m for seq in range(20, 50) for m in reorder.push(unit(seq), received_below=seq + 1)]
    assert seqs(out) == list(range(20, 51))


def test_gap_never_filled_is_released_by_flush_and_reported() -> None:
    reorder = SeqReorder()
    out = [m for seq in (0, 1, 2, 5, 6, 9) for m in reorder.push(unit(seq))]
    assert seqs(out) == [0, 1, 2]
    out = reorder.flush()
    assert seqs(out) == [5, 6, 9]
    assert reorder.take_gaps() == [(3, 5), (7, 9)]
    assert reorder.take_gaps() == []
    assert reorder.next_seq is None and reorder.held == 0
    assert seqs(reorder.push(unit(100))) == [100]  # the next session starts where it starts


def test_seqs_the_receiver_gave_up_are_skipped_at_once() -> None:
    reorder = SeqReorder()
    reorder.push(unit(0), received_below=1)
    assert reorder.push(unit(10), received_below=1) == []
    # the sender resumed with acked_seq 8: the receiver will never see 1..7
    out = reorder.push(unit(8), received_below=9)
    assert seqs(out) == [8]
    assert reorder.take_gaps() == [(1, 8)]
    assert seqs(reorder.push(unit(9), received_below=11)) == [9, 10]


def test_late_or_repeated_units_are_refused() -> None:
    reorder = SeqReorder()
    reorder.push(unit(0))
    reorder.push(unit(5))
    with pytest.raises(ValueError, match="seq 5 arrived twice"):
        reorder.push(unit(5))
    with pytest.raises(ValueError, match="moved past it"):
        reorder.push(unit(0))


def test_held_units_beyond_the_memory_limit_spill_to_disk(tmp_path: Path) -> None:
    spool = Spool(memory_limit_bytes=10_000, directory=tmp_path)
    reorder = SeqReorder(spool)
    size = 1000 - HELD_HEADER.size  # a held unit is its header and its payload: 1000 bytes
    reorder.push(unit(0, size))
    for seq in range(100, 200):
        assert reorder.push(unit(seq, size)) == []
    assert spool.memory_bytes <= 10_000 and spool.disk_bytes == 90_000
    out = [m for seq in range(1, 100) for m in reorder.push(unit(seq, size, backfill=True))]
    assert seqs(out) == list(range(1, 200))
    assert [m.payload for m in out] == [unit(seq, size).payload for seq in range(1, 200)]
    assert [m.backfill for m in out] == [True] * 99 + [False] * 100
    assert len(spool) == 0 and spool.disk_file_bytes == 0
    reorder.close()


def test_full_spool_gives_up_the_lowest_gap(tmp_path: Path) -> None:
    reorder = SeqReorder(Spool(memory_limit_bytes=1000, disk_limit_bytes=1000, directory=tmp_path))
    size = 100 - HELD_HEADER.size  # 100 bytes held a unit
    reorder.push(unit(0, size))
    out = [m for seq in range(10, 30) for m in reorder.push(unit(seq, size))]
    assert out == [] and reorder.held == 20  # 2000 bytes: memory and disk are full
    out = reorder.push(unit(40, size))  # no room to wait for 1..9 any longer
    assert seqs(out) == list(range(10, 30))
    assert reorder.take_gaps() == [(1, 10)]
    assert reorder.held == 1 and reorder.missing() == [(30, 40)]
    reorder.close()


# ---------------------------------------------------------------------------------------------
# the real Recorder, with a real encode


def encode_units(frames: int, audio: bool) -> tuple[list[TrackConfig], list[EncodedUnit]]:
    encoder = MediaEncoder(WIDTH, HEIGHT, FPS, 300, 1.0, SAMPLE_RATE, 64, "ultrafast",
                           epoch_us=EPOCH_US)
    pattern = TestPattern(WIDTH, HEIGHT, FPS)
    tone = ToneGenerator(SAMPLE_RATE)
    units: list[EncodedUnit] = []
    audio_sent = 0
    for n in range(frames):
        capture_us = EPOCH_US + round(n * 1_000_000 / FPS)
        units += encoder.encode_video(pattern.video_frame(n, capture_us // 1000), n, capture_us)
        if audio:
            audio_due = round((n + 1) * SAMPLE_RATE / FPS)
            units += encoder.encode_audio(tone.samples(audio_due - audio_sent))
            audio_sent = audio_due
    units += encoder.flush()
    tracks = encoder.tracks() if audio else encoder.tracks()[:1]
    return tracks, units


def as_media(units: list[EncodedUnit]) -> list[Media]:
    return [Media(seq, u.track_id, u.keyframe, u.pts, u.dts, u.capture_time_us, u.payload)
            for seq, u in enumerate(units)]


def video_keyframe_seqs(media: list[Media]) -> list[int]:
    return [m.seq for m in media if m.track_id == VIDEO_TRACK_ID and m.keyframe]


def live_first(media: list[Media], jump_at: int, outage_from: int) -> list[Media]:
    """What a relay receives after `jump_to_live(jump_at)` following an outage that began at
    `outage_from`: everything before the outage, the live edge, then the rest as backfill."""
    return (
        media[:outage_from]
        + media[jump_at:]
        + [replace(m, backfill=True) for m in media[outage_from:jump_at]]
    )


def frame_numbers(path: Path) -> list[int | None]:
    out: list[int | None] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            code = read_frame_code_gray(frame.to_ndarray(format="gray"))
            out.append(code.frame_number if code else None)
    return out


def audio_dts(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        return [p.dts for p in container.demux(audio=0) if p.dts is not None]


def record(tmp_path: Path, tracks: list[TrackConfig], arrivals: list[Media],
           through_receiver: bool, **limits: int) -> Recorder:
    """Feed `arrivals` to a real Recorder as the relay does, then close it."""
    recorder = Recorder("farm1", tmp_path, **limits)
    recorder.new_session(SESSION)
    for t in tracks:
        recorder.track(t, changed=True)
    if through_receiver:
        receiver = UplinkReceiver(buffer_ms=3000)
        receiver.connection_made(0.0)
        receiver.receive(encode(Hello(SESSION)), 0.0)
        for t in tracks:
            receiver.receive(encode(t), 0.0)
        for m in arrivals:
            for ev in receiver.receive(encode(m), 0.0):
                assert isinstance(ev, MediaReceived)
                recorder.media(ev.media, received_below=receiver.next_seq)
    else:
        for m in arrivals:
            recorder.media(m)
    recorder.end_session()  # the sender's BYE: what is held above a gap is written
    recorder.close()
    return recorder


def test_recorder_writes_live_first_arrivals_in_seq_order(tmp_path: Path) -> None:
    tracks, units = encode_units(200, audio=False)
    media = as_media(units)
    assert len(media) == 200 and 120 in video_keyframe_seqs(media)
    arrivals = live_first(media, jump_at=120, outage_from=50)  # 0..49, 120..199, 50..119
    recorder = record(tmp_path, tracks, arrivals, through_receiver=False)
    assert recorder.write_errors == 0 and recorder.seqs_skipped == 0
    assert recorder.units_written == 200
    [path] = recorder.files
    assert frame_numbers(path) == list(range(200))


def test_recorder_with_audio_through_the_receiver_spills_and_stays_in_order(
    tmp_path: Path,
) -> None:
    tracks, units = encode_units(150, audio=True)
    media = as_media(units)
    video = [m for m in media if m.track_id == VIDEO_TRACK_ID]
    audio = [m for m in media if m.track_id == AUDIO_TRACK_ID]
    assert len(video) == 150 and len(audio) > 200
    jump_at = video_keyframe_seqs(media)[-1]  # the newest keyframe, 4 s in
    outage_from = video_keyframe_seqs(media)[1] - 7  # the outage starts mid-GOP
    arrivals = live_first(media, jump_at, outage_from)
    recorder = record(tmp_path, tracks, arrivals, through_receiver=True,
                      reorder_memory_limit_bytes=20_000)
    assert recorder._reorder.spool.spilled_total > 0  # the held live edge went to disk
    assert recorder.write_errors == 0 and recorder.seqs_skipped == 0
    assert recorder.units_written == len(media)
    [path] = recorder.files
    assert frame_numbers(path) == list(range(150))
    written_audio = audio_dts(path)
    assert len(written_audio) == len(audio)
    assert written_audio == sorted(written_audio) and len(set(written_audio)) == len(audio)
    assert [p.name for p in (tmp_path / "farm1").iterdir()] == [path.name]  # no spill file left


def test_recorder_writes_what_it_holds_at_session_end_and_logs_the_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracks, units = encode_units(90, audio=False)
    media = as_media(units)
    arrivals = media[:30] + media[60:]  # the backfill of 30..59 never comes (sender gave up)
    with caplog.at_level("WARNING", logger="relay.archive.recording"):
        recorder = record(tmp_path, tracks, arrivals, through_receiver=True)
    assert recorder.write_errors == 0 and recorder.seqs_skipped == 30
    assert "seqs 30..59 never arrived" in caplog.text
    [path] = recorder.files
    assert frame_numbers(path) == list(range(30)) + list(range(60, 90))


@pytest.mark.parametrize("media", [
    Media(7, 0, True, 0, 0, 0, b"", False),
    Media(2**64 - 1, 255, False, -(2**63), 2**63 - 1, 2**64 - 1, b"\x00" * 300, True),
    Media(12, 1, True, -5, -7, EPOCH_US, b"abc", True),
])
def test_a_held_unit_comes_back_exactly_as_it_went_in(media: Media) -> None:
    assert unpack_held(media.seq, pack_held(media)) == media
