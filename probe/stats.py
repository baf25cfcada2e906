"""Percentiles and jitter of the probe's samples."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between the closest ranks (numpy's
    default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def mean_abs_diff(values: Sequence[float]) -> float | None:
    """Mean absolute difference between consecutive values (jitter); None below 2 values."""
    if len(values) < 2:
        return None
    return sum(abs(b - a) for a, b in zip(values, values[1:], strict=False)) / (len(values) - 1)
