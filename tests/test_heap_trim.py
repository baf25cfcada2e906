"""relay.heap_trim and the relay's allocator: the memory a burst freed goes back to the OS."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from unittest.mock import patch

import pytest

from benchmarks.local_services import free_port, start_relay, stop_process, write_relay_config
from relay.heap_trim import TrimPolicy, trim_heap
from steadycast.cli import RELAY_ALLOCATOR


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


def test_the_relay_process_runs_on_the_c_allocator(tmp_path: Path) -> None:
    """``steadycast relay`` execs itself (same pid) with PYTHONMALLOC=malloc, so the memory a
    burst freed can go back to the OS; a PYTHONMALLOC the user set is kept."""
    port = free_port()
    cfg = tmp_path / "relay.toml"
    write_relay_config(cfg, port, tmp_path / "rec", tmp_path / "events.jsonl",
                       '[streams.a]\ntoken = "heap-trim-token-000000"\n',
                       relay_toml=f'monitor_db = "{tmp_path / "monitor.db"}"')
    for preset, expected in ((None, RELAY_ALLOCATOR), ("pymalloc", "pymalloc")):
        env = {} if preset is None else {"PYTHONMALLOC": preset}
        env_without = {k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"}
        with patch.dict(os.environ, env_without, clear=True):
            proc = start_relay(cfg, port, tmp_path / "relay.log", env=env)
        try:
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
            assert f"PYTHONMALLOC={expected}".encode() in environ
        finally:
            stop_process(proc)


MIB = 1024 * 1024


def test_the_policy_trims_after_growth_and_not_again_for_memory_in_use() -> None:
    policy = TrimPolicy(growth_bytes=8 * MIB)
    assert not policy.should_trim(100 * MIB)  # the first reading is the baseline
    assert not policy.should_trim(107 * MIB)
    assert policy.should_trim(108 * MIB)  # a burst: trim
    policy.trimmed(101 * MIB)  # it gave most back
    assert not policy.should_trim(104 * MIB)
    assert policy.should_trim(130 * MIB)
    policy.trimmed(129 * MIB)  # memory in use: nothing came back
    assert not policy.should_trim(130 * MIB)  # so it is not trimmed again and again
    assert not policy.should_trim(90 * MIB)  # the load left: the baseline follows it down
    assert policy.should_trim(98 * MIB)
