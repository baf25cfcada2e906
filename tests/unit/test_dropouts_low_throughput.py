"""The low-throughput detector (monitor/dropout.py), with times computed by hand.

The feeds use a media payload every 0.25 s (exact in binary floating point): 31 250 bytes
is 1000 kbit/s, 6 250 bytes 200 kbit/s. The rate window is 2 s, so it holds 8 payloads;
with a 1000 kbit/s reference and share 0.5 the line is 500 kbit/s = 125 000 bytes a
window.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.dropout import (
    SENDER_BACKLOG_MIN_MS,
    LowThroughputCause,
    LowThroughputDetector,
    LowThroughputEnded,
    LowThroughputEvent,
    LowThroughputStarted,
)

STEP_S = 0.25
HIGH_BYTES = 31_250  # 1000 kbit/s at one payload every 0.25 s
LOW_BYTES = 6_250  # 200 kbit/s


def feed(d: LowThroughputDetector, start_s: float, end_s: float,
         nbytes: int) -> list[tuple[float, LowThroughputEvent]]:
    """A payload at every step in [start_s, end_s), each followed by a poll."""
    out: list[tuple[float, LowThroughputEvent]] = []
    t = start_s
    while t < end_s:
        d.on_media(t, nbytes)
        out += [(t, ev) for ev in d.poll(t)]
        t += STEP_S
    return out


def test_episode_below_half_the_target_starts_after_5_s_and_ends_after_2_s_above() -> None:
    d = LowThroughputDetector()  # share 0.5, 5 s below, 2 s above, 2 s window
    d.on_sender_stats(target_kbps=1000)  # no backlog reported: judged on the rate alone
    events = feed(d, 0.0, 10.0, HIGH_BYTES)
    assert events == []
    # from 10.0 each window holds n low payloads: 250 000 - 25 000 n bytes, below the line
    # (125 000) from n = 6, the payload at 11.25; reported 5 s later
    events = feed(d, 10.0, 30.0, LOW_BYTES)
    assert [t for t, _ in events] == [16.25]
    started = events[0][1]
    assert isinstance(started, LowThroughputStarted)
    assert started.start == 11.25
    assert started.cause == LowThroughputCause.BELOW_TARGET
    assert started.rate_kbps == pytest.approx(200.0)
    assert started.reference_kbps == 1000.0
    assert d.in_episode and d.current_start == 11.25
    # from 30.0, m high payloads: 50 000 + 25 000 m bytes, at the line from m = 3 (30.5);
    # the episode ends there, reported 2 s later
    events = feed(d, 30.0, 40.0, HIGH_BYTES)
    assert events == [(32.5, LowThroughputEnded(11.25, 30.5, LowThroughputCause.BELOW_TARGET))]
    ended = events[0][1]
    assert isinstance(ended, LowThroughputEnded) and ended.duration_s == 19.25
    assert d.count == 1 and not d.in_episode


def test_a_dip_shorter_than_min_s_is_no_episode() -> None:
    d = LowThroughputDetector()
    d.on_sender_stats(target_kbps=1000)
    feed(d, 0.0, 10.0, HIGH_BYTES)
    # below from 11.25 to 14.25 (3 s < 5 s)
    assert feed(d, 10.0, 14.0, LOW_BYTES) + feed(d, 14.0, 30.0, HIGH_BYTES) == []
    assert d.count == 0


def test_without_stats_the_reference_is_the_slow_average_of_the_rate() -> None:
    d = LowThroughputDetector()
    assert feed(d, 0.0, 60.0, HIGH_BYTES) == []
    assert d.reference_kbps == pytest.approx(1000.0)
    # the average follows the rate down only a little: five polls at 900..500 kbit/s, each
    # moving it (1 - e^(-0.25/30)) = 0.83 % of the way: 1000 - 0.0083 × 1500 ≈ 987.7, so
    # the line (~494) is crossed at the same payload as with a 1000 kbit/s target
    events = feed(d, 60.0, 80.0, LOW_BYTES)
    assert len(events) == 1
    t, ev = events[0]
    assert isinstance(ev, LowThroughputStarted)
    assert (t, ev.start, ev.cause) == (66.25, 61.25, LowThroughputCause.BELOW_AVERAGE)
    assert ev.reference_kbps == pytest.approx(987.7, abs=0.2)
    # not followed down into the episode
    assert d.reference_kbps == ev.reference_kbps
    events = feed(d, 80.0, 90.0, HIGH_BYTES)
    assert events == [(82.5, LowThroughputEnded(61.25, 80.5, LowThroughputCause.BELOW_AVERAGE))]


def test_a_sender_with_nothing_held_back_is_not_short_of_link() -> None:
    """An encoder producing less than its target (a still picture) is not low throughput."""
    d = LowThroughputDetector()
    d.on_sender_stats(target_kbps=1000, backlog_ms=SENDER_BACKLOG_MIN_MS - 1)
    assert feed(d, 0.0, 30.0, LOW_BYTES) == []
    d.on_sender_stats(target_kbps=1000, backlog_ms=SENDER_BACKLOG_MIN_MS)
    events = feed(d, 30.0, 40.0, LOW_BYTES)
    assert [(t, e.start) for t, e in events if isinstance(e, LowThroughputStarted)] == [
        (35.0, 30.0)]


def test_no_judgement_before_a_whole_window() -> None:
    d = LowThroughputDetector(min_s=0.5)
    d.on_sender_stats(target_kbps=1000)
    d.on_media(0.0, 1)
    assert d.poll(1.75) == []  # a trickle, but less than 2 s seen
    events = d.poll(2.0)
    assert events == []  # below since 2.0, not yet for 0.5 s
    assert d.poll(2.5) == [LowThroughputStarted(2.0, LowThroughputCause.BELOW_TARGET, 0.0,
                                                1000.0)]


def test_a_dropout_ends_the_episode_and_its_silence_is_not_counted() -> None:
    d = LowThroughputDetector()
    d.on_sender_stats(target_kbps=1000)
    feed(d, 0.0, 10.0, HIGH_BYTES)
    feed(d, 10.0, 20.0, LOW_BYTES)
    assert d.current_start == 11.25
    # media stops at 19.75; the dropout detector says so at 20.25 with start 19.75
    assert d.dropout_started(19.75) == [
        LowThroughputEnded(11.25, 19.75, LowThroughputCause.BELOW_TARGET)]
    assert d.poll(25.0) == []  # no episode during a dropout
    d.dropout_ended(30.0)
    # the window restarts at 30.0: a low rate is judged from 32.0, an episode from 37.0
    events = feed(d, 30.0, 40.0, LOW_BYTES)
    assert [(t, e.start) for t, e in events] == [(37.0, 32.0)]


def test_stop_closes_the_episode_and_disarms() -> None:
    d = LowThroughputDetector()
    d.on_sender_stats(target_kbps=1000)
    feed(d, 0.0, 20.0, LOW_BYTES)
    assert d.in_episode
    assert d.stop(21.0) == [LowThroughputEnded(2.0, 21.0, LowThroughputCause.BELOW_TARGET)]
    assert d.poll(100.0) == []


@pytest.mark.parametrize("kwargs", [{"share": 0.0}, {"share": 1.5}, {"min_s": 0.0},
                                    {"recover_s": -1.0}, {"window_s": 0.0}])
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LowThroughputDetector(**kwargs)


@dataclass(frozen=True)
class _Step:
    action: str
    dt_s: float
    value: int


_steps = st.lists(
    st.builds(
        _Step,
        action=st.sampled_from(["media", "media", "media", "poll", "poll", "stats",
                                "dropout", "stop"]),
        dt_s=st.floats(0.0, 3.0, allow_nan=False),
        value=st.integers(0, 200_000),
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(_steps, st.floats(0.1, 1.0), st.floats(0.1, 6.0), st.floats(0.1, 3.0))
def test_episodes_never_overlap_never_end_before_they_start_and_skip_dropouts(
        steps: list[_Step], share: float, min_s: float, recover_s: float) -> None:
    d = LowThroughputDetector(share=share, min_s=min_s, recover_s=recover_s)
    now = 0.0
    open_start: float | None = None
    last_end = float("-inf")
    in_dropout = False
    for step in steps:
        now += step.dt_s
        events: list[LowThroughputEvent] = []
        if step.action == "media":
            if in_dropout:
                d.dropout_ended(now)
                in_dropout = False
            d.on_media(now, step.value)
        elif step.action == "poll":
            events = d.poll(now)
        elif step.action == "stats":
            d.on_sender_stats(step.value // 100, step.value % 3000)
        elif step.action == "dropout" and not in_dropout:
            events = d.dropout_started(now)
            in_dropout = True
        elif step.action == "stop":
            events = d.stop(now)
            in_dropout = False
        for ev in events:
            if isinstance(ev, LowThroughputStarted):
                assert open_start is None, "two open episodes"
                assert not in_dropout, "an episode started during a dropout"
                assert last_end <= ev.start <= now
                open_start = ev.start
            else:
                assert open_start is not None and ev.start == open_start
                assert ev.start <= ev.end <= now
                open_start = None
                last_end = ev.end
        assert d.in_episode == (open_start is not None)
        if in_dropout:
            assert not d.in_episode
