"""The local full-quality recording (``--record``): a fragmented MP4 with our H.264 and the
uplink's AAC packets, checked with ffprobe/ffmpeg and by reading the frame codes back."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from encoder.av_encoder import AUDIO_TRACK_ID, EncodedUnit, MediaEncoder
from encoder.framecode import read_frame_code
from encoder.local_record import LocalRecorder, RecordSummary
from encoder.testpattern import TestPattern, ToneGenerator
from tests.support import decode_errors, probe

REPO_ROOT = Path(__file__).resolve().parents[2]
WIDTH, HEIGHT, FPS = 320, 180, 15
SAMPLE_RATE = 48000
RECORD_KBPS = 400
EPOCH_MS = 1_763_820_000_000
AAC_PRIMING_S = 1024 / SAMPLE_RATE  # the AAC encoder's first packet starts this much early


def uplink_encoder() -> MediaEncoder:
    """The uplink's encoder; only its AAC packets and AudioSpecificConfig are used here."""
    return MediaEncoder(WIDTH, HEIGHT, FPS, 200, 2.0, SAMPLE_RATE, 64)


def audio_extradata(encoder: MediaEncoder) -> bytes:
    return next(t.extradata for t in encoder.tracks() if t.track_id == AUDIO_TRACK_ID)


def audio_for_frame(encoder: MediaEncoder, tone: ToneGenerator, n: int) -> list[EncodedUnit]:
    """AAC packets for frame n's share of the tone, as the capture loop produces them."""
    due = round((n + 1) * SAMPLE_RATE / FPS) - round(n * SAMPLE_RATE / FPS)
    return encoder.encode_audio(tone.samples(due))


def record(path: Path, indices: list[int], queue_s: float = 10.0) -> RecordSummary:
    """Feed test-pattern frames with these numbers (and tone audio for every frame slot up to
    the last one) as fast as possible; the queue is large enough that nothing is dropped."""
    encoder = uplink_encoder()
    rec = LocalRecorder(path, WIDTH, HEIGHT, FPS, RECORD_KBPS, "veryfast",
                        audio_extradata(encoder), SAMPLE_RATE, queue_s=queue_s)
    pattern, tone = TestPattern(WIDTH, HEIGHT, FPS), ToneGenerator(SAMPLE_RATE)
    wanted = set(indices)
    for n in range(max(indices) + 1):
        if n in wanted:
            rec.video(pattern.video_frame(n, EPOCH_MS + n * 1000 // FPS), n)
        for unit in audio_for_frame(encoder, tone, n):
            rec.audio(unit)
    return rec.close()


def decoded_frames(path: Path) -> list[tuple[float, int | None]]:
    """(presentation time in s, frame number read from the picture) of every video frame."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            code = read_frame_code(frame.to_ndarray(format="bgr24"))
            assert frame.pts is not None and frame.time_base is not None
            t = float(frame.pts * frame.time_base)
            out.append((t, code.frame_number if code else None))
    return out


def video_kbps(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        size = sum(p.size for p in container.demux(stream) if p.size)
        duration_s = float((stream.duration or 0) * (stream.time_base or Fraction(0)))
    return size * 8 / 1000 / duration_s


def test_records_h264_and_copied_aac_to_a_playable_mp4(tmp_path: Path, ffmpeg_tools: None) -> None:
    path = tmp_path / "farm.mp4"
    frames = 3 * FPS
    summary = record(path, list(range(frames)))

    assert summary.frames_written == frames
    assert summary.frames_dropped == 0
    assert summary.audio_packets > 0 and summary.audio_dropped == 0
    assert summary.error is None
    assert summary.path == path and summary.bytes == path.stat().st_size > 0

    rep = probe(path)
    assert rep.video is not None and rep.video.codec == "h264"
    assert rep.audio is not None and rep.audio.codec == "aac"
    assert rep.audio.packets == summary.audio_packets
    assert (rep.width, rep.height, rep.sample_rate) == (WIDTH, HEIGHT, SAMPLE_RATE)
    assert rep.duration_s == pytest.approx(3.0, abs=0.15)
    # frame 0 and audio sample 0 are at the same time (the first AAC packet is priming)
    assert rep.video.start_s == pytest.approx(0.0, abs=1e-3)
    assert rep.audio.start_s == pytest.approx(-AAC_PRIMING_S, abs=1e-3)
    assert decode_errors(path) == ""

    with av.open(str(path)) as container:  # the uplink's AudioSpecificConfig, as it was
        assert container.streams.audio[0].codec_context.extradata == audio_extradata(
            uplink_encoder())
    assert [number for _, number in decoded_frames(path)] == list(range(frames))
    assert 0.5 * RECORD_KBPS <= video_kbps(path) <= 1.5 * RECORD_KBPS


def test_missing_frame_numbers_show_as_gaps_not_time_shifts(
    tmp_path: Path, ffmpeg_tools: None
) -> None:
    path = tmp_path / "gaps.mp4"
    indices = [n for n in range(3 * FPS) if not 10 <= n < 20]
    summary = record(path, indices)
    assert summary.frames_written == len(indices)
    frames = decoded_frames(path)
    assert [number for _, number in frames] == indices
    for (t, _), index in zip(frames, indices, strict=True):
        assert t == pytest.approx(index / FPS, abs=1e-3)
    assert decode_errors(path) == ""


def test_close_twice_returns_the_same_summary_and_later_frames_are_ignored(
    tmp_path: Path, ffmpeg_tools: None
) -> None:
    encoder = uplink_encoder()
    rec = LocalRecorder(tmp_path / "twice.mp4", WIDTH, HEIGHT, FPS, RECORD_KBPS, "veryfast",
                        audio_extradata(encoder), SAMPLE_RATE)
    picture = TestPattern(WIDTH, HEIGHT, FPS).video_frame(0, EPOCH_MS)
    rec.video(picture, 0)
    first = rec.close()
    rec.video(picture, 1)
    assert rec.close() is first
    assert first.frames_written == 1 and first.frames_dropped == 0


def test_flooded_recorder_drops_and_counts_frames_without_blocking(
    tmp_path: Path, ffmpeg_tools: None, caplog: pytest.LogCaptureFixture
) -> None:
    width, height, fps, calls = 1280, 720, 15, 200
    encoder = MediaEncoder(width, height, fps, 200, 2.0, SAMPLE_RATE, 64)
    rec = LocalRecorder(tmp_path / "flood.mp4", width, height, fps, 3000, "veryfast",
                        audio_extradata(encoder), SAMPLE_RATE, queue_s=4 / fps)
    assert rec.max_queued_frames == 4
    picture: npt.NDArray[np.uint8] = TestPattern(width, height, fps).video_frame(0, EPOCH_MS)
    slowest_s = 0.0
    caplog.set_level(logging.INFO, logger="encoder.local_record")
    started = time.perf_counter()
    for n in range(calls):
        t0 = time.perf_counter()
        rec.video(picture, n)
        slowest_s = max(slowest_s, time.perf_counter() - t0)
    feeding_s = time.perf_counter() - started
    dropped_while_feeding = rec.frames_dropped
    summary = rec.close()

    # a blocking put would wait for ~196 encodes of a 720p frame (seconds)
    assert feeding_s < 0.5, feeding_s
    assert slowest_s < 0.1, slowest_s
    assert dropped_while_feeding > 0
    assert summary.frames_dropped == dropped_while_feeding
    assert summary.frames_written + summary.frames_dropped == calls
    assert summary.frames_written >= rec.max_queued_frames
    warnings = [r for r in caplog.records if "falling behind" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert decode_errors(tmp_path / "flood.mp4") == ""


# Records 5 s (fragments at 0, 2 and 4 s), waits until the keyframe at 4 s is muxed (which
# cuts the second fragment), then dies without close(): no trailer, no last fragment.
_CRASH_SCRIPT = """
import os, signal, sys, time
from pathlib import Path
from tests.integration.test_local_record import FPS, audio_for_frame, uplink_encoder
from tests.integration.test_local_record import audio_extradata
from tests.integration.test_local_record import EPOCH_MS, HEIGHT, SAMPLE_RATE, WIDTH
from encoder.local_record import LocalRecorder
from encoder.testpattern import TestPattern, ToneGenerator

encoder = uplink_encoder()
rec = LocalRecorder(Path(sys.argv[1]), WIDTH, HEIGHT, FPS, 400, "veryfast",
                    audio_extradata(encoder), SAMPLE_RATE, queue_s=10.0)
pattern, tone = TestPattern(WIDTH, HEIGHT, FPS), ToneGenerator(SAMPLE_RATE)
for n in range(5 * FPS):
    rec.video(pattern.video_frame(n, EPOCH_MS + n * 1000 // FPS), n)
    for unit in audio_for_frame(encoder, tone, n):
        rec.audio(unit)
deadline = time.monotonic() + 10
while rec.frames_written <= 4 * FPS and time.monotonic() < deadline:
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_encoder_leaves_a_playable_file_up_to_the_last_fragment(
    tmp_path: Path, ffmpeg_tools: None
) -> None:
    path = tmp_path / "crash.mp4"
    proc = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT, str(path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    rep = probe(path)
    assert rep.video is not None and rep.audio is not None and rep.audio.packets > 0
    assert decode_errors(path) == ""
    numbers = [number for _, number in decoded_frames(path)]
    gop = 2 * FPS  # RECORD_KEYFRAME_INTERVAL_S: whole fragments survive
    assert numbers == list(range(len(numbers)))
    assert len(numbers) == 2 * gop


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("missing/rec.mp4", OSError, "does not exist"),
        ("rec.mkv", ValueError, "must end in .mp4"),
        ("rec", ValueError, "must end in .mp4"),
        ("adir.mp4", ValueError, "is a directory"),
    ],
)
def test_bad_paths_are_refused(
    tmp_path: Path, name: str, error: type[Exception], message: str
) -> None:
    (tmp_path / "adir.mp4").mkdir()
    with pytest.raises(error, match=message):
        LocalRecorder(tmp_path / name, WIDTH, HEIGHT, FPS, RECORD_KBPS, "veryfast",
                      b"\x11\x88", SAMPLE_RATE)
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may write into a read-only directory")
def test_read_only_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OSError, match="not writable"):
            LocalRecorder(folder / "rec.mp4", WIDTH, HEIGHT, FPS, RECORD_KBPS, "veryfast",
                          b"\x11\x88", SAMPLE_RATE)
    finally:
        folder.chmod(0o700)


def test_directory_without_write_permission_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as above, also when the tests run as root (for whom every directory is writable)
    monkeypatch.setattr("encoder.local_record.os.access", lambda *args, **kwargs: False)
    with pytest.raises(OSError, match="is not writable"):
        LocalRecorder(tmp_path / "rec.mp4", WIDTH, HEIGHT, FPS, RECORD_KBPS, "veryfast",
                      b"\x11\x88", SAMPLE_RATE)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_file_that_cannot_be_created_is_refused_from_the_constructor() -> None:
    # the directory check passes (even for root), creating the file fails on the thread
    with pytest.raises(OSError, match="cannot (create|write) the local recording"):
        LocalRecorder(Path("/proc/steadycast-record.mp4"), WIDTH, HEIGHT, FPS, RECORD_KBPS,
                      "veryfast", b"\x11\x88", SAMPLE_RATE)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"width": 321}, "even"),
        ({"fps": 0}, "fps"),
        ({"kbps": 0}, "kbps"),
        ({"preset": "quick"}, "not an x264 preset"),
        ({"audio_extradata": b""}, "AudioSpecificConfig"),
        ({"audio_extradata": bytes.fromhex("1210")}, "says 44100 Hz"),  # not 48 kHz
        ({"queue_s": 0.0}, "queue_s"),
    ],
)
def test_bad_arguments_are_refused(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {
        "path": tmp_path / "rec.mp4", "width": WIDTH, "height": HEIGHT, "fps": FPS,
        "kbps": RECORD_KBPS, "preset": "veryfast", "audio_extradata": b"\x11\x88",
        "sample_rate": SAMPLE_RATE,
    }
    args.update(overrides)
    with pytest.raises(ValueError, match=message):
        LocalRecorder(**args)  # type: ignore[arg-type]
    assert not (tmp_path / "rec.mp4").exists()
