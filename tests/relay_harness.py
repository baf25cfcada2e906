"""Runs the real relay and encoder as subprocesses for integration tests."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.platform_viewer import read_frame_codes
from harness.local_services import ROOT as ROOT
from harness.local_services import start_relay as start_relay  # one harness for both
from harness.local_services import stop_process as stop_process  # the tests' stop rule
from harness.local_services import write_relay_config as write_relay_config


def steadycast_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "steadycast.cli", *args]


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
