"""Hand the C heap's free pages back to the operating system (glibc's ``malloc_trim``).

After a burst of short-lived allocations (thousands of connections, a gap of tens of
thousands of units) has been freed, glibc keeps the free pages inside its heaps (the main
one and one per thread that allocated) mapped, so the relay's resident set stays at its
peak. ``malloc_trim(0)`` gives every whole free page back (``madvise``, glibc 2.8 and
later). It walks the heap while holding its lock (well under 1 ms on a resting relay,
~20-150 ms on a heap of a million live small objects), so the relay does not trim on a timer
alone: `TrimPolicy` asks for one after growth, and at most every ``TRIM_MAX_INTERVAL_S``
while the resident set stays above its resting level (checked every
``HEAP_TRIM_INTERVAL_S``); the trim runs on a worker thread, after a full garbage collection
(which also empties CPython's free lists of tuples, lists, dicts and floats, freed objects
kept for reuse that would pin their pages; ~30 ms with the GIL held, only when a trim is
due). The relay runs on glibc's allocator (``PYTHONMALLOC=malloc``, see ``steadycast.cli``)
so that Python objects are in that heap too; on Python's own small-object arenas a trim does
nothing (an arena goes back only when all its objects are gone). Where the C library is not
glibc, `trim_heap` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from collections.abc import Callable

HEAP_TRIM_INTERVAL_S = 5.0
TRIM_GROWTH_BYTES = 8 * 1024 * 1024
TRIM_MAX_INTERVAL_S = 30.0


class TrimPolicy:
    """When to trim, from the resident set size read every `HEAP_TRIM_INTERVAL_S`.

    Rules (``now`` in seconds, any monotonic clock):
    - the first reading trims, so the resting level is measured on a trimmed heap;
    - the RSS has grown ``growth_bytes`` above what the last trim left: trim (a burst);
    - the RSS is ``growth_bytes`` above the resting level (the lowest any trim left) and the
      last trim is ``max_interval_s`` old: trim (a burst that was in use at its trim has
      ended since, or memory really is in use: then one trim every ``max_interval_s``).
    So memory a burst freed goes back within ``max_interval_s`` of its end, and a relay at
    rest is not trimmed at all."""

    def __init__(self, growth_bytes: int = TRIM_GROWTH_BYTES,
                 max_interval_s: float = TRIM_MAX_INTERVAL_S) -> None:
        self.growth_bytes = growth_bytes
        self.max_interval_s = max_interval_s
        self._last_after: int | None = None
        self._rest = 0
        self._last_at = 0.0

    def should_trim(self, now: float, rss_bytes: int) -> bool:
        if self._last_after is None:
            return True
        if rss_bytes - self._last_after >= self.growth_bytes:
            return True
        return (rss_bytes - self._rest >= self.growth_bytes
                and now - self._last_at >= self.max_interval_s)

    def trimmed(self, now: float, rss_after_bytes: int) -> None:
        """The trim is done at ``now``; ``rss_after_bytes`` is what it left."""
        self._rest = (rss_after_bytes if self._last_after is None
                      else min(self._rest, rss_after_bytes))
        self._last_after = rss_after_bytes
        self._last_at = now


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


def trim_if_due(policy: TrimPolicy, now: float) -> bool:
    """Read the RSS, ask ``policy``, trim if it says so (on the calling thread); True if
    trimmed. Meant for a worker thread."""
    if _MALLOC_TRIM is None or not policy.should_trim(now, resident_bytes()):
        return False
    gc.collect()  # a full collection also empties CPython's free lists, which pin freed pages
    trim_heap()
    policy.trimmed(now, resident_bytes())
    return True


def trim_heap() -> bool:
    """Give the C heap's free pages back to the OS; False where that is not available.
    Safe from any thread (glibc locks each heap while it trims it)."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
