"""The `obs` baseline: OBS Studio's dynamic bitrate rules, on scripted links
(tests.abr_scenario)."""

from __future__ import annotations

import pytest

from encoder.abr import AbrLimits, create, names
from encoder.abr.obs import (
    CONGESTION_UNSENT_MS,
    RECOVER_INTERVAL_S,
    RECOVER_STEP_SHARE,
    SEND_RATE_WINDOW_S,
    ObsController,
)
from encoder.settings import AUDIO_KBPS
from tests.abr_scenario import Decision, Scenario, changes, obs, phases

LIMITS = AbrLimits(min_kbps=200, max_kbps=2500, start_kbps=1500)
TICK_S = 0.1  # UPDATE_INTERVAL_S


def send_rate_kbps(decisions: list[Decision], i: int) -> float:
    """The payload send rate over the window before decision `i`, from the observations."""
    now = decisions[i].now
    first = next(d for d in decisions[: i + 1] if now - d.now <= SEND_RATE_WINDOW_S + 1e-6)
    sent = decisions[i].obs.sent_bytes_total - first.obs.sent_bytes_total
    return sent * 8 / 1000 / (now - first.now)


def test_registered_by_name() -> None:
    assert "obs" in names()
    c = create("obs", LIMITS)
    assert isinstance(c, ObsController)
    assert c.audio_kbps == AUDIO_KBPS == 64  # the scenario's default audio too


def test_published_constants() -> None:
    assert CONGESTION_UNSENT_MS == 200
    assert RECOVER_INTERVAL_S == 4.0
    assert RECOVER_STEP_SHARE == 0.10


def test_holds_at_start_on_an_uncongested_link() -> None:
    c = ObsController(LIMITS)
    decisions = Scenario(c, phases((60, 5000))).run(60)
    assert {d.kbps for d in decisions} == {LIMITS.start_kbps}  # never above the start
    assert c.describe() == "steady"


def test_capacity_drop_falls_to_the_measured_send_rate() -> None:
    c = ObsController(LIMITS)
    sim = Scenario(c, phases((10, 3000), (20, 600)))
    decisions = sim.run(30)
    # nothing moves before 200 ms of media waits unsent
    first = next(i for i, d in enumerate(decisions) if d.obs.unsent_ms >= CONGESTION_UNSENT_MS)
    assert all(d.kbps == LIMITS.start_kbps for d in decisions[:first])
    assert decisions[first].now < 10 + 1.0  # the transport's buffer fills, then media waits
    # every congested update lowers the bitrate to the send rate (less audio) if that is lower
    for i in range(first, len(decisions)):
        d, before = decisions[i], decisions[i - 1].kbps
        if d.obs.unsent_ms < CONGESTION_UNSENT_MS:
            continue
        target = round(send_rate_kbps(decisions, i) - AUDIO_KBPS)
        assert d.kbps == (max(LIMITS.min_kbps, target) if target < before else before)
    assert decisions[first].kbps < LIMITS.start_kbps
    # once the measuring window holds only the congested link, the stream fits the link
    fits = next(d.now for d in decisions if d.kbps + AUDIO_KBPS <= 600)
    assert fits <= decisions[first].now + SEND_RATE_WINDOW_S + 1e-6
    assert all(d.kbps + AUDIO_KBPS <= 600 for d in decisions if d.now >= fits)
    assert c.describe() == "congested"  # no frames are dropped here, so the queue stays


def test_stalled_link_falls_to_min_and_not_below() -> None:
    c = ObsController(LIMITS)
    # connected, but from 10 s on nothing gets through and no ACK comes
    sim = Scenario(c, phases((10, 3000), (10, 0)))
    sim.run(10)
    decisions = sim.run(10)
    at_min = next(d.now for d in decisions if d.kbps == LIMITS.min_kbps)
    assert at_min <= 10 + 1.0 + SEND_RATE_WINDOW_S
    assert all(d.kbps >= LIMITS.min_kbps for d in decisions)
    assert all(d.kbps == LIMITS.min_kbps for d in decisions if d.now >= at_min)


def test_disconnected_holds_the_bitrate() -> None:
    c = ObsController(LIMITS)
    sim = Scenario(c, phases((10, 3000), (30, 3000, False)))
    sim.run(10)
    decisions = sim.run(30)
    assert all(d.obs.unsent_ms >= CONGESTION_UNSENT_MS for d in decisions[5:])
    assert {d.kbps for d in decisions} == {LIMITS.start_kbps}
    assert c.describe() == "hold"


def test_recovery_adds_a_tenth_of_the_start_bitrate_every_4_s() -> None:
    c = ObsController(LIMITS)
    sim = Scenario(c, phases((10, 3000), (10, 400), (60, 5000)))
    sim.run(10)
    low = sim.run(10)
    last_drop = max(now for now, before, after in changes(low) if after < before)
    decisions = sim.run(60)
    rises = changes(decisions)
    assert rises and all(after > before for _, before, after in rises)
    step = RECOVER_STEP_SHARE * LIMITS.start_kbps  # 150 kbit/s: 10 % of the original
    for _, before, after in rises:
        assert after == min(LIMITS.start_kbps, round(before + step))
    # the 4 s since the last drop ran out while still congested (the queue a drop to exactly
    # the link rate leaves): the first rise comes with the first uncongested update
    calm = next(d.now for d in decisions if d.obs.unsent_ms < CONGESTION_UNSENT_MS)
    assert calm >= last_drop + RECOVER_INTERVAL_S
    times = [now for now, _, _ in rises]
    assert times[0] == calm
    assert all(b - a == pytest.approx(RECOVER_INTERVAL_S) for a, b in zip(times, times[1:],
                                                                          strict=False))
    assert rises[-1][2] == LIMITS.start_kbps  # up to the start bitrate and no further
    assert max(d.kbps for d in decisions) == LIMITS.start_kbps
    assert c.describe() == "steady"


def test_rise_waits_4_s_after_a_drop_and_stops_at_start() -> None:
    limits = AbrLimits(min_kbps=100, max_kbps=2500, start_kbps=1000)
    c = ObsController(limits, audio_kbps=0)
    rate = 62_500  # bytes/s: 500 kbit/s leave
    out = {}
    for i in range(1, 200):
        now = i * TICK_S
        congested = i == 10  # one update with 250 ms of media waiting
        out[i] = c.update(obs(sent_bytes_total=rate * i // 10, unsent_ms=250 if congested
                              else 0), now=now)
    assert out[9] == 1000
    assert out[10] == 500  # dropped to the send rate
    assert out[49] == 500 and out[50] == 600  # +10 % of 1000, 4 s after the drop
    assert out[89] == 600 and out[90] == 700
    assert out[130] == 800 and out[170] == 900 and out[199] == 900


def test_congestion_threshold_and_no_rate_yet() -> None:
    c = ObsController(LIMITS, audio_kbps=0)
    # congested on the first update: no send rate measured yet, so nothing to drop to
    assert c.update(obs(sent_bytes_total=0, unsent_ms=500), now=0.1) == 1500
    assert c.describe() == "congested"
    for i in range(2, 12):  # 400 kbit/s leave; 199 ms waiting is not congestion
        assert c.update(obs(sent_bytes_total=5_000 * (i - 1), unsent_ms=199), now=i * TICK_S
                        ) == 1500
    assert c.update(obs(sent_bytes_total=5_000 * 11, unsent_ms=200), now=1.2) == 400


@pytest.mark.parametrize("limits", [
    AbrLimits(min_kbps=200, max_kbps=2500, start_kbps=1500),
    AbrLimits(min_kbps=300, max_kbps=800, start_kbps=500),
    AbrLimits(min_kbps=500, max_kbps=500, start_kbps=500),
])
def test_never_outside_the_limits_nor_above_start(limits: AbrLimits) -> None:
    c = create("obs", limits)
    out = Scenario(c, phases((15, 5000), (10, 300), (5, 0, False), (5, 0), (5, 100),
                             (30, 5000))).run(70)
    assert all(limits.min_kbps <= d.kbps <= limits.start_kbps for d in out)


def test_rejects_negative_audio() -> None:
    with pytest.raises(ValueError):
        ObsController(LIMITS, audio_kbps=-1)
