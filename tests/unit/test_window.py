"""uplink.window: WindowedExtreme against a brute-force window over random streams; WindowedSum
exact for values a bucket apart, and bounded under a flood."""

from __future__ import annotations

import random

import pytest

from uplink.window import WindowedExtreme, WindowedSum


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


def test_windowed_sum_is_exact_for_values_a_bucket_apart() -> None:
    rng = random.Random(7)
    window = WindowedSum(2.0, bucket_s=0.05)
    seen: list[tuple[float, int]] = []
    t = 0.0
    for _ in range(2000):
        t += rng.choice([0.06, 0.1, 0.3, 1.0, 2.5])  # each its own bucket
        value = rng.randint(0, 5000)
        window.add(t, value)
        seen.append((t, value))
        t += rng.choice([0.0, 0.01, 1.0])  # read it now or a little later (times go on)
        assert window.total(t) == sum(v for at, v in seen if at > t - 2.0)


def test_windowed_sum_holds_a_bounded_number_of_buckets_under_a_flood() -> None:
    # issue 13, fault 5: one entry per tiny message was 200 000 entries at 100 000 a second
    window = WindowedSum(2.0, bucket_s=0.05)
    for i in range(100_000):
        window.add(i / 100_000 * 3, 1)  # 3 s of arrivals
        assert len(window) <= 2.0 / 0.05 + 2
    assert window.total(3.0) == pytest.approx(100_000 * 2 / 3, rel=0.03)
    assert window.total(10.0) == 0 and len(window) == 0


def test_windowed_sum_refuses_a_bucket_larger_than_the_window() -> None:
    with pytest.raises(ValueError):
        WindowedSum(1.0, bucket_s=2.0)
