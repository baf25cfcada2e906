"""Starting and stopping local services (relay, encoder, nginx) for benchmarks and tests."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess

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
