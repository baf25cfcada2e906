"""uplink.window.WindowedExtreme against a brute-force window over random streams."""

from __future__ import annotations

import random

import pytest

from uplink.window import WindowedExtreme


@pytest.mark.parametrize("largest", [False, True])
def test_matches_brute_force_over_random_streams(largest: bool) -> None:
    rng = random.Random(5)
    for _ in range(50):
        window = WindowedExtreme[float](2.0, largest=largest)
        seen: list[tuple[float, float]] = []
        t = 0.0
        for _ in range(300):
            t += rng.choice([0.0, 0.05, 0.3, 1.0, 3.0])
            value = float(rng.randint(0, 20))  # ties on purpose
            got = window.update(t, value)
            seen.append((t, value))
            inside = [v for at, v in seen if at >= t - 2.0]
            assert got == (max(inside) if largest else min(inside))
            assert window.value == got


def test_the_newest_value_outlives_the_window() -> None:
    window = WindowedExtreme[int](1.0)
    assert window.value is None
    window.add(0.0, 5)
    window.add(0.5, 7)
    window.expire(10.0)
    assert window.value == 7  # the last one seen, though older than the window
    window.clear()
    assert window.value is None
