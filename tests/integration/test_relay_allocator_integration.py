"""The relay process runs on glibc's allocator (steadycast.cli.RELAY_ALLOCATOR)."""

from __future__ import annotations

import os
from pathlib import Path
from unittest.mock import patch

import pytest

from harness.local_services import free_port, start_relay, stop_process, write_relay_config
from steadycast.cli import RELAY_ALLOCATOR

pytestmark = pytest.mark.integration


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
