"""The link model's stages, alone and composed, against hand-computed delivery times.

Trace used by most tests: opportunities at 10, 20 and 30 ms, period 30 ms, so the looped
opportunities are 10, 20, 30, 40, 50, 60, ... ms, each for 1500 bytes.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linklab.link_model import (
    OPPORTUNITY_BYTES,
    DelayStage,
    Delivered,
    DropTailQueue,
    Link,
    LinkModelError,
    LossStage,
    OutageStage,
    Packet,
    TraceLink,
    UnlimitedLink,
    make_link,
)
from linklab.traces import Outage, Trace

OPPS = [10, 20, 30]
PERIOD = 30


def times(delivered: list[Delivered]) -> list[tuple[object, float]]:
    return [(d.packet.payload, d.time_ms) for d in delivered]


def trace_link(queue: DropTailQueue | None = None, start_ms: float = 0.0,
               outages: OutageStage | None = None) -> TraceLink:
    return TraceLink(OPPS, PERIOD, queue=queue, start_ms=start_ms, outages=outages)


# -- TraceLink: Mahimahi semantics --------------------------------------------------------------


def test_single_full_packet_leaves_at_the_first_opportunity() -> None:
    link = trace_link()
    assert link.enqueue(Packet(1500, "a"), 0.0)
    assert link.next_event_ms() == 10.0
    assert link.advance(9.9) == []
    assert times(link.advance(10.0)) == [("a", 10.0)]
    assert link.next_event_ms() is None


def test_small_packets_share_one_opportunity() -> None:
    link = trace_link()
    for name in "abc":
        link.enqueue(Packet(500, name), 0.0)
    link.enqueue(Packet(1, "d"), 0.0)  # 1501st byte: the next opportunity
    assert times(link.advance(100.0)) == [("a", 10.0), ("b", 10.0), ("c", 10.0), ("d", 20.0)]


def test_large_packet_spans_three_opportunities_and_shares_the_last() -> None:
    link = trace_link()
    link.enqueue(Packet(4000, "big"), 0.0)  # 1500 @10, 1500 @20, 1000 @30
    link.enqueue(Packet(500, "small"), 0.0)  # the last 500 bytes of the opportunity at 30
    link.enqueue(Packet(1, "next"), 0.0)
    assert link.advance(15.0) == []
    assert link.backlog_bytes == 2500 + 500 + 1
    assert times(link.advance(100.0)) == [("big", 30.0), ("small", 30.0), ("next", 40.0)]


def test_opportunity_finding_empty_queue_is_wasted() -> None:
    link = trace_link()
    link.enqueue(Packet(1500, "late"), 12.0)  # the opportunity at 10 went by unused
    assert times(link.advance(25.0)) == [("late", 20.0)]
    # an idle spell saves nothing: two packets at 41 need the opportunities at 50 and 60
    link.enqueue(Packet(1500, "x"), 41.0)
    link.enqueue(Packet(1500, "y"), 41.0)
    assert times(link.advance(1000.0)) == [("x", 50.0), ("y", 60.0)]


def test_packet_arriving_at_an_opportunity_waits_for_the_next() -> None:
    # as in Mahimahi: opportunities up to now are used before the arriving packet is queued
    link = trace_link()
    link.enqueue(Packet(1500, "a"), 10.0)
    assert times(link.advance(100.0)) == [("a", 20.0)]


def test_repeated_timestamps_are_several_opportunities_in_one_ms() -> None:
    link = TraceLink([5, 5, 5, 10], 10)
    for i in range(5):
        link.enqueue(Packet(1500, i), 0.0)
    assert times(link.advance(100.0)) == [(0, 5.0), (1, 5.0), (2, 5.0), (3, 10.0), (4, 15.0)]


def test_trace_loops_with_its_period() -> None:
    link = trace_link()
    for i in range(7):
        link.enqueue(Packet(1500, i), 0.0)
    assert [t for _, t in times(link.advance(1000.0))] == [10, 20, 30, 40, 50, 60, 70]
    # far past many periods, skipping the wasted ones: 3_000_005 -> the next is at +5 ms
    link.enqueue(Packet(1500, "far"), 3_000_005.0)
    assert times(link.advance(4_000_000.0)) == [("far", 3_000_010.0)]


def test_first_opportunity_at_zero_and_last_at_period_both_count_when_looping() -> None:
    # a trace [0, 10] with period 10 has opportunities at 0, 10, 10, 20, 20, ... (Mahimahi)
    link = TraceLink([0, 10], 10, start_ms=100.0)
    for i in range(5):
        link.enqueue(Packet(1500, i), 99.0)
    assert [t for _, t in times(link.advance(1000.0))] == [100, 110, 110, 120, 120]


def test_link_from_a_loaded_trace_keeps_its_capacity() -> None:
    trace = Trace("flat", np.arange(12, 3001, 12), 3000)  # 1000 kbit/s
    link = TraceLink.from_trace(trace, start_ms=500.0)
    assert link.capacity_bytes(500.0, 9_500.0) == 9 * 125_000  # three whole periods


def test_start_ms_shifts_the_trace_clock() -> None:
    link = trace_link(start_ms=1000.0)
    link.enqueue(Packet(1500, "a"), 0.0)
    assert times(link.advance(2000.0)) == [("a", 1010.0)]


def test_next_event_lets_a_simulator_jump_from_event_to_event() -> None:
    def run(jump: bool) -> list[tuple[object, float]]:
        link = make_link(OPPS, PERIOD, delay_ms=7.0)
        for i in range(5):
            link.enqueue(Packet(1000, i), 3.0 * i)
        if not jump:
            return times(link.advance(10_000.0))
        out: list[Delivered] = []
        while (t := link.next_event_ms()) is not None:
            out += link.advance(t)
        return times(out)

    # opportunity 10: all of 0, half of 1; 20: the rest of 1 and all of 2; 30: 3 and half of 4
    assert run(jump=True) == run(jump=False) == [
        (0, 17.0), (1, 27.0), (2, 27.0), (3, 37.0), (4, 47.0)]


def test_trace_without_opportunities_never_delivers() -> None:
    link = TraceLink(np.zeros(0, dtype=np.int64), 1000)
    link.enqueue(Packet(100, "a"), 0.0)
    assert link.advance(1e9) == []
    assert link.next_event_ms() is None
    assert link.capacity_bytes(0.0, 1e6) == 0


def test_capacity_counts_opportunities_in_a_window_with_loops_and_outages() -> None:
    link = trace_link(outages=OutageStage([(15.0, 45.0)]))
    # (0, 60]: 10, 20, 30, 40, 50, 60; the outage removes 20, 30 and 40
    assert link.opportunities_between(0.0, 60.0) == 3
    assert link.capacity_bytes(10.0, 60.0) == 2 * OPPORTUNITY_BYTES
    assert trace_link().capacity_bytes(0.0, 300.0) == 30 * OPPORTUNITY_BYTES


@pytest.mark.parametrize(("opps", "period", "word"), [
    ([10, 5, 20], 20, "decreases at index 1"),
    ([10, 20], 15, "period_ms=15"),
    ([-1, 10], 10, "first is -1"),
    ([1.5, 3], 3, "whole milliseconds"),
])
def test_bad_trace_is_refused_with_the_reason(opps: list[float], period: int, word: str) -> None:
    with pytest.raises(LinkModelError, match=word):
        TraceLink(np.asarray(opps), period)


def test_clock_going_backwards_is_refused() -> None:
    link = trace_link()
    link.advance(50.0)
    with pytest.raises(LinkModelError, match="went back in time"):
        link.enqueue(Packet(1, None), 49.0)


# -- DropTailQueue ----------------------------------------------------------------------------


def test_drop_tail_by_packets() -> None:
    link = trace_link(queue=DropTailQueue(limit_packets=2))
    assert link.enqueue(Packet(100, "a"), 0.0)
    assert link.enqueue(Packet(100, "b"), 0.0)
    assert link.is_full_for(1)
    assert not link.enqueue(Packet(100, "c"), 0.0)
    assert link.queue.dropped_packets == 1 and link.queue.dropped_bytes == 100
    assert times(link.advance(10.0)) == [("a", 10.0), ("b", 10.0)]
    assert link.enqueue(Packet(100, "d"), 10.0)  # room again once they left


def test_drop_tail_by_bytes() -> None:
    queue = DropTailQueue(limit_bytes=3000)
    assert queue.offer(Packet(1500))
    assert not queue.is_full_for(1500)
    assert queue.offer(Packet(1500))
    assert queue.is_full_for(1)
    assert not queue.offer(Packet(1))
    assert (len(queue), queue.bytes, queue.peak_bytes) == (2, 3000, 3000)


def test_packet_being_sent_has_left_the_queue() -> None:
    # Mahimahi: the packet in transit is no longer in the queue, so its limit frees up
    link = trace_link(queue=DropTailQueue(limit_bytes=4000))
    assert link.enqueue(Packet(4000, "a"), 0.0)
    assert not link.enqueue(Packet(1, "b"), 0.0)
    link.advance(10.0)
    assert link.queue.bytes == 0 and link.backlog_bytes == 2500
    assert link.enqueue(Packet(4000, "c"), 10.0)


def test_bad_queue_limits_are_refused() -> None:
    with pytest.raises(LinkModelError, match="limit_packets=0"):
        DropTailQueue(limit_packets=0)
    with pytest.raises(LinkModelError, match="limit_bytes=-5"):
        DropTailQueue(limit_bytes=-5)


# -- DelayStage, LossStage, OutageStage ----------------------------------------------------------


def test_delay_stage_adds_a_fixed_delay() -> None:
    assert DelayStage(40.0).process(Delivered(Packet(1), 10.0)).time_ms == 50.0
    link = make_link(OPPS, PERIOD, delay_ms=40.0)
    link.enqueue(Packet(1500, "a"), 0.0)
    assert link.advance(49.0) == []
    assert link.next_event_ms() == 50.0
    assert times(link.advance(50.0)) == [("a", 50.0)]
    with pytest.raises(LinkModelError, match="delay_ms=-1"):
        DelayStage(-1.0)


def _lost(rate: float, seed: int, n: int) -> list[int]:
    stage = LossStage(rate, seed)
    return [i for i in range(n) if stage.process(Delivered(Packet(1, i), float(i))) is None]


def test_loss_stage_loses_at_its_rate_and_is_reproducible() -> None:
    lost = _lost(0.1, seed=7, n=20_000)
    assert abs(len(lost) / 20_000 - 0.1) < 0.01
    assert lost == _lost(0.1, seed=7, n=20_000)
    assert lost != _lost(0.1, seed=8, n=20_000)
    assert _lost(0.0, seed=7, n=1000) == []
    assert len(_lost(1.0, seed=7, n=1000)) == 1000
    with pytest.raises(LinkModelError, match="rate=1.5"):
        LossStage(1.5)


def test_loss_in_retransmit_mode_delays_the_flow_behind_the_lost_packet() -> None:
    stage = LossStage(1.0, retransmit_delay_ms=200.0)
    first = stage.process(Delivered(Packet(1, "a", flow="A"), 10.0))
    assert first is not None and first.time_ms == 210.0
    stage.rate = 0.0  # no more loss: later packets of flow A wait behind "a", others do not
    later = stage.process(Delivered(Packet(1, "b", flow="A"), 20.0))
    other = stage.process(Delivered(Packet(1, "c", flow="B"), 20.0))
    assert later is not None and later.time_ms == 210.0
    assert other is not None and other.time_ms == 20.0
    assert stage.lost_packets == 1


def test_outage_stage_alone_holds_until_the_outage_ends() -> None:
    gate = OutageStage([(100.0, 200.0), (150.0, 250.0), (400.0, 400.0)])
    assert gate.intervals_ms == [(100.0, 250.0)]  # merged; the empty one ignored
    assert gate.process(Delivered(Packet(1), 120.0)).time_ms == 250.0
    assert gate.process(Delivered(Packet(1), 250.0)).time_ms == 250.0  # end is exclusive
    assert gate.process(Delivered(Packet(1), 99.0)).time_ms == 99.0
    assert gate.is_out(100.0) and not gate.is_out(250.0)


def test_outage_stage_from_trace_outages_in_seconds() -> None:
    gate = OutageStage.from_outages([Outage(1.0, 0.5)], start_ms=10_000.0)
    assert gate.intervals_ms == [(11_000.0, 11_500.0)]


def test_outage_removes_opportunities_and_packets_wait_in_the_queue() -> None:
    link = trace_link(outages=OutageStage([(15.0, 45.0)]))
    for i in range(3):
        link.enqueue(Packet(1500, i), 0.0)
    assert link.next_event_ms() == 10.0
    link.advance(10.0)
    assert link.next_event_ms() == 50.0  # 20, 30, 40 fall inside the outage
    assert times(link.advance(100.0)) == [(1, 50.0), (2, 60.0)]


def test_outage_ending_exactly_at_an_opportunity_on_an_odd_clock() -> None:
    # monotonic-clock milliseconds: float rounding must neither hang nor lose the packets
    start = 6_557_930.653847
    ends = [start + 20.0, start + 30.0 + 1e-9, start + 40.0 - 1e-9]
    link = trace_link(start_ms=start, outages=OutageStage((start + 11.0, e) for e in ends))
    for i in range(3):
        link.enqueue(Packet(1500, i), start)
    out = link.advance(start + 1000.0)
    assert [d.packet.payload for d in out] == [0, 1, 2]
    assert out[0].time_ms == start + 10.0 and out[1].time_ms >= start + 40.0 - 1e-6


def test_outage_fills_the_queue_which_then_refuses() -> None:
    link = trace_link(queue=DropTailQueue(limit_packets=3), outages=OutageStage([(0.0, 100.0)]))
    accepted = [link.enqueue(Packet(1500, i), float(i)) for i in range(5)]
    assert accepted == [True, True, True, False, False]
    assert [t for _, t in times(link.advance(1000.0))] == [100.0, 110.0, 120.0]


def test_unlimited_link_passes_at_once_and_holds_during_outages() -> None:
    link = UnlimitedLink(queue=DropTailQueue(limit_packets=2),
                         outages=OutageStage([(100.0, 200.0)]))
    link.enqueue(Packet(9000, "a"), 50.0)
    assert link.next_event_ms() == 50.0
    assert times(link.advance(50.0)) == [("a", 50.0)]
    assert link.enqueue(Packet(10, "b"), 120.0)
    assert link.enqueue(Packet(10, "c"), 130.0)
    assert not link.enqueue(Packet(10, "d"), 140.0)  # the queue holds two
    assert link.next_event_ms() == 200.0
    assert link.advance(199.0) == []
    assert times(link.advance(300.0)) == [("b", 200.0), ("c", 200.0)]


def test_outage_begun_on_demand_holds_until_it_is_ended() -> None:
    gate = OutageStage([(100.0, 120.0), (300.0, 310.0)])
    gate.begin(110.0)  # runs into the open one: no known end
    assert gate.end_ms(105.0) == math.inf and gate.end_ms(1000.0) == math.inf
    assert not gate.is_out(50.0)
    assert gate.intervals_ms == [(100.0, math.inf)]
    with pytest.raises(LinkModelError, match="already open"):
        gate.begin(120.0)
    gate.end(200.0)
    assert gate.open_since_ms is None
    # the one known in advance that it covered still counts
    assert gate.intervals_ms == [(100.0, 200.0), (300.0, 310.0)]
    with pytest.raises(LinkModelError, match="no outage is open"):
        gate.end(400.0)


def test_trace_link_in_an_open_outage_waits_for_its_end() -> None:
    gate = OutageStage()
    link = trace_link(outages=gate)
    link.enqueue(Packet(1500, "a"), 0.0)
    gate.begin(5.0)
    link.enqueue(Packet(1500, "b"), 6.0)
    assert link.next_event_ms() is None  # nothing can leave before the end
    assert link.advance(1000.0) == []
    assert link.opportunities_between(0.0, 1000.0) == 0
    gate.end(1005.0)
    assert link.next_event_ms() == 1010.0  # the opportunities inside it are gone
    assert times(link.advance(1030.0)) == [("a", 1010.0), ("b", 1020.0)]


def test_unlimited_link_in_an_open_outage_releases_at_its_end() -> None:
    gate = OutageStage()
    link = UnlimitedLink(outages=gate)
    gate.begin(10.0)
    link.enqueue(Packet(100, "a"), 20.0)
    assert link.next_event_ms() is None
    assert link.advance(500.0) == []
    gate.end(600.0)
    assert link.next_event_ms() == 600.0
    assert times(link.advance(700.0)) == [("a", 600.0)]


def test_switch_trace_keeps_the_queue_and_the_packet_partly_sent() -> None:
    link = trace_link()
    link.enqueue(Packet(3000, "big"), 0.0)  # leaves at 20 on the old trace
    link.enqueue(Packet(1500, "next"), 0.0)
    assert link.advance(15.0) == []  # 1500 of its bytes left at 10
    link.switch_trace([0, 50], 100, 15.0)  # now at 15 and 65, then every 100 ms
    assert times(link.advance(200.0)) == [("big", 15.0), ("next", 65.0)]


def test_link_gets_a_trace_while_it_runs() -> None:
    link = make_link(None, queue_packets=10, outages=OutageStage([(0.0, 50.0)]))
    link.enqueue(Packet(1500, "held"), 10.0)
    link.set_trace(OPPS, PERIOD, 20.0)  # opportunities at 30, 40, 50, 60, ... on this clock
    assert isinstance(link.bottleneck, TraceLink)
    link.enqueue(Packet(1500, "later"), 25.0)
    assert times(link.advance(100.0)) == [("held", 50.0), ("later", 60.0)]


# -- composition ---------------------------------------------------------------------------


def test_link_composes_queue_trace_loss_and_delay_with_counters() -> None:
    link = make_link(OPPS, PERIOD, queue_packets=10, loss=0.5, delay_ms=5.0, seed=3)
    offered = 0
    for i in range(40):
        offered += 1
        link.enqueue(Packet(1000, i), float(i))
    done = link.advance(10_000.0)
    s = link.stats
    assert s.offered_packets == offered == 40
    assert s.dropped_packets > 0 and s.lost_packets > 0
    assert s.delivered_packets == len(done)
    assert s.delivered_packets + s.dropped_packets + s.lost_packets == 40
    assert s.delivered_bytes == 1000 * len(done)
    # every survivor leaves 5 ms after an opportunity, in order
    assert all((d.time_ms - 5.0) % 10 == 0 for d in done)
    order = [cast(int, d.packet.payload) for d in done]
    assert order == sorted(order)


def test_link_built_by_hand_equals_make_link() -> None:
    by_hand = Link(TraceLink(OPPS, PERIOD, queue=DropTailQueue(5)),
                   [LossStage(0.2, 1), DelayStage(3.0)])
    built = make_link(OPPS, PERIOD, queue_packets=5, loss=0.2, seed=1, delay_ms=3.0)
    for link in (by_hand, built):
        for i in range(30):
            link.enqueue(Packet(700, i), 2.0 * i)
    assert times(by_hand.advance(1e5)) == times(built.advance(1e5))


# -- properties -----------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[int], int, list[tuple[float, int]], float]:
    opps = sorted(draw(st.lists(st.integers(0, 60), min_size=1, max_size=12)))
    period = max(opps[-1], 1) + draw(st.integers(0, 20))
    packets = draw(st.lists(st.tuples(st.floats(0, 40, allow_nan=False), st.integers(0, 5000)),
                            min_size=1, max_size=40))
    delay = draw(st.sampled_from([0.0, 7.5, 40.0]))
    return opps, period, packets, delay


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_delivery_is_fifo_never_early_and_within_capacity(
        scenario: tuple[list[int], int, list[tuple[float, int]], float]) -> None:
    opps, period, packets, delay = scenario
    link = make_link(opps, period, delay_ms=delay)
    arrivals: list[float] = []
    t = 0.0
    out: list[Delivered] = []
    for gap, size in packets:
        t += gap
        arrivals.append(t)
        out += link.advance(t)
        assert link.enqueue(Packet(size, len(arrivals) - 1), t)
    total = sum(size for _, size in packets)
    cycles = math.ceil(total / (OPPORTUNITY_BYTES * len(opps))) + 2
    end = t + cycles * period + delay + 1
    out += link.advance(end)
    assert link.next_event_ms() is None

    assert [d.packet.payload for d in out] == list(range(len(packets)))  # FIFO, none lost
    # every opportunity up to the end, computed independently of the model
    loops = np.arange(int(end // period) + 2)[:, None] * period
    all_opps = np.sort((loops + np.asarray(opps)[None, :]).reshape(-1))
    delivered = 0
    for d in out:
        i = d.packet.payload
        assert isinstance(i, int)
        assert d.time_ms >= arrivals[i] + delay
        leave = d.time_ms - delay
        assert leave in all_opps  # packets leave at opportunities
        delivered += d.packet.size_bytes
        used = int(np.searchsorted(all_opps, leave, side="right")
                   - np.searchsorted(all_opps, arrivals[0], side="right"))
        assert delivered <= used * OPPORTUNITY_BYTES


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 30, allow_nan=False), st.integers(1, 4000)),
                min_size=1, max_size=60),
       st.integers(1, 6))
def test_queue_limit_is_never_exceeded_and_every_packet_is_counted(
        packets: list[tuple[float, int]], limit: int) -> None:
    link = make_link(OPPS, PERIOD, queue_packets=limit)
    t = 0.0
    delivered = 0
    for gap, size in packets:
        t += gap
        delivered += len(link.advance(t))
        link.enqueue(Packet(size), t)
        assert link.queued_packets <= limit
    delivered += len(link.advance(t + 1e6))
    assert delivered + link.stats.dropped_packets == len(packets)
