"""Scripted observation streams for the belacoder and obs ABR controller tests.

``LinkSim`` is a small fluid model of the sender side of our uplink, stepped in 10 ms steps:

- the encoder produces ``target_kbps`` of video plus ``audio_kbps`` of audio; each step's media
  is one piece with that step's capture time, queued *unsent*;
- the transport (WebSocket over TCP) takes unsent media while fewer than ``window_bytes`` are
  handed over and not yet acknowledged (socket buffer plus in flight); taking it counts in
  ``sent_bytes_total``;
- a bottleneck drains what the transport holds, first in first out, at ``capacity_kbps`` of
  payload; the relay's ACK for a piece comes ``base_rtt_s`` after it crossed, so an RTT sample
  is the queueing delay plus ``base_rtt_s`` (Karn's rule: retransmitted media gives none);
- ``set_connected(False)`` ends the connection: what was handed over and not acknowledged is
  unsent again (as in ``uplink.sender``), nothing is sent and no ACK comes until reconnected.

``run`` closes the loop: every ``UPDATE_INTERVAL_S`` the controller sees an ``Observation`` and
its answer becomes the encoder's bitrate. Time is counted in integer steps, so ``now`` is an
exact multiple of 10 ms. ``obs`` builds a single hand-made Observation. Pure Python, no sleeps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from encoder.abr import UPDATE_INTERVAL_S, AbrController, AckSample, Observation

STEPS_PER_S = 100  # the simulation step is 10 ms
STEPS_PER_UPDATE = round(UPDATE_INTERVAL_S * STEPS_PER_S)
SRTT_GAIN = 0.125  # RFC 6298, as the uplink sender
_EPS_S = 1e-9


@dataclass
class _Piece:
    capture_time: float
    size: float  # payload bytes
    send_count: int = 0  # times handed to a transport
    sent_at: float = 0.0  # when last handed to the transport
    ack_at: float = 0.0  # when its ACK arrives (once it crossed the bottleneck)


class LinkSim:
    """The sender's view of a link of `capacity_kbps` (payload), see the module docstring."""

    def __init__(self, *, capacity_kbps: float, base_rtt_s: float = 0.05,
                 window_bytes: int = 32_000, audio_kbps: float = 64.0) -> None:
        self.capacity_kbps = capacity_kbps
        self.base_rtt_s = base_rtt_s
        self.window_bytes = window_bytes
        self.audio_kbps = audio_kbps
        self.target_kbps: int | None = None  # the encoder's video bitrate; set by `run`
        self.connected = True
        self.steps = 0
        self._unsent: deque[_Piece] = deque()
        self._queued: deque[_Piece] = deque()  # handed to the transport, before the bottleneck
        self._crossed: deque[_Piece] = deque()  # past the bottleneck, ACK not yet back
        self._handed_bytes = 0.0  # queued + crossed
        self.sent_bytes_total = 0.0
        self.acked_bytes_total = 0.0
        self.srtt_s: float | None = None
        self.last_ack_time: float | None = None
        self._newest_capture: float | None = None
        self._acks: list[AckSample] = []

    @property
    def now(self) -> float:
        return self.steps / STEPS_PER_S

    def set_connected(self, connected: bool) -> None:
        if connected == self.connected:
            return
        self.connected = connected
        if connected:
            self.last_ack_time = self.now  # the WELCOME
            return
        # whatever was handed over and not acknowledged is unsent again, oldest first
        self._unsent = deque([*self._crossed, *self._queued, *self._unsent])
        self._crossed.clear()
        self._queued.clear()
        self._handed_bytes = 0.0

    def step(self) -> None:
        """Advance 10 ms: produce, hand over, drain the bottleneck, collect ACKs."""
        now = self.now
        dt = 1 / STEPS_PER_S
        video_kbps = self.target_kbps if self.target_kbps is not None else 0
        size = (video_kbps + self.audio_kbps) * 1000 / 8 * dt
        if size > 0:
            self._unsent.append(_Piece(capture_time=now, size=size))
            self._newest_capture = now
        if self.connected:
            self._hand_over(now)
            self._drain(now, self.capacity_kbps * 1000 / 8 * dt)
            self._collect_acks(now)
        self.steps += 1

    def _hand_over(self, now: float) -> None:
        while self._unsent and self._handed_bytes < self.window_bytes - _EPS_S:
            piece = self._unsent[0]
            room = self.window_bytes - self._handed_bytes
            if piece.size <= room:
                self._unsent.popleft()
                moved = piece
            else:
                moved = replace(piece, size=room)
                piece.size -= room
            moved.send_count += 1
            moved.sent_at = now
            self._queued.append(moved)
            self._handed_bytes += moved.size
            self.sent_bytes_total += moved.size

    def _drain(self, now: float, budget: float) -> None:
        while self._queued and budget > _EPS_S:
            piece = self._queued[0]
            if piece.size <= budget:
                self._queued.popleft()
                crossed = piece
            else:
                crossed = replace(piece, size=budget)
                piece.size -= budget
            budget -= crossed.size
            crossed.ack_at = now + self.base_rtt_s
            self._crossed.append(crossed)

    def _collect_acks(self, now: float) -> None:
        acked = 0.0
        newest_sent: float | None = None
        while self._crossed and self._crossed[0].ack_at <= now + _EPS_S:
            piece = self._crossed.popleft()
            acked += piece.size
            self._handed_bytes -= piece.size
            if piece.send_count == 1:
                newest_sent = piece.sent_at if newest_sent is None else max(newest_sent,
                                                                            piece.sent_at)
        if acked <= 0:
            return
        self.acked_bytes_total += acked
        self.last_ack_time = now
        sample = AckSample(acked_at=now, acked_bytes=round(acked), sent_at=newest_sent)
        self._acks.append(sample)
        rtt = sample.rtt_s
        if rtt is not None:
            self.srtt_s = rtt if self.srtt_s is None else self.srtt_s + SRTT_GAIN * (rtt
                                                                                  - self.srtt_s)

    def observe(self) -> Observation:
        """What the sender sees now; the ACKs since the previous observation are consumed."""
        unsent = sum(p.size for p in self._unsent)
        backlog = unsent + self._handed_bytes
        newest = self._newest_capture
        oldest_unacked = next((q[0].capture_time for q in (self._crossed, self._queued,
                                                           self._unsent) if q), None)
        backlog_ms = 0 if newest is None or oldest_unacked is None else round(
            (newest - oldest_unacked) * 1000)
        unsent_ms = 0 if newest is None or not self._unsent else round(
            (newest - self._unsent[0].capture_time) * 1000)
        acks, self._acks = tuple(self._acks), []
        return Observation(
            connected=self.connected,
            sent_bytes_total=round(self.sent_bytes_total),
            acked_bytes_total=round(self.acked_bytes_total),
            backlog_bytes=round(backlog),
            backlog_ms=backlog_ms,
            unsent_bytes=round(unsent),
            unsent_ms=unsent_ms,
            srtt_s=self.srtt_s,
            last_ack_time=self.last_ack_time,
            relay_buffer_ms=None,
            relay_arrival_kbps=None,
            target_kbps=self.target_kbps if self.target_kbps is not None else 0,
            acks=acks,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    now: float
    kbps: int
    obs: Observation


def run(controller: AbrController, sim: LinkSim, duration_s: float) -> list[Decision]:
    """Run the closed loop for `duration_s` (whole updates) and return every decision."""
    if sim.target_kbps is None:
        sim.target_kbps = controller.limits.start_kbps
    decisions = []
    for _ in range(round(duration_s / UPDATE_INTERVAL_S)):
        for _ in range(STEPS_PER_UPDATE):
            sim.step()
        obs = sim.observe()
        kbps = controller.update(obs, now=sim.now)
        sim.target_kbps = kbps
        decisions.append(Decision(sim.now, kbps, obs))
    return decisions


def run_phases(controller: AbrController, sim: LinkSim,
               phases: list[tuple[float, bool, float]]) -> list[int]:
    """Run (capacity_kbps, connected, seconds) phases one after the other; every bitrate."""
    out: list[int] = []
    for capacity, connected, seconds in phases:
        sim.capacity_kbps = capacity
        sim.set_connected(connected)
        out += [d.kbps for d in run(controller, sim, seconds)]
    return out


def obs(**fields: object) -> Observation:
    """One hand-made Observation: an idle, connected link unless `fields` say otherwise."""
    base = Observation(connected=True, sent_bytes_total=0, acked_bytes_total=0,
                       backlog_bytes=0, backlog_ms=0, unsent_bytes=0, unsent_ms=0,
                       srtt_s=None, last_ack_time=None, relay_buffer_ms=None,
                       relay_arrival_kbps=None, target_kbps=0)
    return replace(base, **fields)  # type: ignore[arg-type]


def changes(decisions: list[Decision]) -> list[tuple[float, int, int]]:
    """(now, before, after) for every decision that changed the bitrate."""
    out = []
    for prev, cur in zip(decisions, decisions[1:], strict=False):
        if cur.kbps != prev.kbps:
            out.append((cur.now, prev.kbps, cur.kbps))
    return out
