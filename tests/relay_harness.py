"""Runs the real relay and encoder as subprocesses for integration tests."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.local_services import stop_process as stop_process  # the tests' stop rule
from benchmarks.platform_viewer import read_frame_codes

ROOT = Path(__file__).resolve().parent.parent


def steadycast_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "steadycast.cli", *args]


def start_relay(config: Path, port: int, log_path: Path,
                env: dict[str, str] | None = None, tls: bool = False) -> subprocess.Popen[bytes]:
    """`tls`: the config has the relay serve HTTPS (its self-signed certificate is not
    checked while waiting for /healthz)."""
    proc = subprocess.Popen(steadycast_cmd("relay", "--config", str(config)), cwd=ROOT,
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/healthz"
    context = ssl._create_unverified_context() if tls else None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"relay exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"relay did not answer /healthz:\n{log_path.read_text()}")


def start_encoder(relay_url: str, stream: str, token: str, log_path: Path, *, resolution: str,
                  fps: int, kbps: int, duration_s: float,
                  extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """A real `steadycast encode --source testpattern`; its summary line comes on stdout.
    `extra`: more command-line options (e.g. --abr, --metrics-port)."""
    return subprocess.Popen(
        steadycast_cmd("encode", "--relay", relay_url, "--stream", stream, "--token", token,
                       "--resolution", resolution, "--fps", str(fps), "--kbps", str(kbps),
                       "--duration", str(duration_s), "--preset", "ultrafast", *extra),
        stdout=subprocess.PIPE, stderr=log_path.open("wb"))


def frames_captured(summary: str) -> int:
    """frames_captured from the encoder's closing `encode done: ...` line."""
    m = re.search(r"frames_captured=(\d+)", summary)
    assert m, f"no encoder summary in {summary!r}"
    return int(m.group(1))


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


async def ws_handshake(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(HTTP status, X-Steadycast-Error) of a WebSocket handshake: 101 and "" when accepted."""
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers or {}):
                return 101, ""
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status, (exc.headers or {}).get("X-Steadycast-Error", "")


def frame_numbers(path: Path) -> list[int | None]:
    """The frame number of every decoded video frame of a file (None where there is none)."""
    return [code.frame_number if code else None for code in read_frame_codes(path)]


def write_relay_config(path: Path, port: int, record_dir: Path, event_log: Path,
                       streams_toml: str, output_toml: str = "", relay_toml: str = "",
                       listen_host: str = "127.0.0.1") -> None:
    """A relay config for tests; ``relay_toml``: more ``[relay]`` keys (monitor_db, ...);
    ``listen_host``: "0.0.0.0" for a relay on every address (still reached via loopback)."""
    path.write_text(
        f"""[relay]
{relay_toml}
listen = "{listen_host}:{port}"
record_dir = "{record_dir}"
event_log = "{event_log}"
state_dir = "{path.parent / 'state'}"

[output]
width = 320
height = 180
fps = 30
video_kbps = 300
audio_kbps = 64
x264_preset = "ultrafast"
{output_toml}
{streams_toml}
""", encoding="utf-8")
