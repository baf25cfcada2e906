"""ABR controllers in a closed loop behind the project's link model, for the ABR unit tests.

``Scenario(controller, phases(...))`` feeds a controller the observations a sender would see
behind a link whose capacity follows the phases, every ``UPDATE_INTERVAL_S``, and gives its
answer to the encoder. Deterministic and fast: no sockets, no clock, seeded jitter.

The link is ``linklab.link_model``, built as the simulator and the emulator build theirs:
the phases become a trace (``linklab.traces.phases_trace``) replayed by a ``TraceLink``
(Mahimahi opportunities of ``MTU_BYTES``) behind a drop-tail queue with no limit (TCP drops
nothing; the sender's window bounds it), then a ``DelayStage`` of half the base RTT; ACKs come
back over ``make_link(None, ...)`` with the other half. What this module adds is the sender
and the relay's acknowledgements, the part of the uplink that is not the link:

- **Encoder.** One piece of media every ``piece_interval_s`` (its capture time is when it is
  made): the video at the controller's bitrate (with ``x264_lag``, at what
  ``benchmarks.sim.follow_kbps`` says libx264 makes: slower up than down) plus
  ``audio_kbps``. It waits unsent.
- **Transport.** Unsent pieces are handed over whole, oldest first, while fewer than
  ``window_bytes`` are handed over and not yet acknowledged (the socket buffers and what is
  in flight; None: no window, everything at once, so the queue sits in the network and every
  RTT sample carries it). A piece handed over is cut into packets of at most ``MTU_BYTES``;
  each hand-over counts in ``sent_bytes_total``, retransmissions included.
- **Relay.** A piece is received when its last packet arrives. It is acknowledged at once
  (``ack_interval_s=None``), or on the relay's next ACK tick, every ``ack_interval_s`` (as
  ``uplink.receiver`` paces its ACKs), each tick up to ``ack_jitter_s`` late (seeded). One
  ACK covers the pieces received since the previous one; its sample's ``sent_at`` is when
  the newest of them that was sent exactly once was handed over (Karn's rule: resent media
  gives no RTT sample). The smoothed RTT uses RFC 6298's gain, as the uplink sender does.
- **Connection.** A phase with ``connected=False`` ends the connection: what was handed over
  and not acknowledged is unsent again (as ``uplink.sender`` resends from the last ACK), and
  the packets and ACKs in flight are gone with it; the next connection gets fresh links on
  the same trace clock, and its WELCOME counts as the last ACK.

Time starts at 0; the controller's clock reads ``clock_origin_s`` more (production passes
``time.monotonic()``). The first decision comes one update interval in. The phases must cover
the whole run: past their end the trace would loop, so ``run`` refuses to go there.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from benchmarks.sim import follow_kbps
from encoder.abr import UPDATE_INTERVAL_S, AbrController, AckSample, Observation
from linklab.link_model import Link, Packet, make_link
from linklab.traces import MTU_BYTES, phases_trace

WINDOW_BYTES_DEFAULT = 32_000  # handed over and not yet acknowledged (socket buffers + flight)
BASE_RTT_S_DEFAULT = 0.05
PIECE_INTERVAL_S_DEFAULT = 0.01  # the encoder's media comes in pieces this far apart
AUDIO_KBPS_DEFAULT = 64.0  # the encoder's AAC rate (encoder.settings.AUDIO_KBPS)
SRTT_GAIN = 0.125  # RFC 6298, as the uplink sender
ACK_BYTES = 40  # an ACK's size on the downlink (no rate limit there: it only rides along)
_EPS_S = 1e-9


class ScenarioError(ValueError):
    """A scenario was set up or driven wrongly; the message names the argument."""


@dataclass(frozen=True, slots=True)
class Phase:
    """``seconds`` of a link carrying ``kbps`` of payload; ``connected=False``: no connection."""

    seconds: float
    kbps: float
    connected: bool = True


def phases(*specs: tuple[float, float] | tuple[float, float, bool]) -> list[Phase]:
    """Phases from ``(seconds, kbps)`` or ``(seconds, kbps, connected)`` tuples, in order."""
    return [Phase(*spec) for spec in specs]


@dataclass(frozen=True, slots=True)
class Decision:
    """One controller update: when, the bitrate decided, what it saw, its state word."""

    now: float
    kbps: int
    obs: Observation
    state: str


@dataclass(eq=False, slots=True)
class _Piece:
    capture_s: float
    size: int
    send_count: int = 0
    sent_s: float = 0.0  # when last handed over
    left: int = 0  # bytes of its last hand-over not yet at the relay


class Scenario:
    """One controller in a closed loop behind a link of capacity ``link`` (see the module
    docstring); ``run(seconds)`` advances it and returns the decisions made meanwhile."""

    def __init__(self, controller: AbrController, link: Sequence[Phase], *,
                 base_rtt_s: float = BASE_RTT_S_DEFAULT,
                 window_bytes: int | None = WINDOW_BYTES_DEFAULT,
                 audio_kbps: float = AUDIO_KBPS_DEFAULT,
                 piece_interval_s: float = PIECE_INTERVAL_S_DEFAULT,
                 x264_lag: bool = False, ack_interval_s: float | None = None,
                 ack_jitter_s: float = 0.0, seed: int = 0,
                 clock_origin_s: float = 0.0) -> None:
        if not link:
            raise ScenarioError("link: needs at least one phase")
        if not base_rtt_s >= 0:
            raise ScenarioError(f"base_rtt_s={base_rtt_s}: must be >= 0")
        if window_bytes is not None and window_bytes < 1:
            raise ScenarioError(f"window_bytes={window_bytes}: must be >= 1 or None")
        if not piece_interval_s > 0:
            raise ScenarioError(f"piece_interval_s={piece_interval_s}: must be > 0")
        if ack_interval_s is not None and not 0 <= ack_jitter_s < ack_interval_s:
            raise ScenarioError(f"ack_jitter_s={ack_jitter_s}: must be within "
                                f"[0, ack_interval_s={ack_interval_s})")
        self.controller = controller
        self.window_bytes = window_bytes
        self.audio_kbps = audio_kbps
        self.piece_interval_s = piece_interval_s
        self.x264_lag = x264_lag
        self.ack_interval_s = ack_interval_s
        self.ack_jitter_s = ack_jitter_s
        self.clock_origin_s = clock_origin_s
        self._one_way_ms = base_rtt_s * 1000 / 2
        self._trace = phases_trace([(p.seconds, p.kbps) for p in link], name="scenario")
        self.end_s = sum(p.seconds for p in link)
        # connection changes: (time ms, connected), in order
        self._switches: deque[tuple[float, bool]] = deque()
        t, up = 0.0, link[0].connected
        for prev, p in zip(link, link[1:], strict=False):
            t += prev.seconds
            if p.connected != up:
                self._switches.append((round(t * 1000, 6), p.connected))
                up = p.connected
        self._rng = random.Random(seed)
        self.decisions: list[Decision] = []
        self.kbps = controller.limits.start_kbps  # what the encoder is asked for
        self._produced_kbps = float(self.kbps)  # what it makes (x264_lag)
        # the loop's clock is in milliseconds, as the link's: times stay exact where they
        # meet (an opportunity at 1009 ms is not 1.009 s * 1000 = 1008.9999...)
        self._now_ms = 0.0
        self._updates = 0
        self._pieces = 0
        self._ticks = 0
        self._next_tick_ms = math.inf
        self._unsent: deque[_Piece] = deque()
        self._handed: deque[_Piece] = deque()  # handed over, not acknowledged, oldest first
        self._received: list[_Piece] = []  # at the relay, not yet acknowledged (ACK ticks)
        self._unsent_bytes = 0
        self._handed_bytes = 0
        self._newest_capture_s: float | None = None
        self.sent_bytes_total = 0
        self.acked_bytes_total = 0
        self.srtt_s: float | None = None
        self.last_ack_s: float | None = None
        self._acks: list[AckSample] = []
        self.connected = False
        self._up: Link | None = None
        self._down: Link | None = None
        if link[0].connected:
            self._connect(0.0)

    # -- reading ---------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Seconds since the start."""
        return self._now_ms / 1000

    def at(self, t: float) -> int:
        """The bitrate decided at the last update at or before ``t`` (the start before any)."""
        kbps = self.controller.limits.start_kbps
        for d in self.decisions:
            if d.now > t + _EPS_S:
                break
            kbps = d.kbps
        return kbps

    def between(self, t0: float, t1: float) -> list[Decision]:
        """The decisions made in ``[t0, t1)``."""
        return [d for d in self.decisions if t0 - _EPS_S <= d.now < t1 - _EPS_S]

    def kbps_between(self, t0: float, t1: float) -> list[int]:
        """The bitrates decided in ``[t0, t1)``."""
        return [d.kbps for d in self.between(t0, t1)]

    # -- driving ---------------------------------------------------------------------------

    def run(self, seconds: float) -> list[Decision]:
        """Advance ``seconds`` (whole update intervals); the decisions made meanwhile."""
        n = round(seconds / UPDATE_INTERVAL_S)
        if n < 1 or abs(n * UPDATE_INTERVAL_S - seconds) > 1e-6:
            raise ScenarioError(f"run({seconds}): must be a whole number of "
                                f"{UPDATE_INTERVAL_S} s updates")
        last = self._updates + n
        if last * UPDATE_INTERVAL_S > self.end_s + 1e-6:
            raise ScenarioError(f"run({seconds}): goes to {last * UPDATE_INTERVAL_S:g} s, "
                                f"past the phases' end at {self.end_s:g} s")
        first = len(self.decisions)
        while self._updates < last:
            self._step()
        return self.decisions[first:]

    def _step(self) -> None:
        """Go to the next instant something happens and do it all, in a fixed order:
        connection change, deliveries, the encoder, the transport, the controller."""
        t_update = round((self._updates + 1) * UPDATE_INTERVAL_S * 1000, 6)
        t_piece = round(self._pieces * self.piece_interval_s * 1000, 6)
        t = min(t_update, t_piece, self._next_tick_ms)
        if self._switches:
            t = min(t, self._switches[0][0])
        for link in (self._up, self._down):
            e = link.next_event_ms() if link is not None else None
            if e is not None:
                t = min(t, e)
        self._now_ms = t
        if self._switches and self._switches[0][0] <= t:
            _, up = self._switches.popleft()
            if up:
                self._connect(t)
            else:
                self._disconnect()
        self._deliver(t)
        if t_piece <= t:
            self._produce(t)
        self._hand_over(t)
        if t_update <= t:
            self._update()

    # -- the connection --------------------------------------------------------------------

    def _connect(self, t_ms: float) -> None:
        self.connected = True
        self.last_ack_s = t_ms / 1000  # the WELCOME
        self._up = make_link(self._trace.opportunities_ms, self._trace.period_ms,
                             delay_ms=self._one_way_ms)
        self._down = make_link(None, delay_ms=self._one_way_ms)
        if self.ack_interval_s is not None:
            self._schedule_tick(t_ms)

    def _disconnect(self) -> None:
        self.connected = False
        self._up = self._down = None
        self._next_tick_ms = math.inf
        self._received.clear()
        # what was handed over and not acknowledged is unsent again, oldest first
        self._unsent.extendleft(reversed(self._handed))
        self._unsent_bytes += self._handed_bytes
        self._handed.clear()
        self._handed_bytes = 0

    def _schedule_tick(self, after_ms: float) -> None:
        assert self.ack_interval_s is not None
        while True:
            self._ticks += 1
            jitter = self._rng.uniform(0.0, self.ack_jitter_s) if self.ack_jitter_s else 0.0
            tick_ms = round((self._ticks * self.ack_interval_s + jitter) * 1000, 6)
            if tick_ms > after_ms:
                self._next_tick_ms = tick_ms
                return

    # -- what happens at an instant --------------------------------------------------------

    def _deliver(self, t_ms: float) -> None:
        if self._up is None or self._down is None:
            return
        for d in self._up.advance(t_ms):
            piece = d.packet.payload
            assert isinstance(piece, _Piece)
            piece.left -= d.packet.size_bytes
            if piece.left == 0:
                self._received.append(piece)
                if self.ack_interval_s is None:
                    self._send_ack(d.time_ms)
        if self._next_tick_ms <= t_ms:
            if self._received:
                self._send_ack(self._next_tick_ms)
            self._schedule_tick(self._next_tick_ms)
        for d in self._down.advance(t_ms):
            pieces = d.packet.payload
            assert isinstance(pieces, tuple)
            self._on_ack(pieces, d.time_ms / 1000)

    def _send_ack(self, time_ms: float) -> None:
        assert self._down is not None
        self._down.enqueue(Packet(ACK_BYTES, tuple(self._received)), time_ms)
        self._received = []

    def _on_ack(self, pieces: tuple[_Piece, ...], t: float) -> None:
        acked = 0
        newest_sent: float | None = None
        for piece in pieces:
            assert self._handed and self._handed[0] is piece, "ACKs come in order"
            self._handed.popleft()
            acked += piece.size
            if piece.send_count == 1:
                newest_sent = piece.sent_s if newest_sent is None else max(newest_sent,
                                                                           piece.sent_s)
        self._handed_bytes -= acked
        self.acked_bytes_total += acked
        self.last_ack_s = t
        origin = self.clock_origin_s
        sample = AckSample(acked_at=t + origin, acked_bytes=acked,
                           sent_at=None if newest_sent is None else newest_sent + origin)
        self._acks.append(sample)
        rtt = sample.rtt_s
        if rtt is not None:
            self.srtt_s = rtt if self.srtt_s is None else self.srtt_s + SRTT_GAIN * (
                rtt - self.srtt_s)

    def _produce(self, t_ms: float) -> None:
        self._pieces += 1
        if self.x264_lag:
            self._produced_kbps = follow_kbps(self._produced_kbps, self.kbps,
                                              1 / self.piece_interval_s)
        else:
            self._produced_kbps = self.kbps
        size = max(1, round((self._produced_kbps + self.audio_kbps) * 1000 / 8
                            * self.piece_interval_s))
        self._unsent.append(_Piece(capture_s=t_ms / 1000, size=size))
        self._unsent_bytes += size
        self._newest_capture_s = t_ms / 1000

    def _hand_over(self, t_ms: float) -> None:
        if self._up is None:
            return
        window = self.window_bytes
        while self._unsent and (window is None or self._handed_bytes < window):
            piece = self._unsent.popleft()
            self._unsent_bytes -= piece.size
            piece.send_count += 1
            piece.sent_s = t_ms / 1000
            piece.left = piece.size
            for offset in range(0, piece.size, MTU_BYTES):
                self._up.enqueue(Packet(min(MTU_BYTES, piece.size - offset), piece), t_ms)
            self._handed.append(piece)
            self._handed_bytes += piece.size
            self.sent_bytes_total += piece.size

    def _update(self) -> None:
        self._updates += 1
        t = round(self._updates * UPDATE_INTERVAL_S, 9)
        obs = self.observe()
        self.kbps = self.controller.update(obs, now=t + self.clock_origin_s)
        self.decisions.append(Decision(t, self.kbps, obs, self.controller.describe()))

    def observe(self) -> Observation:
        """What the sender sees now; the ACKs since the previous observation are consumed."""
        newest = self._newest_capture_s
        oldest = (self._handed[0] if self._handed else
                  self._unsent[0] if self._unsent else None)
        backlog_ms = 0 if newest is None or oldest is None else round(
            (newest - oldest.capture_s) * 1000)
        unsent_ms = 0 if newest is None or not self._unsent else round(
            (newest - self._unsent[0].capture_s) * 1000)
        acks, self._acks = tuple(self._acks), []
        origin = self.clock_origin_s
        return Observation(
            connected=self.connected, sent_bytes_total=self.sent_bytes_total,
            acked_bytes_total=self.acked_bytes_total,
            backlog_bytes=self._unsent_bytes + self._handed_bytes, backlog_ms=backlog_ms,
            unsent_bytes=self._unsent_bytes, unsent_ms=unsent_ms, srtt_s=self.srtt_s,
            last_ack_time=None if self.last_ack_s is None else self.last_ack_s + origin,
            relay_buffer_ms=None, relay_arrival_kbps=None, target_kbps=self.kbps, acks=acks)


def changes(decisions: Sequence[Decision]) -> list[tuple[float, int, int]]:
    """(now, before, after) for every decision that changed the bitrate."""
    return [(cur.now, prev.kbps, cur.kbps)
            for prev, cur in zip(decisions, decisions[1:], strict=False) if cur.kbps != prev.kbps]


def obs(**fields: object) -> Observation:
    """One hand-made Observation: an idle, connected link unless ``fields`` say otherwise."""
    base = Observation(connected=True, sent_bytes_total=0, acked_bytes_total=0,
                       backlog_bytes=0, backlog_ms=0, unsent_bytes=0, unsent_ms=0,
                       srtt_s=None, last_ack_time=None, relay_buffer_ms=None,
                       relay_arrival_kbps=None, target_kbps=0)
    return replace(base, **fields)  # type: ignore[arg-type]
