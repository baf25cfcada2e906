"""The link model: a trace-driven bottleneck with a queue, random loss, fixed delay and outages.

Sans-I/O: no sockets, no asyncio, no clock. Every method that depends on time takes ``now_ms``
(any clock in milliseconds, never going backwards); packets go in as values and come back out
as ``Delivered(packet, time_ms)``. The simulator drives these classes faster than real time,
the emulator (``linklab.emulator``) drives them from ``time.monotonic()``.

Stages, each usable alone, in the order a ``Link`` composes them::

    DropTailQueue -> TraceLink (or UnlimitedLink) -> LossStage -> DelayStage
                        ^ OutageStage: opportunities inside an outage do not exist

- ``DropTailQueue``: accepts or refuses a packet by packet and/or byte limits; ``is_full_for``
  lets an adapter hold the sender back instead of dropping (TCP).
- ``TraceLink``: Mahimahi's link semantics, written from the published description (Netravali
  et al., "Mahimahi: Accurate Record-and-Replay for HTTP", USENIX ATC 2015, and the trace
  format notes in ``shared/traces/README.md``), no code copied: the trace lists delivery
  opportunities (milliseconds within one period, repeats allowed), each carries
  ``MTU_BYTES`` = 1500 bytes (Mahimahi uses 1504, 1500 + its 4-byte tunnel header; sizes here
  are what the emulator moves, so 1500 is the link's capacity in those bytes). Accounting is
  per byte: small packets share an opportunity, a large one carries over to the following
  ones and leaves at the opportunity that carries its last byte. An opportunity that finds
  the queue empty is wasted, not saved. The trace loops with its period. As in Mahimahi,
  opportunities up to ``now`` are used before a packet arriving at ``now`` joins the queue, so
  a packet arriving exactly at an opportunity's time waits for the next one. ``switch_trace``
  (``Link.set_trace``, which also gives a trace to an ``UnlimitedLink``'s queue) replaces the
  trace while it runs, replayed from its start at that moment: a rate changed on demand.
- ``UnlimitedLink``: no rate limit (a packet leaves when it arrives), for a direction that
  is not the bottleneck; outages still hold it.
- ``OutageStage``: intervals during which nothing leaves. Outages are expressed through the
  bottleneck: an opportunity inside an outage does not exist, so packets wait in the queue
  (held, not dropped), the queue fills as on a real cellular link during a dead spot, and a
  full queue refuses (UDP) or holds the sender back (TCP). Holding packets *after* the link
  instead would need an unbounded buffer and release the whole outage as one burst at
  infinite rate. Used alone (``process``) it holds an item until the outage covering its
  time ends. Beside the intervals known in advance, ``begin(now_ms)`` starts an outage whose
  end is not known yet (an emulator stalled on demand) and ``end(now_ms)`` ends it; until
  then it holds everything (its end reads as infinite).
- ``LossStage``: seeded random loss. In drop mode a lost packet is gone (UDP). In retransmit
  mode (TCP, whose bytes cannot be dropped) a lost packet is delayed by
  ``retransmit_delay_ms`` and every later packet of the same flow stays behind it.
- ``DelayStage``: fixed one-way propagation delay.

Use (a discrete-event simulator jumps from ``next_event_ms`` to ``next_event_ms``)::

    link = make_link(trace.opportunities_ms, trace.period_ms, queue_packets=100, loss=0.01,
                     delay_ms=40, outages=OutageStage.from_outages(outages))
    accepted = link.enqueue(Packet(1200, payload), now_ms)  # False: refused by the queue
    for d in link.advance(now_ms): ...                       # d.packet, d.time_ms, in order
    t = link.next_event_ms()                                 # None: nothing queued or in flight

Costs: O(1) amortized per packet and per opportunity used; when the queue is empty, wasted
opportunities are skipped with a binary search over the trace, never one by one.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from linklab.traces import MTU_BYTES, Trace

OPPORTUNITY_BYTES = MTU_BYTES  # bytes one trace line lets through
_PRUNE_FLOWS_AT = 64  # retransmit mode: forget stale per-flow order when this many are kept


class LinkModelError(ValueError):
    """A link stage was built or driven wrongly; the message names the argument and value."""


@dataclass(frozen=True, slots=True)
class Packet:
    """What crosses the link. The model reads ``size_bytes`` only; ``payload`` rides along.

    ``flow`` groups packets whose order matters (a TCP connection): retransmit-mode loss keeps
    the packets of one flow in order. ``None`` is a flow like any other.
    """

    size_bytes: int
    payload: object = None
    flow: Hashable = None

    def __post_init__(self) -> None:
        if self.size_bytes < 0:
            raise LinkModelError(f"Packet size_bytes={self.size_bytes}: must be >= 0")


@dataclass(frozen=True, slots=True)
class Delivered:
    """A packet and the time (ms, the caller's clock) it leaves a stage."""

    packet: Packet
    time_ms: float


def _check_now(prev: float, now_ms: float, who: str) -> float:
    if now_ms < prev:
        raise LinkModelError(f"{who}: now_ms={now_ms} went back in time (last {prev})")
    return now_ms


# -- queue ------------------------------------------------------------------------------------


class DropTailQueue:
    """A FIFO of packets that refuses a packet which would exceed either limit (None: no limit).

    Mahimahi's drop-tail queue: both limits are checked with the new packet counted in.
    """

    def __init__(self, limit_packets: int | None = None, limit_bytes: int | None = None) -> None:
        if limit_packets is not None and limit_packets < 1:
            raise LinkModelError(f"DropTailQueue limit_packets={limit_packets}: must be >= 1")
        if limit_bytes is not None and limit_bytes < 1:
            raise LinkModelError(f"DropTailQueue limit_bytes={limit_bytes}: must be >= 1")
        self.limit_packets = limit_packets
        self.limit_bytes = limit_bytes
        self._packets: deque[Packet] = deque()
        self.bytes = 0
        self.peak_bytes = 0
        self.peak_packets = 0
        self.dropped_packets = 0
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return len(self._packets)

    def is_full_for(self, size_bytes: int) -> bool:
        """Whether a packet of ``size_bytes`` would be refused now."""
        if self.limit_packets is not None and len(self._packets) + 1 > self.limit_packets:
            return True
        return self.limit_bytes is not None and self.bytes + size_bytes > self.limit_bytes

    def offer(self, packet: Packet) -> bool:
        """Append ``packet``, or count it as dropped and return False."""
        if self.is_full_for(packet.size_bytes):
            self.dropped_packets += 1
            self.dropped_bytes += packet.size_bytes
            return False
        self._packets.append(packet)
        self.bytes += packet.size_bytes
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        self.peak_packets = max(self.peak_packets, len(self._packets))
        return True

    def pop(self) -> Packet:
        """Remove and return the oldest packet (IndexError when empty)."""
        packet = self._packets.popleft()
        self.bytes -= packet.size_bytes
        return packet


# -- outages ----------------------------------------------------------------------------------


class OutageLike(Protocol):
    """What ``OutageStage.from_outages`` reads (``linklab.traces.Outage`` fits)."""

    @property
    def start_s(self) -> float: ...

    @property
    def length_s(self) -> float: ...


class OutageStage:
    """Intervals ``[start_ms, end_ms)`` during which nothing leaves; overlaps are merged.

    At most one outage may be open (begun, not yet ended): from its start on, every time is
    out and ``end_ms`` reads ``math.inf``; ``end`` turns it into an interval like the others.
    """

    def __init__(self, intervals_ms: Iterable[tuple[float, float]] = ()) -> None:
        self._intervals: list[tuple[float, float]] = []
        for start, end in ((float(s), float(e)) for s, e in intervals_ms):
            if not (math.isfinite(start) and math.isfinite(end)) or end < start:
                raise LinkModelError(f"OutageStage interval ({start}, {end}): "
                                     "needs finite start <= end")
            self._intervals.append((start, end))
        self._open_ms: float | None = None  # start of the open outage
        self._merge()

    def _merge(self) -> None:
        merged: list[list[float]] = []
        for start, end in sorted(self._intervals):
            if end == start:
                continue
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self._starts = [s for s, _ in merged]
        self._ends = [e for _, e in merged]

    def begin(self, now_ms: float) -> None:
        """Start an outage at ``now_ms`` whose end is not known yet (``end`` ends it)."""
        if self._open_ms is not None:
            raise LinkModelError(f"OutageStage.begin({now_ms}): an outage is already open "
                                 f"(since {self._open_ms})")
        if not math.isfinite(now_ms):
            raise LinkModelError(f"OutageStage.begin({now_ms}): needs a finite time")
        self._open_ms = float(now_ms)

    def end(self, now_ms: float) -> None:
        """End the open outage at ``now_ms``; from then on it is an interval like the others
        (the intervals known in advance that it covered still count after it)."""
        if self._open_ms is None:
            raise LinkModelError(f"OutageStage.end({now_ms}): no outage is open")
        if not now_ms >= self._open_ms:
            raise LinkModelError(f"OutageStage.end({now_ms}): before its start "
                                 f"{self._open_ms}")
        self._intervals.append((self._open_ms, float(now_ms)))
        self._open_ms = None
        self._merge()

    @property
    def open_since_ms(self) -> float | None:
        """The start of the open outage, or None."""
        return self._open_ms

    @classmethod
    def from_outages(cls, outages: Iterable[OutageLike], start_ms: float = 0.0) -> OutageStage:
        """Outages given in seconds from the trace start, on a clock where it starts at
        ``start_ms``."""
        return cls((start_ms + o.start_s * 1000.0, start_ms + (o.start_s + o.length_s) * 1000.0)
                   for o in outages)

    @property
    def intervals_ms(self) -> list[tuple[float, float]]:
        """The merged intervals; an open outage is last, ending at ``math.inf``."""
        intervals = list(zip(self._starts, self._ends, strict=True))
        if self._open_ms is not None:
            start = self._open_ms
            while intervals and intervals[-1][1] >= start:  # covered, or running into it
                start = min(start, intervals.pop()[0])
            intervals.append((start, math.inf))
        return intervals

    def __bool__(self) -> bool:
        return bool(self._starts) or self._open_ms is not None

    def end_ms(self, t_ms: float) -> float | None:
        """The end of the outage covering ``t_ms`` (``math.inf`` for the open one), or None
        when the link is up then."""
        opened = self._open_ms
        if opened is not None and t_ms >= opened:
            return math.inf
        i = bisect_right(self._starts, t_ms) - 1
        if i >= 0 and t_ms < self._ends[i]:
            end = self._ends[i]
            return math.inf if opened is not None and end >= opened else end
        return None

    def is_out(self, t_ms: float) -> bool:
        return self.end_ms(t_ms) is not None

    def release_ms(self, t_ms: float) -> float:
        """When something ready at ``t_ms`` may leave: ``t_ms``, or the end of its outage."""
        end = self.end_ms(t_ms)
        return t_ms if end is None else end

    def process(self, item: Delivered) -> Delivered:
        """Alone, as a stage: hold ``item`` until the outage covering its time ends."""
        release = self.release_ms(item.time_ms)
        return item if release == item.time_ms else Delivered(item.packet, release)


# -- bottlenecks ------------------------------------------------------------------------------


class Bottleneck(Protocol):
    """A queue plus the rule that empties it: ``TraceLink`` or ``UnlimitedLink``."""

    queue: DropTailQueue

    def enqueue(self, packet: Packet, now_ms: float) -> bool: ...

    def advance(self, now_ms: float) -> list[Delivered]: ...

    def next_event_ms(self) -> float | None: ...

    @property
    def backlog_bytes(self) -> int: ...


class TraceLink:
    """A bottleneck emptied by a looping trace of delivery opportunities (Mahimahi semantics).

    ``opportunities_ms``: non-decreasing integer milliseconds within one period, each one
    chance for ``bytes_per_opportunity`` bytes to leave; ``period_ms``: the loop length (the
    trace's last timestamp for a Mahimahi file). Opportunity times on the caller's clock are
    ``start_ms + cycle * period_ms + opportunities_ms[i]``. Outages in ``outages`` remove the
    opportunities they cover.

    Use: ``enqueue(packet, now_ms)`` (False: the queue refused it), ``advance(now_ms)`` returns
    what left up to ``now_ms`` in order with each packet's exact leaving time, and
    ``next_event_ms()`` says when to call ``advance`` next (None: nothing queued).
    ``switch_trace`` replaces the trace while it runs (what is queued stays).
    """

    def __init__(self, opportunities_ms: Sequence[int] | np.ndarray, period_ms: int, *,
                 queue: DropTailQueue | None = None, start_ms: float = 0.0,
                 outages: OutageStage | None = None,
                 bytes_per_opportunity: int = OPPORTUNITY_BYTES) -> None:
        if bytes_per_opportunity < 1:
            raise LinkModelError(f"TraceLink bytes_per_opportunity={bytes_per_opportunity}: "
                                 "must be >= 1")
        self.queue = queue if queue is not None else DropTailQueue()
        self.outages = outages if outages is not None else OutageStage()
        self.bytes_per_opportunity = bytes_per_opportunity
        self._set_trace(opportunities_ms, period_ms, start_ms)
        self._now = -math.inf
        self._transit: Packet | None = None  # partly sent, left the queue
        self._transit_left = 0
        self._out: list[Delivered] = []  # left, not yet returned by advance()

    def _set_trace(self, opportunities_ms: Sequence[int] | np.ndarray, period_ms: int,
                   start_ms: float) -> None:
        opp = np.asarray(opportunities_ms).reshape(-1)
        if opp.size and not np.issubdtype(opp.dtype, np.integer):
            if not np.all(np.isfinite(opp)) or not np.all(opp == np.floor(opp)):
                raise LinkModelError("TraceLink opportunities_ms: must be whole milliseconds")
            opp = opp.astype(np.int64)
        if np.any(np.diff(opp) < 0):
            i = int(np.argmax(np.diff(opp) < 0))
            raise LinkModelError(f"TraceLink opportunities_ms: decreases at index {i + 1} "
                                 f"({int(opp[i])} -> {int(opp[i + 1])})")
        if opp.size and opp[0] < 0:
            raise LinkModelError(f"TraceLink opportunities_ms: first is {int(opp[0])} < 0")
        last = int(opp[-1]) if opp.size else 0
        if period_ms <= 0 or last > period_ms:
            raise LinkModelError(f"TraceLink period_ms={period_ms}: must be > 0 and >= the "
                                 f"last opportunity ({last})")
        self.start_ms = float(start_ms)
        self.period_ms = int(period_ms)
        self._opp_f = opp.astype(np.float64)  # for searchsorted
        self._opp = [int(x) for x in opp.tolist()]  # for fast scalar reads
        self._n = len(self._opp)
        self._k = 0  # absolute index of the next opportunity not yet used or wasted

    def switch_trace(self, opportunities_ms: Sequence[int] | np.ndarray, period_ms: int,
                     now_ms: float) -> None:
        """From ``now_ms`` on, replay this trace from its start (its opportunity 0 ms is at
        ``now_ms``) instead of the old one, whose opportunities up to ``now_ms`` are used
        first. What is queued, and the rest of a packet partly sent, stay."""
        self._serve(now_ms)
        self._set_trace(opportunities_ms, period_ms, now_ms)

    @classmethod
    def from_trace(cls, trace: Trace, *, queue: DropTailQueue | None = None,
                   start_ms: float = 0.0, outages: OutageStage | None = None) -> TraceLink:
        """A ``TraceLink`` replaying ``trace`` (a ``linklab.traces.Trace``; the
        opportunities of its overlay outages are already gone)."""
        return cls(trace.opportunities_ms, trace.period_ms, queue=queue, start_ms=start_ms,
                   outages=outages)

    # trace arithmetic

    def time_ms(self, k: int) -> float:
        """Time of absolute opportunity ``k`` (0 = the first of the first period); infinite
        for a trace without opportunities (a link that never delivers)."""
        if not self._n:
            return math.inf
        cycle, i = divmod(k, self._n)
        return self.start_ms + cycle * self.period_ms + self._opp[i]

    def index_after(self, t_ms: float, *, inclusive: bool = False) -> int:
        """Absolute index of the first opportunity later than ``t_ms`` (at or later when
        ``inclusive``). Binary search within the period: O(log n)."""
        if not self._n or t_ms == -math.inf:
            return 0
        rel = t_ms - self.start_ms
        cycle = max(0, math.floor(rel / self.period_ms) - 1)
        side: Literal["left", "right"] = "left" if inclusive else "right"
        while True:
            x = float(rel - cycle * self.period_ms)
            pos = int(np.searchsorted(self._opp_f, x, side=side))
            if pos < self._n:
                return cycle * self._n + pos
            cycle += 1

    def _usable(self, k: int) -> tuple[int, float]:
        """The first opportunity at or after ``k`` outside every outage, and its time
        (``math.inf`` while an open outage covers it: none is known yet)."""
        t = self.time_ms(k)
        while self.outages:
            end = self.outages.end_ms(t)
            if end is None:
                break
            if end == math.inf:
                return k, math.inf
            after = self.index_after(end, inclusive=True)
            k = after if after > k else k + 1  # always move on, whatever the float rounding
            t = self.time_ms(k)
        return k, t

    def opportunities_between(self, t0_ms: float, t1_ms: float) -> int:
        """How many opportunities (outside outages) fall in ``(t0_ms, t1_ms]``."""
        if t1_ms <= t0_ms:
            return 0
        lo, hi = self.index_after(t0_ms), self.index_after(t1_ms)
        count = hi - lo
        for start, end in self.outages.intervals_ms:
            if end <= t0_ms or start > t1_ms:
                continue
            a = max(lo, self.index_after(start, inclusive=True))
            b = hi if end == math.inf else min(hi, self.index_after(end, inclusive=True))
            count -= max(0, b - a)
        return count

    def capacity_bytes(self, t0_ms: float, t1_ms: float) -> int:
        """Bytes the link can carry in ``(t0_ms, t1_ms]`` with the queue never empty."""
        return self.opportunities_between(t0_ms, t1_ms) * self.bytes_per_opportunity

    # the stage

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the queue (a packet partly sent has left it, as in Mahimahi)."""
        return self.queue.bytes

    @property
    def queued_packets(self) -> int:
        return len(self.queue)

    @property
    def backlog_bytes(self) -> int:
        """Bytes not yet through: the queue plus the rest of a packet partly sent."""
        return self.queue.bytes + self._transit_left

    def is_full_for(self, size_bytes: int) -> bool:
        return self.queue.is_full_for(size_bytes)

    def enqueue(self, packet: Packet, now_ms: float) -> bool:
        """Opportunities up to ``now_ms`` are used first, then ``packet`` joins the queue."""
        self._serve(now_ms)
        return self.queue.offer(packet)

    def advance(self, now_ms: float) -> list[Delivered]:
        """Use every opportunity up to ``now_ms``; return what left, oldest first."""
        self._serve(now_ms)
        out, self._out = self._out, []
        return out

    def next_event_ms(self) -> float | None:
        """When to call ``advance`` next: the next opportunity while something is queued (no
        earlier than the latest ``now_ms`` seen: what left before it is due at once), None
        when nothing is queued or an open outage holds it (nothing happens before its end)."""
        if self._out:
            return max(self._out[0].time_ms, self._now)
        if self._transit is None and not self.queue:
            return None
        t = self._usable(self._k)[1]
        return None if t == math.inf else t

    def _serve(self, now_ms: float) -> None:
        self._now = _check_now(self._now, now_ms, "TraceLink")
        queue, out = self.queue, self._out
        while True:
            if self._transit is None and not queue:
                # nothing to send: the opportunities up to now are wasted
                self._k = max(self._k, self.index_after(now_ms))
                return
            k, t = self._usable(self._k)
            if t > now_ms:
                self._k = k
                return
            budget = self.bytes_per_opportunity
            while budget > 0:
                if self._transit is None:
                    if not queue:
                        break
                    self._transit = queue.pop()
                    self._transit_left = self._transit.size_bytes
                take = min(budget, self._transit_left)
                budget -= take
                self._transit_left -= take
                if self._transit_left == 0:
                    out.append(Delivered(self._transit, t))
                    self._transit = None
            self._k = k + 1


class UnlimitedLink:
    """A bottleneck with no rate limit: a packet leaves when it arrives, unless an outage holds
    it; then it waits in the queue (which may refuse it) and leaves when the outage ends."""

    def __init__(self, *, queue: DropTailQueue | None = None,
                 outages: OutageStage | None = None) -> None:
        self.queue = queue if queue is not None else DropTailQueue()
        self.outages = outages if outages is not None else OutageStage()
        self._release_ms = -math.inf  # when the packets now queued may leave
        self._held_ms = -math.inf  # when the outage setting _release_ms held a packet
        self._now = -math.inf
        self._out: list[Delivered] = []

    @property
    def queued_bytes(self) -> int:
        return self.queue.bytes

    @property
    def queued_packets(self) -> int:
        return len(self.queue)

    @property
    def backlog_bytes(self) -> int:
        return self.queue.bytes

    def _release(self) -> float:
        """When the packets now queued may leave; held by an open outage (``math.inf``), it
        is asked again, as that outage may have ended since."""
        if self._release_ms == math.inf:
            self._release_ms = self.outages.release_ms(self._held_ms)
        return self._release_ms

    def is_full_for(self, size_bytes: int) -> bool:
        return self.queue.is_full_for(size_bytes)

    def enqueue(self, packet: Packet, now_ms: float) -> bool:
        self._serve(now_ms)
        end = self.outages.end_ms(now_ms)
        if end is None and not self.queue:
            self._out.append(Delivered(packet, now_ms))
            return True
        if not self.queue.offer(packet):
            return False
        if end is not None:
            self._release_ms, self._held_ms = end, now_ms
        return True

    def advance(self, now_ms: float) -> list[Delivered]:
        self._serve(now_ms)
        out, self._out = self._out, []
        return out

    def next_event_ms(self) -> float | None:
        if self._out:
            return max(self._out[0].time_ms, self._now)
        if not self.queue:
            return None
        release = self._release()
        return None if release == math.inf else release

    def _serve(self, now_ms: float) -> None:
        self._now = _check_now(self._now, now_ms, "UnlimitedLink")
        if self.queue and now_ms >= self._release():
            while self.queue:
                self._out.append(Delivered(self.queue.pop(), self._release_ms))


# -- stages after the bottleneck ---------------------------------------------------------------


class Stage(Protocol):
    """A stage after the bottleneck: an item in, the item at a time no earlier, or None (gone)."""

    def process(self, item: Delivered) -> Delivered | None: ...


class DelayStage:
    """Fixed one-way delay."""

    def __init__(self, delay_ms: float) -> None:
        if not (math.isfinite(delay_ms) and delay_ms >= 0):
            raise LinkModelError(f"DelayStage delay_ms={delay_ms}: must be >= 0")
        self.delay_ms = float(delay_ms)

    def process(self, item: Delivered) -> Delivered:
        return Delivered(item.packet, item.time_ms + self.delay_ms)


class LossStage:
    """Random loss, each packet independently with probability ``rate`` (seeded numpy Generator;
    the same seed and packet sequence lose the same packets).

    ``retransmit_delay_ms=None``: a lost packet is dropped. Otherwise it stands for a TCP
    segment that had to be sent again: it arrives ``retransmit_delay_ms`` late and later packets
    of its flow wait behind it (the receiver's in-order delivery).
    """

    def __init__(self, rate: float, seed: int = 0, *,
                 retransmit_delay_ms: float | None = None) -> None:
        if not (0.0 <= rate <= 1.0):
            raise LinkModelError(f"LossStage rate={rate}: must be within [0, 1]")
        if retransmit_delay_ms is not None and not retransmit_delay_ms >= 0:
            raise LinkModelError(f"LossStage retransmit_delay_ms={retransmit_delay_ms}: "
                                 "must be >= 0")
        self.rate = float(rate)
        self.retransmit_delay_ms = retransmit_delay_ms
        self._rng = np.random.default_rng(seed)
        self._last_ms: dict[Hashable, float] = {}  # retransmit mode: latest time per flow
        self.lost_packets = 0
        self.lost_bytes = 0

    def process(self, item: Delivered) -> Delivered | None:
        lost = self.rate > 0.0 and float(self._rng.random()) < self.rate
        if lost:
            self.lost_packets += 1
            self.lost_bytes += item.packet.size_bytes
        if self.retransmit_delay_ms is None:
            return None if lost else item
        t = item.time_ms + (self.retransmit_delay_ms if lost else 0.0)
        flow = item.packet.flow
        t = max(t, self._last_ms.get(flow, t))
        if len(self._last_ms) >= _PRUNE_FLOWS_AT:
            # items reach this stage in time order: an older bound constrains nothing
            self._last_ms = {f: v for f, v in self._last_ms.items() if v > item.time_ms}
        self._last_ms[flow] = t
        return item if t == item.time_ms else Delivered(item.packet, t)


# -- composition ------------------------------------------------------------------------------


@dataclass
class LinkStats:
    """Counters of a ``Link``: offered = enqueued or refused; lost = dropped by loss."""

    offered_packets: int = 0
    offered_bytes: int = 0
    delivered_packets: int = 0
    delivered_bytes: int = 0
    dropped_packets: int = 0  # refused by the queue
    dropped_bytes: int = 0
    lost_packets: int = 0  # dropped by a stage (drop-mode loss)
    lost_bytes: int = 0


class Link:
    """A bottleneck followed by stages: queue -> trace link -> loss -> delay, with counters.

    ``enqueue`` / ``advance`` / ``next_event_ms`` as on ``TraceLink``; ``advance`` returns
    packets at the time they leave the last stage, in that order (ties: in order of leaving
    the bottleneck).
    """

    def __init__(self, bottleneck: Bottleneck, stages: Sequence[Stage] = ()) -> None:
        self.bottleneck = bottleneck
        self.stages = tuple(stages)
        self.stats = LinkStats()
        self._pending: list[tuple[float, int, Delivered]] = []  # past the bottleneck
        self._seq = 0
        self._now = -math.inf

    @property
    def queue(self) -> DropTailQueue:
        return self.bottleneck.queue

    @property
    def queued_bytes(self) -> int:
        return self.bottleneck.queue.bytes

    @property
    def queued_packets(self) -> int:
        return len(self.bottleneck.queue)

    def is_full_for(self, size_bytes: int) -> bool:
        return self.bottleneck.queue.is_full_for(size_bytes)

    def enqueue(self, packet: Packet, now_ms: float) -> bool:
        """Offer ``packet`` to the queue; False (and counted as dropped) when refused."""
        self._now = max(self._now, now_ms)
        s = self.stats
        s.offered_packets += 1
        s.offered_bytes += packet.size_bytes
        if self.bottleneck.enqueue(packet, now_ms):
            return True
        s.dropped_packets += 1
        s.dropped_bytes += packet.size_bytes
        return False

    def advance(self, now_ms: float) -> list[Delivered]:
        """Everything that has left the last stage by ``now_ms``, oldest first."""
        self._now = max(self._now, now_ms)
        self._pull(now_ms)
        s = self.stats
        pending = self._pending
        done: list[Delivered] = []
        while pending and pending[0][0] <= now_ms:
            item = heapq.heappop(pending)[2]
            s.delivered_packets += 1
            s.delivered_bytes += item.packet.size_bytes
            done.append(item)
        return done

    def set_trace(self, opportunities_ms: Sequence[int] | np.ndarray, period_ms: int,
                  now_ms: float) -> None:
        """From ``now_ms`` on, the bottleneck replays this trace from its start (a
        ``TraceLink``, also when it had no rate limit before), keeping its queue and outages;
        what left the old one by ``now_ms`` goes on through the stages."""
        self._now = max(self._now, now_ms)
        self._pull(now_ms)
        old = self.bottleneck
        if isinstance(old, TraceLink):
            old.switch_trace(opportunities_ms, period_ms, now_ms)
            return
        if not isinstance(old, UnlimitedLink):
            raise LinkModelError(f"Link.set_trace: cannot replace a {type(old).__name__}")
        self.bottleneck = TraceLink(opportunities_ms, period_ms, queue=old.queue,
                                    start_ms=now_ms, outages=old.outages)

    def _pull(self, now_ms: float) -> None:
        """Take what left the bottleneck by ``now_ms`` through the stages into pending."""
        s = self.stats
        pending = self._pending
        for item in self.bottleneck.advance(now_ms):
            out = item
            for stage in self.stages:
                nxt = stage.process(out)
                if nxt is None:
                    s.lost_packets += 1
                    s.lost_bytes += item.packet.size_bytes
                    break
                out = nxt
            else:
                heapq.heappush(pending, (out.time_ms, self._seq, out))
                self._seq += 1

    def next_event_ms(self) -> float | None:
        """When ``advance`` next has something to do (never before the latest ``now_ms`` seen);
        None: nothing queued or in flight, or only what an open outage holds."""
        t = self.bottleneck.next_event_ms()
        if self._pending:
            p = self._pending[0][0]
            t = p if t is None else min(t, p)
        return None if t is None else max(t, self._now)


def make_link(opportunities_ms: Sequence[int] | np.ndarray | None = None,
              period_ms: int | None = None, *, queue_packets: int | None = None,
              queue_bytes: int | None = None, loss: float = 0.0,
              retransmit_delay_ms: float | None = None, delay_ms: float = 0.0,
              outages: OutageStage | None = None, seed: int = 0,
              start_ms: float = 0.0) -> Link:
    """Build the usual composition: a drop-tail queue, a ``TraceLink`` (``UnlimitedLink`` when
    ``opportunities_ms`` is None), then loss (when ``loss > 0``) and delay (when > 0)."""
    queue = DropTailQueue(queue_packets, queue_bytes)
    bottleneck: Bottleneck
    if opportunities_ms is None:
        bottleneck = UnlimitedLink(queue=queue, outages=outages)
    else:
        if period_ms is None:
            raise LinkModelError("make_link: period_ms is required with opportunities_ms")
        bottleneck = TraceLink(opportunities_ms, period_ms, queue=queue, start_ms=start_ms,
                               outages=outages)
    stages: list[Stage] = []
    if loss > 0:
        stages.append(LossStage(loss, seed, retransmit_delay_ms=retransmit_delay_ms))
    if delay_ms > 0:
        stages.append(DelayStage(delay_ms))
    return Link(bottleneck, stages)
