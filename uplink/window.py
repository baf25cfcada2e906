"""The smallest (or largest) value seen over a sliding window of time, in O(1) amortized.

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
