"""The `belacoder` baseline: BELABOX's published RTT + send-buffer rules, on scripted links
(tests.abr_scenario)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from encoder.abr import AbrLimits, create, names
from encoder.abr.belacoder import (
    DECR_FAST_INTERVAL_S,
    DECR_INTERVAL_S,
    DECR_SCALE,
    DECR_STEP_KBPS,
    INCR_INTERVAL_S,
    INCR_SCALE,
    INCR_STEP_KBPS,
    OUTPUT_ROUND_KBPS,
    SRT_PAYLOAD_BYTES,
    BelacoderController,
)
from tests.abr_scenario import Scenario, obs, phases

LIMITS = AbrLimits(min_kbps=200, max_kbps=2500, start_kbps=1000)
AUDIO_KBPS = 64  # the scenario's default audio
TICK_S = 0.1  # UPDATE_INTERVAL_S
# the fast-decrease wait (250 ms) ends on our next 0.1 s update after it: 0.3 s
FAST_WAIT_S = 0.3


def rise_gaps_ok(times: list[float]) -> bool:
    """Rises 500 ms apart, or one update later: a larger bitrate makes larger pieces, whose
    last byte takes a little longer through the link, so the RTT steps up after a rise and
    rule 4 (a stable RTT) lets the next one wait an update."""
    return all(INCR_INTERVAL_S - 1e-6 <= b - a <= INCR_INTERVAL_S + TICK_S + 1e-6
               for a, b in zip(times, times[1:], strict=False))


@dataclass(frozen=True)
class Step:
    now: float
    bitrate: float  # the unrounded bitrate the rules work on
    kbps: int  # what the encoder got
    state: str
    backlog_ms: int


def trace(c: BelacoderController, sc: Scenario, seconds: float) -> list[Step]:
    out = []
    for _ in range(round(seconds / TICK_S)):
        d = sc.run(TICK_S)[0]
        out.append(Step(d.now, c.bitrate_kbps, d.kbps, d.state, d.obs.backlog_ms))
    return out


def moves(steps: list[Step], before: float) -> list[tuple[float, float, float]]:
    """(now, from, to) of every change of the unrounded bitrate; `before` is the one before."""
    out = []
    for s in steps:
        if s.bitrate != before:
            out.append((s.now, before, s.bitrate))
            before = s.bitrate
    return out


def incr(b: float) -> float:
    return b + INCR_STEP_KBPS + b / INCR_SCALE


def fast_decr(b: float) -> float:
    return b - DECR_STEP_KBPS - b / DECR_SCALE


def test_registered_by_name() -> None:
    assert "belacoder" in names()
    c = create("belacoder", LIMITS)
    assert isinstance(c, BelacoderController)
    assert c.latency_ms == 2000


def test_published_constants() -> None:
    assert (INCR_STEP_KBPS, INCR_SCALE, INCR_INTERVAL_S) == (30, 30, 0.5)
    assert (DECR_STEP_KBPS, DECR_SCALE, DECR_INTERVAL_S, DECR_FAST_INTERVAL_S) == (
        100, 10, 0.2, 0.25)


def test_holds_at_start_on_uncongested_link_when_start_is_the_ceiling() -> None:
    limits = AbrLimits(min_kbps=200, max_kbps=1000, start_kbps=1000)
    c = BelacoderController(limits)
    steps = trace(c, Scenario(c, phases((30, 5000))), 30)
    assert {s.kbps for s in steps} == {1000}
    assert not {"drop", "ease", "min"} & {s.state for s in steps}


def test_uncongested_link_climbs_by_the_published_step_every_500_ms() -> None:
    c = BelacoderController(LIMITS)
    steps = trace(c, Scenario(c, phases((30, 5000))), 30)
    changes = moves(steps, LIMITS.start_kbps)
    assert changes, "it never rose"
    for _now, before, after in changes:
        assert after == pytest.approx(min(LIMITS.max_kbps, incr(before)))  # +30 kbit/s + 1/30
    times = [now for now, _, _ in changes]
    assert times[0] == pytest.approx(TICK_S)  # the first RTT sample allows a rise at once
    assert times[1] - times[0] == pytest.approx(INCR_INTERVAL_S)
    assert rise_gaps_ok(times)
    assert steps[-1].kbps == LIMITS.max_kbps and steps[-1].state == "hold"
    # the encoder gets the bitrate rounded down to 100 kbit/s
    assert all(s.kbps == max(LIMITS.min_kbps, s.bitrate // OUTPUT_ROUND_KBPS
                             * OUTPUT_ROUND_KBPS) for s in steps)


def test_no_rtt_sample_yet_means_no_rise() -> None:
    c = BelacoderController(LIMITS)
    for i in range(1, 50):
        assert c.update(obs(srtt_s=None, sent_bytes_total=i * 12_500), now=i * TICK_S) == 1000
    assert c.describe() == "hold"


def test_capacity_drop_falls_below_the_new_capacity_by_fast_decreases() -> None:
    c = BelacoderController(LIMITS)
    sim = Scenario(c, phases((20, 3000), (30, 600)))
    trace(c, sim, 20)
    assert c.bitrate_kbps == LIMITS.max_kbps
    steps = trace(c, sim, 20)
    # the rules imply: fast decreases (100 kbit/s + 10 %) every 250 ms (0.3 s at our period)
    # until the stream fits, once the queue is noticed (0.4 s here)
    needed, b = 0, float(LIMITS.max_kbps)
    while b + AUDIO_KBPS > 600:
        b, needed = fast_decr(b), needed + 1
    deadline = 20 + 0.4 + (needed - 1) * FAST_WAIT_S
    fits = next(s.now for s in steps if s.kbps + AUDIO_KBPS <= 600)
    assert fits <= deadline + 1e-9
    falling = [m for m in moves(steps, LIMITS.max_kbps) if m[0] <= fits]
    assert len(falling) == needed
    for _now, before, after in falling:
        assert after == pytest.approx(fast_decr(before))
    assert all(b[0] - a[0] == pytest.approx(FAST_WAIT_S) for a, b in zip(falling, falling[1:],
                                                                          strict=False))
    assert min(s.kbps for s in steps) >= LIMITS.min_kbps
    # it probes up again, and backs off again: the queue stays bounded
    assert max(s.kbps for s in steps[-100:]) + AUDIO_KBPS > 600 * 0.5
    assert max(d.obs.backlog_ms for d in sim.run(10)) < 3000


@pytest.mark.parametrize("connected", [False, True])
def test_outage_falls_to_min_and_not_below(connected: bool) -> None:
    c = BelacoderController(LIMITS)
    # the link goes away: disconnected, or still connected but nothing gets through
    sim = Scenario(c, phases((20, 3000), (15, 0, connected)))
    trace(c, sim, 20)
    steps = trace(c, sim, 15)
    # the slowest path the rules allow: light decreases, 100 kbit/s every 200 ms
    slowest_s = (LIMITS.max_kbps - LIMITS.min_kbps) / DECR_STEP_KBPS * DECR_INTERVAL_S
    at_min = next(s.now for s in steps if s.bitrate == LIMITS.min_kbps)
    assert at_min <= 20 + 0.5 + slowest_s
    assert all(s.kbps >= LIMITS.min_kbps for s in steps)
    # The last RTT measured stays low and steady, so the rise rule still fires between
    # decreases (as with SRT's stale RTT); the buffer rules undo each rise within 0.3 s.
    after = [s for s in steps if s.now >= at_min]
    assert all(s.bitrate <= incr(LIMITS.min_kbps) + 1e-9 for s in after)
    assert all(s.kbps == LIMITS.min_kbps for s in after)  # the encoder gets it rounded down


def test_recovery_rises_by_the_published_step_every_500_ms() -> None:
    c = BelacoderController(LIMITS)
    sim = Scenario(c, phases((20, 3000), (10, 3000, False), (40, 5000)))
    trace(c, sim, 20)
    trace(c, sim, 10)
    # at the minimum, or one stale-RTT rise above it (see test_outage_falls_to_min_and_not_below)
    assert LIMITS.min_kbps <= c.bitrate_kbps <= incr(LIMITS.min_kbps) + 1e-9
    steps = trace(c, sim, 40)
    # first the media held through the outage is sent (the buffer rules still speak) ...
    drained = next(i for i, s in enumerate(steps) if s.backlog_ms < 500)
    assert steps[drained].now < 30 + 3
    # ... then it only rises, by the published step every 500 ms, up to the maximum
    changes = moves(steps[drained:], steps[drained - 1].bitrate)
    assert changes and all(after > before for _, before, after in changes)
    for _, before, after in changes:
        assert after == pytest.approx(min(LIMITS.max_kbps, incr(before)))
    assert rise_gaps_ok([now for now, _, _ in changes])
    # from the minimum to the maximum at the published pace, once the backlog had drained
    assert steps[-1].kbps == LIMITS.max_kbps


def test_rtt_at_a_third_of_the_latency_goes_straight_to_min() -> None:
    c = BelacoderController(LIMITS)
    assert c.update(obs(srtt_s=0.05), now=0.1) == 1000  # rise (1063), rounded down
    assert c.update(obs(srtt_s=0.667), now=0.2) == LIMITS.min_kbps
    assert c.describe() == "min"


def test_rtt_above_a_fifth_of_the_latency_decreases_fast_every_250_ms() -> None:
    c = BelacoderController(LIMITS, latency_ms=3000)  # 0.7 s is above 1/5, below 1/3
    seen = []
    for i in range(1, 12):
        # rising (1 ms per update), so the rise rule never fires between the decreases
        c.update(obs(srtt_s=0.7 + i / 1000), now=i * TICK_S)
        seen.append(c.bitrate_kbps)
    b, expected = 1000.0, []
    for i in range(1, 12):
        if (i - 1) % 3 == 0:  # at 0.1, 0.4, 0.7, 1.0 s
            b = max(LIMITS.min_kbps, fast_decr(b))
        expected.append(b)
    assert seen == pytest.approx(expected)


def test_buffer_above_light_threshold_decreases_100_every_200_ms() -> None:
    # the send buffer climbs slowly past 50 packets: above bs_th1, below bs_th2 and bs_th3
    # (no RTT sample, so only the buffer rules speak)
    c = BelacoderController(LIMITS)
    rate = 125_000  # bytes/s sent: 1000 kbit/s
    prev = c.bitrate_kbps
    decreases = []
    for i in range(1, 131):
        now = i * TICK_S
        bs_pkts = min(55.0, 0.5 * i)
        c.update(obs(srtt_s=None, sent_bytes_total=round(rate * now),
                     backlog_bytes=round(bs_pkts * SRT_PAYLOAD_BYTES)), now=now)
        if c.bitrate_kbps != prev:
            decreases.append((now, prev - c.bitrate_kbps))
            prev = c.bitrate_kbps
        th = c.thresholds()
        assert th["bs_th2"] is not None and th["bs_th3"] is not None
        assert bs_pkts <= th["bs_th2"] and bs_pkts <= th["bs_th3"]
    assert decreases, "the light rule never acted"
    assert all(step == pytest.approx(DECR_STEP_KBPS) for _, step in decreases)
    times = [t for t, _ in decreases]
    assert all(b - a == pytest.approx(DECR_INTERVAL_S) for a, b in zip(times, times[1:],
                                                                         strict=False))


@pytest.mark.parametrize("limits", [
    AbrLimits(min_kbps=200, max_kbps=2500, start_kbps=1000),
    AbrLimits(min_kbps=250, max_kbps=850, start_kbps=850),
    AbrLimits(min_kbps=500, max_kbps=500, start_kbps=500),
])
def test_never_outside_the_limits(limits: AbrLimits) -> None:
    c = create("belacoder", limits)
    out = Scenario(c, phases((15, 5000), (10, 300), (5, 0, False), (5, 0), (5, 100),
                             (20, 5000))).run(60)
    assert all(limits.min_kbps <= d.kbps <= limits.max_kbps for d in out)


def test_rejects_a_bad_latency() -> None:
    with pytest.raises(ValueError):
        BelacoderController(LIMITS, latency_ms=0)
