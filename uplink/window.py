"""Sliding windows of time: the smallest (or largest) value seen over one, in O(1) amortized
(`WindowedExtreme`), and the sum of the values added over one, in bounded memory
(`WindowedSum`).

A monotonic deque: a new value drops every older value it beats (they can never be the
extreme again while it is in the window), so the front is always the window's extreme. The
newest value is always kept, even past the window: "the lowest RTT of the last minute" with
no sample for a minute is still the last one seen. Sans-I/O: times come in as arguments.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

V = TypeVar("V", int, float)


class WindowedExtreme(Generic[V]):
    """The minimum (``largest=False``) or maximum of the values added over the last
    ``window_s``; ties keep the newer value."""

    def __init__(self, window_s: float, *, largest: bool = False) -> None:
        self.window_s = window_s
        self._largest = largest
        self._entries: deque[tuple[float, V]] = deque()  # (time, value), front = extreme

    def add(self, at: float, value: V) -> None:
        """A value seen at `at` (times not decreasing)."""
        entries = self._entries
        if self._largest:
            while entries and entries[-1][1] <= value:
                entries.pop()
        else:
            while entries and entries[-1][1] >= value:
                entries.pop()
        entries.append((at, value))

    def expire(self, now: float) -> None:
        """Forget values older than `now - window_s`, except the newest."""
        entries = self._entries
        while len(entries) > 1 and entries[0][0] < now - self.window_s:
            entries.popleft()

    def update(self, now: float, value: V) -> V:
        """Add `value` at `now`, expire, and return the window's extreme."""
        self.add(now, value)
        self.expire(now)
        return self._entries[0][1]

    @property
    def value(self) -> V | None:
        """The window's extreme (as of the last `expire`), None before any value."""
        return self._entries[0][1] if self._entries else None

    def clear(self) -> None:
        self._entries.clear()


ARRIVAL_BUCKET_S = 0.05  # default granularity of a WindowedSum


class WindowedSum:
    """The sum of the values added over the last ``window_s``, kept in buckets of
    ``bucket_s``: its memory is at most window_s / bucket_s + 2 entries, whatever the rate
    (a sender of 100 000 tiny messages a second must not make a rate meter hold 200 000
    entries; issue 13, fault 5).

    Rules: a value added less than ``bucket_s`` after the start of the newest bucket joins that
    bucket; a bucket leaves the sum once its start is ``window_s`` or more before ``now``. So
    the sum is exact for values at least ``bucket_s`` apart, and otherwise counts the values of
    (now - window_s - bucket_s, now], give or take one bucket. Times must not decrease.
    Sans-I/O: times come in as arguments.
    """

    def __init__(self, window_s: float, bucket_s: float = ARRIVAL_BUCKET_S) -> None:
        if not 0 < bucket_s <= window_s:
            raise ValueError(f"need 0 < bucket_s <= window_s, got {bucket_s}, {window_s}")
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._buckets: deque[list[float]] = deque()  # [start time, sum], oldest first
        self._total = 0.0

    def add(self, at: float, value: float) -> None:
        """Add `value` at time `at` (and forget what `at` puts outside the window)."""
        self.expire(at)
        buckets = self._buckets
        if buckets and at - buckets[-1][0] < self.bucket_s:
            buckets[-1][1] += value
        else:
            buckets.append([at, value])
        self._total += value

    def expire(self, now: float) -> None:
        horizon = now - self.window_s
        buckets = self._buckets
        while buckets and buckets[0][0] <= horizon:
            self._total -= buckets.popleft()[1]
        if not buckets:
            self._total = 0.0  # no rounding left over

    def total(self, now: float) -> float:
        """The sum over the window ending at `now`."""
        self.expire(now)
        return self._total

    def __len__(self) -> int:
        """Buckets held (at most window_s / bucket_s + 2)."""
        return len(self._buckets)

    def clear(self) -> None:
        self._buckets.clear()
        self._total = 0.0
