"""The floor-rate oracle (benchmarks.oracle): hand-computed cases, its relation to the
issue's outage oracle, and its properties."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.oracle import floor_bound_interruption_s
from linklab.outages import overlay_outages, unavoidable_interruption_s
from linklab.traces import Outage, Trace

TMOBILE = (Path(__file__).resolve().parents[3] / "shared" / "traces" / "mahimahi"
           / "TMobile-UMTS-driving.up")
needs_shared = pytest.mark.skipif(not TMOBILE.exists(), reason="shared traces not present")


def link(duration_s: float, step_ms: int, gaps_s: list[tuple[float, float]] = ()) -> Trace:
    """One 1500-byte opportunity every ``step_ms`` over the duration, none inside the gaps
    (``start``, ``length``) (10 ms: 1200 kbit/s, 100 ms: 120 kbit/s)."""
    base = Trace(name="link", opportunities_ms=np.arange(0, round(duration_s * 1000), step_ms),
                 period_ms=round(duration_s * 1000))
    return overlay_outages(base, [Outage(s, length) for s, length in gaps_s], duration_s)


def bound(trace: Trace, floor_kbps: float, buffer_s: float = 5.0, delay_s: float = 0.04,
          duration_s: float = 60.0) -> float:
    value = floor_bound_interruption_s(trace, floor_kbps=floor_kbps, buffer_s=buffer_s,
                                       one_way_delay_s=delay_s, duration_s=duration_s)
    assert value is not None
    return value


def test_a_steady_link_above_the_floor_interrupts_nothing() -> None:
    assert bound(link(60, 10), floor_kbps=214) == 0.0


def test_one_long_outage_costs_its_length_less_the_buffer_and_trip() -> None:
    # the last opportunity before the gap is at 9.99 s; at 18.00 s media from 18 - 4.96 on is
    # still useful, so 13.04 - 9.99 = 3.05 s of media was lost
    assert bound(link(60, 10, [(10.0, 8.0)]), floor_kbps=214) == pytest.approx(3.05, abs=1e-6)


def test_an_outage_shorter_than_the_buffer_costs_nothing_when_the_buffer_can_refill() -> None:
    assert bound(link(60, 10, [(10.0, 4.5)]), floor_kbps=214) == 0.0


def test_capacity_below_the_floor_loses_the_share_it_cannot_carry() -> None:
    # 120 kbit/s carries 120/214 of the media; over 60 s, media up to 60 - 4.96 s is judged:
    # missed = (60 - 4.96) - 60 * 120/214 (the buffer's grace at the start, then the share)
    expected = (60 - 4.96) - 60 * 120 / 214
    assert bound(link(60, 100), floor_kbps=214) == pytest.approx(expected, abs=0.1)


def test_outages_too_close_for_the_buffer_to_refill_cost_what_the_issue_oracle_misses() -> None:
    # two 4 s outages 1 s apart on a link that carries twice the floor: each is under the
    # 5 s buffer, so the per-outage oracle says 0, but 1 s at 2x refills only 1 s of buffer
    trace = link(60, 25, [(10.0, 4.0), (15.0, 4.0)])  # 480 kbit/s between
    gaps = trace.outages(60, 0.5)
    assert unavoidable_interruption_s(gaps, 5.0) == 0.0
    assert bound(trace, floor_kbps=240) > 1.0


def test_a_near_zero_floor_reduces_to_the_issue_oracle_less_the_trip() -> None:
    trace = link(120, 10, [(10.0, 8.0), (40.0, 20.0), (80.0, 3.0)])
    gaps = trace.outages(120, 0.5)
    expected = sum(max(0.0, o.length_s - 4.96) for o in gaps)
    assert bound(trace, floor_kbps=0.001, duration_s=120) == pytest.approx(expected, abs=0.03)


def test_no_buffer_beyond_the_trip_has_no_bound_and_bad_arguments_are_named() -> None:
    trace = link(10, 10)
    assert floor_bound_interruption_s(trace, floor_kbps=800, buffer_s=0.0, one_way_delay_s=0.04,
                                      duration_s=10) is None
    with pytest.raises(ValueError, match="buffer_s"):
        floor_bound_interruption_s(trace, floor_kbps=200, buffer_s=-1, one_way_delay_s=0,
                                   duration_s=10)
    with pytest.raises(ValueError, match="floor_kbps"):
        floor_bound_interruption_s(trace, floor_kbps=float("nan"), buffer_s=5,
                                   one_way_delay_s=0, duration_s=10)


@settings(max_examples=60, deadline=None)
@given(gaps=st.lists(st.tuples(st.floats(0, 50), st.floats(0.2, 12)), max_size=5),
       step_ms=st.sampled_from([8, 20, 50]),
       floors=st.tuples(st.floats(50, 900), st.floats(50, 900)),
       buffers=st.tuples(st.floats(1, 10), st.floats(1, 10)))
def test_the_bound_grows_with_the_floor_and_shrinks_with_the_buffer(
        gaps: list[tuple[float, float]], step_ms: int, floors: tuple[float, float],
        buffers: tuple[float, float]) -> None:
    trace = link(60, step_ms, gaps)
    low, high = sorted(floors)
    short, long = sorted(buffers)
    b = bound(trace, floor_kbps=low, buffer_s=long)
    assert 0.0 <= b <= 60.0
    assert bound(trace, floor_kbps=high, buffer_s=long) >= b - 1e-9
    assert bound(trace, floor_kbps=low, buffer_s=short) >= b - 1e-9


@needs_shared
def test_tmobile_outages_cluster_so_the_floor_bound_is_twice_the_issue_oracle() -> None:
    """The figure quoted in docs/benchmarks.md: the T-Mobile drive's first 300 s."""
    from linklab.traces import load_trace
    trace = overlay_outages(load_trace(TMOBILE), [], 300)
    gaps = trace.outages(300, 0.5)
    issue = unavoidable_interruption_s(gaps, 5.0)
    floor = bound(trace, floor_kbps=214, duration_s=300)
    assert floor > 1.5 * issue
