"""UplinkClient, the asyncio glue around SenderSession, against a tiny in-process ingest on
127.0.0.1 (aiohttp, the relay's UplinkReceiver): the real capture loop (test pattern, a
small libx264 picture), real WebSocket, no relay process."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from encoder.client import EncodeSummary, PublishRefused, UplinkClient
from encoder.settings import EncoderSettings
from uplink import MediaReceived, SessionEnded, SessionStarted, StatsReceived, UplinkReceiver

TOKEN = "tiny-relay-token"
ACK_TICK_S = 0.05  # the tiny relay's ACK timer (the real relay's app tick is of this order)


class TinyRelay:
    """One stream's ingest: one UplinkReceiver for every connection (so a reconnect resumes),
    ACKs after every message and every ACK_TICK_S. `drop_after_media`: close the first
    connection once that many media messages came in on it."""

    def __init__(self, buffer_ms: int = 2000, drop_after_media: int | None = None) -> None:
        self.receiver = UplinkReceiver(buffer_ms=buffer_ms)
        self.drop_after_media = drop_after_media
        self.connections = 0
        self.sessions: list[SessionStarted] = []
        self.media_seqs: set[int] = set()
        self.stats = 0
        self.ended: list[str] = []

    async def ingest(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=403, headers={"X-Steadycast-Error": "wrong token"})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        first = self.connections == 1
        loop = asyncio.get_running_loop()
        receiver = self.receiver
        receiver.connection_made(loop.time())

        async def flush() -> None:
            for data in receiver.data_to_send(loop.time()):
                await ws.send_bytes(data)

        async def ticker() -> None:
            while True:
                await asyncio.sleep(ACK_TICK_S)
                await flush()

        tick = asyncio.create_task(ticker())
        media_here = 0
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    break
                for ev in receiver.receive(msg.data, loop.time()):
                    if isinstance(ev, SessionStarted):
                        self.sessions.append(ev)
                    elif isinstance(ev, MediaReceived):
                        self.media_seqs.add(ev.media.seq)
                        media_here += 1
                    elif isinstance(ev, StatsReceived):
                        self.stats += 1
                    elif isinstance(ev, SessionEnded):
                        self.ended.append(ev.reason)
                await flush()
                if first and self.drop_after_media is not None \
                        and media_here >= self.drop_after_media:
                    await ws.close()  # the link drops: what was in flight is lost
                    break
        finally:
            tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick
            receiver.connection_lost(loop.time())
        return ws


async def stream_to(relay: TinyRelay, tmp_path: Path, token: str = TOKEN,
                    duration_s: float = 2.0) -> tuple[EncodeSummary, str]:
    """Run one `UplinkClient` (test pattern, 160x120 at 10 fps) against `relay`; its summary
    and what it wrote on its status stream."""
    app = web.Application()
    app.router.add_get("/ingest/{stream}", relay.ingest)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        settings = EncoderSettings(
            relay_url=f"http://127.0.0.1:{server.port}", stream="farm", token=token,
            source="testpattern", audio="none", start_kbps=300, min_kbps=100, max_kbps=600,
            width=160, height=120, fps=10, duration_s=duration_s, x264_preset="ultrafast",
            spool_dir=tmp_path, status_interval_s=0.5, events_path=tmp_path / "events.jsonl")
        status = io.StringIO()
        client = UplinkClient(settings, status_stream=status)
        summary = await asyncio.wait_for(client.run(), 60)
        return summary, status.getvalue()
    finally:
        await server.close()


def events(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_a_clean_stream_is_all_acknowledged_and_ends_with_bye(tmp_path: Path) -> None:
    relay = TinyRelay()
    summary, status = await stream_to(relay, tmp_path)
    assert summary.frames_captured == 20
    assert summary.all_acked and summary.media_messages > 0
    assert relay.media_seqs == set(range(summary.media_messages))  # every unit, once
    assert summary.connections == 1 and summary.reconnects == 0
    assert summary.outages == 0 and summary.live_jumps == 0  # a clean end is no outage
    assert relay.ended == ["encoder finished"] and relay.stats >= 1
    lines = status.splitlines()
    assert lines and all("target" in line for line in lines)
    assert any(line.startswith(("LIVE", "FINISHING")) for line in lines)
    assert not [e for e in events(tmp_path) if str(e.get("event", "")).startswith("uplink_")]


async def test_a_dropped_connection_is_resumed_and_nothing_is_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="encoder.client")
    relay = TinyRelay(drop_after_media=50)  # about 1 s in: ACKs have armed the detector
    summary, _ = await stream_to(relay, tmp_path)
    assert summary.all_acked
    assert summary.connections == 2 and summary.reconnects == 1
    assert relay.media_seqs == set(range(summary.media_messages))
    assert [s.resumed for s in relay.sessions] == [False, True]
    assert "relay resumed the session" in caplog.text
    assert "reconnecting in 0.25 s" in caplog.text  # RECONNECT_FIRST_S
    assert summary.outages == 1
    (outage,) = [e for e in events(tmp_path) if e.get("event") == "uplink_outage"]
    assert outage["cause"] == "connection_lost"


async def test_a_wrong_token_is_refused_in_one_line(tmp_path: Path) -> None:
    relay = TinyRelay()
    with pytest.raises(PublishRefused, match=r"refused stream 'farm' \(HTTP 403\): wrong token"):
        await stream_to(relay, tmp_path, token="wrong")
    assert relay.connections == 0
