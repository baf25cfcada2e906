"""Starting and stopping local services (relay, encoder, nginx) for benchmarks and tests."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

STOP_TIMEOUT_S = 15.0  # a process asked to stop with SIGINT gets this long before SIGKILL


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGINT (a clean shutdown), then SIGKILL if it has not ended within ``timeout_s``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


RELAY_START_TIMEOUT_S = 20.0  # a relay that does not answer /healthz by then did not start


def start_relay(config: Path, port: int, log_path: Path,
                log_level: str = "info") -> subprocess.Popen[bytes]:
    """A real ``steadycast relay --config CONFIG`` process, returned once /healthz answers;
    its output goes to ``log_path``. Raises RuntimeError (with the log) if it does not start."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "steadycast.cli", "--log-level", log_level, "relay", "--config",
         str(config)], stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + RELAY_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"relay exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"relay did not answer /healthz:\n{log_path.read_text()}")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS in /proc/PID/status, proc(5))."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
