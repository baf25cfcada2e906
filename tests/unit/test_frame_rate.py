"""The frame-rate governor: fewer frames below the floor, the resolution untouched."""

from __future__ import annotations

import pytest

from encoder.frame_rate import DWELL_S, FrameRateGovernor, default_floor_kbps


def test_default_floors_per_resolution() -> None:
    assert default_floor_kbps(1280, 720, 30) == 829
    assert default_floor_kbps(640, 360, 30) == 207
    assert default_floor_kbps(1280, 720, 15) == 415


def test_above_floor_keeps_every_frame() -> None:
    g = FrameRateGovernor(30, 800)
    assert g.update(1200, now=0.0) == 1
    assert all(g.keep(n) for n in range(30))


def test_below_floor_halves_then_thirds_the_frame_rate_never_below_min() -> None:
    g = FrameRateGovernor(30, 800)
    assert g.update(500, now=0.0) == 2  # 15 fps: 33 kbit per frame again
    assert g.effective_fps == 15
    assert [n for n in range(6) if g.keep(n)] == [0, 2, 4]
    assert g.update(300, now=DWELL_S) == 3  # 10 fps
    assert g.update(50, now=10.0) == 3  # never below 10 fps


def test_changes_wait_for_the_dwell_time() -> None:
    g = FrameRateGovernor(30, 800)
    g.update(500, now=0.0)
    assert g.update(2000, now=DWELL_S / 2) == 2
    assert g.update(2000, now=DWELL_S) == 1


def test_raising_needs_a_margin_above_the_floor() -> None:
    g = FrameRateGovernor(30, 800)
    g.update(500, now=0.0)
    assert g.update(810, now=5.0) == 2  # just above the floor: stay at 15 fps
    assert g.update(950, now=10.0) == 1


def test_low_session_fps_is_never_lowered_further() -> None:
    g = FrameRateGovernor(10, 800)
    assert g.update(100, now=0.0) == 1


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        FrameRateGovernor(0, 800)
