"""The outage overlay: spec parsing, the seeded heavy-tailed on/off process, cutting a trace,
and the unavoidable-interruption oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from linklab.outages import (
    DEFAULT_OUTAGE_SPEC,
    OutageSpecError,
    overlay_outages,
    parse_outages,
    unavoidable_interruption_s,
)
from linklab.traces import Outage, Trace, load_trace

ATT = Path(__file__).resolve().parents[3] / "shared" / "traces" / "mahimahi" / "ATT-LTE-driving.up"
needs_shared = pytest.mark.skipif(not ATT.exists(), reason="shared traces not present")


def dense(period_ms: int = 1000, step_ms: int = 10) -> Trace:
    """An opportunity every ``step_ms`` (1.2 Mbit/s at 10 ms), no native gap."""
    return Trace(name="dense", opportunities_ms=np.arange(0, period_ms, step_ms),
                 period_ms=period_ms)


# --- spec parsing -------------------------------------------------------------------------------
def test_explicit_spec_is_sorted_and_truncated_at_duration() -> None:
    outages = parse_outages("120:20, 30:5,95:10,200:1", duration_s=100)
    assert outages == [Outage(30.0, 5.0), Outage(95.0, 5.0)]


def test_none_gives_no_outages_and_default_is_the_default_spec() -> None:
    assert parse_outages("none", duration_s=600) == []
    assert parse_outages("default", duration_s=600, seed=4) == parse_outages(
        DEFAULT_OUTAGE_SPEC, duration_s=600, seed=4)


@pytest.mark.parametrize(("spec", "message"), [
    ("", "outage spec is empty"),
    ("30-5", "bad part '30-5'"),
    ("a:5", "bad part 'a:5'"),
    ("30:5,x", "bad part 'x'"),
    ("30:0", "LENGTH > 0"),
    ("-1:5", "START must be >= 0"),
    ("10:5,12:3", "12:3 overlaps 10:5"),
    ("random:foo=1", "bad part 'foo=1'"),
    ("random:gap", "bad part 'gap'"),
    ("random:gap=x", "gap='x' is not a number"),
    ("random:gap=0", "gap=0 must be > 0"),
    ("random:alpha=1", "alpha=1 must be > 1"),
    ("random:max=1,min=2", "max=1 must be > 0 and >= min"),
    ("random:gap=1,gap=2", "'gap' given twice"),
    ("random:len=inf", "len='inf' must be finite"),
    ("rnd:gap=4", "bad part 'rnd:gap=4'"),
])
def test_bad_spec_names_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(OutageSpecError) as info:
        parse_outages(spec, duration_s=600)
    assert message in str(info.value)


def test_bad_spec_message_says_what_is_valid() -> None:
    with pytest.raises(OutageSpecError, match=r"valid: 'none', 'default'.*START:LENGTH.*random"):
        parse_outages("sometimes", duration_s=600)
    with pytest.raises(OutageSpecError, match="KEY one of gap, len, alpha, max, min, first"):
        parse_outages("random:mean=3", duration_s=600)


def test_non_positive_duration_is_refused() -> None:
    with pytest.raises(OutageSpecError, match="duration"):
        parse_outages("none", duration_s=0)


# --- the random process -------------------------------------------------------------------------
def test_random_outages_are_reproducible_by_seed() -> None:
    a = parse_outages("default", duration_s=3600, seed=7)
    assert a == parse_outages("default", duration_s=3600, seed=7)
    assert a != parse_outages("default", duration_s=3600, seed=8)


def test_random_outages_are_ordered_disjoint_and_within_bounds() -> None:
    duration = 5000.0
    outages = parse_outages("random:gap=20,len=3,alpha=1.4,max=45,min=0.3,first=15",
                            duration_s=duration, seed=3)
    assert outages
    assert outages[0].start_s >= 15
    for before, after in zip(outages, outages[1:], strict=False):
        assert before.end_s <= after.start_s
    assert outages[-1].end_s <= duration
    for o in outages[:-1]:  # the last may be truncated at the end
        assert 0.3 <= o.length_s <= 45


def test_random_lengths_are_heavy_tailed() -> None:
    outages = parse_outages("default", duration_s=100_000, seed=1)
    lengths = np.array([o.length_s for o in outages])
    # ~2000 outages: many short ones and a few long ones, capped at a minute
    assert len(lengths) > 1500
    assert np.mean(lengths < 2.0) > 0.6
    assert np.sum(lengths >= 30) >= 10
    assert lengths.max() == pytest.approx(60)
    assert np.median(lengths) < np.mean(lengths)  # right-skewed
    # the uncapped mean would be `len`; the cap at 60 s brings it to about 3.3 s
    assert 2.5 < lengths.mean() < 4.0


def test_random_gap_sets_the_outage_rate() -> None:
    outages = parse_outages("random:gap=10,len=1,max=5,first=0", duration_s=20_000, seed=2)
    # one outage per ~(10 s gap + <1 s outage)
    assert 1700 < len(outages) < 2100


# --- cutting a trace ---------------------------------------------------------------------------
def test_overlay_removes_opportunities_inside_outages_and_unrolls() -> None:
    cut = overlay_outages(dense(), [Outage(2.0, 1.5)], duration_s=5.0)
    opps = cut.opportunities_ms
    assert cut.period_ms == 5000
    assert cut.overlay == (Outage(2.0, 1.5),)
    assert not ((opps >= 2000) & (opps < 3500)).any()
    assert 1990 in opps and 3500 in opps
    assert opps.size == 500 - 150
    # the overlay outage is found as a gap from the last opportunity before it to the next one
    [found] = cut.outages(5.0)
    assert (found.start_s, found.length_s) == pytest.approx((1.99, 1.51))


def test_overlay_outage_is_found_alongside_native_gaps() -> None:
    opps = [t for t in range(0, 10_000, 10) if not 6000 < t < 7000]  # a native 1 s gap
    trace = Trace(name="gappy", opportunities_ms=np.array(opps), period_ms=10_000)
    cut = overlay_outages(trace, [Outage(2.0, 0.8)], duration_s=10.0)
    found = cut.outages(10.0)
    assert [round(o.start_s, 2) for o in found] == [1.99, 6.0]
    assert [round(o.length_s, 2) for o in found] == [0.81, 1.0]


def test_overlay_keeps_an_earlier_overlay_when_looping_it() -> None:
    first = overlay_outages(dense(), [Outage(1.0, 1.0)], duration_s=4.0)
    second = overlay_outages(first, [Outage(6.0, 0.5)], duration_s=8.0)
    assert second.overlay == (Outage(1.0, 1.0), Outage(5.0, 1.0), Outage(6.0, 0.5))
    # the looped 5-6 s outage and the new 6-6.5 s one touch: one gap of 1.51 s
    found = second.outages(8.0)
    assert [(round(o.start_s, 2), round(o.length_s, 2)) for o in found] == [(0.99, 1.01),
                                                                           (4.99, 1.51)]


@needs_shared
def test_overlay_on_the_real_trace_is_deterministic_by_seed() -> None:
    trace = load_trace(ATT, scale=0.5)
    duration = 1800.0

    def cut(seed: int) -> Trace:
        return overlay_outages(trace, parse_outages("default", duration_s=duration, seed=seed),
                               duration)

    a, b, c = cut(11), cut(11), cut(12)
    np.testing.assert_array_equal(a.opportunities_ms, b.opportunities_ms)
    assert a.overlay == b.overlay
    assert a.overlay != c.overlay
    assert a.opportunities_ms.size != c.opportunities_ms.size
    # every overlay outage long enough to count lies inside a detected outage
    found = a.outages(duration)
    for o in a.overlay:
        if o.length_s >= 0.5:
            assert any(f.start_s <= o.start_s and o.end_s <= f.end_s + 1e-9 for f in found)
    # and the native 78 s gap of the drive is still there, looped once more after 1012 s
    assert sum(f.length_s >= 78 for f in found) >= 1
    assert a.mean_kbps(duration) < trace.mean_kbps(duration)


# --- the oracle ---------------------------------------------------------------------------------
def test_unavoidable_interruption_by_hand() -> None:
    outages = [Outage(10, 1.0), Outage(50, 5.0), Outage(100, 30.0)]
    assert unavoidable_interruption_s(outages, buffer_s=4.0) == pytest.approx(0 + 1 + 26)
    assert unavoidable_interruption_s(outages, buffer_s=0.0) == pytest.approx(36)
    assert unavoidable_interruption_s(outages, buffer_s=60.0) == 0
    assert unavoidable_interruption_s([], buffer_s=2.0) == 0
    with pytest.raises(ValueError, match="buffer_s"):
        unavoidable_interruption_s(outages, buffer_s=-1)
