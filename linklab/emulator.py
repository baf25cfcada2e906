"""The link emulator: a TCP or UDP proxy whose two directions go through the link model.

``LinkEmulator`` listens on ``listen`` and forwards to ``target``. What the client sends goes
through the uplink ``Link`` (``linklab.link_model``: drop-tail queue -> trace link -> loss
-> delay), what comes back goes through the downlink. The model decides every delivery time;
this module only moves bytes and keeps the clock (``time.monotonic()``, nowhere else). A timer
(``loop.call_later`` to the model's ``next_event_ms``) drives deliveries; nothing polls.

One link per direction, shared by every connection (it is one bottleneck). The trace clock
starts at ``start()``: a real link does not restart its capacity trace when a TCP connection
does, so a connection opened 30 s in meets the trace 30 s in, and ``outages`` count from
``start()`` too.

TCP (a proxy; each accepted client gets its own connection to the target):

- the stream is cut into packets of at most ``MTU_BYTES`` as it is read; sizes are payload
  bytes (the emulated link carries no headers, so the trace's capacity is goodput);
- bytes are never dropped. The emulator reads from a socket only while the uplink queue has
  room for a full packet, with small socket buffers (``SOCKET_BUFFER_BYTES``) and
  ``TCP_NODELAY``: when the emulated queue is full the sender's bytes wait in the sender's
  own socket, as behind a real bottleneck. Each connection direction also stops reading while
  ``PIPE_WINDOW_BYTES`` are read and not yet written out (a receive window: it bounds memory
  when the far end reads slowly or the direction has no rate limit);
- random loss cannot drop bytes of a stream: a lost packet stands for a segment TCP sent
  again. It arrives ``retransmit_delay_ms`` late, max(``RETRANSMIT_MIN_MS``,
  ``RETRANSMIT_RTT_FACTOR`` x the two one-way delays), like a retransmission timeout (Linux's
  minimum RTO is 200 ms), and the rest of that connection's bytes stay behind it, in order;
- during an outage the link has no delivery opportunities: bytes wait in the queue and then
  at the sender; connections stay open, as on a cellular link that loses signal. A connection
  opened during an outage is accepted (and connected to the target) at once; its bytes wait;
- a FIN (half-close) travels through the link behind the data and is passed on with
  ``shutdown(SHUT_WR)``; a reset is passed on to the other side at once. ``stop()`` closes
  everything; bytes still inside the model are discarded.

UDP: datagrams from the most recent client address go through the uplink to the target and
replies come back through the downlink to that address. Here queue overflow and loss drop
datagrams.

Without a downlink spec, the downlink has no rate limit and no loss, and shares the uplink's
delay, queue limits and outages (a dead radio is dead both ways).

Faults on demand, for tests driving real programs through it (``tests.support.TcpProxy``
runs one on a loop of its own): ``begin_outage``/``end_outage`` (an outage of unknown length in
both directions, decided by the link model like the listed ones), ``set_trace`` (a new capacity
trace from now), ``reset_connections`` and ``refuse`` (TCP resets: a server that fails or is
down). They are called on the emulator's loop.

``emulate`` on the command line: see ``add_parser``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

from linklab.link_model import (
    Bottleneck,
    DelayStage,
    Delivered,
    DropTailQueue,
    Link,
    LossStage,
    OutageStage,
    Packet,
    Stage,
    TraceLink,
    UnlimitedLink,
)
from linklab.traces import MTU_BYTES, Outage, Trace

log = logging.getLogger(__name__)

DELAY_MS_DEFAULT = 40.0  # one-way, each direction: a 3G/4G RTT of ~80 ms before queueing
# A cellular bottleneck buffers deeply (seconds: Jiang et al., "Tackling Bufferbloat in 3G/4G
# Networks", IMC 2012). 100 full packets = 150 kB = 1.2 s at 1 Mbit/s, 4 s at 0.3 Mbit/s.
# Mahimahi's default is an unlimited queue, which would hide a sender's overload entirely.
QUEUE_PACKETS_DEFAULT = 100
SOCKET_BUFFER_BYTES = 32 * 1024  # SO_RCVBUF/SO_SNDBUF of every emulator socket
PIPE_WINDOW_BYTES = 4 * 1024 * 1024  # per connection direction: read, not yet written out
READS_PER_WAKE = 64  # packets read from one socket per readiness callback
RETRANSMIT_MIN_MS = 200.0
RETRANSMIT_RTT_FACTOR = 3.0
NO_CAPACITY_MS = 500.0  # the status line says "outage" after this long without capacity
_LINGER_RST = struct.pack("ii", 1, 0)

Direction = Literal["up", "down"]


class EmulatorError(ValueError):
    """A bad emulator setting; the message names the setting, the value and what is valid."""


@dataclass(frozen=True)
class LinkSpec:
    """One direction of the emulated link.

    ``trace``: capacity (None = no rate limit); ``delay_ms``: one-way delay;
    ``queue_packets`` / ``queue_bytes``: drop-tail limits of the bottleneck queue (None = no
    limit; at least one full packet); ``loss``: random loss probability (a drop for UDP, a
    retransmission delay for TCP); ``outages``: seconds from ``start()`` with no capacity;
    ``seed``: the loss generator's seed.
    """

    trace: Trace | None = None
    delay_ms: float = DELAY_MS_DEFAULT
    queue_packets: int | None = QUEUE_PACKETS_DEFAULT
    queue_bytes: int | None = None
    loss: float = 0.0
    outages: tuple[Outage, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "outages", tuple(self.outages))
        if not (math.isfinite(self.delay_ms) and self.delay_ms >= 0):
            raise EmulatorError(f"delay_ms={self.delay_ms}: must be a number >= 0")
        if self.queue_packets is not None and self.queue_packets < 1:
            raise EmulatorError(f"queue_packets={self.queue_packets}: must be >= 1 (or None)")
        if self.queue_bytes is not None and self.queue_bytes < MTU_BYTES:
            raise EmulatorError(f"queue_bytes={self.queue_bytes}: must be >= {MTU_BYTES} "
                                "(one full packet) or None")
        if not (0.0 <= self.loss < 1.0):
            raise EmulatorError(f"loss={self.loss}: must be within [0, 1)")


@dataclass(frozen=True)
class DirectionStats:
    """A snapshot of one direction. Per-second lists cover the whole seconds since ``start()``,
    bin i = ``(i, i+1]`` s; delivered counts bytes when they leave the emulated link (after
    the delay), so it lags capacity by ``delay_ms``. ``capacity_bytes_per_s`` is None for a
    direction without a rate limit."""

    direction: Direction
    elapsed_s: float
    delivered_bytes_per_s: list[int]
    capacity_bytes_per_s: list[int] | None
    offered_bytes: int
    delivered_bytes: int
    dropped_packets: int  # refused by a full queue (UDP only; TCP holds the sender instead)
    dropped_bytes: int
    lost_packets: int  # random loss: dropped (UDP) or retransmitted late (TCP)
    lost_bytes: int
    queued_packets: int
    queued_bytes: int
    peak_queued_packets: int
    peak_queued_bytes: int
    no_capacity: bool  # in an outage, or no opportunity in the last NO_CAPACITY_MS


class _Side:
    """One direction: its link, its counters, the connections reading into it."""

    def __init__(self, name: Direction, spec: LinkSpec, start_ms: float,
                 retransmit_delay_ms: float | None) -> None:
        self.name = name
        self.spec = spec
        self.start_ms = start_ms
        self.outages = OutageStage.from_outages(spec.outages, start_ms)
        queue = DropTailQueue(spec.queue_packets, spec.queue_bytes)
        bottleneck: Bottleneck
        if spec.trace is None:
            bottleneck = UnlimitedLink(queue=queue, outages=self.outages)
        else:
            bottleneck = TraceLink(spec.trace.opportunities_ms, spec.trace.period_ms,
                                   queue=queue, start_ms=start_ms, outages=self.outages)
        stages: list[Stage] = []
        self.loss: LossStage | None = None
        if spec.loss > 0:
            self.loss = LossStage(spec.loss, spec.seed, retransmit_delay_ms=retransmit_delay_ms)
            stages.append(self.loss)
        if spec.delay_ms > 0:
            stages.append(DelayStage(spec.delay_ms))
        self.link = Link(bottleneck, stages)
        self.delivered_per_s: list[int] = []
        self.pipes: set[_Pipe] = set()
        self.full = False

    @property
    def bottleneck(self) -> Bottleneck:
        return self.link.bottleneck

    def record(self, time_ms: float, size_bytes: int) -> None:
        i = max(0, math.ceil((time_ms - self.start_ms) / 1000.0) - 1)
        per_s = self.delivered_per_s
        if i >= len(per_s):
            per_s.extend([0] * (i + 1 - len(per_s)))
        per_s[i] += size_bytes

    def capacity_bytes(self, t0_ms: float, t1_ms: float) -> int | None:
        if isinstance(self.bottleneck, TraceLink):
            return self.bottleneck.capacity_bytes(t0_ms, t1_ms)
        return None

    def no_capacity(self, now_ms: float) -> bool:
        if self.outages.is_out(now_ms):
            return True
        if isinstance(self.bottleneck, TraceLink):
            return self.bottleneck.opportunities_between(now_ms - NO_CAPACITY_MS, now_ms) == 0
        return False

    def stats(self, now_ms: float) -> DirectionStats:
        seconds = max(0, int((now_ms - self.start_ms) // 1000))
        delivered = (self.delivered_per_s + [0] * seconds)[:seconds]
        capacity: list[int] | None = None
        if isinstance(self.bottleneck, TraceLink):
            capacity = [self.bottleneck.capacity_bytes(self.start_ms + i * 1000.0,
                                                       self.start_ms + (i + 1) * 1000.0)
                        for i in range(seconds)]
        s, q = self.link.stats, self.link.queue
        return DirectionStats(
            direction=self.name, elapsed_s=(now_ms - self.start_ms) / 1000.0,
            delivered_bytes_per_s=delivered, capacity_bytes_per_s=capacity,
            offered_bytes=s.offered_bytes, delivered_bytes=s.delivered_bytes,
            dropped_packets=s.dropped_packets, dropped_bytes=s.dropped_bytes,
            lost_packets=self.loss.lost_packets if self.loss else 0,
            lost_bytes=self.loss.lost_bytes if self.loss else 0,
            queued_packets=len(q), queued_bytes=q.bytes, peak_queued_packets=q.peak_packets,
            peak_queued_bytes=q.peak_bytes, no_capacity=self.no_capacity(now_ms))


class _Pipe:
    """One direction of one TCP connection: ``src`` -> link -> ``dst``."""

    __slots__ = ("conn", "src", "dst", "side", "out", "unwritten", "eof_read", "fin_in",
                 "shut", "reading", "writing")

    def __init__(self, conn: _Conn, src: socket.socket, dst: socket.socket, side: _Side) -> None:
        self.conn = conn
        self.src = src
        self.dst = dst
        self.side = side
        self.out = bytearray()  # out of the link, not yet accepted by dst
        self.unwritten = 0  # read from src, not yet accepted by dst
        self.eof_read = False  # src sent FIN (it is in the link)
        self.fin_in = False  # the FIN came out of the link
        self.shut = False  # FIN passed on to dst
        self.reading = False  # reader registered on src
        self.writing = False  # writer registered on dst


class _Conn:
    __slots__ = ("client", "upstream", "connected", "closed", "up", "down")

    def __init__(self, client: socket.socket, upstream: socket.socket, up: _Side,
                 down: _Side) -> None:
        self.client = client
        self.upstream = upstream
        self.connected = False
        self.closed = False
        self.up = _Pipe(self, client, upstream, up)
        self.down = _Pipe(self, upstream, client, down)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, emulator: LinkEmulator, side: Direction) -> None:
        self.emulator = emulator
        self.side = side

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.emulator._on_datagram(self.side, data, addr)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        log.debug("emulator udp %s: %s", self.side, exc)


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)


def _nodelay(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class LinkEmulator:
    """A proxy from ``listen`` to ``target`` through an emulated link (see the module docstring).

    ``listen`` port 0 picks a free port; ``port`` has the bound one after ``start()``.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], uplink: LinkSpec,
                 downlink: LinkSpec | None = None, protocol: Literal["tcp", "udp"] = "tcp") -> None:
        if protocol not in ("tcp", "udp"):
            raise EmulatorError(f"protocol={protocol!r}: must be 'tcp' or 'udp'")
        self.listen = listen
        self.target = target
        self.protocol = protocol
        self.uplink = uplink
        self.downlink = downlink if downlink is not None else LinkSpec(
            trace=None, delay_ms=uplink.delay_ms, queue_packets=uplink.queue_packets,
            queue_bytes=uplink.queue_bytes, loss=0.0, outages=uplink.outages,
            seed=uplink.seed + 1)
        self.retransmit_delay_ms = max(
            RETRANSMIT_MIN_MS,
            RETRANSMIT_RTT_FACTOR * (self.uplink.delay_ms + self.downlink.delay_ms))
        self.port = 0
        self.start_time = 0.0  # time.monotonic() at start(): second 0 of the trace
        self.connections_total = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sides: dict[Direction, _Side] = {}
        self._last_ms = -math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._timer_ms = math.inf
        self._listener: socket.socket | None = None
        self._target_family = socket.AF_INET
        self._target_addr: tuple[Any, ...] = target
        self._conns: set[_Conn] = set()
        self._front: asyncio.DatagramTransport | None = None
        self._back: asyncio.DatagramTransport | None = None
        self._client_addr: tuple[str | int, ...] | None = None
        self._running = False
        self._refusing = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind, resolve the target, and start the trace clock."""
        if self._running:
            raise RuntimeError("emulator already started")
        loop = asyncio.get_running_loop()
        self._loop = loop
        kind = socket.SOCK_STREAM if self.protocol == "tcp" else socket.SOCK_DGRAM
        infos = await loop.getaddrinfo(self.target[0], self.target[1], type=kind)
        if not infos:
            raise OSError(f"cannot resolve target {self.target[0]}:{self.target[1]}")
        self._target_family, _, _, _, self._target_addr = infos[0]
        start_ms = time.monotonic() * 1000.0
        self.start_time = start_ms / 1000.0
        self._last_ms = start_ms
        retransmit = self.retransmit_delay_ms if self.protocol == "tcp" else None
        self._sides = {"up": _Side("up", self.uplink, start_ms, retransmit),
                       "down": _Side("down", self.downlink, start_ms, retransmit)}
        if self.protocol == "tcp":
            infos = await loop.getaddrinfo(self.listen[0], self.listen[1], type=kind,
                                           flags=socket.AI_PASSIVE)
            family, _, _, _, addr = infos[0]
            lsock = socket.socket(family, socket.SOCK_STREAM)
            try:
                lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                _tune(lsock)  # accepted sockets inherit the small buffers
                lsock.bind(addr)
                lsock.listen(128)
                lsock.setblocking(False)
            except OSError:
                lsock.close()
                raise
            self._listener = lsock
            self.port = int(lsock.getsockname()[1])
            loop.add_reader(lsock.fileno(), self._on_accept)
        else:
            front, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self, "up"), local_addr=self.listen)
            try:
                back, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self, "down"),
                    remote_addr=(str(self._target_addr[0]), int(self._target_addr[1])))
            except OSError:
                front.close()
                raise
            self._front, self._back = front, back
            self.port = int(front.get_extra_info("sockname")[1])
        self._running = True
        log.info("emulator listening port=%d target=%s:%d protocol=%s", self.port,
                 self.target[0], self.target[1], self.protocol)

    async def stop(self) -> None:
        """Stop accepting, close every connection (plain close), drop what is in the model."""
        if not self._running:
            return
        self._running = False
        loop = self._loop
        assert loop is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._listener is not None:
            loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for conn in list(self._conns):
            self._close(conn, rst=False)
        for transport in (self._front, self._back):
            if transport is not None:
                transport.close()
        self._front = self._back = None
        await asyncio.sleep(0)  # let transports finish closing

    async def __aenter__(self) -> LinkEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- reading stats ------------------------------------------------------------------------

    def now_ms(self) -> float:
        """The emulator's clock (``time.monotonic()`` in ms, never going back)."""
        self._last_ms = max(self._last_ms, time.monotonic() * 1000.0)
        return self._last_ms

    def elapsed_s(self) -> float:
        """Seconds of trace played since ``start()``."""
        return (self.now_ms() - self.start_time * 1000.0) / 1000.0

    def stats(self, direction: Direction = "up") -> DirectionStats:
        """A snapshot of one direction's counters (``start()`` first)."""
        return self._side(direction).stats(self.now_ms())

    def capacity_bytes(self, direction: Direction, t0_s: float, t1_s: float) -> int | None:
        """Capacity of a direction in ``(t0_s, t1_s]`` seconds after ``start()``; None without
        a rate limit."""
        start = self.start_time * 1000.0
        return self._side(direction).capacity_bytes(start + t0_s * 1000.0, start + t1_s * 1000.0)

    @property
    def connections_open(self) -> int:
        """TCP connections open now."""
        return len(self._conns)

    # -- faults on demand (call on the emulator's loop) -----------------------------------------

    def begin_outage(self) -> None:
        """An outage from now until ``end_outage``, both directions, as if listed in the
        specs: nothing leaves the link, bytes wait in its queues and then at the senders, and
        connections stay open (a radio link that stalls)."""
        self._pump()  # what was due before it leaves
        now = self.now_ms()
        for side in self._sides_or_fail():
            side.outages.begin(now)
        self._pump()

    def end_outage(self) -> None:
        """End the outage ``begin_outage`` started; what waited leaves as the link allows."""
        now = self.now_ms()
        for side in self._sides_or_fail():
            side.outages.end(now)
        self._pump()

    @property
    def in_outage(self) -> bool:
        """Whether an outage begun by ``begin_outage`` is still on."""
        return any(side.outages.open_since_ms is not None for side in self._sides.values())

    def reset_connections(self) -> None:
        """Abort every open TCP connection with a reset to both sides (their bytes still in
        the link are dropped when they come out)."""
        for conn in list(self._conns):
            self._close(conn, rst=True)

    def refuse(self, on: bool) -> None:
        """While on, each new TCP connection is accepted and reset at once (the target looks
        down); turning it on also resets the open ones."""
        self._refusing = on
        if on:
            self.reset_connections()

    @property
    def refusing(self) -> bool:
        return self._refusing

    def set_trace(self, direction: Direction, trace: Trace) -> None:
        """From now on ``direction`` replays ``trace`` from its start (a rate changed on
        demand; it also rate-limits a direction that had no limit). What is queued stays.
        ``stats`` and ``capacity_bytes`` then describe the new trace, also for the time before."""
        side = self._side(direction)
        self._pump()
        side.link.set_trace(trace.opportunities_ms, trace.period_ms, self.now_ms())
        self._pump()

    def _sides_or_fail(self) -> list[_Side]:
        if not self._sides:
            raise RuntimeError("emulator not started")
        return list(self._sides.values())

    def _side(self, direction: Direction) -> _Side:
        if direction not in self._sides:
            raise RuntimeError("emulator not started" if not self._sides
                               else f"direction {direction!r}: must be 'up' or 'down'")
        return self._sides[direction]

    # -- the timer ----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Deliver what the model says is due, then sleep until its next event."""
        if not self._running:
            return
        now = self.now_ms()
        for side in self._sides.values():
            items = side.link.advance(now)
            if items:
                if self.protocol == "tcp":
                    self._deliver_tcp(side, items)
                else:
                    self._deliver_udp(side, items)
            self._refresh(side)
        self._schedule()

    def _schedule(self) -> None:
        loop = self._loop
        assert loop is not None
        t = math.inf
        for side in self._sides.values():
            e = side.link.next_event_ms()
            if e is not None:
                t = min(t, e)
        if t == self._timer_ms and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_ms = t
        if t < math.inf:
            delay_s = max(0.0, (t - time.monotonic() * 1000.0) / 1000.0)
            self._timer = loop.call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._last_ms = max(self._last_ms, self._timer_ms)  # asyncio may wake a hair early
        self._timer_ms = math.inf
        self._pump()

    def _refresh(self, side: _Side) -> None:
        """Re-arm the readers of a direction whose queue went from full to not full."""
        full = side.link.is_full_for(MTU_BYTES)
        if full == side.full:
            return
        side.full = full
        for pipe in list(side.pipes):
            self._arm_reader(pipe)

    # -- TCP ----------------------------------------------------------------------------------

    def _on_accept(self) -> None:
        assert self._listener is not None and self._loop is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("emulator accept failed: %s", exc)
                return
            self.connections_total += 1
            client.setblocking(False)
            if self._refusing:
                self._rst_close(client)
                continue
            _tune(client)
            _nodelay(client)
            try:
                upstream = socket.socket(self._target_family, socket.SOCK_STREAM)
            except OSError as exc:
                log.warning("emulator cannot open a target socket: %s", exc)
                self._rst_close(client)
                continue
            _tune(upstream)
            _nodelay(upstream)
            upstream.setblocking(False)
            conn = _Conn(client, upstream, self._sides["up"], self._sides["down"])
            self._conns.add(conn)
            conn.up.side.pipes.add(conn.up)
            conn.down.side.pipes.add(conn.down)
            err = upstream.connect_ex(self._target_addr)
            if err in (0, errno.EISCONN):
                self._on_connected(conn)
            elif err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                self._loop.add_writer(upstream.fileno(), self._on_connected, conn)
            else:
                log.info("emulator: target %s refused: %s", self.target, errno.errorcode.get(err))
                self._close(conn, rst=True)
                continue
            self._arm_reader(conn.up)

    def _on_connected(self, conn: _Conn) -> None:
        assert self._loop is not None
        if conn.closed:
            return
        self._loop.remove_writer(conn.upstream.fileno())
        err = conn.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            log.info("emulator: target %s: %s", self.target, errno.errorcode.get(err, err))
            self._close(conn, rst=True)
            return
        conn.connected = True
        self._arm_reader(conn.down)
        self._flush(conn.up)

    def _arm_reader(self, pipe: _Pipe) -> None:
        conn = pipe.conn
        if conn.closed:
            return
        want = (not pipe.eof_read and not pipe.side.full
                and pipe.unwritten < PIPE_WINDOW_BYTES
                and (conn.connected or pipe is conn.up))
        if want == pipe.reading:
            return
        pipe.reading = want
        assert self._loop is not None
        if want:
            self._loop.add_reader(pipe.src.fileno(), self._on_readable, pipe)
        else:
            self._loop.remove_reader(pipe.src.fileno())

    def _on_readable(self, pipe: _Pipe) -> None:
        conn = pipe.conn
        if conn.closed or not self._running:
            return
        side = pipe.side
        link = side.link
        now = self.now_ms()
        for _ in range(READS_PER_WAKE):
            if link.is_full_for(MTU_BYTES) or pipe.unwritten >= PIPE_WINDOW_BYTES:
                break
            try:
                data = pipe.src.recv(MTU_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(conn, rst=True)  # a reset from one side: pass it on
                self._pump()
                return
            if not data:
                pipe.eof_read = True
                link.enqueue(Packet(0, (pipe, None), flow=pipe), now)
                break
            link.enqueue(Packet(len(data), (pipe, data), flow=pipe), now)
            pipe.unwritten += len(data)
        side.full = link.is_full_for(MTU_BYTES)
        if side.full:
            for other in list(side.pipes):
                self._arm_reader(other)
        else:
            self._arm_reader(pipe)
        self._pump()

    def _deliver_tcp(self, side: _Side, items: list[Delivered]) -> None:
        touched: dict[_Pipe, None] = {}
        for item in items:
            side.record(item.time_ms, item.packet.size_bytes)
            pipe, data = cast(tuple[_Pipe, bytes | None], item.packet.payload)
            if pipe.conn.closed:
                continue
            if data is None:
                pipe.fin_in = True
            else:
                pipe.out += data
            touched[pipe] = None
        for pipe in touched:
            self._flush(pipe)

    def _on_writable(self, pipe: _Pipe) -> None:
        self._flush(pipe)

    def _flush(self, pipe: _Pipe) -> None:
        conn = pipe.conn
        if conn.closed or not conn.connected:
            return
        loop = self._loop
        assert loop is not None
        if pipe.out:
            try:
                n = pipe.dst.send(pipe.out)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._close(conn, rst=True)
                return
            del pipe.out[:n]
            pipe.unwritten -= n
        want_write = bool(pipe.out)
        if want_write != pipe.writing:
            pipe.writing = want_write
            if want_write:
                loop.add_writer(pipe.dst.fileno(), self._on_writable, pipe)
            else:
                loop.remove_writer(pipe.dst.fileno())
        if not pipe.out and pipe.fin_in and not pipe.shut:
            pipe.shut = True
            with contextlib.suppress(OSError):
                pipe.dst.shutdown(socket.SHUT_WR)
        if conn.up.shut and conn.down.shut:
            self._close(conn, rst=False)
            return
        self._arm_reader(pipe)

    def _close(self, conn: _Conn, *, rst: bool) -> None:
        if conn.closed:
            return
        conn.closed = True
        loop = self._loop
        assert loop is not None
        self._conns.discard(conn)
        for pipe in (conn.up, conn.down):
            pipe.side.pipes.discard(pipe)
        for sock in (conn.client, conn.upstream):
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
                loop.remove_writer(sock.fileno())
            if rst:
                self._rst_close(sock)
            else:
                sock.close()

    @staticmethod
    def _rst_close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        sock.close()

    # -- UDP ----------------------------------------------------------------------------------

    def _on_datagram(self, direction: Direction, data: bytes,
                     addr: tuple[str | int, ...]) -> None:
        if not self._running:
            return
        if direction == "up":
            self._client_addr = addr
        elif self._client_addr is None:
            return  # a reply before any client: nobody to send it to
        self._sides[direction].link.enqueue(Packet(len(data), data), self.now_ms())
        self._pump()

    def _deliver_udp(self, side: _Side, items: list[Delivered]) -> None:
        for item in items:
            side.record(item.time_ms, item.packet.size_bytes)
            data = item.packet.payload
            assert isinstance(data, bytes)
            if side.name == "up":
                if self._back is not None:
                    self._back.sendto(data)
            elif self._front is not None and self._client_addr is not None:
                self._front.sendto(data, self._client_addr)


# -- the command line -------------------------------------------------------------------------
