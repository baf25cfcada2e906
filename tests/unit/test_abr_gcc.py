"""The ``gcc`` controller: GCC's delay-based estimate with AIMD (draft-ietf-rmcat-gcc-02).

Most scenarios run behind `_RelayLink`: the shared scenario of tests.abr_scenario (the
project's link model) with frames at 30 fps at the controller's bitrate, no sender window, and
the relay acknowledging every 100 ms (as uplink.receiver does) the media that arrived; the ACK
samples carry the send time of the newest media covered. The queue is in the network, so it
shows in the RTT: GCC's own signal. The scenario's default sender (a 32 kB window, so most of a
queue builds in the sender) checks the sender-queue extension.
"""

from __future__ import annotations

import math
import random

import pytest

from encoder.abr import AbrLimits, AckSample, Observation, create, names
from encoder.abr.gcc import (
    ADDITIVE_MIN_INCREASE_BITS,
    DECREASE_FACTOR,
    INCREASE_FACTOR_PER_S,
    PACKET_SIZE_BYTES,
    RESPONSE_TIME_EXTRA_S,
    THRESHOLD_INITIAL_MS,
    THRESHOLD_MAX_MS,
    THRESHOLD_MIN_MS,
    TRENDLINE_MAX_DELTAS,
    TRENDLINE_THRESHOLD_GAIN,
    TRENDLINE_WINDOW_SAMPLES,
    GccController,
    GroupDelta,
    InterGroupDelay,
    OveruseDetector,
    RateState,
    Signal,
    TrendlineFilter,
    next_state,
)
from tests.abr_scenario import Phase, Scenario, phases

FPS = 30.0
RELAY_ACK_INTERVAL_S = 0.1
TICK_S = 0.1


class _RelayLink:
    """GCC behind the shared link model (tests.abr_scenario) the way these tests need it:
    frames at 30 fps at the controller's bitrate and no audio, no sender window (the queue is
    in the network, so it shows in the RTT: GCC's own signal), and the relay ACKs every
    100 ms (as uplink.receiver does), each ACK up to `jitter_s` late. One row per update:
    (t, kbps, describe(), estimate before, incoming_kbps)."""

    def __init__(self, ctrl: GccController, link: list[Phase], *, base_rtt_s: float = 0.06,
                 jitter_s: float = 0.0, seed: int = 1) -> None:
        self.ctrl = ctrl
        self.scenario = Scenario(ctrl, link, base_rtt_s=base_rtt_s, window_bytes=None,
                                 audio_kbps=0.0, piece_interval_s=1 / FPS,
                                 ack_interval_s=RELAY_ACK_INTERVAL_S, ack_jitter_s=jitter_s,
                                 seed=seed)
        self.rows: list[tuple[float, int, str, float, float | None]] = []
        self.thresholds: list[float] = []

    @property
    def kbps(self) -> int:
        return self.scenario.kbps

    def run_until(self, until_s: float) -> None:
        while self.scenario.now < until_s - 1e-9:
            before = self.ctrl.estimate_kbps
            d = self.scenario.run(TICK_S)[0]
            self.rows.append((d.now, d.kbps, d.state, before, self.ctrl.incoming_kbps))
            self.thresholds.append(self.ctrl.threshold_ms)

    def kbps_at(self, t: float) -> int:
        return next(k for ti, k, *_ in reversed(self.rows) if ti <= t + 1e-9)


def _gcc(min_kbps: int = 200, max_kbps: int = 2500, start_kbps: int = 1000) -> GccController:
    ctrl = create("gcc", AbrLimits(min_kbps, max_kbps, start_kbps))
    assert isinstance(ctrl, GccController)
    return ctrl


def _obs(now: float, *, acked_total: int, acks: tuple[AckSample, ...] = (),
         last_ack: float | None, backlog: int = 0, connected: bool = True,
         unsent_ms: int = 0) -> Observation:
    return Observation(
        connected=connected, sent_bytes_total=acked_total + backlog,
        acked_bytes_total=acked_total, backlog_bytes=backlog, backlog_ms=0,
        unsent_bytes=0, unsent_ms=unsent_ms, srtt_s=0.1, last_ack_time=last_ack,
        relay_buffer_ms=None, relay_arrival_kbps=None, target_kbps=1000, acks=acks)


class _SteadyAcks:
    """Scripted feedback: one ACK per update, a constant RTT, `rate_kbps` acknowledged."""

    def __init__(self, ctrl: GccController, *, rtt_s: float = 0.1) -> None:
        self.ctrl = ctrl
        self.rtt_s = rtt_s
        self.now = 0.0
        self.acked = 0

    def step(self, rate_kbps: float, *, rtt_s: float | None = None) -> int:
        self.now = round(self.now + TICK_S, 9)
        size = round(rate_kbps * 1000 / 8 * TICK_S)
        self.acked += size
        rtt = self.rtt_s if rtt_s is None else rtt_s
        ack = AckSample(acked_at=self.now, acked_bytes=size, sent_at=self.now - rtt)
        return self.ctrl.update(_obs(self.now, acked_total=self.acked, acks=(ack,),
                                     last_ack=self.now), now=self.now)


# -- registry and interface ---------------------------------------------------------------------


def test_registered_by_name() -> None:
    assert "gcc" in names()
    ctrl = create("gcc", AbrLimits(300, 3000, 1200))
    assert isinstance(ctrl, GccController)
    assert ctrl.limits == AbrLimits(300, 3000, 1200)
    assert ctrl.state is RateState.INCREASE  # the draft starts in Increase


# -- the rate controller's state table (draft section 5.5) --------------------------------------


@pytest.mark.parametrize(("state", "signal", "expected"), [
    (RateState.HOLD, Signal.OVERUSE, RateState.DECREASE),
    (RateState.HOLD, Signal.NORMAL, RateState.INCREASE),
    (RateState.HOLD, Signal.UNDERUSE, RateState.HOLD),
    (RateState.INCREASE, Signal.OVERUSE, RateState.DECREASE),
    (RateState.INCREASE, Signal.NORMAL, RateState.INCREASE),
    (RateState.INCREASE, Signal.UNDERUSE, RateState.HOLD),
    (RateState.DECREASE, Signal.OVERUSE, RateState.DECREASE),
    (RateState.DECREASE, Signal.NORMAL, RateState.HOLD),
    (RateState.DECREASE, Signal.UNDERUSE, RateState.HOLD),
])
def test_state_table(state: RateState, signal: Signal, expected: RateState) -> None:
    assert next_state(state, signal) is expected


# -- packet groups and d(i) (sections 5.1, 5.2) -------------------------------------------------


def test_groups_by_burst_time_and_delay_variation() -> None:
    g = InterGroupDelay()
    assert g.add(0.000, 0.100) is None
    assert g.add(0.004, 0.104) is None  # within 5 ms of the group's first send: same group
    assert g.add(0.100, 0.200) is None  # closes group 1, which has no predecessor
    delta = g.add(0.200, 0.330)  # closes group 2 against group 1: 96 ms apart both ways
    assert delta is not None
    assert (delta.arrival_s, delta.delay_variation_ms) == (0.200, pytest.approx(0.0))
    delta = g.add(0.300, 0.400)  # closes group 3 (sent 0.2, arrived 0.33) against group 2
    assert delta is not None
    assert (delta.arrival_s, delta.delay_variation_ms) == (0.330, pytest.approx(30.0))


def test_group_delta_between_last_samples() -> None:
    g = InterGroupDelay()
    g.add(0.000, 0.100)
    g.add(0.100, 0.200)
    g.add(0.103, 0.210)  # same group (3 ms after its first): its last sample counts
    delta = g.add(0.200, 0.300)
    assert delta is not None
    # arrival delta 0.210 - 0.100, send delta 0.103 - 0.000
    assert delta.delay_variation_ms == pytest.approx(110.0 - 103.0)


def test_burst_after_a_stall_joins_the_current_group() -> None:
    g = InterGroupDelay()
    g.add(0.0, 0.1)
    g.add(0.1, 1.0)  # held 0.8 s: a new group
    # sent 100 ms later but arriving 2 ms after: a burst released by the stall (d < 0)
    assert g.add(0.2, 1.002) is None
    delta = g.add(0.3, 1.2)
    assert delta is not None
    assert delta.arrival_s == pytest.approx(1.002)
    assert delta.delay_variation_ms == pytest.approx((1.002 - 0.1 - 0.2) * 1000)


def test_older_sample_is_ignored() -> None:
    g = InterGroupDelay()
    g.add(1.0, 1.1)
    assert g.add(0.5, 1.2) is None
    assert g.add(1.002, 1.2) is None  # still the first group


# -- trendline filter ---------------------------------------------------------------------------


def test_trendline_zero_until_window_full_then_slope_times_gain() -> None:
    f = TrendlineFilter()
    step_ms = 5.0  # the delay grows 5 ms per 100 ms group: slope 0.05
    trends = [f.update(GroupDelta(0.1 * i, step_ms)) for i in range(1, 100)]
    assert all(t == 0.0 for t in trends[:TRENDLINE_WINDOW_SAMPLES - 1])
    assert trends[TRENDLINE_WINDOW_SAMPLES - 1] > 0.0
    expected = step_ms / 100.0 * TRENDLINE_MAX_DELTAS * TRENDLINE_THRESHOLD_GAIN
    assert trends[-1] == pytest.approx(expected, rel=1e-3)
    assert f.num_deltas == TRENDLINE_MAX_DELTAS


def test_trendline_scaled_by_num_deltas_below_sixty() -> None:
    f = TrendlineFilter()
    for i in range(1, 31):
        trend = f.update(GroupDelta(0.1 * i, 5.0))
    # 30 deltas: scaled by 30, and the smoothing has not caught up the ramp's slope yet
    assert 0 < trend < 0.05 * 30 * TRENDLINE_THRESHOLD_GAIN
    assert f.num_deltas == 30


def test_trendline_flat_for_constant_delay() -> None:
    f = TrendlineFilter()
    for i in range(1, 80):
        trend = f.update(GroupDelta(0.1 * i, 0.0))
    assert trend == 0.0


# -- over-use detector (section 5.4) ------------------------------------------------------------


def test_overuse_needs_ten_ms_above_threshold_and_a_rising_trend() -> None:
    d = OveruseDetector()
    assert d.threshold_ms == THRESHOLD_INITIAL_MS
    assert d.update(20.0, 1.000) is Signal.NORMAL  # above, but for 0 ms
    assert d.update(21.0, 1.005) is Signal.NORMAL  # above for 5 ms only
    assert d.update(22.0, 1.011) is Signal.OVERUSE  # 11 ms and rising


def test_overuse_not_signalled_while_trend_falls() -> None:
    d = OveruseDetector()
    d.update(40.0, 1.0)
    assert d.update(30.0, 1.1) is Signal.NORMAL  # above long enough, but falling
    d2 = OveruseDetector()
    d2.update(40.0, 1.0)
    assert d2.update(45.0, 1.1) is Signal.OVERUSE
    assert d2.update(44.0, 1.2) is Signal.OVERUSE  # still above: the over-use stands


def test_underuse_and_normal() -> None:
    d = OveruseDetector()
    assert d.update(-20.0, 1.0) is Signal.UNDERUSE
    assert d.update(0.0, 1.1) is Signal.NORMAL
    d.update(30.0, 1.2)
    d.update(35.0, 1.3)
    assert d.signal is Signal.OVERUSE
    assert d.update(1.0, 1.4) is Signal.NORMAL


def test_threshold_follows_trend_with_k_up_and_k_down() -> None:
    d = OveruseDetector()
    d.update(0.0, 0.0)
    d.update(20.0, 0.1)  # 7.5 ms above: gamma += 0.01 x 100 ms x 7.5
    assert d.threshold_ms == pytest.approx(12.5 + 0.01 * 100 * 7.5)
    d.update(0.0, 0.2)  # below: gamma -= 0.00018 x 100 ms x gamma
    assert d.threshold_ms == pytest.approx(20.0 - 0.00018 * 100 * 20.0)


def test_outlier_does_not_move_threshold() -> None:
    d = OveruseDetector()
    d.update(0.0, 0.0)
    d.update(12.5 + 16.0, 0.1)
    assert d.threshold_ms == THRESHOLD_INITIAL_MS


def test_threshold_stays_within_bounds() -> None:
    d = OveruseDetector()
    t = 0.0
    for _ in range(3000):  # a long quiet spell: gamma decays to its floor
        t += 0.1
        d.update(0.0, t)
        assert THRESHOLD_MIN_MS <= d.threshold_ms <= THRESHOLD_MAX_MS
    assert d.threshold_ms == THRESHOLD_MIN_MS
    trend = 0.0
    for _ in range(3000):  # a trend that keeps climbing just under the outlier margin
        t += 0.1
        trend = d.threshold_ms + 14.0
        d.update(trend, t)
        assert THRESHOLD_MIN_MS <= d.threshold_ms <= THRESHOLD_MAX_MS
    assert d.threshold_ms == THRESHOLD_MAX_MS
    rng = random.Random(7)
    for _ in range(5000):  # anything at all, with odd time steps
        t += rng.choice([0.0, 0.001, 0.1, 3.0])
        d.update(rng.uniform(-2000.0, 2000.0), t)
        assert THRESHOLD_MIN_MS <= d.threshold_ms <= THRESHOLD_MAX_MS


# -- rate control behind a bottleneck -----------------------------------------------------------


def test_uncongested_link_increases_eight_percent_per_second() -> None:
    ctrl = _gcc(max_kbps=5000, start_kbps=1000)
    link = _RelayLink(ctrl, phases((6, 20000)))
    link.run_until(6.0)
    assert link.kbps_at(0.1) == 1000  # the first update has no time step yet
    assert link.kbps_at(0.2) == round(1000 * INCREASE_FACTOR_PER_S ** 0.1)
    for t0, t1 in [(1.0, 2.0), (1.0, 5.0), (2.0, 6.0)]:
        ratio = link.kbps_at(t1) / link.kbps_at(t0)
        assert ratio == pytest.approx(INCREASE_FACTOR_PER_S ** (t1 - t0), rel=0.005)
    assert {d for _, _, d, _, _ in link.rows} == {"increase"}
    assert ctrl.increase_mode == "multiplicative"
    assert ctrl.avg_max_kbps is None


def test_capacity_drop_detected_and_cut_to_beta_times_acked_rate() -> None:
    capacity = 800.0
    ctrl = _gcc(start_kbps=1500)
    link = _RelayLink(ctrl, phases((8, 3000), (12, capacity)))
    link.run_until(8.0)
    assert link.kbps == 2500  # climbed to the max on the fast link
    link.run_until(20.0)
    cuts = [r for r in link.rows if r[2] == "decrease"]
    assert cuts, "no over-use detected"
    t_first, kbps_first, _, before, incoming = cuts[0]
    assert 8.0 < t_first < 10.0  # detected within two seconds of the drop
    assert incoming is not None
    # the cut: beta x the incoming (acked) rate measured at that moment
    assert kbps_first == round(DECREASE_FACTOR * incoming)
    assert kbps_first < before
    # once the rate window holds only post-drop ACKs, beta x the link rate
    settled = link.kbps_at(11.0)
    assert settled == pytest.approx(DECREASE_FACTOR * capacity, rel=0.08)
    assert all(THRESHOLD_MIN_MS <= g <= THRESHOLD_MAX_MS for g in link.thresholds)


def test_increase_is_additive_after_a_decrease_near_convergence() -> None:
    ctrl = _gcc(start_kbps=1500)
    link = _RelayLink(ctrl, phases((8, 3000), (12, 800)))
    link.run_until(14.0)
    # R_hat at the decrease: the link's rate (+-1 frame of 10 kB in a 1 s window)
    assert ctrl.avg_max_kbps == pytest.approx(800.0, rel=0.12)
    assert ctrl.increase_mode == "additive"
    link.run_until(20.0)
    rows = [r for r in link.rows if 14.0 < r[0] <= 20.0]
    assert rows and all(r[2] == "additive" for r in rows)
    growth_per_s = (rows[-1][3] / rows[0][3]) ** (1 / (rows[-1][0] - rows[0][0]))
    assert growth_per_s < 1.03  # far below the 8 %/s of multiplicative increase
    assert rows[-1][3] > rows[0][3]  # but increasing


def test_additive_step_is_half_a_packet_per_response_time() -> None:
    ctrl = _gcc(start_kbps=900)
    ctrl.avg_max_kbps = 1000.0  # as if the last decreases happened at 1000 kbit/s
    feed = _SteadyAcks(ctrl, rtt_s=0.1)
    for _ in range(10):
        feed.step(ctrl.estimate_kbps)
    assert ctrl.increase_mode == "additive"
    before = ctrl.estimate_kbps
    feed.step(before)
    # 900 kbit/s at 30 fps: 30000 bits a frame in ceil(30000 / 9600) = 4 packets of 7500
    # bits; alpha = 0.5 x min(0.1 s / (0.1 s + 0.1 s), 1) = 0.25
    bits_per_frame = before * 1000 / 30
    packet_bits = bits_per_frame / math.ceil(bits_per_frame / (PACKET_SIZE_BYTES * 8))
    alpha = 0.5 * min(TICK_S / (0.1 + RESPONSE_TIME_EXTRA_S), 1.0)
    expected = max(ADDITIVE_MIN_INCREASE_BITS, alpha * packet_bits) / 1000
    assert ctrl.estimate_kbps - before == pytest.approx(expected)


def test_rate_far_above_the_average_max_resets_to_multiplicative() -> None:
    ctrl = _gcc(start_kbps=900)
    ctrl.avg_max_kbps = 500.0
    feed = _SteadyAcks(ctrl)
    for _ in range(10):
        feed.step(900.0)  # the link carries far more than at the last decreases
    assert ctrl.avg_max_kbps is None
    assert ctrl.increase_mode == "multiplicative"
    before = ctrl.estimate_kbps
    feed.step(900.0)
    assert ctrl.estimate_kbps == pytest.approx(before * INCREASE_FACTOR_PER_S ** TICK_S)


def test_far_below_the_average_max_increases_multiplicatively() -> None:
    ctrl = _gcc(start_kbps=300)
    ctrl.avg_max_kbps = 1500.0  # e.g. an outage cut the rate far below the last level
    feed = _SteadyAcks(ctrl)
    for _ in range(10):
        feed.step(ctrl.estimate_kbps)
    assert ctrl.increase_mode == "multiplicative"
    assert ctrl.avg_max_kbps == 1500.0  # kept: additive again near it


def test_increase_capped_at_one_and_a_half_times_incoming_rate() -> None:
    ctrl = _gcc(max_kbps=5000, start_kbps=1000)
    feed = _SteadyAcks(ctrl)
    for _ in range(100):  # an encoder that only produces 500 kbit/s, whatever the target
        feed.step(500.0)
    assert ctrl.estimate_kbps == pytest.approx(1000.0 * INCREASE_FACTOR_PER_S ** 0.5, rel=0.01)
    ctrl2 = _gcc(max_kbps=5000, start_kbps=600)
    feed2 = _SteadyAcks(ctrl2)
    for _ in range(100):
        feed2.step(500.0)
    assert ctrl2.estimate_kbps == pytest.approx(750.0)  # 1.5 x 500, and no further


# -- limits -------------------------------------------------------------------------------------


def test_never_above_max() -> None:
    ctrl = _gcc(max_kbps=1200, start_kbps=1200)
    link = _RelayLink(ctrl, phases((20, 50000)))
    link.run_until(20.0)
    assert all(k == 1200 for _, k, *_ in link.rows)
    assert ctrl.estimate_kbps == 1200.0


def test_never_below_min() -> None:
    ctrl = _gcc(min_kbps=300, start_kbps=1000)
    link = _RelayLink(ctrl, phases((3, 2000), (27, 100)))
    link.run_until(30.0)
    assert all(300 <= k <= 2500 for _, k, *_ in link.rows)
    assert link.kbps == 300


# -- robustness ---------------------------------------------------------------------------------


def test_ack_jitter_alone_is_not_overuse() -> None:
    ctrl = _gcc(max_kbps=5000, start_kbps=800)
    link = _RelayLink(ctrl, phases((20, 20000)), jitter_s=0.03, seed=3)
    link.run_until(20.0)
    kbps = [k for _, k, *_ in link.rows]
    assert all(b >= a for a, b in zip(kbps, kbps[1:], strict=False))
    assert kbps[-1] > 2 * 800


def test_jittered_drop_still_settles_below_capacity() -> None:
    ctrl = _gcc(start_kbps=1500)
    link = _RelayLink(ctrl, phases((8, 3000), (52, 800)), jitter_s=0.03, seed=5)
    link.run_until(60.0)
    late = [k for t, k, *_ in link.rows if t > 20.0]
    assert sum(late) / len(late) < 900  # a GCC saw-tooth around the capacity, not above it
    assert min(late) > 500


def test_deterministic() -> None:
    def trace() -> list[int]:
        link = _RelayLink(_gcc(start_kbps=1500), phases((5, 3000), (20, 700)),
                          jitter_s=0.02, seed=9)
        link.run_until(25.0)
        return [k for _, k, *_ in link.rows]

    assert trace() == trace()


# -- no feedback --------------------------------------------------------------------------------


def test_disconnected_holds() -> None:
    ctrl = _gcc(start_kbps=1000)
    out = [ctrl.update(_obs(0.1 * i, acked_total=0, last_ack=None, connected=False),
                       now=0.1 * i) for i in range(1, 50)]
    assert set(out) == {1000}
    assert ctrl.describe() == "hold"
    assert ctrl.state is RateState.HOLD


def test_silence_without_backlog_growth_holds() -> None:
    ctrl = _gcc(start_kbps=1000)
    feed = _SteadyAcks(ctrl)
    for _ in range(10):
        feed.step(1000.0)
    now, acked, last = feed.now, feed.acked, feed.now
    out = []
    for i in range(1, 50):  # nothing to send: no ACKs, backlog flat at 0
        t = round(now + 0.1 * i, 9)
        out.append(ctrl.update(_obs(t, acked_total=acked, last_ack=last), now=t))
        if i == 4:
            assert ctrl.describe() == "increase"  # the last ACK is fresh enough still
    assert ctrl.describe() == "hold"
    assert len(set(out[4:])) == 1  # from 0.5 s of silence on: held
    assert out[4] >= out[3]


def test_silence_with_growing_backlog_is_overuse() -> None:
    ctrl = _gcc(start_kbps=1000)
    feed = _SteadyAcks(ctrl)
    for _ in range(10):
        feed.step(1000.0)
    now, acked, last = feed.now, feed.acked, feed.now
    by_time: dict[int, float] = {}
    for i in range(1, 36):  # ACKs stop, media keeps coming: 12.5 kB more each update
        t = round(now + 0.1 * i, 9)
        ctrl.update(_obs(t, acked_total=acked, last_ack=last, backlog=12500 * i), now=t)
        by_time[i] = ctrl.estimate_kbps
        if i < 5:
            assert ctrl.describe() == "increase"  # fresh enough still
    level = by_time[5]  # held from 0.5 s of silence
    assert by_time[9] == pytest.approx(level)  # < 1 s of silence: held, not cut
    assert ctrl.describe() == "starved"
    assert by_time[10] == pytest.approx(level * DECREASE_FACTOR)  # 1 s: one cut
    assert by_time[19] == pytest.approx(level * DECREASE_FACTOR)
    assert by_time[20] == pytest.approx(level * DECREASE_FACTOR ** 2)  # one per second
    assert by_time[30] == pytest.approx(level * DECREASE_FACTOR ** 3)


def test_reconnect_starts_a_fresh_delay_pipeline() -> None:
    ctrl = _gcc(start_kbps=1000)
    feed = _SteadyAcks(ctrl)
    for _ in range(30):
        feed.step(1000.0)
    assert ctrl.trendline.num_deltas > 0
    t = feed.now + 0.1
    ctrl.update(_obs(t, acked_total=feed.acked, last_ack=feed.now, connected=False), now=t)
    t += 0.1
    ctrl.update(_obs(t, acked_total=feed.acked, last_ack=t), now=t)  # WELCOME just now
    assert ctrl.trendline.num_deltas == 0
    assert ctrl.incoming_kbps is None
    assert ctrl.state is RateState.INCREASE  # hold -> increase on the first fresh update


# -- the sender-queue extension, behind the scenario's default sender ----------------------------


def test_queue_in_the_sender_is_seen_as_overuse() -> None:
    ctrl = _gcc(start_kbps=1000)
    trace = Scenario(ctrl, phases((20, 3000), (40, 800)))
    trace.run(60)
    assert trace.at(19.9) == 2500
    after = trace.kbps_between(21.0, 60.0)
    assert max(after) < 1000
    assert sum(after) / len(after) < 800  # not above the link on average
    assert "decrease" in {d.state for d in trace.decisions}


def test_without_sender_queue_extension_the_rtt_alone_misses_it() -> None:
    ctrl = _gcc(start_kbps=1000)
    ctrl.count_sender_queue = False  # GCC on RTTs only: blind to a queue before the socket
    trace = Scenario(ctrl, phases((20, 3000), (40, 800)))
    trace.run(60)
    # the part of the queue in the network (the window's) shows in the RTT once, and GCC
    # cuts; then the RTT stays flat while the queue grows in the sender, and it climbs on
    # past the link, the backlog growing without bound
    assert trace.at(59.9) > trace.at(30.0)
    assert trace.at(59.9) + trace.audio_kbps > 800
    backlog_30, backlog_45 = (trace.between(t, 60.0)[0].obs.backlog_ms for t in (30.0, 45.0))
    assert backlog_30 < backlog_45 < trace.decisions[-1].obs.backlog_ms
    assert trace.decisions[-1].obs.backlog_ms > 5000


def test_outage_on_the_shared_model() -> None:
    ctrl = _gcc(start_kbps=1000)
    trace = Scenario(ctrl, phases((15, 2000), (10, 0), (30, 2000)))
    trace.run(55)
    during = [d.state for d in trace.between(17.0, 55.0)]
    assert "starved" in during
    assert trace.at(24.9) < trace.at(14.9)  # cut while the backlog grew unacknowledged
    assert trace.at(54.9) > trace.at(30.0)  # and climbing again once the link is back
