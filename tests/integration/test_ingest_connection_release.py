"""A closed ingest connection is released at once (issue 13, fault 5).

The relay's real aiohttp app (build_app) on a loopback port, in this process so that the
test can count the server's live WebSocket objects: connections the relay refuses (a first
message that is not a HELLO) must be gone from memory within a second or two, not held by
the heartbeat timer for WS_HEARTBEAT_S + WS_HEARTBEAT_S / 2 (15 s) as aiohttp 3.14 does.
"""

from __future__ import annotations

import asyncio
import gc
import random
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.app import build_app
from relay.ingest.uplink import WS_HEARTBEAT_S
from steadycast.config import load_relay_config
from uplink import CloseCode

TOKEN = "release-test-token-3141"
CONNECTIONS = 40
RELEASE_WAIT_S = 4.0  # well below WS_HEARTBEAT_S: the old code still held them then


def _live_websockets() -> int:
    gc.collect()
    return sum(isinstance(o, web.WebSocketResponse) for o in gc.get_objects())


async def test_refused_connections_are_released_long_before_the_heartbeat(
        tmp_path: Path) -> None:
    assert RELEASE_WAIT_S < WS_HEARTBEAT_S / 2
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f"""[relay]
listen = "127.0.0.1:9"  # unused: TestServer picks the port
record_dir = "{tmp_path / 'rec'}"
event_log = "{tmp_path / 'events.jsonl'}"
state_dir = "{tmp_path / 'state'}"
monitor_db = "{tmp_path / 'monitor.db'}"
[streams.farm1]
token = "{TOKEN}"
record = false
""", encoding="utf-8")
    server = TestServer(build_app(load_relay_config(cfg)), host="127.0.0.1")
    await server.start_server()
    rng = random.Random(5)
    try:
        before = _live_websockets()
        url = server.make_url("/ingest/farm1")
        codes = []
        async with aiohttp.ClientSession() as http:
            for _ in range(CONNECTIONS):
                async with http.ws_connect(url, headers={"Authorization": f"Bearer {TOKEN}"}
                                           ) as ws:
                    await ws.send_bytes(b"\xff" + rng.randbytes(40))  # not a message type
                    async for _msg in ws:
                        pass
                    codes.append(ws.close_code)
        assert codes == [CloseCode.UNKNOWN_TYPE] * CONNECTIONS, codes
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELEASE_WAIT_S
        while _live_websockets() > before and loop.time() < deadline:
            await asyncio.sleep(0.2)
        assert _live_websockets() == before, (
            f"{_live_websockets() - before} of {CONNECTIONS} closed connections still held "
            f"{RELEASE_WAIT_S} s after they closed")
    finally:
        await server.close()
