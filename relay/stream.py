"""One configured stream at the relay: its ingest session, recording and output pipeline.

This is asyncio glue: it moves bytes between the WebSocket and the sans-I/O
``UplinkReceiver``; what the received events do is decided by the sans-I/O
``relay.ingest.session.IngestSession``, whose actions this applies (logs, event log,
metrics, and the recorder and pipeline threads).

Ingest dropouts (``DropoutDetector``, ``[relay] dropout_ms``) and low-throughput episodes
(``LowThroughputDetector``, ``low_throughput_share`` and ``low_throughput_s``) go to the
event log and to the monitor store (scope ``ingest``): a row when one starts, closed when
it ends. One still open when the relay stops is closed at the stop with cause
``relay_stopped``; the relay's own shutdown of the connection is not a dropout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from monitor.dropout import CAUSE_RELAY_STOPPED, DropoutDetector, LowThroughputDetector
from monitor.dropout_reporter import DropoutReporter, ingest_scope
from monitor.events import EventLog
from monitor.metrics import RelayMetrics
from monitor.store import MonitorStore
from relay.archive.checkpoint import (
    CheckpointError,
    RecordingCheckpoint,
    checkpoint_path,
    load_checkpoint,
)
from relay.archive.recording import Notice, Recorder
from relay.ingest.session import (
    ConfigureTrack,
    EndOutput,
    IngestAction,
    IngestSession,
    NewTimeline,
    PushUnit,
    RecordEnd,
    RecordMedia,
    RecordSession,
    RecordTrack,
    SessionClosed,
    SessionKind,
    SessionOpened,
    StatsStored,
)
from relay.output.destination import Destination
from relay.output.pipeline import StreamPipeline
from relay.settings import RelaySettings, StreamSettings
from uplink import (
    CloseCode,
    Hello,
    MediaReceived,
    ProtocolError,
    ReceiverEvent,
    SessionEnded,
    UplinkReceiver,
    decode,
)
from uplink.wire import message_name

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0  # a connection must send its HELLO this soon after the upgrade
RECORDER_WAIT_S = 0.01  # while the recorder's inbox is backlogged, look again this often
REPLACED_REASON = b"replaced by a newer connection"


class StreamRuntime:
    def __init__(self, settings: StreamSettings, relay: RelaySettings, metrics: RelayMetrics,
                 events: EventLog, store: MonitorStore | None = None) -> None:
        self.settings = settings
        self.relay = relay
        self.metrics = metrics
        self.events = events
        self.store = store
        self.receiver: UplinkReceiver | None = None
        self.pipeline: StreamPipeline | None = None
        self.recorder: Recorder | None = None
        # the ingest's decisions: playout units, recorder and pipeline commands, dropouts
        self.session = IngestSession(
            DropoutDetector(threshold_s=relay.dropout_ms / 1000),
            LowThroughputDetector(share=relay.low_throughput_share, min_s=relay.low_throughput_s))
        self.reporter = DropoutReporter(ingest_scope(settings.name), log, events, store, metrics)
        self.stopping = False  # the relay is shutting down: a lost connection is no dropout
        self.ws: web.WebSocketResponse | None = None
        self._conn_lock = asyncio.Lock()
        self._newest: web.WebSocketResponse | None = None  # the latest connection to HELLO
        self.ended = False
        self.connected_since: float | None = None
        self.disconnected_at: float | None = None
        self.last_stats: dict[str, int] = {}
        self.connections = 0
        self._checkpoint_file = checkpoint_path(relay.state_dir, settings.name)

    # --- restart ---------------------------------------------------------------------
    def restore(self) -> bool:
        """At startup: a session the relay was recording when it stopped (its checkpoint in
        state_dir) is recreated, so the encoder's next HELLO continues it and its archive;
        the pipeline starts at once and puts the platforms on the slate. True if restored."""
        if not self.settings.record:
            return False
        name = self.settings.name
        try:
            cp = load_checkpoint(self._checkpoint_file)
        except (CheckpointError, OSError) as exc:
            log.error("stream %s: cannot read the recording checkpoint %s (%s); the next "
                      "session starts a new archive", name, self._checkpoint_file, exc)
            return False
        if cp is None:
            return False
        self.receiver = self._new_receiver()
        self.receiver.restore(cp.session_id, cp.kept_seq)
        self.recorder = self._new_recorder(cp)
        self._ensure_outputs()
        assert self.pipeline is not None
        self.pipeline.go_on_air()
        self.disconnected_at = time.time()
        log.warning("stream %s: restored session %s from %s: archive kept up to seq %d; "
                    "waiting for the encoder, the platforms get the slate", name,
                    cp.session_id.hex()[:8], self._checkpoint_file, cp.kept_seq)
        self.events.write("session_restored", stream=name, session=cp.session_id.hex()[:8],
                          kept_seq=cp.kept_seq)
        return True

    def _new_receiver(self) -> UplinkReceiver:
        # with recording on, the cumulative ACK waits for the archive (docs/relay.md)
        return UplinkReceiver(buffer_ms=self.settings.buffer_ms,
                              max_message_bytes=self.relay.max_message_bytes,
                              kept_ack=self.settings.record)

    def _new_recorder(self, resume: RecordingCheckpoint | None = None) -> Recorder:
        self.metrics.recording_ok.labels(self.settings.name).set(1)
        return Recorder(self.settings.name, self.relay.record_dir,
                        checkpoint_file=self._checkpoint_file, resume=resume)

    # --- state -----------------------------------------------------------------------
    @property
    def state(self) -> str:
        if self.receiver is None or self.ended:
            return "ended" if self.ended else "offline"
        if self.ws is not None and not self.session.in_dropout:
            return "live"
        return "reconnecting"

    @property
    def dropouts(self) -> int:
        """Ingest dropouts ended so far."""
        return self.reporter.ended_count

    def status(self) -> dict[str, Any]:
        r = self.receiver
        out: dict[str, Any] = {
            "name": self.settings.name,
            "title": self.settings.title,
            "state": self.state,
            "connected": self.ws is not None,
            "ingest_kbps": self._ingest_kbps(),
            "next_seq": r.next_seq if r is not None else 0,
            "duplicates": r.duplicates if r is not None else 0,
            "seqs_given_up": r.seqs_given_up if r is not None else 0,
            "connections": self.connections,
            "dropouts": self.dropouts,
            "in_dropout": self.session.in_dropout,
            "in_low_throughput": self.session.in_low_throughput,
            "sender": self.last_stats,
            "buffer_ms": 0,
            "output_source": "offline",
            "destinations": [
                {"name": d.name, "url": d.shown_url, "tls_verify": d.tls_verify, "state": "idle",
                 "sessions": 0, "reconnects": 0}
                for d in self.settings.destinations
            ],
            "recording": None,
        }
        # a failed pipeline stays reported until the next session or resume replaces it
        out["pipeline_error"] = self.pipeline.error if self.pipeline is not None else None
        if self.pipeline is not None and not self.pipeline.finished.is_set():
            snap = self.pipeline.status()
            out.update({k: v for k, v in snap.items() if k != "destinations"})
            if snap["destinations"]:
                out["destinations"] = snap["destinations"]
        if not self.settings.record:
            out["recording"] = {"state": "off", "error": None, "file": None}
        elif self.recorder is not None:
            out["recording"] = self.recorder.status()
        else:
            out["recording"] = {"state": "idle", "error": None, "file": None}
        return out

    def _ingest_kbps(self) -> int:
        """The arrival rate while a sender is connected; 0 once it left or the stream ended
        (the receiver's window is only advanced while a connection is up)."""
        r = self.receiver
        if r is None or self.ended or self.ws is None:
            return 0
        return round(r.arrival_kbps)

    # --- ingest ----------------------------------------------------------------------
    async def serve(self, ws: web.WebSocketResponse, peer: str) -> None:
        """Run one authenticated ingest connection until it closes.

        Rules (issue 13, fault 6):
        - a connection is attached to the stream only once its first message is a HELLO; it
          must come within HELLO_TIMEOUT_S of the upgrade, or the connection is closed with
          4409 ("no HELLO within ..."). So connections that never speak cannot hold the
          stream, and a waiting one costs no receiver state;
        - a connection whose HELLO arrived replaces the attached one (4410), and the newest
          HELLO wins: one that was still waiting for the attached connection to finish when
          a newer HELLO arrived is closed with 4410 without being attached;
        - after the sender's BYE the relay closes the connection with 1000 (spec 4.7).
        """
        hello = await self._await_hello(ws, peer)
        if hello is None:
            return
        self._newest = ws
        current = self.ws
        if current is not None:
            log.info("stream %s: new connection from %s replaces the current one",
                     self.settings.name, peer)
            await current.close(code=CloseCode.REPLACED, message=REPLACED_REASON)
        async with self._conn_lock:
            if self._newest is not ws:  # a newer HELLO arrived while this one waited
                await ws.close(code=CloseCode.REPLACED, message=REPLACED_REASON)
                return
            self.ws = ws
            self.connections += 1
            self.metrics.ingest_connections.labels(self.settings.name).inc()
            self.metrics.ingest_connected.labels(self.settings.name).set(1)
            if self.receiver is None or self.ended:
                self.receiver = self._new_receiver()
            receiver = self.receiver
            receiver.connection_made(time.monotonic())
            self.connected_since = time.time()
            try:
                if await self._receive(ws, receiver, hello, peer):
                    await self._read_loop(ws, receiver, peer)
            except ConnectionError as exc:  # the peer went away while an ACK was being sent
                log.info("stream %s: connection from %s lost: %s", self.settings.name, peer,
                         exc)
            except asyncio.CancelledError:
                self.stopping = True  # the server cancels handlers only when it shuts down
                raise
            finally:
                receiver.connection_lost(time.monotonic())
                self.ws = None
                if self._newest is ws:
                    self._newest = None
                self.disconnected_at = time.time()
                self.metrics.ingest_connected.labels(self.settings.name).set(0)
                if not self.ended and not self.stopping:
                    self.reporter.report(self.session.connection_lost(time.time()))

    async def _await_hello(self, ws: web.WebSocketResponse, peer: str) -> bytes | None:
        """The first message if it is a well-formed HELLO; otherwise the connection is
        refused (or was closed) and None comes back."""
        try:
            msg = await asyncio.wait_for(ws.receive(), HELLO_TIMEOUT_S)
        except TimeoutError:
            await self._refuse(ws, CloseCode.PROTOCOL_ORDER,
                               f"no HELLO within {HELLO_TIMEOUT_S:g} s of connecting", peer)
            return None
        if msg.type != WSMsgType.BINARY:
            await self._refuse_frame(ws, msg.type, peer)
            return None
        try:
            first = decode(msg.data, self.relay.max_message_bytes)
        except ProtocolError as err:
            await self._refuse(ws, err.code, err.detail, peer, err.close_reason())
            return None
        if not isinstance(first, Hello):
            await self._refuse(ws, CloseCode.PROTOCOL_ORDER, "first message on a connection "
                               f"must be HELLO, got {message_name(first)}", peer)
            return None
        return bytes(msg.data)

    async def _read_loop(self, ws: web.WebSocketResponse, receiver: UplinkReceiver,
                         peer: str) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                await self._refuse_frame(ws, msg.type, peer)
                return
            if not await self._receive(ws, receiver, msg.data, peer):
                return
            await self._wait_for_recorder()

    async def _wait_for_recorder(self) -> None:
        """Backpressure (issue 13, fault 5): while the recorder's inbox is backlogged, stop
        reading this connection until it is half drained, so a sender that outruns the
        archive (ignoring the ACKs, which wait for the archive) is slowed by TCP instead of
        growing the relay. Only this stream waits; a recorder that died is not waited for
        (the tick replaces it)."""
        rec = self.recorder
        if rec is None or not rec.backlogged():
            return
        while rec is self.recorder and rec.alive and rec.backlogged(0.5) and not self.stopping:
            await asyncio.sleep(RECORDER_WAIT_S)

    async def _receive(self, ws: web.WebSocketResponse, receiver: UplinkReceiver, data: bytes,
                       peer: str) -> bool:
        """One binary message through the receiver; False once the connection is closed."""
        try:
            events = receiver.receive(data, time.monotonic())
        except ProtocolError as err:
            await self._refuse(ws, err.code, err.detail, peer, err.close_reason())
            return False
        for ev in events:
            self._on_event(ev)
        await self._flush(ws, receiver)
        if any(isinstance(ev, SessionEnded) for ev in events):
            await ws.close(code=CloseCode.NORMAL, message=b"session ended (BYE)")
            return False
        return True

    async def _refuse_frame(self, ws: web.WebSocketResponse, kind: WSMsgType, peer: str) -> None:
        """A frame that is not a binary message: a text frame is refused; an error is
        counted (a message over max_message_bytes) or logged; a close needs nothing."""
        if kind == WSMsgType.TEXT:
            await self._refuse(ws, CloseCode.MALFORMED,
                               "text frames are not part of the uplink protocol", peer)
        elif kind == WSMsgType.ERROR:
            exc = ws.exception()
            if isinstance(exc, WebSocketError) and exc.code == WSCloseCode.MESSAGE_TOO_BIG:
                self._count_refusal(int(WSCloseCode.MESSAGE_TOO_BIG), peer,
                                    "message larger than max_message_bytes="
                                    f"{self.relay.max_message_bytes}")
            else:
                log.info("stream %s: connection from %s failed: %s", self.settings.name,
                         peer, exc)

    async def _refuse(self, ws: web.WebSocketResponse, code: int, detail: str, peer: str,
                      reason: str | None = None) -> None:
        self._count_refusal(int(code), peer, detail)
        await ws.close(code=int(code), message=(reason or detail[:60]).encode())

    def _count_refusal(self, code: int, peer: str, detail: str) -> None:
        self.metrics.protocol_errors.labels(self.settings.name, str(code)).inc()
        self.events.write("protocol_error", stream=self.settings.name, peer=peer, code=code,
                          detail=detail)
        log.warning("stream %s: closing connection from %s: %s (code %d)", self.settings.name,
                    peer, detail, code)

    async def _flush(self, ws: web.WebSocketResponse, receiver: UplinkReceiver) -> None:
        if self.pipeline is not None:
            receiver.set_buffer_ms(self.pipeline.buffer_ms)
        kept = self.recorder.kept if self.recorder is not None else None
        if kept is not None:  # written and checkpointed: now it may be acknowledged
            receiver.set_kept(kept[1], kept[0])
        for data in receiver.data_to_send(time.monotonic()):
            await ws.send_bytes(data)

    def _on_event(self, ev: ReceiverEvent) -> None:
        """One receiver event: the ingest session core decides, this applies its actions."""
        if isinstance(ev, MediaReceived):
            self.metrics.ingest_bytes.labels(self.settings.name).inc(len(ev.media.payload))
        next_seq = self.receiver.next_seq if self.receiver is not None else None
        for action in self.session.on_event(ev, time.time(), next_seq):
            self._apply(action)

    def _apply(self, action: IngestAction) -> None:
        name = self.settings.name
        pipeline, recorder = self.pipeline, self.recorder
        if isinstance(action, PushUnit):
            if pipeline is not None:
                pipeline.push(action.unit)
        elif isinstance(action, RecordMedia):
            if recorder is not None:  # None with record = false
                recorder.media(action.media, received_below=action.received_below)
        elif isinstance(action, SessionOpened):
            self.ended = False
            sid = action.session_id.hex()[:8]
            if action.kind == SessionKind.CONTINUED:
                log.info("stream %s: sender session %s continues at seq %d (the relay lost "
                         "what it had not kept; the sender resends it)", name, sid,
                         action.next_seq)
            elif action.kind == SessionKind.NEW:
                log.info("stream %s: new sender session %s", name, sid)
                self.events.write("session_started", stream=name, session=sid)
            else:
                log.info("stream %s: sender session %s resumed at seq %d", name, sid,
                         action.next_seq)
            self._ensure_outputs()
        elif isinstance(action, RecordSession):
            if recorder is not None:
                recorder.new_session(action.session_id)
        elif isinstance(action, NewTimeline):
            if pipeline is not None:
                pipeline.new_timeline()
        elif isinstance(action, RecordTrack):
            if recorder is not None:
                recorder.track(action.track, changed=True)
        elif isinstance(action, ConfigureTrack):
            if pipeline is not None:
                pipeline.configure(action.track)
        elif isinstance(action, StatsStored):
            self.last_stats = action.as_dict()
        elif isinstance(action, SessionClosed):
            log.info("stream %s: sender ended the stream (%s)", name,
                     action.reason or "no reason")
            self.events.write("session_ended", stream=name, reason=action.reason)
            self.ended = True
        elif isinstance(action, EndOutput):
            if pipeline is not None:
                pipeline.end()
        elif isinstance(action, RecordEnd):
            if recorder is not None:
                recorder.end_session()  # the archive is complete: no checkpoint left
                recorder.close(wait=False)
                self.recorder = None
        else:
            self.reporter.report([action])

    def _ensure_outputs(self) -> None:
        if self.recorder is None and self.settings.record:
            self.recorder = self._new_recorder()
        if self.pipeline is None or self.pipeline.finished.is_set():
            self.pipeline = StreamPipeline(self.settings, self.relay.output,
                                           self._make_destinations, self.metrics, self.events)
            # a replacement (after a failure, or a resume after the end) knows no track yet:
            # a resumed sender repeats its TRACKs unchanged, which configure nothing
            for track in (self.receiver.tracks.values() if self.receiver is not None else ()):
                self.pipeline.configure(track)

    def _make_destinations(self, video_template: Any, audio_template: Any) -> list[Destination]:
        return [Destination(self.settings.name, d, video_template, audio_template, self.metrics,
                            self.events, self.store) for d in self.settings.destinations]

    def _stop_detectors(self, now: float, end_cause: str | None = None) -> None:
        """A clean end (or the relay stopping): close what is open, disarm both detectors."""
        self.reporter.report(self.session.stop(now), end_cause)

    # --- housekeeping, every TICK_S from the app -------------------------------------
    async def tick(self) -> None:
        now = time.time()
        if not self.stopping:
            self.reporter.report(self.session.poll(now))
        await self._recorder_tick()
        r = self.receiver
        self.metrics.ingest_kbps.labels(self.settings.name).set(self._ingest_kbps())
        if r is not None:
            if self.ws is not None and not self.ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self._flush(self.ws, r)
            elif (self.disconnected_at is not None and not self.ended
                  and now - self.disconnected_at > self.relay.grace_s):
                log.warning("stream %s: sender gone for %.0f s (grace_s); session forgotten",
                            self.settings.name, now - self.disconnected_at)
                self.events.write("session_expired", stream=self.settings.name,
                                  grace_s=self.relay.grace_s)
                self._stop_detectors(now)
                self.receiver = None
                if self.recorder is not None:
                    self.recorder.end_session()  # nobody will continue it
                    self.recorder.close(wait=False)
                    self.recorder = None
                if self.pipeline is not None:
                    # its platform sessions end and its encoder is freed; the next session
                    # starts a new pipeline (a session nobody continues holds nothing)
                    self.pipeline.end()

    async def _recorder_tick(self) -> None:
        """Report what the recorder noticed (once each), and replace a recorder that died."""
        rec = self.recorder
        if rec is None:
            return
        name = self.settings.name
        for notice in rec.take_notices():
            await self._on_recording_notice(notice)
        if not rec.alive:
            log.error("stream %s: the recorder stopped (%s); starting a new one from the "
                      "checkpoint", name, rec.error)
            self.metrics.recording_ok.labels(name).set(0)
            self.events.write("recording_failed", stream=name, error=rec.error or "stopped")
            try:
                cp = load_checkpoint(self._checkpoint_file)
            except (CheckpointError, OSError):
                cp = None
            self.recorder = self._new_recorder(cp)
            if self.receiver is not None and cp is None and self.receiver.session_id:
                self.recorder.new_session(self.receiver.session_id)
            for t in (self.receiver.tracks.values() if self.receiver is not None else ()):
                self.recorder.track(t, changed=True)

    async def _on_recording_notice(self, notice: Notice) -> None:
        name = self.settings.name
        if notice.kind == "failed":
            self.metrics.recording_ok.labels(name).set(0)
            self.metrics.recording_errors.labels(name).inc()
            self.events.write("recording_failed", stream=name, error=notice.error)
        elif notice.kind == "recovered":
            self.metrics.recording_ok.labels(name).set(1)
            self.events.write("recording_recovered", stream=name)
        elif notice.kind == "resend" and self.receiver is not None:
            # the recorder dropped its copies: the sender must send them again
            self.receiver.forget_unkept()
            self.events.write("recording_resend", stream=name, from_seq=notice.seq)
            ws = self.ws
            if ws is not None and not ws.closed:
                await ws.close(code=CloseCode.GOING_AWAY,
                               message=b"archive recovered: resend from the watermark")

    def begin_shutdown(self) -> None:
        """The relay is shutting down (SIGINT): from now on the server stops reading and then
        drops the ingest connection; neither is a dropout."""
        self.stopping = True

    async def close(self) -> None:
        self.stopping = True
        if self.ws is not None:
            await self.ws.close(code=CloseCode.GOING_AWAY, message=b"relay shutting down")
        self._stop_detectors(time.time(), CAUSE_RELAY_STOPPED)
        loop = asyncio.get_running_loop()
        if self.pipeline is not None:
            await loop.run_in_executor(None, self.pipeline.stop)
        if self.recorder is not None:
            await loop.run_in_executor(None, self.recorder.close)
