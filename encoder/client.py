"""The uplink client: connects to the relay, adapts the bitrate, resumes after every drop,
loses nothing.

asyncio glue around the sans-I/O cores: the capture thread hands encoded units to the
``UplinkSender``; a writer task sends what the sender says to send, keeping at most an
in-flight window of unacknowledged bytes in the transport (so the kernel's socket buffers
never hide a queue the sender could still reorder); a reader task feeds the relay's ACKs
back; a control task asks the ABR controller for a bitrate every ``UPDATE_INTERVAL_S``,
feeds the dropout detector, moves the live edge after a long outage, and shows the status.

A lost connection is retried after RECONNECT_FIRST_S, doubling to RECONNECT_MAX_S, with a
plain reason (``_describe``), or after the relay's ``Retry-After`` when it throttles wrong
credentials (HTTP 429, ``retry_after_s``); a refused publish (HTTP 401/403/404: unknown
stream, wrong token) and a relay certificate that does not verify are fatal (``PublishRefused``,
``RelayNotTrusted``) and reported in one line. A clean end (BYE sent, everything acked) is no
outage. A full spool never ends the session: ``encoder.spool_overflow.OverflowGate`` drops new
units only, what is held is still sent.

The decisions (the in-flight window, the ABR's Observation, live edge first and dense
keyframes during an outage) are made by ``encoder.send_policy.SendPolicy``, a sans-I/O class
the benchmark's simulator drives too; this module feeds it, applies what it decides and logs.

Live edge first: when the media still waiting for the relay is older than the relay's
buffer (minus ``LIVE_ALLOWANCE_MS`` for the trip), it can no longer be shown live. The
client then moves the live edge (``UplinkSender.jump_to_live``) to the oldest video keyframe
that can still arrive in time, so the viewer misses as little as the outage forces: from
there media goes first, and what the jump skipped follows flagged as backfill, at low
priority, so the relay's recording still ends complete. While the uplink is out the encoder
makes keyframes every ``OUTAGE_KEYFRAME_S`` (``CaptureLoop.set_dense_keyframes``), so such
a keyframe is never far from the oldest media the relay can still show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp

from encoder.abr import UPDATE_INTERVAL_S, AbrLimits, Observation, create
from encoder.av_encoder import VIDEO_TRACK_ID, EncodedUnit
from encoder.capture import CaptureLoop
from encoder.relay_tls import RelayNotTrusted, tls_context, untrusted_reason
from encoder.send_policy import SEND_BATCH_BYTES, STATS_INTERVAL_S, SendPolicy
from encoder.settings import (
    ACK_TIMEOUT_S,
    AUDIO_KBPS,
    FINAL_ACK_WAIT_S,
    RECONNECT_FIRST_S,
    RECONNECT_MAX_S,
    RETRY_AFTER_MAX_S,
    EncoderSettings,
)
from encoder.spool_overflow import OverflowEnded, OverflowEvent, OverflowGate, OverflowStarted
from encoder.status import SenderStatus, status_line
from monitor.dropout import DropoutEnded, DropoutEvent, DropoutStarted
from monitor.events import EventLog, iso_utc
from uplink import Acked, ProtocolError, RemoteBye, UplinkSender, Welcomed
from uplink.spool import Spool, SpoolFull

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
RATE_WINDOW_S = 1.0  # sent/acked bitrates on the status line
STATUS_TTY_INTERVAL_S = 1.0
STATUS_LOG_INTERVAL_S = 10.0
MB = 1024 * 1024


class PublishRefused(Exception):
    """The relay refused this stream (HTTP 401/403/404): retrying will not help."""


@dataclass
class EncodeSummary:
    frames_captured: int
    frames_encoded: int
    media_messages: int
    acked_seq: int
    all_acked: bool
    connections: int
    reconnects: int
    outages: int
    outage_s_total: float
    live_jumps: int
    dropped_units: int = 0  # new units dropped while the spool was full (OverflowGate)
    dropped_video_frames: int = 0

    def line(self) -> str:
        return (f"encode done: frames_captured={self.frames_captured} "
                f"frames_encoded={self.frames_encoded} "
                f"media_messages={self.media_messages} acked={self.acked_seq} "
                f"all_acked={self.all_acked} connections={self.connections} "
                f"reconnects={self.reconnects} outages={self.outages} "
                f"outage_s={self.outage_s_total:.1f} live_jumps={self.live_jumps} "
                f"spool_dropped_frames={self.dropped_video_frames}")


class _Rate:
    """Bytes per second over a sliding window of cumulative-total samples."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, now: float, total: int) -> float:
        self._samples.append((now, total))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self._window_s:
            self._samples.popleft()
        t0, b0 = self._samples[0]
        return 0.0 if now - t0 <= 0 else (total - b0) / (now - t0)


class UplinkClient:
    def __init__(self, settings: EncoderSettings, status_stream: TextIO | None = None) -> None:
        s = self.settings = settings
        self.spool = Spool(memory_limit_bytes=round(s.spool_memory_mb * MB),
                           disk_limit_bytes=round(s.spool_disk_mb * MB), directory=s.spool_dir)
        self.sender = UplinkSender(spool=self.spool)
        self.abr = create(s.abr, AbrLimits(min_kbps=s.min_kbps, max_kbps=s.max_kbps,
                                           start_kbps=s.start_kbps, audio_kbps=AUDIO_KBPS))
        self.target_kbps = s.start_kbps
        self.events = EventLog(s.events_path)
        self.policy = SendPolicy(self.sender, VIDEO_TRACK_ID)
        self.detector = self.policy.detector
        self.overflow = OverflowGate(VIDEO_TRACK_ID)
        self._accepting = True  # False once the session is over: late units are ignored
        self._ssl = tls_context(s)
        self._status_stream = status_stream if status_stream is not None else sys.stderr
        self._wake = asyncio.Event()
        self._fatal: str | None = None
        self._sent_rate = _Rate(RATE_WINDOW_S)
        self._acked_rate = _Rate(RATE_WINDOW_S)
        self._status: SenderStatus | None = None
        self._phase = "connecting"
        self.connections = 0
        self.outages = 0
        self.outage_s_total = 0.0
        self.live_jumps = 0
        self.capture: CaptureLoop | None = None

    # --- from the capture thread (via call_soon_threadsafe) ------------------------------
    def _push(self, units: list[EncodedUnit]) -> None:
        if not self._accepting:
            return  # the capture thread's last units, after the session ended
        for u in units:
            if not self.overflow.admit(u.track_id, u.keyframe):
                continue  # the spool is full: new units are dropped, held ones kept
            try:
                seq = self.sender.push_media(u.track_id, u.keyframe, u.pts, u.dts,
                                             u.capture_time_us, u.payload)
            except SpoolFull:
                self._overflow_events(self.overflow.on_full(
                    u.track_id, time.time(), self.spool.memory_bytes + self.spool.disk_bytes,
                    len(self.spool)))
                continue
            self._overflow_events(self.overflow.on_stored(u.track_id, u.keyframe, time.time()))
            self.policy.note_unit(seq, u.track_id, u.keyframe, u.capture_time_us)
            if u.track_id == VIDEO_TRACK_ID and u.keyframe:
                self._maybe_jump_to_live()
        self._wake.set()

    def _error(self, message: str) -> None:
        self._fatal = message
        self._wake.set()

    # --- decisions --------------------------------------------------------------------------
    def _maybe_jump_to_live(self) -> None:
        """Move the live edge when older media can no longer be live (SendPolicy decides);
        log and count the jump."""
        jump = self.policy.live_edge_jump()
        if jump is None:
            return
        log.info("uplink: %.1f s of media is older than the relay's %.1f s buffer: live "
                 "edge moves to seq %d; the rest follows as backfill",
                 jump.lag_ms / 1000, jump.buffer_ms / 1000, jump.seq)
        self.live_jumps += 1
        self.events.write("live_edge_jump", stream=self.settings.stream, seq=jump.seq,
                          lag_ms=jump.lag_ms)  # the lag that made it jump

    def _window_room(self) -> int:
        """Bytes the in-flight window still admits (<= 0: wait for ACKs)."""
        return self.policy.window_room(self.target_kbps)

    def _observe(self) -> Observation:
        return self.policy.observe(self.target_kbps)

    def _overflow_events(self, events: list[OverflowEvent]) -> None:
        s, name = self.settings, self.settings.stream
        for ev in events:
            if isinstance(ev, OverflowStarted):
                log.warning(
                    "uplink: spool full: %.1f MB (%d units) wait for the relay's "
                    "acknowledgement, the limit is --spool-memory-mb %g + --spool-disk-mb %g; "
                    "new frames are dropped until the relay acknowledges some, everything "
                    "held will still be sent (the --record copy, if any, keeps every frame)",
                    ev.held_bytes / MB, ev.held_units, s.spool_memory_mb, s.spool_disk_mb)
                self.events.write("spool_full_started", stream=name, start=iso_utc(ev.start),
                                  held_bytes=ev.held_bytes,
                                  limit_bytes=self.spool.memory_limit_bytes
                                  + self.spool.disk_limit_bytes)
                if self.capture is not None:  # resume soon after room comes back
                    self.capture.set_dense_keyframes(True)
            elif isinstance(ev, OverflowEnded):
                log.warning("uplink: spool has room again after %.1f s: new frames are sent "
                            "from this keyframe on; %d video frames (%d units) were dropped "
                            "and will be missing from the relay's recording", ev.duration_s,
                            ev.dropped_video_frames, ev.dropped_units)
                self.events.write("spool_full_ended", stream=name, start=iso_utc(ev.start),
                                  end=iso_utc(ev.end), duration_s=round(ev.duration_s, 3),
                                  dropped_units=ev.dropped_units,
                                  dropped_video_frames=ev.dropped_video_frames)

    def _dropout_events(self, events: list[DropoutEvent]) -> None:
        name = self.settings.stream
        for ev in events:
            if isinstance(ev, DropoutStarted):
                log.warning("uplink: outage started (%s)", ev.cause.value)
                self.events.write("uplink_dropout_started", stream=name, start=iso_utc(ev.start),
                                  cause=ev.cause.value)
            elif isinstance(ev, DropoutEnded):
                self.outages += 1
                self.outage_s_total += ev.duration_s
                log.warning("uplink: outage ended after %.2f s (%s)", ev.duration_s,
                            ev.cause.value)
                self.events.write("uplink_outage", stream=name, start=iso_utc(ev.start),
                                  end=iso_utc(ev.end), duration_s=round(ev.duration_s, 3),
                                  cause=ev.cause.value)

    def status(self) -> SenderStatus | None:
        """The latest snapshot (refreshed by the control task)."""
        return self._status

    def _snapshot(self, mono: float) -> SenderStatus:
        s = self.sender
        cap = self.capture
        in_outage = self.detector.current_start
        state = self._phase
        if state == "live" and in_outage is not None:
            state = "outage"
        elif state == "live" and s.live_lag_ms > 1000:
            state = "catching-up"
        return SenderStatus(
            state=state, abr=self.abr.name, abr_state=self.abr.describe(),
            target_kbps=self.target_kbps,
            sent_kbps=self._sent_rate.update(mono, s.sent_bytes_total) * 8 / 1000,
            acked_kbps=self._acked_rate.update(mono, s.acked_bytes_total) * 8 / 1000,
            effective_fps=cap.effective_fps if cap else 0.0,
            backlog_bytes=s.backlog_bytes, backlog_ms=s.backlog_ms,
            relay_buffer_ms=s.relay_buffer_ms,
            srtt_ms=None if s.srtt_s is None else s.srtt_s * 1000,
            connections=self.connections, reconnects=max(0, self.connections - 1),
            outages=self.outages, outage_s_total=self.outage_s_total,
            in_outage_s=None if in_outage is None else max(0.0, time.time() - in_outage),
            sent_bytes_total=s.sent_bytes_total, acked_bytes_total=s.acked_bytes_total,
            retransmitted_bytes_total=s.retransmitted_bytes_total,
            frames_captured=cap.frames_captured if cap else 0,
            frames_encoded=cap.frames_encoded if cap else 0,
            spool_memory_bytes=self.spool.memory_bytes, spool_disk_bytes=self.spool.disk_bytes,
            backfill_pending=s.backfill_bytes > 0, spool_full=self.overflow.dropping,
            dropped_frames_total=self.overflow.dropped_video_frames_total)

    async def _control(self) -> None:
        """ABR, dropout detector, live edge and status, every UPDATE_INTERVAL_S."""
        s = self.settings
        tty = self._status_stream.isatty()
        interval = s.status_interval_s or (STATUS_TTY_INTERVAL_S if tty else
                                           STATUS_LOG_INTERVAL_S)
        next_status = time.monotonic() + interval
        while True:
            await asyncio.sleep(UPDATE_INTERVAL_S)
            mono, wall = time.monotonic(), time.time()
            kbps = self.abr.update(self._observe(), now=mono)
            if kbps != self.target_kbps:
                log.debug("abr %s: %d -> %d kbit/s (%s)", self.abr.name, self.target_kbps,
                          kbps, self.abr.describe())
                self.target_kbps = kbps
                if self.capture is not None:
                    self.capture.set_target_kbps(kbps)
            self._dropout_events(self.policy.poll(wall))
            if self.capture is not None:
                self.capture.set_dense_keyframes(self.policy.dense_keyframes
                                                 or self.overflow.dropping)
            self._maybe_jump_to_live()
            self._status = self._snapshot(mono)
            if not s.quiet and mono >= next_status:
                next_status = mono + interval
                line = status_line(self._status)
                if tty:
                    self._status_stream.write("\r\x1b[2K" + line)
                else:
                    self._status_stream.write(line + "\n")
                self._status_stream.flush()

    # --- the session ---------------------------------------------------------------------
    async def run(self) -> EncodeSummary:
        loop = asyncio.get_running_loop()

        def on_units(units: list[EncodedUnit]) -> None:
            loop.call_soon_threadsafe(self._push, units)

        def on_error(message: str) -> None:
            loop.call_soon_threadsafe(self._error, message)

        capture = self.capture = CaptureLoop(self.settings, on_units, on_error)
        log.info("source: %s", capture.describe())
        for track in capture.tracks():
            self.sender.add_track(track)
        capture.start()
        capture_done = asyncio.ensure_future(asyncio.to_thread(capture.done.wait))
        control = asyncio.create_task(self._control())
        backoff: float | None = None
        final_deadline: float | None = None
        try:
            if self.settings.metrics_port is not None:
                from encoder.metrics import serve_metrics

                serve_metrics(self.settings.stream, self.status, self.settings.metrics_port,
                              self.settings.metrics_host)
            async with aiohttp.ClientSession() as http:
                while True:
                    if self._fatal:
                        raise RuntimeError(self._fatal)
                    if capture_done.done():
                        self._phase = "finishing"
                        if final_deadline is None:
                            final_deadline = time.monotonic() + FINAL_ACK_WAIT_S
                        if self.sender.all_acked or time.monotonic() > final_deadline:
                            break
                    try:
                        await self._connect_and_stream(http, capture_done)
                        backoff = None
                        if capture_done.done() and self.sender.all_acked:
                            break
                    except (PublishRefused, RelayNotTrusted):
                        raise
                    except (TimeoutError, aiohttp.ClientError, OSError, ProtocolError) as exc:
                        if self._fatal:
                            raise RuntimeError(self._fatal) from exc
                        backoff = RECONNECT_FIRST_S if backoff is None else min(
                            backoff * 2, RECONNECT_MAX_S)
                        wait_s = max(backoff, retry_after_s(exc) or 0.0)
                        log.warning("uplink: %s; reconnecting in %.2f s",
                                    _describe(exc), wait_s)
                        await asyncio.sleep(wait_s)
        finally:
            self._accepting = False
            control.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await control
            capture.stop()
            capture_done.cancel()
            self._dropout_events(self.detector.stop(time.time()))
            if not self.settings.quiet and self._status_stream.isatty():
                self._status_stream.write("\n")
            if capture.record_summary is not None:
                r = capture.record_summary
                log.info("local recording %s: %d frames (%d dropped), %d audio packets, %.1f MB",
                         r.path, r.frames_written, r.frames_dropped, r.audio_packets,
                         r.bytes / 1e6)
            self.sender.close()
        return EncodeSummary(capture.frames_captured, capture.frames_encoded,
                             self.sender.next_seq_to_assign, self.sender.acked_seq,
                             self.sender.all_acked, self.connections,
                             max(0, self.connections - 1), self.outages, self.outage_s_total,
                             self.live_jumps, self.overflow.dropped_units_total,
                             self.overflow.dropped_video_frames_total)

    async def _connect_and_stream(self, http: aiohttp.ClientSession,
                                  capture_done: asyncio.Future[Any]) -> None:
        s = self.settings
        self._phase = "connecting" if not capture_done.done() else "finishing"
        try:
            ws = await http.ws_connect(
                s.ingest_url, headers={"Authorization": f"Bearer {s.token}"},
                max_msg_size=MAX_MESSAGE_BYTES, heartbeat=None, autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0), ssl=self._ssl)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise RelayNotTrusted(untrusted_reason(exc, s.ca_file is not None)) from exc
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
        self.sender.connection_made()
        reader = asyncio.create_task(self._read(ws))
        try:
            await self._write(ws, reader, capture_done)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.sender.connection_lost()
            self._dropout_events(self.policy.on_connection_lost(time.time()))
            if self._phase == "live":
                self._phase = "connecting"
            if not ws.closed:
                await ws.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                now = time.monotonic()
                for ev in self.sender.receive(msg.data, now):
                    if isinstance(ev, Welcomed):
                        log.info("uplink: relay %s the session at seq %d (buffer %d ms)",
                                 "resumed" if ev.resumed else "started", ev.next_seq,
                                 ev.buffer_ms)
                        self._phase = "live"
                        self._maybe_jump_to_live()
                    elif isinstance(ev, RemoteBye):
                        log.info("uplink: relay ended the session: %s", ev.reason)
                        return
                    elif isinstance(ev, Acked):
                        self._dropout_events(self.policy.on_ack(ev, now, time.time()))
                self._wake.set()
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                              aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
        raise ConnectionError(f"relay closed the connection (code {ws.close_code})")

    async def _write(self, ws: aiohttp.ClientWebSocketResponse, reader: asyncio.Task[None],
                     capture_done: asyncio.Future[Any]) -> None:
        last_stats = 0.0
        last_progress = time.monotonic()
        last_acked = self.sender.acked_bytes_total
        while True:
            if reader.done():
                reader.result()  # raises the reason the connection ended
                return
            if self._fatal:
                raise ConnectionError(self._fatal)
            now = time.monotonic()
            room = self._window_room()
            if room > 0 or not self.sender.connected:
                for data in self.sender.data_to_send(now, max_bytes=min(SEND_BATCH_BYTES,
                                                                        max(1, room))):
                    # a link that takes nothing for ACK_TIMEOUT_S is treated as dead
                    await asyncio.wait_for(ws.send_bytes(data), ACK_TIMEOUT_S)
            if now - last_stats >= STATS_INTERVAL_S and self.sender.connected:
                await ws.send_bytes(self.sender.stats_message(self.target_kbps))
                last_stats = now
            if self.sender.acked_bytes_total != last_acked or self.sender.all_acked:
                last_acked, last_progress = self.sender.acked_bytes_total, now
            elif now - last_progress > ACK_TIMEOUT_S:
                raise ConnectionError(f"no acknowledgement from the relay for {ACK_TIMEOUT_S:g} s")
            if capture_done.done() and self.sender.all_acked and self.sender.connected:
                await ws.send_bytes(self.sender.bye("encoder finished"))
                # a clean end (BYE, everything acked) is no outage: disarm the detector
                # before the connection goes
                self._dropout_events(self.policy.on_clean_end(time.time()))
                await ws.close()
                return
            self._wake.clear()
            if (self.sender.unsent_bytes == 0 or self._window_room() <= 0
                    or not self.sender.connected):
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.1)


def _safe_url(url: str) -> str:
    return url.split("?", 1)[0]


def _describe(exc: BaseException) -> str:
    """One plain line for a transient failure (aiohttp's own text names its connector's
    internals, e.g. ``ssl:default``)."""
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS with the relay {exc.host}:{exc.port} failed: {exc.os_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"relay {exc.host}:{exc.port}"
        err = exc.os_error
        if isinstance(err, socket.gaierror):
            return f"cannot reach {where}: the name {exc.host!r} does not resolve ({err.strerror})"
        if err.errno:
            reason = os.strerror(err.errno).lower()  # "connection refused"
        elif isinstance(err, TimeoutError):
            reason = "no answer"
        else:
            reason = err.strerror or str(err) or type(err).__name__
        return f"cannot reach {where}: {reason}"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        reason = exc.message
        if exc.headers is not None:
            reason = exc.headers.get("X-Steadycast-Error", reason)
        return f"the relay answered HTTP {exc.status} to the uplink's upgrade: {reason}"
    if isinstance(exc, TimeoutError) and not str(exc):
        return "the relay did not answer in time"
    return str(exc) or type(exc).__name__


def retry_after_s(exc: BaseException) -> float | None:
    """The wait a relay asked for with HTTP 429 and ``Retry-After: SECONDS`` (its throttle of
    wrong credentials), capped at ``RETRY_AFTER_MAX_S``; None for any other failure."""
    if not isinstance(exc, aiohttp.WSServerHandshakeError) or exc.status != 429:
        return None
    value = exc.headers.get("Retry-After", "") if exc.headers is not None else ""
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not seconds >= 0:  # NaN too
        return None
    return min(seconds, RETRY_AFTER_MAX_S)
