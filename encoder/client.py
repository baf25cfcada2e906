"""The uplink client: connects to the relay, resumes after every drop, loses nothing.

asyncio glue around the sans-I/O ``UplinkSender``: the capture thread hands it encoded
units; a writer task sends what the sender says to send (TCP back-pressure through the
WebSocket's drain); a reader task feeds the relay's ACKs back. A lost connection is retried
after RECONNECT_FIRST_S, doubling to RECONNECT_MAX_S; a refused publish (unknown stream,
wrong token) is fatal and reported in plain words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from encoder.av_encoder import EncodedUnit
from encoder.capture import CaptureLoop
from encoder.settings import (
    ACK_TIMEOUT_S,
    FINAL_ACK_WAIT_S,
    RECONNECT_FIRST_S,
    RECONNECT_MAX_S,
    EncoderSettings,
)
from uplink import Acked, ProtocolError, RemoteBye, UplinkSender, Welcomed

log = logging.getLogger(__name__)

SEND_BATCH_BYTES = 256 * 1024
STATS_INTERVAL_S = 1.0
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class PublishRefused(Exception):
    """The relay refused this stream (HTTP 401/403/404): retrying will not help."""


@dataclass
class EncodeSummary:
    frames_captured: int
    media_messages: int
    acked_seq: int
    all_acked: bool
    connections: int
    reconnects: int

    def line(self) -> str:
        return (f"encode done: frames_captured={self.frames_captured} "
                f"media_messages={self.media_messages} acked={self.acked_seq} "
                f"all_acked={self.all_acked} connections={self.connections} "
                f"reconnects={self.reconnects}")


class UplinkClient:
    def __init__(self, settings: EncoderSettings) -> None:
        self.settings = settings
        self.sender = UplinkSender()
        self._wake = asyncio.Event()
        self._capture_error: str | None = None
        self.connections = 0
        self._capture_done = False

    # --- from the capture thread (via call_soon_threadsafe) ------------------------------
    def _push(self, units: list[EncodedUnit]) -> None:
        now = time.monotonic()
        for u in units:
            self.sender.push_media(u.track_id, u.keyframe, u.pts, u.dts, u.capture_time_us,
                                   u.payload, now)
        self._wake.set()

    def _error(self, message: str) -> None:
        self._capture_error = message
        self._wake.set()

    # --- the session ---------------------------------------------------------------------
    async def run(self) -> EncodeSummary:
        loop = asyncio.get_running_loop()

        def on_units(units: list[EncodedUnit]) -> None:
            loop.call_soon_threadsafe(self._push, units)

        def on_error(message: str) -> None:
            loop.call_soon_threadsafe(self._error, message)

        capture = CaptureLoop(self.settings, on_units, on_error)
        for track in capture.tracks():
            self.sender.add_track(track)
        capture.start()
        capture_done = asyncio.ensure_future(asyncio.to_thread(capture.done.wait))
        backoff: float | None = None
        final_deadline: float | None = None
        try:
            async with aiohttp.ClientSession() as http:
                while True:
                    if self._capture_error:
                        raise RuntimeError(self._capture_error)
                    if capture_done.done():
                        self._capture_done = True
                        if final_deadline is None:
                            final_deadline = time.monotonic() + FINAL_ACK_WAIT_S
                        if self.sender.all_acked or time.monotonic() > final_deadline:
                            break
                    try:
                        await self._connect_and_stream(http, capture_done)
                        backoff = None
                        if self._capture_done and self.sender.all_acked:
                            break
                    except PublishRefused:
                        raise
                    except (TimeoutError, aiohttp.ClientError, OSError, ProtocolError) as exc:
                        backoff = RECONNECT_FIRST_S if backoff is None else min(
                            backoff * 2, RECONNECT_MAX_S)
                        log.warning("uplink: %s; reconnecting in %.2f s",
                                    _describe(exc), backoff)
                        await asyncio.sleep(backoff)
        finally:
            capture.stop()
            capture_done.cancel()
        return EncodeSummary(capture.frames_captured, self.sender.next_seq_to_assign,
                             self.sender.acked_seq, self.sender.all_acked, self.connections,
                             max(0, self.connections - 1))

    async def _connect_and_stream(self, http: aiohttp.ClientSession,
                                  capture_done: asyncio.Future[Any]) -> None:
        s = self.settings
        try:
            ws = await http.ws_connect(
                s.ingest_url, headers={"Authorization": f"Bearer {s.token}"},
                max_msg_size=MAX_MESSAGE_BYTES, heartbeat=None, autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0), ssl=s.verify_tls)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403, 404):
                reason = exc.message
                if exc.headers is not None:
                    reason = exc.headers.get("X-Steadycast-Error", reason)
                raise PublishRefused(f"the relay refused stream {s.stream!r} "
                                     f"(HTTP {exc.status}): {reason}") from exc
            raise
        self.connections += 1
        log.info("uplink: connected to %s (connection %d)", _safe_url(s.ingest_url),
                 self.connections)
        now = time.monotonic()
        self.sender.connection_made(now)
        reader = asyncio.create_task(self._read(ws))
        try:
            await self._write(ws, reader, capture_done)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.sender.connection_lost(time.monotonic())
            if not ws.closed:
                await ws.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                for ev in self.sender.receive(msg.data, time.monotonic()):
                    if isinstance(ev, Welcomed):
                        log.info("uplink: relay %s the session at seq %d (buffer %d ms)",
                                 "resumed" if ev.resumed else "started", ev.next_seq,
                                 ev.buffer_ms)
                    elif isinstance(ev, RemoteBye):
                        log.info("uplink: relay ended the session: %s", ev.reason)
                        return
                    elif isinstance(ev, Acked):
                        pass
                self._wake.set()
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                              aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
        raise ConnectionError(f"relay closed the connection (code {ws.close_code})")

    async def _write(self, ws: aiohttp.ClientWebSocketResponse, reader: asyncio.Task[None],
                     capture_done: asyncio.Future[Any]) -> None:
        last_stats = 0.0
        last_progress = time.monotonic()
        last_acked = self.sender.acked_seq
        while True:
            if reader.done():
                reader.result()  # raises the reason the connection ended
                return
            now = time.monotonic()
            for data in self.sender.data_to_send(now, max_bytes=SEND_BATCH_BYTES):
                # a link that takes nothing for ACK_TIMEOUT_S is treated as dead
                await asyncio.wait_for(ws.send_bytes(data), ACK_TIMEOUT_S)
            if now - last_stats >= STATS_INTERVAL_S and self.sender.connected:
                await ws.send_bytes(self.sender.stats_message(now, self.settings.kbps))
                last_stats = now
            if self.sender.acked_seq != last_acked or self.sender.all_acked:
                last_acked, last_progress = self.sender.acked_seq, now
            elif now - last_progress > ACK_TIMEOUT_S:
                raise ConnectionError(f"no acknowledgement from the relay for {ACK_TIMEOUT_S:g} s")
            if capture_done.done() and self.sender.all_acked and self.sender.connected:
                await ws.send_bytes(self.sender.bye("encoder finished"))
                await ws.close()
                return
            self._wake.clear()
            if self.sender.unsent_bytes == 0 or not self.sender.connected:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.1)


def _safe_url(url: str) -> str:
    return url.split("?", 1)[0]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text
