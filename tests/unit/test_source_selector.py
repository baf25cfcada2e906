"""SourceSelector driven with scripted ticks."""

from __future__ import annotations

import pytest

from relay.output.source_selector import LIVE_FRAME_GAP_S, OutputSource, SourceSelector

TICK_S = 1 / 30


def run(selector: SourceSelector, start_s: float, end_s: float, live: bool) -> list[OutputSource]:
    """Tick from start_s (inclusive) to end_s (exclusive); return the sources chosen."""
    sources = []
    n = 0
    while start_s + n * TICK_S < end_s - 1e-9:
        sources.append(selector.tick(start_s + n * TICK_S, live))
        n += 1
    return sources


def test_slate_before_any_live_frame_and_hold_not_counted() -> None:
    sel = SourceSelector(freeze_s=0.5, hold_s=10.0)
    assert sel.current is OutputSource.SLATE
    assert set(run(sel, 0.0, 20.0, live=False)) == {OutputSource.SLATE}
    assert sel.slate_for_s(20.0) == pytest.approx(20.0)
    assert not sel.hold_expired(20.0)
    assert not sel.changed


def test_live_then_freeze_until_freeze_s_then_slate() -> None:
    sel = SourceSelector(freeze_s=0.5, hold_s=600.0)
    assert sel.tick(0.0, True) is OutputSource.LIVE
    assert sel.tick(1.0, True) is OutputSource.LIVE
    assert sel.slate_for_s(1.0) == 0.0
    assert sel.tick(1.1, False) is OutputSource.LIVE  # a frame-rate gap, not a freeze
    assert sel.tick(1.3, False) is OutputSource.FREEZE
    assert sel.slate_for_s(1.3) == 0.0
    assert sel.tick(1.5, False) is OutputSource.FREEZE  # exactly freeze_s old: still frozen
    assert sel.tick(1.51, False) is OutputSource.SLATE
    assert sel.slate_for_s(1.51) == 0.0
    assert sel.tick(2.0, False) is OutputSource.SLATE
    assert sel.slate_for_s(3.0) == pytest.approx(1.49)


def test_frozen_ticks_never_exceed_freeze_s_in_a_tick_stream() -> None:
    sel = SourceSelector(freeze_s=0.5, hold_s=600.0)
    run(sel, 0.0, 1.0, live=True)
    last_live_s = sel.last_live_s
    assert last_live_s is not None
    sources = run(sel, 1.0, 3.0, live=False)
    live_count = sources.count(OutputSource.LIVE)
    freeze_count = sources.count(OutputSource.FREEZE)
    assert sources[:live_count] == [OutputSource.LIVE] * live_count
    assert sources[live_count:live_count + freeze_count] == [OutputSource.FREEZE] * freeze_count
    assert set(sources[live_count + freeze_count:]) == {OutputSource.SLATE}
    assert 1.0 + (live_count - 1) * TICK_S - last_live_s <= LIVE_FRAME_GAP_S
    assert 1.0 + (live_count + freeze_count - 1) * TICK_S - last_live_s <= 0.5


def test_back_to_live_after_slate_ends_slate_time() -> None:
    sel = SourceSelector(freeze_s=0.5, hold_s=600.0)
    sel.tick(0.0, True)
    run(sel, 0.1, 5.0, live=False)
    assert sel.current is OutputSource.SLATE
    assert sel.tick(5.0, True) is OutputSource.LIVE
    assert sel.changed
    assert sel.slate_for_s(5.0) == 0.0
    sel.tick(5.3, False)
    assert sel.current is OutputSource.FREEZE
    sel.tick(6.0, False)
    assert sel.slate_for_s(7.0) == pytest.approx(1.0)  # a fresh slate stretch


def test_hold_expires_only_after_continuous_slate() -> None:
    sel = SourceSelector(freeze_s=0.5, hold_s=10.0)
    sel.tick(0.0, True)
    run(sel, TICK_S, 8.0, live=False)  # slate from 0.5 s + a tick
    sel.tick(8.0, True)  # one live frame interrupts the slate
    run(sel, 8.0 + TICK_S, 17.0, live=False)
    assert not sel.hold_expired(17.0)  # 8 s slate, then 8.5 s: neither reaches 10 s
    run(sel, 17.0, 18.6, live=False)
    slate_start_s = 18.6 - sel.slate_for_s(18.6)
    assert slate_start_s == pytest.approx(8.5 + TICK_S, abs=TICK_S)
    assert not sel.hold_expired(slate_start_s + 9.99)
    assert sel.hold_expired(slate_start_s + 10.0 + 1e-9)


def test_reset_hold_stops_counting_until_next_live_frame() -> None:
    sel = SourceSelector(freeze_s=0.5, hold_s=10.0)
    sel.tick(0.0, True)
    run(sel, TICK_S, 12.0, live=False)
    assert sel.hold_expired(12.0)
    sel.reset_hold()
    run(sel, 12.0, 40.0, live=False)
    assert not sel.hold_expired(40.0)
    sel.tick(40.0, True)
    run(sel, 40.0 + TICK_S, 51.0, live=False)
    assert sel.hold_expired(51.0)


def test_changed_is_true_only_on_the_tick_that_switches() -> None:
    sel = SourceSelector(freeze_s=0.5, hold_s=600.0)
    steps = [
        (0.0, False, OutputSource.SLATE, False),
        (0.1, True, OutputSource.LIVE, True),
        (0.2, True, OutputSource.LIVE, False),
        (0.3, False, OutputSource.LIVE, False),  # a frame-rate gap
        (0.5, False, OutputSource.FREEZE, True),
        (0.6, False, OutputSource.FREEZE, False),
        (0.75, False, OutputSource.SLATE, True),
        (0.8, False, OutputSource.SLATE, False),
        (0.85, True, OutputSource.LIVE, True),
    ]
    for now, live, source, changed in steps:
        assert sel.tick(now, live) is source
        assert sel.changed is changed
        assert sel.current is source


def test_output_source_values_are_strings() -> None:
    assert OutputSource.LIVE == "live"
    assert OutputSource("slate") is OutputSource.SLATE


@pytest.mark.parametrize(("freeze_s", "hold_s"), [(-0.1, 600.0), (0.5, 0.0)])
def test_invalid_settings_are_refused(freeze_s: float, hold_s: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        SourceSelector(freeze_s=freeze_s, hold_s=hold_s)


def test_half_the_output_frame_rate_stays_live() -> None:
    """A 15 fps sender under a 30 fps output: every other tick has no new frame; the
    dashboard and the metrics must not flicker between live and freeze."""
    sel = SourceSelector(freeze_s=0.5, hold_s=600.0)
    sources = [sel.tick(n * TICK_S, n % 2 == 0) for n in range(60)]
    assert set(sources) == {OutputSource.LIVE}


def test_a_freeze_shorter_than_the_live_gap_is_still_reported_when_configured() -> None:
    sel = SourceSelector(freeze_s=0.1, hold_s=600.0)
    sel.tick(0.0, True)
    assert sel.tick(0.04, False) is OutputSource.LIVE
    assert sel.tick(0.08, False) is OutputSource.FREEZE
    assert sel.tick(0.15, False) is OutputSource.SLATE
