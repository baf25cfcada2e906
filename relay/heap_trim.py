"""Hand the C heap's free pages back to the operating system (glibc's ``malloc_trim``).

After a burst of short-lived allocations (thousands of connections, a gap of tens of
thousands of units) has been freed, glibc keeps the free pages inside its heaps (the main
one and one per thread that allocated) mapped, so the relay's resident set stays at its
peak. ``malloc_trim(0)`` gives every whole free page back (``madvise``, glibc 2.8 and later).
It walks the heap while holding its lock (well under 1 ms on a resting relay, ~20-150 ms on a
heap of a million live small objects), so the relay does not trim on a timer alone:
`TrimPolicy` asks for a trim when the resident set has grown ``TRIM_GROWTH_BYTES`` above what
it was after the last one, checked every ``HEAP_TRIM_INTERVAL_S``, and the trim runs on a
worker thread. The relay runs on glibc's allocator (``PYTHONMALLOC=malloc``, see
``steadycast.cli``) so that Python objects are in that heap too; on Python's own
small-object arenas a trim does nothing (an arena goes back only when all its objects are
gone). Where the C library is not glibc, `trim_heap` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable

HEAP_TRIM_INTERVAL_S = 5.0
TRIM_GROWTH_BYTES = 8 * 1024 * 1024


class TrimPolicy:
    """When to trim, from the resident set sizes read every `HEAP_TRIM_INTERVAL_S`.

    Rule: the first reading always trims (the baseline is a trimmed heap, so what start-up
    left free is not counted as in use); after that, trim when ``rss_bytes`` is at least
    ``growth_bytes`` above the baseline, the RSS right after the last trim. A trim that frees
    nothing moves the baseline up to the new level, so memory really in use is not trimmed
    again and again; a reading below the baseline lowers it."""

    def __init__(self, growth_bytes: int = TRIM_GROWTH_BYTES) -> None:
        self.growth_bytes = growth_bytes
        self._baseline: int | None = None

    def should_trim(self, rss_bytes: int) -> bool:
        if self._baseline is None:
            return True
        self._baseline = min(self._baseline, rss_bytes)
        return rss_bytes - self._baseline >= self.growth_bytes

    def trimmed(self, rss_after_bytes: int) -> None:
        """The trim is done; ``rss_after_bytes`` is the new baseline."""
        self._baseline = rss_after_bytes


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_MALLOC_TRIM = _load_malloc_trim()


def resident_bytes() -> int:
    """This process's resident set size (``/proc/self/statm``); 0 where that is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def trim_if_grown(policy: TrimPolicy) -> bool:
    """Read the RSS, ask ``policy``, trim if it says so (on the calling thread); True if
    trimmed. Meant for a worker thread."""
    if _MALLOC_TRIM is None or not policy.should_trim(resident_bytes()):
        return False
    trim_heap()
    policy.trimmed(resident_bytes())
    return True


def trim_heap() -> bool:
    """Give the C heap's free pages back to the OS; False where that is not available.
    Safe from any thread (glibc locks each heap while it trims it)."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
