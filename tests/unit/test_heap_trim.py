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


def test_the_policy_trims_after_growth_and_not_again_for_memory_in_use() -> None:
    policy = TrimPolicy(growth_bytes=8 * MIB)
    assert policy.should_trim(100 * MIB)  # the first reading trims: a trimmed baseline
    policy.trimmed(99 * MIB)
    assert not policy.should_trim(106 * MIB)
    assert policy.should_trim(108 * MIB)  # a burst: trim
    policy.trimmed(101 * MIB)  # it gave most back
    assert not policy.should_trim(104 * MIB)
    assert policy.should_trim(130 * MIB)
    policy.trimmed(129 * MIB)  # memory in use: nothing came back
    assert not policy.should_trim(130 * MIB)  # so it is not trimmed again and again
    assert not policy.should_trim(90 * MIB)  # the load left: the baseline follows it down
    assert policy.should_trim(98 * MIB)
