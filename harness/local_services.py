"""Starting and stopping local services (relay, encoder, nginx) for benchmarks and tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the source tree these modules belong to
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


def start_relay(config: Path, port: int, log_path: Path, log_level: str = "info", *,
                env: Mapping[str, str] | None = None, tls: bool = False,
                tree: Path | None = None) -> subprocess.Popen[bytes]:
    """A real ``steadycast relay --config CONFIG`` process, returned once /healthz answers;
    its output goes to ``log_path``. ``env``: variables added to this process's environment;
    ``tls``: the config has the relay serve HTTPS (its self-signed certificate is not checked
    while waiting for /healthz); ``tree``: run the relay code of that source tree (another
    checkout, e.g. an older commit) with this interpreter. Raises RuntimeError (with the
    log) if it does not start."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "steadycast.cli", "--log-level", log_level, "relay", "--config",
         str(config)], cwd=tree or ROOT, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})})
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/healthz"
    context = ssl._create_unverified_context() if tls else None
    deadline = time.monotonic() + RELAY_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"relay exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"relay did not answer /healthz:\n{log_path.read_text()}")


# The small output the tests and the benchmarks give a relay: cheap to encode on a shared
# machine. `write_relay_config(output=...)` changes single values.
SMALL_OUTPUT: dict[str, int | str] = {"width": 320, "height": 180, "fps": 30,
                                      "video_kbps": 300, "audio_kbps": 64,
                                      "x264_preset": "ultrafast"}


def write_relay_config(path: Path, port: int, record_dir: Path, event_log: Path,
                       streams_toml: str, output_toml: str = "", relay_toml: str = "", *,
                       output: Mapping[str, int | str] | None = None,
                       listen_host: str = "127.0.0.1") -> None:
    """A relay config on ``listen_host``:``port`` (127.0.0.1; "0.0.0.0" for a relay on every
    address, still reached via loopback) with state_dir beside ``path``. ``relay_toml``:
    more ``[relay]`` keys (monitor_db, ...); ``output``: values replacing those of
    SMALL_OUTPUT; ``output_toml``: more ``[output]`` lines; ``streams_toml``: the streams."""
    values = {**SMALL_OUTPUT, **(output or {})}
    output_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
    path.write_text(
        f"""[relay]
{relay_toml}
listen = "{listen_host}:{port}"
record_dir = "{record_dir}"
event_log = "{event_log}"
state_dir = "{path.parent / 'state'}"

[output]
{output_lines}
{output_toml}
{streams_toml}
""", encoding="utf-8")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS in /proc/PID/status, proc(5))."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
