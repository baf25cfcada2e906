"""relay.heap_trim: the C heap's free pages go back to the OS."""

from __future__ import annotations

import platform

import pytest

from relay.heap_trim import trim_heap


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_heap_pages_are_returned() -> None:
    # blocks below glibc's mmap threshold live in the heap; every other one survives, so
    # the heap cannot shrink from its top and only a trim gives the free pages back
    blocks = [bytearray(64 * 1024) for _ in range(1600)]  # ~100 MiB
    keep = blocks[::16]
    del blocks
    before = _rss_kb()
    assert trim_heap() is True
    after = _rss_kb()
    assert before - after > 50 * 1024, (before, after)
    del keep
