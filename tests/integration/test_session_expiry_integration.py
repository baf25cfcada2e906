"""A session nobody continues holds nothing once it expires (issue 13, fault 5).

A real relay process with ``grace_s = 1``: one sender session (HELLO, TRACK, 30 units) that
leaves without BYE. After ``session_expired`` the stream's recorder and output pipeline end,
so the relay's threads (the pipeline's, the recorder's, libx264's) go back to what they were
before the session. Before, the pipeline and its encoder lived on until the relay stopped
(3 threads before the session, 15 during, 10 after the expiry).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from monitor.events import read_events
from tests.relay_harness import start_relay, stop_process, write_relay_config
from tests.support import free_port
from uplink import Codec, Hello, Media, TrackConfig, TrackKind, encode

pytestmark = pytest.mark.integration

TOKEN = "expiry-test-token-2718"
VIDEO = TrackConfig(0, TrackKind.VIDEO, Codec.H264, 1, 90000, 320, 180, 0, 0)
WAIT_S = 20.0  # generous: the machine is shared


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads in /proc/{pid}/status")


async def one_session(url: str, pid: int) -> int:
    """HELLO, TRACK, 30 units, then the connection drops (no BYE); threads while it ran."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers) as ws:
        await ws.send_bytes(encode(Hello(b"E" * 16)))
        await ws.send_bytes(encode(VIDEO))
        for seq in range(30):
            await ws.send_bytes(encode(Media(seq, 0, True, seq * 3000, seq * 3000, 0, b"\0")))
        await asyncio.sleep(1.0)
        return threads(pid)


def test_an_expired_session_ends_its_pipeline_and_recorder(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "relay.toml"
    events = tmp_path / "events.jsonl"
    write_relay_config(config, port, tmp_path / "rec", events,
                       f'[streams.farm1]\ntoken = "{TOKEN}"\nbuffer_ms = 500\n',
                       relay_toml="grace_s = 1")
    relay = start_relay(config, port, tmp_path / "relay.log")
    try:
        time.sleep(0.5)
        before = threads(relay.pid)
        during = asyncio.run(one_session(f"ws://127.0.0.1:{port}/ingest/farm1", relay.pid))
        assert during > before  # the session started a pipeline and a recorder
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not any(
                e["event"] == "session_expired" for e in read_events(events)):
            time.sleep(0.2)
        assert any(e["event"] == "session_expired" for e in read_events(events))
        while time.monotonic() < deadline and threads(relay.pid) > before:
            time.sleep(0.2)
        assert threads(relay.pid) <= before, (
            f"{threads(relay.pid)} threads after the expiry; {before} before the session, "
            f"{during} during it")
    finally:
        stop_process(relay)
