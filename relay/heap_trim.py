"""Hand the C heap's free pages back to the operating system (glibc's ``malloc_trim``).

After a burst of short-lived allocations (thousands of connections, a gap of tens of
thousands of units) has been freed, glibc keeps the free pages inside its heaps (the main
one and one per thread that allocated) mapped, so the relay's resident set stays at its
peak. ``malloc_trim(0)`` gives every whole free page back (``madvise``, glibc 2.8 and later)
and costs well under a millisecond on the relay's heap; the relay calls it every
``HEAP_TRIM_INTERVAL_S`` from a worker thread. Python's own small-object arenas are not
touched: an arena goes back to the OS only when all its objects are gone, which is why the
relay holds many units in few large objects rather than many small ones (``relay.reorder``).
Where the C library is not glibc, this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

HEAP_TRIM_INTERVAL_S = 5.0


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


def trim_heap() -> bool:
    """Give the C heap's free pages back to the OS; False where that is not available.
    Safe from any thread (glibc locks each heap while it trims it)."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
