"""The output clock core (`relay.output.clock`): sessions, sources, frames, audio, the end."""

from __future__ import annotations

import numpy as np
import pytest

from relay.output.clock import (
    MAX_LIVE_AUDIO_S,
    EndReason,
    LiveAudio,
    OutputClock,
    OutputTick,
    audio_samples_for_frame,
)
from relay.output.source_selector import OutputSource

FPS = 30
RATE = 48000
FREEZE_S = 0.5
HOLD_S = 2.0


def make_clock(fps: int = FPS, rate: int = RATE, hold_s: float = HOLD_S) -> OutputClock:
    return OutputClock(fps=fps, audio_sample_rate=rate, freeze_s=FREEZE_S, hold_s=hold_s)


def run(clock: OutputClock, start_tick: int, ticks: int, live: bool,
        fps: int = FPS) -> list[OutputTick]:
    """`ticks` ticks from tick number `start_tick`, each with a new frame when `live`."""
    return [clock.tick((start_tick + i) / fps, live, 0) for i in range(ticks)]


def test_sessions_open_at_the_first_live_frame_not_before() -> None:
    clock = make_clock()
    before = run(clock, 0, 30, live=False)
    assert not any(t.open_sessions or t.on_air or t.encode for t in before)
    assert {t.source for t in before} == {OutputSource.SLATE}
    assert {t.status_source for t in before} == {"offline"}
    assert all(t.frame_index is None and t.audio_samples == 0 for t in before)

    first = clock.tick(30 / FPS, True, 0)
    assert first.open_sessions and first.on_air and first.source is OutputSource.LIVE
    assert first.frame_index == 0 and first.audio_samples == RATE // FPS
    assert first.status_source == "live" and not first.shows_slate
    after = run(clock, 31, 30, live=True)
    assert not any(t.open_sessions for t in after)
    assert [t.frame_index for t in after] == list(range(1, 31))


def test_go_on_air_opens_on_the_slate_at_once() -> None:
    clock = make_clock()
    clock.go_on_air()
    tick = clock.tick(0.0, False, 0)
    assert tick.open_sessions and tick.on_air and tick.encode
    assert tick.source is OutputSource.SLATE and tick.shows_slate
    assert tick.status_source == "slate"
    later = run(clock, 1, 10, live=False)
    assert not any(t.open_sessions for t in later) and all(t.encode for t in later)


def test_slate_before_any_live_frame_never_ends_the_sessions() -> None:
    clock = make_clock()
    clock.go_on_air()
    ticks = run(clock, 0, round(10 * HOLD_S * FPS), live=False)
    assert all(t.on_air for t in ticks) and not any(t.end_sessions for t in ticks)


def test_hold_expiry_ends_the_sessions_once_and_live_reopens_them() -> None:
    clock = make_clock()
    ticks = run(clock, 0, FPS, live=True)  # 1 s live
    outage = run(clock, FPS, 5 * FPS, live=False)  # 5 s without frames: > freeze_s + hold_s
    ended = [t for t in outage if t.end_sessions is not None]
    assert len(ended) == 1 and ended[0].end_sessions is EndReason.HOLD_EXPIRED
    assert ended[0].source is OutputSource.SLATE and not ended[0].on_air
    assert ended[0].slate_s >= HOLD_S and not ended[0].encode
    # the last frame was live at tick FPS - 1; slate from freeze_s later, ended hold_s after
    end_at_s = outage.index(ended[0]) / FPS + 1.0
    assert end_at_s == pytest.approx((FPS - 1) / FPS + FREEZE_S + HOLD_S, abs=1.5 / FPS)
    after = outage[outage.index(ended[0]) + 1:]
    assert after and not any(t.on_air or t.encode or t.open_sessions for t in after)

    back = run(clock, 6 * FPS, FPS, live=True)
    assert back[0].open_sessions and back[0].on_air and back[0].source is OutputSource.LIVE
    assert sum(t.open_sessions for t in ticks + outage + back) == 2
    # frame numbers run on across sessions
    encoded = [t.frame_index for t in ticks + outage + back if t.frame_index is not None]
    assert encoded == list(range(len(encoded)))
    assert clock.frames_out == len(encoded)


def test_freeze_then_slate_while_on_air() -> None:
    clock = make_clock(hold_s=60.0)
    run(clock, 0, FPS, live=True)
    outage = run(clock, FPS, 2 * FPS, live=False)
    sources = [t.source for t in outage]
    assert all(t.encode for t in outage)
    first_freeze = sources.index(OutputSource.FREEZE)
    first_slate = sources.index(OutputSource.SLATE)
    assert 0 < first_freeze < first_slate
    assert set(sources[:first_freeze]) == {OutputSource.LIVE}  # the last frame, still recent
    assert set(sources[first_freeze:first_slate]) == {OutputSource.FREEZE}
    assert set(sources[first_slate:]) == {OutputSource.SLATE}
    assert first_slate / FPS == pytest.approx(FREEZE_S - 1 / FPS, abs=1.5 / FPS)
    by_source = clock.frames_by_source
    assert by_source["freeze"] == first_slate - first_freeze
    assert by_source["slate"] == len(sources) - first_slate
    assert sum(by_source.values()) == clock.frames_out == 3 * FPS


def test_end_finishes_only_once_the_buffer_is_drained() -> None:
    clock = make_clock()
    run(clock, 0, 5, live=True)
    assert not clock.tick(5 / FPS, True, 0).finished  # no end asked
    clock.end()
    assert clock.ending
    for i, buffered in enumerate((40, 12, 1)):
        tick = clock.tick((6 + i) / FPS, True, buffered)
        assert not tick.finished and tick.encode
    tick = clock.tick(9 / FPS, True, 0)
    assert tick.finished and tick.encode  # the last frame goes out, then the flush


def test_a_new_timeline_cancels_a_pending_end() -> None:
    clock = make_clock()
    clock.end()
    clock.new_timeline()
    assert not clock.tick(0.0, False, 0).finished and not clock.ending


@pytest.mark.parametrize(("fps", "rate"), [(30, 48000), (25, 48000), (30, 44100), (24, 44100)])
def test_audio_per_frame_sums_to_the_sample_rate_per_second_of_frames(fps: int,
                                                                     rate: int) -> None:
    clock = make_clock(fps=fps, rate=rate)
    seconds = 100
    ticks = run(clock, 0, seconds * fps, live=True, fps=fps)
    samples = [t.audio_samples for t in ticks]
    assert sum(samples) == seconds * rate
    prefix = np.cumsum(samples)
    for k in range(1, len(samples) + 1, 7):
        assert prefix[k - 1] == round(k * rate / fps)
    assert set(samples) <= {rate // fps, rate // fps + 1}
    assert samples[:3] == [audio_samples_for_frame(i, rate, fps) for i in range(3)]


def test_live_audio_beyond_the_cap_is_clipped_from_the_oldest_end() -> None:
    audio = LiveAudio(channels=2, sample_rate=RATE)
    total = 2 * RATE
    ramp = np.arange(total, dtype=np.float32)
    audio.add(np.stack([ramp, -ramp]))
    n = RATE // FPS
    out = audio.take(n)
    kept = int(MAX_LIVE_AUDIO_S * RATE) + n
    assert out.shape == (2, n) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], ramp[total - kept:total - kept + n])
    np.testing.assert_array_equal(out[1], -out[0])
    assert audio.samples_queued == kept - n
    nxt = audio.take(n)  # within the cap now: continues where the last take ended
    np.testing.assert_array_equal(nxt[0], ramp[total - kept + n:total - kept + 2 * n])


def test_missing_live_audio_is_padded_with_silence() -> None:
    audio = LiveAudio(channels=2, sample_rate=RATE)
    assert not audio.take(1600).any() and audio.take(1600).shape == (2, 1600)
    audio.add(np.ones((2, 100), dtype=np.float32))
    out = audio.take(1600)
    assert out.shape == (2, 1600) and out.dtype == np.float32
    assert out[:, :100].all() and not out[:, 100:].any()
    assert audio.samples_queued == 0


def test_cleared_live_audio_is_gone() -> None:
    audio = LiveAudio(channels=2, sample_rate=RATE)
    audio.add(np.ones((2, 500), dtype=np.float32))
    audio.clear()
    assert audio.samples_queued == 0 and not audio.take(100).any()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="fps"):
        OutputClock(fps=0, audio_sample_rate=RATE, freeze_s=FREEZE_S, hold_s=HOLD_S)
    with pytest.raises(ValueError, match="audio_sample_rate"):
        OutputClock(fps=FPS, audio_sample_rate=0, freeze_s=FREEZE_S, hold_s=HOLD_S)
    with pytest.raises(ValueError, match="hold_s"):
        OutputClock(fps=FPS, audio_sample_rate=RATE, freeze_s=FREEZE_S, hold_s=0)
