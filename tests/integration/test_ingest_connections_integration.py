"""Ingest connection lifecycle at a real relay process (issue 13, fault 6, fault 12, status).

- 50 authenticated WebSockets that answer pings but never send HELLO do not hold the stream:
  a sender's HELLO gets its WELCOME at once, and the silent ones are closed with 4409 after
  the HELLO deadline (before, they queued on the stream and the real encoder got no WELCOME
  in 44 s);
- after the sender's BYE the relay closes the connection with 1000 (spec 4.7);
- a real encoder's clean ``--duration`` end (a BYE) is no ingest dropout, and afterwards the
  API and the metrics show nothing arriving and nothing on air (ingest 0 kbit/s, every
  ``steadycast_output_source`` 0).
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from monitor.events import read_events
from relay.stream import HELLO_TIMEOUT_S
from tests.relay_harness import (
    frame_numbers,
    frames_captured,
    get_json,
    start_encoder,
    start_relay,
    stop_process,
    write_relay_config,
)
from tests.support import free_port
from uplink import Bye, CloseCode, Hello, MessageType, encode

pytestmark = pytest.mark.integration

TOKEN = "conn-test-token-7719"
SILENT = 50


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


async def silent_and_hello(url: str) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        # all at once, as an attacker would: at the old relay each waited for the one before
        silent = await asyncio.gather(*(http.ws_connect(url, headers=headers)
                                        for _ in range(SILENT)))
        opened = time.monotonic()

        async def close_code(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, float]:
            async for _ in ws:  # nothing comes; the client answers the relay's pings itself
                pass
            return ws.close_code, time.monotonic() - opened

        watchers = [asyncio.create_task(close_code(ws)) for ws in silent]
        await asyncio.sleep(0.5)
        # a real sender's first steps on the same stream: HELLO -> WELCOME, then BYE
        started = time.monotonic()
        async with http.ws_connect(url, headers=headers) as ws:
            await ws.send_bytes(encode(Hello(b"H" * 16)))
            first = await asyncio.wait_for(ws.receive(), 10)
            welcome_s = time.monotonic() - started
            welcome_type = first.data[0] if first.type == aiohttp.WSMsgType.BINARY else None
            await ws.send_bytes(encode(Bye("done")))
            bye_sent = time.monotonic()
            try:
                closing = await asyncio.wait_for(ws.receive(), 10)
                bye_close = (closing.type, ws.close_code, time.monotonic() - bye_sent)
            except TimeoutError:
                bye_close = (None, None, 10.0)
        closes = await asyncio.wait_for(asyncio.gather(*watchers), HELLO_TIMEOUT_S + 20)
        return {"welcome_s": welcome_s, "welcome_type": welcome_type, "bye_close": bye_close,
                "closes": closes}


def test_silent_connections_do_not_hold_the_stream_and_a_clean_end_is_no_outage(
        tmp_path: Path) -> None:
    port = free_port()
    record_dir = tmp_path / "rec"
    events_path = tmp_path / "events.jsonl"
    config = tmp_path / "relay.toml"
    write_relay_config(config, port, record_dir, events_path,
                       f'[streams.farm1]\ntoken = "{TOKEN}"\nbuffer_ms = 1000\n')
    relay = start_relay(config, port, tmp_path / "relay.log")
    try:
        result = asyncio.run(silent_and_hello(f"ws://127.0.0.1:{port}/ingest/farm1"))
        # a real encoder's stream with a clean --duration end
        encoder = start_encoder(f"http://127.0.0.1:{port}", "farm1", TOKEN,
                                tmp_path / "encoder.log", resolution="160x90", fps=15,
                                kbps=150, duration_s=5)
        out, _ = encoder.communicate(timeout=60)
        summary = out.decode()
        time.sleep(3)  # the pipeline plays out what it holds, then ends
        status = get_json(f"http://127.0.0.1:{port}/api/streams")["streams"][0]
        metrics = metrics_text(port)
    finally:
        stop_process(relay)

    assert result["welcome_type"] == MessageType.WELCOME
    assert result["welcome_s"] < 3.0, result  # was: no WELCOME in 44 s behind 50 silent ones
    kind, code, after_s = result["bye_close"]  # type: ignore[misc]
    assert kind == aiohttp.WSMsgType.CLOSE and code == CloseCode.NORMAL, result["bye_close"]
    assert after_s < 3.0
    closes = result["closes"]
    assert all(c == CloseCode.PROTOCOL_ORDER for c, _ in closes), closes  # type: ignore[union-attr]
    # closed at the deadline, not before (generous margins: the machine is shared)
    assert all(HELLO_TIMEOUT_S - 1 <= t <= HELLO_TIMEOUT_S + 15 for _, t in closes), closes  # type: ignore[union-attr]
    refusals = [e for e in read_events(events_path) if e["event"] == "protocol_error"]
    assert len(refusals) == SILENT and all("no HELLO within" in e["detail"] for e in refusals)

    assert encoder.returncode == 0 and "all_acked=True" in summary, summary
    files = sorted((record_dir / "farm1").glob("*.ts"))
    assert frame_numbers(files[-1]) == list(range(frames_captured(summary)))
    # a clean end (BYE) is no outage
    kinds = [e["event"] for e in read_events(events_path)]
    assert "ingest_dropout_started" not in kinds and "ingest_outage" not in kinds, kinds
    assert status["dropouts"] == 0 and not status["in_dropout"]
    assert "steadycast_dropouts_total{" not in metrics
    # and nothing shows as arriving or on air once the stream ended
    assert status["state"] == "ended" and status["ingest_kbps"] == 0, status
    assert status["output_source"] == "offline"
    assert re.search(r'steadycast_ingest_bitrate_kbps\{stream="farm1"\} 0\.0', metrics), metrics
    sources = re.findall(r'steadycast_output_source\{source="(\w+)",stream="farm1"\} (\S+)',
                         metrics)
    assert sources and all(float(v) == 0 for _, v in sources), sources
