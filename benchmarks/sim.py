"""The simulator: the production cores on a trace-driven link, faster than real time.

``simulate(trace, abr, ...)`` runs one live session as a discrete-event loop (a heap of timed
events, no real clock; ``now`` is passed to every core) and returns a ``RunResult``. It drives
the very classes production runs, the way production drives them:

- sender: ``encoder.sender_session.SenderSession`` (``uplink.UplinkSender``,
  ``encoder.send_policy.SendPolicy``, the ABR controller from ``encoder.abr.create``, the
  ``OverflowGate``), driven as ``encoder.client`` drives it: units are pushed as the capture
  loop hands them over, the writer writes what ``transmit`` and ``stats`` give until
  ``writer_idle``, every message from the relay goes to ``receive``, ``control`` runs every
  ``UPDATE_INTERVAL_S``, and its bitrate and keyframe requests go to the encoder model;
- relay: ``uplink.UplinkReceiver`` fed the delivered bytes in order, its ACKs sent back after
  every message and every ``relay.app.TICK_S`` with the playout level as the relay reports
  it, its events through ``relay.ingest.session.IngestSession`` (the core ``relay.stream``
  applies), whose playout units go into ``relay.output.playout.PlayoutBuffer`` (pushed at the next
  output tick, as the pipeline thread does) and ``relay.output.clock.OutputClock`` ticked at
  ``OutputProfile.fps``, as ``relay.output.pipeline`` does;
- link: ``linklab.link_model``: a ``TraceLink`` with its ``DropTailQueue`` and
  ``OutageStage`` (outages remove opportunities) then a ``DelayStage``, as the emulator
  builds its uplink; the delay is applied by the loop (``_next_uplink_ms``), which wakes only
  for a delivery that completes a message, or an opportunity while bytes wait to enter the
  queue, so it need not stop at every packet (the times stay exact).

The model, where there are no production classes:

- **Start.** Second 0 of the trace is second 0 of the simulation. The sender starts capturing
  at ``start_s`` (``SENDER_START_S`` = 1 s by default, where the real pipeline's encoder
  starts: see ``benchmarks.real``) and connects after a handshake of two round trips, as
  ``encoder.client`` starts its capture loop and then connects. The relay anchors its output
  at the first unit's arrival, so the delay viewers get is ``buffer_ms`` plus that start-up.
- **Encoder.** Video frames every 1/fps on the sim clock (capture time = the clock), through
  the production frame-rate governor (``encoder.frame_rate``) exactly as
  ``encoder.capture.CaptureLoop`` applies it (k-th frames kept, the encoder asked for k times
  the bitrate, at most the ceiling). The encoder's rate follows a new bitrate with a
  first-order lag (``follow_kbps``), faster down (``VBV_TAU_DOWN_S``) than up
  (``VBV_TAU_UP_S``), as libx264 does in the CBR/VBV mode ``encoder.av_encoder`` opens it in;
  docs/benchmarks.md ("The simulator's encoder model") has the measurements behind both time
  constants. Frame sizes: a keyframe is ``KEYFRAME_SIZE_RATIO`` (7, within the usual 6-8)
  P-frames, P-frames share the rest of the budget, so every keyframe interval keeps its
  budget; each size carries seeded lognormal noise (``FRAME_SIZE_SIGMA``, mean 1). Keyframes
  come every ``KEYFRAME_INTERVAL_S`` x fps *encoded* frames (x264's keyint counts frames:
  while the governor keeps every k-th frame they are k times further apart in time) and are
  forced every ``OUTAGE_KEYFRAME_S`` while the ``SendPolicy`` says the uplink is out, as the
  capture loop does (a forced IDR restarts the keyframe schedule). Audio: AAC at
  ``AUDIO_KBPS`` in 1024-sample frames at ``AUDIO_SAMPLE_RATE``, produced with each video
  frame as the capture loop does.
- **Transport.** The WebSocket over TCP is a byte stream: each message gets its WebSocket
  frame header (masked from the client) and the stream is cut into packets of at most
  ``MTU_BYTES`` into the uplink while its queue has room for a full packet; when it is full
  the bytes wait at the sender, as the emulator does (TCP holds the sender instead of
  dropping). The in-flight window of the ``SendPolicy`` limits what leaves the sender. ACKs
  come back over a downlink of fixed delay with no rate limit; like the emulator's default
  downlink it shares the overlay outages (a dead radio is dead both ways). The sender's spool
  keeps everything in memory (the client's spills to a file past SPOOL_MEMORY_MB_DEFAULT;
  the same total fits before SpoolFull; past it new units are dropped as the client drops
  them, by the same ``encoder.spool_overflow.OverflowGate``).
- **Connection.** The connection stays up through every outage. The real client gives up on a
  connection after ``ACK_TIMEOUT_S`` (10 s) without an ACK (``SenderSession.ack_stalled``)
  and reconnects, resending what was in flight; the simulator does not ask it (nor model the
  WebSocket handshake). It does model the relay closing the connection on a protocol error
  (the client reconnects with its backoff): ``notes`` counts them. The relay keeps one
  session; ``platform_sessions`` counts the sessions the ``OutputClock`` opens (a new one
  only after ``hold_s`` of slate).
- **Platform.** What the relay outputs is what the platform shows (no platform-side player).
  The run is judged over ``[T0, T0 + duration_s)`` on the relay's output clock, T0 being when
  the playout buffer makes the first frame due. A moment is live while a fresh picture is
  on screen, for as long as it stays there if that is at most
  ``benchmarks.platform_viewer.LIVE_HOLD_MAX_S`` (the viewer's rule: 10 fps is live video),
  else for one output frame; everything else (a frozen picture, slate, nothing) is
  interruption. Latency: output tick minus capture time of each fresh picture.

``benchmarks/sim_speed.py`` measures the speed (runs per second and the speed-up over real
time per controller). Deterministic: no clock, no I/O, seeded noise; the same arguments give
the same ``RunResult``.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import cast

import numpy as np

from benchmarks.oracle import floor_bound_interruption_s
from benchmarks.platform_viewer import LIVE_HOLD_MAX_S
from benchmarks.results import RunResult, qoe_score
from encoder.abr import UPDATE_INTERVAL_S, AbrLimits, create
from encoder.av_encoder import AAC_FRAME_SAMPLES, AUDIO_TRACK_ID, VIDEO_TRACK_ID
from encoder.capture import OUTAGE_KEYFRAME_S
from encoder.frame_rate import FrameRateGovernor, default_floor_kbps
from encoder.sender_session import BitrateChanged, DenseKeyframes, SenderEvent, SenderSession
from encoder.settings import (
    ACK_TIMEOUT_S,
    AUDIO_KBPS,
    AUDIO_SAMPLE_RATE,
    KEYFRAME_INTERVAL_S,
    SPOOL_DISK_MB_DEFAULT,
    SPOOL_MEMORY_MB_DEFAULT,
)
from linklab.emulator import DELAY_MS_DEFAULT, QUEUE_PACKETS_DEFAULT
from linklab.link_model import (
    DelayStage,
    DropTailQueue,
    Link,
    OutageStage,
    Packet,
    TraceLink,
    make_link,
)
from linklab.outages import overlay_outages, unavoidable_interruption_s
from linklab.traces import MTU_BYTES, Outage, Trace
from relay.app import TICK_S as RELAY_APP_TICK_S
from relay.ingest.session import IngestSession, NewTimeline, PushUnit, RecordMedia
from relay.output.clock import OutputClock
from relay.output.playout import AccessUnit, PlayoutBuffer
from relay.settings import FREEZE_MS_DEFAULT, HOLD_S_DEFAULT, OutputProfile
from uplink import (
    Codec,
    MediaReceived,
    ProtocolError,
    Spool,
    TrackConfig,
    TrackKind,
    UplinkReceiver,
    UplinkSender,
)
from uplink.wire import MAX_MESSAGE_BYTES, MEDIA_HEADER_BYTES, MessageType

VBV_TAU_DOWN_S = 0.5  # x264's rate follows a lower bitrate with this time constant
VBV_TAU_UP_S = 1.0  # ... and a higher one with this (see the docstring)
KEYFRAME_SIZE_RATIO = 7.0  # a keyframe is this many P-frames
FRAME_SIZE_SIGMA = 0.25  # lognormal sigma of the frame sizes (mean kept at 1)
WIDTH_DEFAULT, HEIGHT_DEFAULT = 1280, 720  # the encoder's default session size (settings)
AAC_EXTRADATA = bytes([0x11, 0x88])  # AudioSpecificConfig: AAC LC, 48 kHz, mono
SPOOL_MB = 1024 * 1024
OUTPUT_FPS = OutputProfile().fps  # the relay's output clock
OUTPUT_AUDIO_SAMPLE_RATE = OutputProfile().audio_sample_rate
END_MARGIN_S = 1.0  # simulated past the judged window so its last frames can show
# The sender starts capturing this long after second 0 of the trace, where the real
# pipeline's encoder starts (benchmarks.real; docs/benchmarks.md, "The benchmark").
SENDER_START_S = 1.0
# the WebSocket connection is usable after the TCP handshake and the HTTP upgrade: two round
# trips, four one-way delays (the handshake's few packets are not put through the trace)
HANDSHAKE_ONE_WAY_TRIPS = 4
BIN_S = 1.0  # the series' bin

# event kinds; at equal times they run in this order
_CONNECT, _CAPTURE, _CONTROL, _RELAY_TICK, _APP_TICK = range(5)


class SimError(ValueError):
    """A simulation that cannot run as asked; the message names the argument and value."""


def ws_header_bytes(payload_bytes: int, masked: bool) -> int:
    """Bytes of the WebSocket frame header of one binary message (RFC 6455 section 5.2): 2,
    plus 2 or 8 for the extended length, plus the 4-byte mask a client adds."""
    extra = 0 if payload_bytes < 126 else 2 if payload_bytes < 65536 else 8
    return 2 + extra + (4 if masked else 0)


# --- the encoder model -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimUnit:
    """One encoded access unit of the model: its size stands for the payload."""

    track_id: int
    keyframe: bool
    pts: int
    dts: int
    capture_time_us: int
    size: int

    @property
    def payload(self) -> bytes:
        """A payload of ``size`` zero bytes (what the sender spools and sends)."""
        return bytes(self.size)


def follow_kbps(produced_kbps: float, asked_kbps: float, fps: float) -> float:
    """What x264 produces one captured frame later, given what it produced and what it is
    asked for: a first-order lag of ``VBV_TAU_DOWN_S`` towards a lower bitrate and
    ``VBV_TAU_UP_S`` towards a higher one (see the module docstring)."""
    tau_s = VBV_TAU_UP_S if asked_kbps > produced_kbps else VBV_TAU_DOWN_S
    return produced_kbps + (asked_kbps - produced_kbps) * (1.0 - math.exp(-1.0 / (fps * tau_s)))


class EncoderModel:
    """Frame and audio sizes from the target bitrate, as the capture loop and x264 make them.

    ``frame(n, now)`` is the capture loop's iteration for captured frame ``n`` (captured at
    ``start_s + n / fps`` on the simulation's clock): it applies the
    target through the frame-rate governor, encodes the frame if the governor keeps it, and
    adds the audio that became due. ``target_kbps`` and ``dense_keyframes`` are set by the
    client glue, as ``CaptureLoop.set_target_kbps`` / ``set_dense_keyframes``.
    """

    def __init__(self, fps: int, start_kbps: int, max_kbps: int, floor_kbps: int,
                 seed: int, start_s: float = 0.0) -> None:
        self.fps = fps
        self._start_us = round(start_s * 1_000_000)  # capture time of frame 0
        self.governor = FrameRateGovernor(fps, floor_kbps)
        self.ceiling_kbps = max(start_kbps, max_kbps)
        self.target_kbps = start_kbps
        self.dense_keyframes = False
        self._applied = (start_kbps, 1)
        self._rate_kbps = float(start_kbps)  # what x264 is asked for (per nominal fps)
        self._effective_kbps = float(start_kbps)  # what it produces (VBV lag)
        self._gop = max(1, round(fps * KEYFRAME_INTERVAL_S))  # encoded frames
        self._dense_gop = max(1, round(OUTAGE_KEYFRAME_S * fps))  # captured frames
        self._last_forced = -self._dense_gop
        self._since_key: int | None = None  # encoded frames since the last keyframe
        self._rng = np.random.default_rng(seed)
        self._noise = np.empty(0)
        self._noise_i = 0
        self._audio_sent = 0  # samples handed to the audio encoder
        self._audio_pts = 0  # samples encoded into AAC frames
        self._audio_bytes = 0.0  # AAC bytes owed (fractional part carried)
        self.frames_captured = 0
        self.frames_encoded = 0

    def _noise_factor(self) -> float:
        if self._noise_i >= self._noise.size:
            z = self._rng.standard_normal(4096)
            self._noise = np.exp(FRAME_SIZE_SIGMA * z - FRAME_SIZE_SIGMA ** 2 / 2)
            self._noise_i = 0
        value = float(self._noise[self._noise_i])
        self._noise_i += 1
        return value

    def frame(self, n: int, now: float) -> list[SimUnit]:
        fps = self.fps
        kbps = self.target_kbps
        step = self.governor.update(kbps, now)
        if (kbps, step) != self._applied:
            self._rate_kbps = float(min(self.ceiling_kbps, kbps * max(1, step)))
            self._applied = (kbps, step)
        self._effective_kbps = follow_kbps(self._effective_kbps, self._rate_kbps, fps)
        capture_us = self._start_us + round(n * 1_000_000 / fps)
        units: list[SimUnit] = []
        if self.governor.keep(n):
            force = self.dense_keyframes and n - self._last_forced >= self._dense_gop
            if force:
                self._last_forced = n
            key = force or self._since_key is None or self._since_key >= self._gop
            # the keyframe interval now, in encoded frames: its budget is kept
            interval = self._gop
            if self.dense_keyframes:
                interval = min(self._gop, max(1, math.ceil(self._dense_gop / step)))
            budget_bytes = self._effective_kbps * 1000 / 8 / fps
            p_bytes = budget_bytes * interval / (KEYFRAME_SIZE_RATIO + interval - 1)
            size = p_bytes * (KEYFRAME_SIZE_RATIO if key else 1.0) * self._noise_factor()
            self._since_key = 1 if key else (self._since_key or 0) + 1
            units.append(SimUnit(VIDEO_TRACK_ID, key, n, n, capture_us, max(1, round(size))))
            self.frames_encoded += 1
        audio_due = round((n + 1) * AUDIO_SAMPLE_RATE / fps)
        self._audio_sent = audio_due
        aac_bytes = AUDIO_KBPS * 1000 / 8 * AAC_FRAME_SAMPLES / AUDIO_SAMPLE_RATE
        while self._audio_sent - self._audio_pts >= AAC_FRAME_SAMPLES:
            pts = self._audio_pts
            self._audio_pts += AAC_FRAME_SAMPLES
            self._audio_bytes += aac_bytes
            size = int(self._audio_bytes)
            self._audio_bytes -= size
            units.append(SimUnit(AUDIO_TRACK_ID, True, pts, pts,
                                 self._start_us + round(pts * 1_000_000 / AUDIO_SAMPLE_RATE),
                                 size))
        self.frames_captured = n + 1
        return units

    def tracks(self, width: int, height: int) -> list[TrackConfig]:
        return [
            TrackConfig(track_id=VIDEO_TRACK_ID, kind=TrackKind.VIDEO, codec=Codec.H264,
                        time_base_num=1, time_base_den=self.fps, width=width, height=height,
                        sample_rate=0, channels=0, extradata=b""),
            TrackConfig(track_id=AUDIO_TRACK_ID, kind=TrackKind.AUDIO, codec=Codec.AAC,
                        time_base_num=1, time_base_den=AUDIO_SAMPLE_RATE, width=0, height=0,
                        sample_rate=AUDIO_SAMPLE_RATE, channels=1, extradata=AAC_EXTRADATA),
        ]


# --- the byte stream ---------------------------------------------------------------------------


class _Stream:
    """One direction of the TCP connection, client to relay: written messages, the bytes that
    entered the link, the bytes that came out of it, and the messages they complete."""

    def __init__(self) -> None:
        self.written = 0  # wire bytes written by the sender
        self.into_link = 0  # ... of which entered the link
        self.out_of_link = 0  # ... of which came out at the relay
        self._entering: deque[tuple[int, int]] = deque()  # (end offset, payload bytes)
        self._arriving: deque[tuple[int, bytes]] = deque()  # (end offset, message)

    def write(self, message: bytes, payload_bytes: int) -> None:
        self.written += len(message) + ws_header_bytes(len(message), masked=True)
        self._entering.append((self.written, payload_bytes))
        self._arriving.append((self.written, message))

    @property
    def waiting(self) -> int:
        """Bytes written and not yet in the link (they wait at the sender)."""
        return self.written - self.into_link

    def entered(self, size: int) -> int:
        """``size`` more bytes entered the link; returns the media payload bytes of the
        messages that are now wholly in it."""
        self.into_link += size
        payload = 0
        while self._entering and self._entering[0][0] <= self.into_link:
            payload += self._entering.popleft()[1]
        return payload

    @property
    def next_message_end(self) -> int | None:
        """The stream offset at which the next message is complete (None: none pending)."""
        return self._arriving[0][0] if self._arriving else None

    def arrived(self, end_offset: int) -> list[bytes]:
        """The bytes up to ``end_offset`` came out of the link; returns the messages now
        complete."""
        self.out_of_link = end_offset
        done: list[bytes] = []
        while self._arriving and self._arriving[0][0] <= self.out_of_link:
            done.append(self._arriving.popleft()[1])
        return done


# --- the simulation ----------------------------------------------------------------------------


class _Simulation:
    def __init__(self, trace: Trace, abr: str, *, duration_s: float, buffer_ms: int,
                 outages: list[Outage], delay_ms: float, queue_packets: int | None,
                 start_kbps: int, min_kbps: int, max_kbps: int, fps: int, seed: int,
                 width: int, height: int, fps_floor_kbps: int | None,
                 start_s: float, spool_limit_bytes: int | None = None) -> None:
        self.trace = trace
        self.start_s = start_s
        self.abr_name = abr
        self.duration_s = duration_s
        self.buffer_ms = buffer_ms
        self.outages = list(outages)
        self.delay_ms = float(delay_ms)
        self.fps = fps
        self.seed = seed
        self.n_bins = max(1, math.ceil(duration_s / BIN_S - 1e-9))

        # links: the uplink replays the trace with the outages; the downlink only delays
        outage_stage = OutageStage.from_outages(self.outages)
        # the uplink: a drop-tail queue emptied by the trace (make_link's bottleneck, used
        # alone); its delay stage is applied here, so that the loop need not wake at every
        # delivery opportunity while nothing waits to enter the queue (see _next_uplink_ms)
        self.uplink = TraceLink.from_trace(trace, queue=DropTailQueue(queue_packets),
                                           outages=outage_stage)
        self.uplink_delay = DelayStage(delay_ms)
        # left the queue, not yet delivered: (delivery time, generation, stream end offset)
        self.uplink_flight: deque[tuple[float, int, int]] = deque()
        self.downlink: Link = make_link(None, delay_ms=delay_ms, outages=outage_stage)

        # sender side, as encoder.client builds it
        self.encoder = EncoderModel(fps, start_kbps, max_kbps,
                                    fps_floor_kbps or default_floor_kbps(width, height, fps),
                                    seed, start_s)
        # the client's spool holds SPOOL_MEMORY_MB_DEFAULT in memory, then spills up to
        # SPOOL_DISK_MB_DEFAULT to a file; the simulation keeps it all in memory (no I/O),
        # with the same total before SpoolFull
        if spool_limit_bytes is None:
            spool_limit_bytes = (SPOOL_MEMORY_MB_DEFAULT + SPOOL_DISK_MB_DEFAULT) * SPOOL_MB
        spool = Spool(memory_limit_bytes=spool_limit_bytes, disk_limit_bytes=0)
        self.sender = UplinkSender(session_id=bytes(range(16)), spool=spool)
        for track in self.encoder.tracks(width, height):
            self.sender.add_track(track)
        self.abr = create(abr, AbrLimits(min_kbps=min_kbps, max_kbps=max_kbps,
                                         start_kbps=start_kbps, audio_kbps=AUDIO_KBPS))
        self.session = SenderSession(self.sender, self.abr, VIDEO_TRACK_ID)
        self.switches = 0
        self.stream = _Stream()
        self.generation = 0  # connection number: bytes of an older one are discarded
        self.connected = False

        # relay side, as relay.stream and relay.output.pipeline build it
        self.receiver = UplinkReceiver(buffer_ms=buffer_ms, max_message_bytes=MAX_MESSAGE_BYTES)
        self.playout = PlayoutBuffer(delay_s=buffer_ms / 1000)
        self.clock = OutputClock(fps=OUTPUT_FPS, audio_sample_rate=OUTPUT_AUDIO_SAMPLE_RATE,
                                 freeze_s=FREEZE_MS_DEFAULT / 1000, hold_s=HOLD_S_DEFAULT)
        # what MEDIA does at the relay: the production core (playout units, archive)
        self.ingest = IngestSession()
        self.inbox: list[AccessUnit | None] = []  # None: a new timeline (playout reset)
        self.pipeline_started = False
        self.relay_level_ms = 0  # the playout level at the last output tick
        self.platform_sessions = 0  # sessions the output clock opened
        self.protocol_errors = 0
        self.archived_video: set[int] = set()

        # measurements
        self.sent_bytes = np.zeros(self.n_bins)
        self.delivered_bytes = np.zeros(self.n_bins)
        self.target_sum = np.zeros(self.n_bins)
        self.target_n = np.zeros(self.n_bins)
        self.level_sum = np.zeros(self.n_bins)
        self.level_n = np.zeros(self.n_bins)
        self.tick_times: list[float] = []  # output ticks that showed a fresh picture
        self.tick_latency_ms: list[float] = []

        self.events: list[tuple[float, int, int]] = []  # (time_ms, kind, arg)
        # the links' next_event_ms changes only when they are touched: asked again only then
        self.uplink_dirty = self.downlink_dirty = True
        self.now_ms = 0.0

    # -- helpers ----------------------------------------------------------------------------
    def _bin(self, now_s: float) -> int:
        return int(now_s // BIN_S)

    def _schedule(self, time_ms: float, kind: int, arg: int = 0) -> None:
        heapq.heappush(self.events, (time_ms, kind, arg))

    # -- the client (encoder.client.UplinkClient's glue, without asyncio) -------------------
    # The decisions are encoder.sender_session.SenderSession's; this glue moves its messages
    # into the byte stream and applies its requests to the encoder model. Dropout and
    # spool-overflow events are reports only: nothing here logs them.
    def _connect(self, now_s: float) -> None:
        self.stream = _Stream()
        self.session.connection_made(now_s)
        self.receiver.connection_made(now_s)
        self.connected = True
        self._pump(now_s)

    def _apply(self, events: list[SenderEvent], now_s: float) -> None:
        """The client's ``_apply``, for the encoder model: bitrate and keyframe requests."""
        for ev in events:
            if isinstance(ev, BitrateChanged):
                self.encoder.target_kbps = ev.kbps
                if now_s <= self.duration_s:
                    self.switches += 1
            elif isinstance(ev, DenseKeyframes):
                self.encoder.dense_keyframes = ev.on

    def _push(self, units: list[SimUnit], now_s: float) -> None:
        self._apply(self.session.push(units, now_s, now_s), now_s)
        self._pump(now_s)

    def _pump(self, now_s: float) -> None:
        """The client's writer: what the in-flight window admits, and STATS when due."""
        if not self.connected:
            return
        session = self.session
        while True:
            messages = session.transmit(now_s)
            for data in messages:
                self.stream.write(data, _media_payload_bytes(data))
            stats = session.stats(now_s)
            if stats is not None:
                self.stream.write(stats, 0)
            if not messages or session.writer_idle:
                break
        self._feed_uplink()

    def _control(self, now_s: float) -> None:
        """The client's control task: the session's control tick."""
        self._apply(self.session.control(now_s, now_s), now_s)
        i = self._bin(now_s)
        if i < self.n_bins:
            self.target_sum[i] += self.session.target_kbps
            self.target_n[i] += 1
        self._pump(now_s)

    def _on_relay_message(self, data: bytes, now_s: float) -> None:
        """A message from the relay reached the sender."""
        self._apply(self.session.receive(data, now_s, now_s), now_s)
        self._pump(now_s)

    def _client_connection_lost(self, now_s: float) -> float:
        """The connection went with an error: the client's wait before it reconnects."""
        self._apply(self.session.connection_lost(now_s, now_s), now_s)
        return self.session.reconnect_wait_s()

    # -- the link ---------------------------------------------------------------------------
    def _feed_uplink(self) -> None:
        """Bytes waiting at the sender enter the link while its queue has room for a full
        packet (the emulator reads its socket only then)."""
        stream, link = self.stream, self.uplink
        self.uplink_dirty = True  # bytes may wait now: _next_uplink_ms changes
        if stream.waiting == 0:
            return
        if link.is_full_for(MTU_BYTES):
            # full as last served: serve it up to now (serving only ever frees room, so a
            # queue with room as last served has room now, and enqueue serves it first)
            self._serve_uplink(self.now_ms)
        queue = link.queue
        first = True
        payload = 0
        while stream.waiting > 0 and not queue.is_full_for(MTU_BYTES):
            size = min(MTU_BYTES, stream.waiting)
            packet = Packet(size, (self.generation, stream.into_link + size))
            if first:  # serves the opportunities up to now, then queues
                link.enqueue(packet, self.now_ms)
                first = False
            else:  # served up to now already: straight into the queue
                queue.offer(packet)
            payload += stream.entered(size)
        if payload:
            i = self._bin(self.now_ms / 1000)
            if i < self.n_bins:
                self.sent_bytes[i] += payload

    def _next_uplink_ms(self) -> float:
        """When the uplink next needs the loop. Exact, with fewer wake-ups than one per
        packet and per opportunity: only a delivery that completes a message does something
        at the relay, so the loop wakes at the first packet in flight that completes one.
        Without such a packet in flight, it wakes when the next packet can be delivered at
        the earliest (the next opportunity plus the delay: ``advance`` then serves every
        opportunity up to then at its exact time); and while bytes wait to enter the queue,
        at every opportunity (one may free room)."""
        t = math.inf
        end = self.stream.next_message_end
        if end is not None:
            for time_ms, generation, end_offset in self.uplink_flight:
                if generation != self.generation:
                    t = time_ms  # an old connection's bytes: drop them in time
                    break
                if end_offset >= end:
                    t = time_ms
                    break
        waiting = self.stream.waiting > 0
        if t == math.inf or waiting:
            t_link = self.uplink.next_event_ms()
            if t_link is not None and t_link <= self.now_ms:
                return self.now_ms  # packets left the queue (enqueue served it): collect them
            if t_link is not None:
                t = min(t, t_link if waiting else t_link + self.uplink_delay.delay_ms)
        return max(t, self.now_ms)

    def _serve_uplink(self, now_ms: float) -> None:
        """Use the uplink's opportunities up to ``now_ms``; what left goes through the delay."""
        delay = self.uplink_delay
        for d in self.uplink.advance(now_ms):
            generation, end_offset = cast(tuple[int, int], d.packet.payload)
            self.uplink_flight.append((delay.process(d).time_ms, generation, end_offset))

    def _advance_uplink(self, now_ms: float) -> None:
        now_s = now_ms / 1000
        self.uplink_dirty = True
        flight = self.uplink_flight
        self._serve_uplink(now_ms)
        end_offset = -1
        while flight and flight[0][0] <= now_ms:
            _, generation, offset = flight.popleft()
            if generation == self.generation:  # else a connection that no longer exists
                end_offset = offset
        if end_offset >= 0:
            for message in self.stream.arrived(end_offset):
                if not self.connected:
                    break
                self._on_client_message(message, now_s)
        self._feed_uplink()

    def _advance_downlink(self, now_ms: float) -> None:
        now_s = now_ms / 1000
        self.downlink_dirty = True
        for d in self.downlink.advance(now_ms):
            generation, data = cast(tuple[int, bytes], d.packet.payload)
            if generation == self.generation and self.connected:
                self._on_relay_message(data, now_s)

    # -- the relay (relay.stream + relay.output.pipeline, without threads) -------------------------
    def _on_client_message(self, data: bytes, now_s: float) -> None:
        try:
            events = self.receiver.receive(data, now_s)
        except ProtocolError:
            self._protocol_error(now_s)
            return
        ingest = self.ingest
        for ev in events:
            if isinstance(ev, MediaReceived):
                i = self._bin(now_s)
                if i < self.n_bins:
                    self.delivered_bytes[i] += len(ev.media.payload)
            for action in ingest.on_event(ev, now_s, self.receiver.next_seq):
                if isinstance(action, PushUnit):
                    self.inbox.append(action.unit)
                elif isinstance(action, RecordMedia):
                    if ingest.is_video(action.media.track_id):
                        self.archived_video.add(action.media.seq)
                elif isinstance(action, NewTimeline):
                    self.inbox.append(None)
                    if not self.pipeline_started:
                        self.pipeline_started = True
                        self._schedule(self.now_ms, _RELAY_TICK, 0)
                        self._schedule(self.now_ms, _APP_TICK, 0)
        self._relay_flush(now_s)

    def _relay_flush(self, now_s: float) -> None:
        """relay.stream.StreamRuntime._flush: the ACK carries the playout *level* at the last
        output tick (``StreamPipeline.buffer_ms``), as production sends it."""
        if self.pipeline_started:
            self.receiver.set_buffer_ms(self.relay_level_ms)
        for data in self.receiver.data_to_send(now_s):
            size = len(data) + ws_header_bytes(len(data), masked=False)
            self.downlink.enqueue(Packet(size, (self.generation, data)), self.now_ms)
            self.downlink_dirty = True

    def _protocol_error(self, now_s: float) -> None:
        """The relay closes the connection on a protocol error. The client reconnects after
        its backoff (``SenderSession.reconnect_wait_s``; never reset while the stream runs, as
        every connection ends in an error) plus the close's trip and a round trip for the
        handshake. What was in flight on the old connection is lost; the sender resends it."""
        self.protocol_errors += 1
        self.receiver.connection_lost(now_s)
        backoff_s = self._client_connection_lost(now_s)
        self.connected = False
        self.generation += 1
        self._schedule(self.now_ms + backoff_s * 1000
                       + (1 + HANDSHAKE_ONE_WAY_TRIPS) * self.delay_ms, _CONNECT)

    def _relay_tick(self, now_s: float) -> None:
        """One tick of the output clock (relay.output.pipeline.StreamPipeline._run)."""
        playout = self.playout
        for unit in self.inbox:
            if unit is None:
                playout.reset()
                self.clock.new_timeline()
            else:
                playout.push(unit, now_s)
        self.inbox.clear()
        shown: AccessUnit | None = None
        for unit in playout.pop_due(now_s):
            if unit.is_video:
                shown = unit
        tick = self.clock.tick(now_s, shown is not None, playout.units_buffered)
        if tick.open_sessions:
            self.platform_sessions += 1
        if shown is not None and tick.on_air:
            self.tick_times.append(now_s)
            self.tick_latency_ms.append(now_s * 1000 - shown.capture_time_us / 1000)
        level_s = playout.level_s(now_s)
        self.relay_level_ms = round(level_s * 1000)
        i = self._bin(now_s)
        if i < self.n_bins:
            self.level_sum[i] += self.relay_level_ms
            self.level_n[i] += 1

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> RunResult:
        fps = self.fps
        frames = round(self.duration_s * fps)
        start_ms = self.start_s * 1000
        # the capture loop starts, then the client connects (encoder.client.run)
        self._schedule(start_ms, _CAPTURE, 0)
        self._schedule(start_ms + HANDSHAKE_ONE_WAY_TRIPS * self.delay_ms, _CONNECT)
        self._schedule(start_ms + UPDATE_INTERVAL_S * 1000, _CONTROL, 1)
        tick_ms = 1000 / OUTPUT_FPS
        tick_start_ms: float | None = None
        end_ms = (self.start_s + self.buffer_ms / 1000 + self.duration_s + END_MARGIN_S) * 1000
        events = self.events
        downlink = self.downlink
        t_up = t_down = math.inf
        while True:
            if self.uplink_dirty:
                t_up = self._next_uplink_ms()
                self.uplink_dirty = False
            if self.downlink_dirty:
                t_down = downlink.next_event_ms() or math.inf
                self.downlink_dirty = False
            t_ev = events[0][0] if events else math.inf
            t = min(t_ev, t_up, t_down)
            if t > end_ms:
                break
            self.now_ms = t
            now_s = t / 1000
            if t_up <= t:
                self._advance_uplink(t)
                continue
            if t_down <= t:
                self._advance_downlink(t)
                continue
            _, kind, arg = heapq.heappop(events)
            if kind == _CAPTURE:
                self._push(self.encoder.frame(arg, now_s), now_s)
                if arg + 1 < frames:
                    self._schedule(start_ms + (arg + 1) * 1000 / fps, _CAPTURE, arg + 1)
            elif kind == _CONTROL:
                self._control(now_s)
                self._schedule(start_ms + (arg + 1) * UPDATE_INTERVAL_S * 1000, _CONTROL,
                               arg + 1)
            elif kind == _RELAY_TICK:
                if tick_start_ms is None:
                    tick_start_ms = t
                self._relay_tick(now_s)
                self._schedule(tick_start_ms + (arg + 1) * tick_ms, _RELAY_TICK, arg + 1)
                if self.playout.anchored:
                    t0 = self.playout.due_time_s(0.0)
                    if t0 is not None:
                        end_ms = max(end_ms, (t0 + self.duration_s + END_MARGIN_S) * 1000)
            elif kind == _APP_TICK:
                if self.connected:
                    self._relay_flush(now_s)
                self._schedule(t + RELAY_APP_TICK_S * 1000, _APP_TICK, arg + 1)
            elif kind == _CONNECT:
                self._connect(now_s)
        self.sender.close()
        return self._result()

    # -- the result -------------------------------------------------------------------------
    def _result(self) -> RunResult:
        d = self.duration_s
        fps_out = OUTPUT_FPS
        t0 = self.playout.due_time_s(0.0) if self.playout.anchored else None
        if t0 is None:
            t0 = self.buffer_ms / 1000
        times = np.asarray(self.tick_times)
        lat = np.asarray(self.tick_latency_ms)
        inside = (times >= t0 - 1e-9) & (times < t0 + d - 1e-9)
        live_s = live_seconds(times[inside], t0 + d, fps_out)
        interruption_s = max(0.0, d - live_s)
        lat_in = lat[inside]
        p50 = float(np.percentile(lat_in, 50)) if lat_in.size else None
        p95 = float(np.percentile(lat_in, 95)) if lat_in.size else None

        overlaid = overlay_outages(self.trace, self.outages, d)
        gaps = overlaid.outages(d, 0.5)
        capacity_series = overlaid.capacity_kbps(d, BIN_S)
        capacity_mean = overlaid.mean_kbps(d)
        delivered_mean = float(self.delivered_bytes.sum()) * 8 / 1000 / d
        sent_mean = float(self.sent_bytes.sum()) * 8 / 1000 / d
        unavoidable = unavoidable_interruption_s(gaps, self.buffer_ms / 1000)
        floor_kbps = self.abr.limits.min_kbps + AUDIO_KBPS
        floor_bound = floor_bound_interruption_s(
            overlaid, floor_kbps=floor_kbps, buffer_s=self.buffer_ms / 1000,
            one_way_delay_s=self.delay_ms / 1000, duration_s=d)
        n = self.n_bins
        bin_len = np.full(n, BIN_S)
        bin_len[-1] = d - BIN_S * (n - 1)
        target = np.divide(self.target_sum, self.target_n, out=np.full(n, np.nan),
                           where=self.target_n > 0)
        target = _fill_forward(target, float(self.abr.limits.start_kbps))
        level = np.divide(self.level_sum, self.level_n, out=np.zeros(n), where=self.level_n > 0)
        outage_flag = np.zeros(n)
        for o in gaps:
            for i in range(int(o.start_s // BIN_S), min(n, math.ceil(o.end_s / BIN_S))):
                covered = min(o.end_s, (i + 1) * BIN_S) - max(o.start_s, i * BIN_S)
                if covered >= bin_len[i] / 2:
                    outage_flag[i] = 1.0
        series = {
            "t_s": [float(i * BIN_S) for i in range(n)],
            "capacity_kbps": [round(float(x), 1) for x in capacity_series],
            "target_kbps": [round(float(x), 1) for x in target],
            "delivered_kbps": [round(float(x), 1) for x in
                               self.delivered_bytes * 8 / 1000 / bin_len],
            "relay_buffer_ms": [round(float(x), 1) for x in level],
            "outage": [float(x) for x in outage_flag],
        }
        score = qoe_score(delivered_mean, interruption_s, series["target_kbps"], d)
        notes = (f"simulated; connection kept up through outages (no {ACK_TIMEOUT_S:g} s "
                 f"ACK-timeout reconnect); platform_sessions counts the relay's on-air "
                 f"sessions (one per run unless slate outlasts hold_s={HOLD_S_DEFAULT:g} s); "
                 f"live_jumps={self.session.live_jumps} protocol_error_reconnects="
                 f"{self.protocol_errors} skipped_late_units={self.playout.skipped_late_units} "
                 f"frames_encoded={self.encoder.frames_encoded} "
                 f"backlog_at_end_bytes={self.sender.backlog_bytes} seed={self.seed}")
        return RunResult(
            trace=self.trace.name, abr=self.abr_name, mode="sim", duration_s=d,
            buffer_ms=self.buffer_ms, capacity_kbps_mean=round(capacity_mean, 1),
            sent_kbps_mean=round(sent_mean, 1), delivered_kbps_mean=round(delivered_mean, 1),
            utilization=round(delivered_mean / capacity_mean, 4) if capacity_mean > 0 else 0.0,
            outages=[[round(o.start_s, 3), round(o.length_s, 3)] for o in gaps],
            unavoidable_interruption_s=round(unavoidable, 3),
            interruption_s=round(interruption_s, 3),
            platform_sessions=self.platform_sessions,
            latency_ms_p50=None if p50 is None else round(p50, 1),
            latency_ms_p95=None if p95 is None else round(p95, 1),
            bitrate_switches=self.switches,
            frames_captured=self.encoder.frames_captured, frames_live=int(inside.sum()),
            frames_archived=len(self.archived_video), score=round(score, 4), series=series,
            notes=notes, floor_kbps=floor_kbps,
            floor_bound_interruption_s=None if floor_bound is None else round(floor_bound, 3))


def _media_payload_bytes(message: bytes) -> int:
    """Payload bytes of an encoded MEDIA message, 0 for any other message."""
    if message and message[0] == MessageType.MEDIA:
        return len(message) - MEDIA_HEADER_BYTES
    return 0


def _fill_forward(values: np.ndarray, first: float) -> np.ndarray:
    out = values.copy()
    last = first
    for i, v in enumerate(out):
        if np.isnan(v):
            out[i] = last
        else:
            last = float(v)
    return out


def live_seconds(fresh_times: np.ndarray, window_end_s: float, fps: float) -> float:
    """Seconds of live video given the output ticks that showed a fresh picture: a picture
    counts for as long as it stays on screen if that is at most LIVE_HOLD_MAX_S (the
    platform viewer's rule), else for one output frame."""
    if fresh_times.size == 0:
        return 0.0
    frame_s = 1.0 / fps
    hold_max_s = max(LIVE_HOLD_MAX_S, frame_s)
    on_screen = np.diff(np.append(fresh_times, window_end_s))
    on_screen = np.maximum(on_screen, 0.0)
    return float(np.where(on_screen <= hold_max_s + 1e-9, on_screen,
                          np.minimum(on_screen, frame_s)).sum())


def simulate(trace: Trace, abr: str, *, duration_s: float = 300.0, buffer_ms: int = 5000,
             outages: list[Outage] | None = None, delay_ms: float = DELAY_MS_DEFAULT,
             queue_packets: int | None = QUEUE_PACKETS_DEFAULT, start_kbps: int = 800,
             min_kbps: int = 150, max_kbps: int = 2500, fps: int = 30, seed: int = 0,
             width: int = WIDTH_DEFAULT, height: int = HEIGHT_DEFAULT,
             fps_floor_kbps: int | None = None, start_s: float = SENDER_START_S,
             spool_limit_bytes: int | None = None) -> RunResult:
    """Simulate one live session of ``duration_s`` over ``trace`` (already scaled) with the
    ``outages`` overlaid, the ABR controller ``abr`` and a relay buffer of ``buffer_ms``.
    The sender starts at trace second ``start_s``; its spool holds ``spool_limit_bytes``
    (default: the client's memory and disk limits together). Deterministic: the same arguments give
    the same result. See the module docstring."""
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise SimError(f"simulate: duration_s={duration_s!r} must be > 0")
    if buffer_ms < 0:
        raise SimError(f"simulate: buffer_ms={buffer_ms!r} must be >= 0")
    if fps <= 0:
        raise SimError(f"simulate: fps={fps!r} must be > 0")
    if not (math.isfinite(start_s) and start_s >= 0):
        raise SimError(f"simulate: start_s={start_s!r} must be >= 0")
    if trace.opportunities_ms.size == 0:
        raise SimError(f"simulate: trace {trace.name!r} has no delivery opportunity")
    try:
        sim = _Simulation(trace, abr, duration_s=float(duration_s), buffer_ms=int(buffer_ms),
                          outages=list(outages or []), delay_ms=delay_ms,
                          queue_packets=queue_packets, start_kbps=start_kbps,
                          min_kbps=min_kbps, max_kbps=max_kbps, fps=fps, seed=seed,
                          width=width, height=height, fps_floor_kbps=fps_floor_kbps,
                          start_s=float(start_s), spool_limit_bytes=spool_limit_bytes)
    except ValueError as exc:
        if isinstance(exc, SimError):
            raise
        raise SimError(f"simulate: {exc}") from exc
    return sim.run()
