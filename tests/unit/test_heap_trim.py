"""relay.heap_trim: the C heap's free pages go back to the OS, after growth."""

from __future__ import annotations

import platform

import pytest

from relay.heap_trim import TrimPolicy, trim_heap


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


MIB = 1024 * 1024


def test_the_policy_trims_after_growth_and_after_a_burst_that_was_in_use() -> None:
    policy = TrimPolicy(growth_bytes=8 * MIB, max_interval_s=30)
    assert policy.should_trim(0, 100 * MIB)  # the first reading trims: a trimmed rest level
    policy.trimmed(0, 99 * MIB)
    assert not policy.should_trim(5, 106 * MIB)
    assert policy.should_trim(10, 108 * MIB)  # a burst: trim at once
    policy.trimmed(10, 107 * MIB)  # still in use: little came back
    assert not policy.should_trim(15, 110 * MIB)  # not again at every reading
    assert not policy.should_trim(35, 110 * MIB)
    assert policy.should_trim(40, 110 * MIB)  # 30 s on, still above the rest: once more
    policy.trimmed(40, 100 * MIB)  # the burst had ended: its memory went back
    assert not policy.should_trim(100, 104 * MIB)  # near the rest level: never
    assert policy.should_trim(105, 108 * MIB)  # growth above the last trim: at once
