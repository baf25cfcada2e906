"""A scripted bottleneck for ABR unit tests: feeds a controller the observations a sender
would see behind a link of given capacity over time (0 kbit/s = outage).

A fluid model stepped every `step_s`: the encoder emits the controller's bitrate (plus a
constant audio rate) as one chunk per step; chunks wait in the sender's queue, the link
carries `capacity(t)` kbit/s of them in order, and each fully carried chunk is ACKed one
base RTT (plus its queueing) after it was sent. Deterministic and fast: no sockets, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.sim import follow_kbps
from encoder.abr import UPDATE_INTERVAL_S, AbrController, AckSample, Observation


@dataclass
class _Chunk:
    size: int
    capture_t: float
    left: int
    sent_at: float | None = None


@dataclass
class Trace:
    """What happened, one row per controller update."""

    t: list[float] = field(default_factory=list)
    kbps: list[int] = field(default_factory=list)
    capacity_kbps: list[float] = field(default_factory=list)
    backlog_ms: list[int] = field(default_factory=list)
    states: list[str] = field(default_factory=list)

    def at(self, t: float) -> int:
        """The bitrate decided at the last update at or before t."""
        best = self.kbps[0]
        for ti, k in zip(self.t, self.kbps, strict=True):
            if ti > t + 1e-9:
                break
            best = k
        return best

    def between(self, t0: float, t1: float) -> list[int]:
        return [k for ti, k in zip(self.t, self.kbps, strict=True) if t0 <= ti < t1]


def steps(*phases: tuple[float, float]) -> Callable[[float], float]:
    """capacity(t) from (duration_s, kbps) phases; the last phase lasts forever."""

    def capacity(t: float) -> float:
        end = 0.0
        for duration, kbps in phases:
            end += duration
            if t < end:
                return kbps
        return phases[-1][1]

    return capacity


def run(controller: AbrController, capacity: Callable[[float], float], duration_s: float,
        *, rtt_s: float = 0.08, audio_kbps: float = 64.0, step_s: float = 0.02,
        connected: Callable[[float], bool] | None = None,
        rtt_includes_queue: bool = False, clock_origin_s: float = 0.0,
        x264_lag: bool = False) -> Trace:
    """Drive `controller` for `duration_s` behind `capacity`; returns the decisions.

    With `rtt_includes_queue` a chunk counts as sent when it was produced, so every RTT
    sample carries the queueing delay (a sender whose queue sits in the network, not in its
    own buffer). The controller's clock reads `clock_origin_s` at the start (production passes
    time.monotonic(), which is far from 0). With `x264_lag` the encoder makes what the
    simulator's model of libx264 makes (benchmarks.sim.follow_kbps: slower up than down)
    instead of the bitrate at once."""
    queue: deque[_Chunk] = deque()  # not yet fully carried
    in_flight: deque[tuple[float, _Chunk]] = deque()  # (ack time, chunk) carried, ACK pending
    pending_acks: list[AckSample] = []
    sent_total = acked_total = 0
    last_ack: float | None = None
    srtt: float | None = None
    kbps = controller.limits.start_kbps
    produced_kbps = float(kbps)
    trace = Trace()
    next_update = 0.0
    t = 0.0
    n_steps = round(duration_s / step_s)
    for i in range(n_steps):
        t = i * step_s
        up = connected(t) if connected else True
        produced_kbps = follow_kbps(produced_kbps, kbps, 1 / step_s) if x264_lag else kbps
        size = max(1, round((produced_kbps + audio_kbps) * 1000 / 8 * step_s))
        queue.append(_Chunk(size, t, size))
        budget = capacity(t) * 1000 / 8 * step_s if up else 0.0
        while queue and budget > 0:
            c = queue[0]
            if c.sent_at is None:
                c.sent_at = c.capture_t if rtt_includes_queue else t
            carried = min(c.left, int(budget))
            if carried <= 0:
                break
            c.left -= carried
            budget -= carried
            sent_total += carried
            if c.left == 0:
                queue.popleft()
                in_flight.append((t + rtt_s, c))
        while in_flight and in_flight[0][0] <= t:
            ack_t, c = in_flight.popleft()
            acked_total += c.size
            last_ack = ack_t
            sample = AckSample(acked_at=ack_t + clock_origin_s, acked_bytes=c.size,
                               sent_at=None if c.sent_at is None else c.sent_at + clock_origin_s)
            pending_acks.append(sample)
            rtt = sample.rtt_s or 0.0
            srtt = rtt if srtt is None else srtt + 0.125 * (rtt - srtt)
        if t + 1e-9 >= next_update:
            next_update += UPDATE_INTERVAL_S
            oldest = (in_flight[0][1].capture_t if in_flight
                      else queue[0].capture_t if queue else t)
            oldest_unsent = queue[0].capture_t if queue else t
            obs = Observation(
                connected=up, sent_bytes_total=sent_total, acked_bytes_total=acked_total,
                backlog_bytes=sum(c.left for c in queue) + sum(c.size for _, c in in_flight),
                backlog_ms=round((t - oldest) * 1000),
                unsent_bytes=sum(c.left for c in queue),
                unsent_ms=round((t - oldest_unsent) * 1000),
                srtt_s=srtt,
                last_ack_time=None if last_ack is None else last_ack + clock_origin_s,
                relay_buffer_ms=5000,
                relay_arrival_kbps=None, target_kbps=kbps, acks=tuple(pending_acks))
            pending_acks = []
            kbps = controller.update(obs, now=t + clock_origin_s)
            trace.t.append(t)
            trace.kbps.append(kbps)
            trace.capacity_kbps.append(capacity(t) if up else 0.0)
            trace.backlog_ms.append(obs.backlog_ms)
            trace.states.append(controller.describe())
    return trace
