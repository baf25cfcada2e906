"""The platform-side viewer: scoring (synthetic frames) and a real viewer on nginx-rtmp."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from benchmarks.platform_viewer import (
    LIVE_HOLD_MAX_S,
    PlatformViewer,
    ViewedFrame,
    read_frame_codes,
    score_viewing,
)
from encoder.framecode import FrameCode
from encoder.testpattern import TestPattern, ToneGenerator
from tests.support import NginxRtmp

FPS = 30
FRAME_S = 1 / FPS
T0 = 1_700_000_000.0  # a Unix time for synthetic frames
LATENCY_S = 0.1


def live(start: float, n: int, *, first: int = 0, session: int = 0, pts0: float = 0.0,
         latency_s: float = LATENCY_S) -> list[ViewedFrame]:
    """n fresh frames captured from `start` at FPS, arriving `latency_s` later."""
    out = []
    for i in range(n):
        capture = start + i * FRAME_S
        out.append(ViewedFrame(capture + latency_s, pts0 + i * FRAME_S, session,
                               FrameCode(first + i, round(capture * 1000))))
    return out


def retimed(frames: list[ViewedFrame], *, start: float, pts0: float,
            code: FrameCode | None = None) -> list[ViewedFrame]:
    """The frames re-stamped to arrive from `start` at FPS (pts from pts0), with `code`."""
    return [ViewedFrame(start + i * FRAME_S + LATENCY_S, pts0 + i * FRAME_S, f.session, code)
            for i, f in enumerate(frames)]


# -- score_viewing with synthetic frames ---------------------------------------------------


def test_continuous_live_has_no_interruption() -> None:
    frames = live(T0, 300)
    stats = score_viewing(frames, fps=FPS, start_wall=T0 + LATENCY_S,
                          end_wall=T0 + LATENCY_S + 10)
    assert stats.frames_live == 300
    assert stats.frames_frozen == stats.frames_slate == 0
    assert stats.sessions == 1
    assert stats.interruption_s == pytest.approx(0, abs=1e-6)
    assert stats.stall_s == 0
    assert stats.live_s == pytest.approx(10)


def test_two_seconds_of_slate_in_the_middle_count_as_interruption() -> None:
    before = live(T0, 120)
    slate = [ViewedFrame(T0 + LATENCY_S + (120 + i) * FRAME_S, (120 + i) * FRAME_S, 0, None)
             for i in range(60)]
    after = live(T0 + 6, 120, first=120, pts0=6.0)
    stats = score_viewing(before + slate + after, fps=FPS, start_wall=T0 + LATENCY_S,
                          end_wall=T0 + LATENCY_S + 10)
    assert stats.frames_slate == 60
    assert stats.frames_live == 240
    assert stats.interruption_s == pytest.approx(2.0, abs=1e-6)
    assert stats.slate_s == pytest.approx(2.0, abs=1e-6)
    assert stats.frozen_s == pytest.approx(0, abs=1e-6)
    assert stats.no_video_s == pytest.approx(0, abs=1e-6)
    seconds = stats.live_timeline
    assert len(seconds) == 10
    assert [(s.fresh, s.slate) for s in seconds[3:7]] == [(30, 0), (0, 30), (0, 30), (30, 0)]
    assert all(s.none == 0 for s in seconds)


def test_repeated_picture_counts_as_frozen_time() -> None:
    before = live(T0, 90)
    frozen = retimed(live(T0, 30), start=T0 + 3, pts0=3.0, code=before[-1].code)
    after = live(T0 + 4, 90, first=120, pts0=4.0)
    stats = score_viewing(before + frozen + after, fps=FPS, start_wall=T0 + LATENCY_S,
                          end_wall=T0 + LATENCY_S + 7)
    assert stats.frames_frozen == 30
    assert stats.frames_live == 180
    # frame 89 is live for its own 1/30 s; its 30 repeats are a 1 s freeze
    assert stats.interruption_s == pytest.approx(1.0, abs=1e-6)
    assert stats.frozen_s == pytest.approx(1.0, abs=1e-6)


def test_half_frame_rate_repeats_are_live_video_not_a_freeze() -> None:
    # the relay's 30 fps output of an encoder running at 15 fps: every picture twice
    fresh = live(T0, 300)
    frames = [ViewedFrame(f.arrival_wall, f.pts_s, f.session, fresh[i // 2 * 2].code)
              for i, f in enumerate(fresh)]
    assert 2 * FRAME_S <= LIVE_HOLD_MAX_S
    stats = score_viewing(frames, fps=FPS, start_wall=T0 + LATENCY_S,
                          end_wall=T0 + LATENCY_S + 10)
    assert stats.frames_live == 150
    assert stats.frames_frozen == 150
    assert stats.interruption_s == pytest.approx(0, abs=1e-6)


def test_gap_between_two_sessions_counts_and_sessions_are_counted() -> None:
    first = live(T0, 90)
    second = live(T0 + 6, 90, first=180, session=1)  # pts start again at 0
    stats = score_viewing(first + second, fps=FPS, start_wall=T0 + LATENCY_S,
                          end_wall=T0 + LATENCY_S + 9)
    assert stats.sessions == 2
    assert stats.interruption_s == pytest.approx(3.0, abs=1e-6)
    assert stats.no_video_s == pytest.approx(3.0, abs=1e-6)
    assert stats.frames_live == 180


def test_time_before_first_and_after_last_session_counts() -> None:
    frames = live(T0 + 2, 90)
    stats = score_viewing(frames, fps=FPS, start_wall=T0 + LATENCY_S,
                          end_wall=T0 + LATENCY_S + 6)
    assert stats.interruption_s == pytest.approx(3.0, abs=1e-6)  # 2 s before, 1 s after
    assert stats.no_video_s == pytest.approx(3.0, abs=1e-6)


def test_frames_later_than_the_player_buffer_stall_playback() -> None:
    # from frame 90 on, everything arrives 1.5 s late: 0.5 s more than the 1 s buffer
    frames = live(T0, 300)
    late = [ViewedFrame(f.arrival_wall + 1.5, f.pts_s, f.session, f.code) for f in frames[90:]]
    stats = score_viewing(frames[:90] + late, fps=FPS, start_wall=T0 + LATENCY_S,
                          end_wall=T0 + LATENCY_S + 10, player_buffer_s=1.0)
    assert stats.stall_s == pytest.approx(0.5, abs=1e-6)
    assert stats.interruption_s == pytest.approx(0.5, abs=1e-6)
    assert stats.frozen_s == pytest.approx(0.5, abs=1e-6)  # frame 89 stays on screen
    assert stats.frames_live == 300


def test_lateness_within_the_player_buffer_does_not_stall() -> None:
    frames = live(T0, 300)
    late = [ViewedFrame(f.arrival_wall + 0.8, f.pts_s, f.session, f.code) for f in frames[90:]]
    stats = score_viewing(frames[:90] + late, fps=FPS, start_wall=T0 + LATENCY_S,
                          end_wall=T0 + LATENCY_S + 10, player_buffer_s=1.0)
    assert stats.stall_s == 0
    assert stats.interruption_s == pytest.approx(0, abs=1e-6)


def test_latency_percentiles_over_first_appearances_only() -> None:
    latencies_ms = [100, 110, 120, 130, 140, 150, 160, 170, 180, 190]
    frames = []
    for i, lat in enumerate(latencies_ms):
        capture_ms = 1_700_000_000_000 + i * 100
        frames.append(ViewedFrame((capture_ms + lat) / 1000, i * 0.1, 0,
                                  FrameCode(i, capture_ms)))
    # a repeat (arriving very late) and a slate frame do not count
    frames.append(ViewedFrame(frames[-1].arrival_wall + 5, 1.0, 0, frames[-1].code))
    frames.append(ViewedFrame(frames[-1].arrival_wall + 0.1, 1.1, 0, None))
    stats = score_viewing(frames, fps=10, start_wall=T0, end_wall=T0 + 1)
    # linear interpolation between ranks: p50 at rank 4.5, p95 at rank 8.55 (0-based)
    assert stats.latency_ms_p50 == pytest.approx(145.0, abs=1e-3)
    assert stats.latency_ms_p95 == pytest.approx(185.5, abs=1e-3)


def test_no_frames_is_all_interruption_and_no_latency() -> None:
    stats = score_viewing([], fps=FPS, start_wall=T0, end_wall=T0 + 5)
    assert stats.interruption_s == pytest.approx(5.0)
    assert stats.no_video_s == pytest.approx(5.0)
    assert stats.sessions == 0
    assert stats.latency_ms_p50 is None and stats.latency_ms_p95 is None
    assert [s.none for s in stats.live_timeline] == [30] * 5


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"fps": 0, "start_wall": T0, "end_wall": T0 + 1}, "fps"),
    ({"fps": FPS, "start_wall": T0 + 1, "end_wall": T0}, "end_wall"),
    ({"fps": FPS, "start_wall": T0, "end_wall": T0 + 1, "player_buffer_s": -1},
     "player_buffer_s"),
])
def test_bad_scoring_arguments_are_named(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        score_viewing([], **kwargs)


# -- reading codes from files --------------------------------------------------------------


def test_read_frame_codes_reads_every_frame_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "coded.flv"
    pattern = TestPattern(320, 180, FPS)
    with av.open(str(path), "w", format="flv") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = 320, 180, "yuv420p"
        v.options = {"preset": "ultrafast"}
        for i in range(12):
            image = (pattern.video_frame(i, 1_700_000_000_000 + i) if i != 5
                     else np.full((180, 320, 3), 128, dtype=np.uint8))  # an uncoded picture
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            for p in v.encode(frame):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
    codes = read_frame_codes(path)
    assert [c.frame_number if c else None for c in codes] == [*range(5), None, *range(6, 12)]
    assert codes[3] == FrameCode(3, 1_700_000_000_003)


# -- a real viewer on nginx-rtmp -----------------------------------------------------------


PUSH_SIZE = (640, 360)
PUSH_GOP_S = 0.5  # keyframe interval of the test publisher


def push_coded(url: str, seconds: float, first: int) -> tuple[float, float, int]:
    """Publish `seconds` of coded test pattern (and a tone) to `url` in real time with PyAV.
    Returns (capture time of the first frame, capture time of the last, frames sent)."""
    width, height = PUSH_SIZE
    pattern = TestPattern(width, height, FPS)
    tone = ToneGenerator(48000, 2)
    samples_per_frame = 48000 // FPS
    first_capture = last_capture = 0.0
    n = round(seconds * FPS)
    with av.open(url, "w", format="flv") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        gop = str(round(FPS * PUSH_GOP_S))
        v.options = {"preset": "ultrafast", "tune": "zerolatency", "g": gop,
                     "keyint_min": gop, "sc_threshold": "0"}
        v.bit_rate = 600_000
        a = out.add_stream("aac", rate=48000)
        a.layout = "stereo"
        start = time.monotonic()
        for i in range(n):
            delay = start + i / FPS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            last_capture = time.time()
            if i == 0:
                first_capture = last_capture
            frame = av.VideoFrame.from_ndarray(
                pattern.video_frame(first + i, round(last_capture * 1000)), format="bgr24")
            frame.pts = i
            for p in v.encode(frame):
                out.mux(p)
            audio = av.AudioFrame.from_ndarray(tone.samples(samples_per_frame), format="fltp",
                                               layout="stereo")
            audio.sample_rate = 48000
            audio.pts = i * samples_per_frame
            for p in a.encode(audio):
                out.mux(p)
        for stream in (v, a):
            for p in stream.encode(None):
                out.mux(p)
    return first_capture, last_capture, n


def wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not condition():
        time.sleep(0.05)


@pytest.mark.integration
def test_viewer_on_nginx_counts_frames_latency_and_a_second_session(
        nginx_rtmp: NginxRtmp) -> None:
    url = f"{nginx_rtmp.url()}/viewkey"
    viewer = PlatformViewer(url)
    viewer.start()
    try:
        # let it connect and wait on the idle stream: nginx-rtmp then hands it the publisher's
        # first keyframe (a viewer connecting after the publisher waits for the next one)
        time.sleep(0.5)
        start, end1, sent1 = push_coded(url, 3.0, first=0)
        wait_for(lambda: len(viewer.frames) >= sent1, 3.0)
        first = score_viewing(viewer.frames, fps=FPS, start_wall=start, end_wall=end1)
        assert first.sessions == 1
        # the viewer waited before the publisher came, so it sees the session from frame 0
        assert sent1 - 3 <= first.frames_live <= sent1
        assert first.frames_slate == 0
        assert first.latency_ms_p50 is not None and first.latency_ms_p95 is not None
        assert 0 < first.latency_ms_p50 < 1000
        assert first.latency_ms_p95 < 2000
        assert first.interruption_s < 1.0  # start-up only

        gap_s = 2.5
        time.sleep(gap_s)  # nobody publishes
        start2, end2, sent2 = push_coded(url, 2.0, first=1000)
        wait_for(lambda: len(viewer.frames) >= sent1 + sent2, 3.0)
    finally:
        viewer.stop()
    frames = viewer.frames
    stats = score_viewing(frames, fps=FPS, start_wall=start, end_wall=end2)
    numbers = {f.code.frame_number for f in frames if f.code}
    assert numbers <= set(range(sent1)) | set(range(1000, 1000 + sent2))
    assert stats.sessions == 2
    assert [s.index for s in viewer.sessions] == [0, 1]
    assert {f.session for f in frames if f.code and f.code.frame_number >= 1000} == {1}
    # one connection waited through the gap and got the second publisher from its start
    assert viewer.connections == 1
    assert sent1 + sent2 - 6 <= stats.frames_live <= sent1 + sent2
    # the gap between sessions (publisher start-up included) shows as interruption
    real_gap_s = start2 - end1
    assert real_gap_s >= gap_s
    assert real_gap_s - 0.5 <= stats.interruption_s <= real_gap_s + 1.0
    assert stats.no_video_s >= real_gap_s - 0.5

    nginx_rtmp.stop()
    recordings = nginx_rtmp.recordings("viewkey")
    assert len(nginx_rtmp.publish_sessions("viewkey")) == 2
    recorded = [c.frame_number if c else None for c in read_frame_codes(recordings[0])]
    assert recorded == list(range(sent1))
