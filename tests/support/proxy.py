"""A controllable TCP proxy on loopback, for tests around real subprocesses: the link emulator
(``linklab.emulator.LinkEmulator``) on an asyncio loop of its own, in a thread of its own.

Its link has no rate limit and no delay until a test says otherwise, and every fault is the
emulator's: ``pause()`` begins an outage in both directions (nothing leaves the link: bytes
wait in its queue, ``QUEUE_BYTES``, then in the senders' socket buffers, and nobody sees an
error: a stalled radio link), ``resume()`` ends it, ``reset_connections()`` aborts every
connection with a TCP RST on both sides, ``refuse(True)`` makes the target look down, and
``set_rate_kbps(600)`` turns the client-to-target direction into a bottleneck of that rate (a
constant trace behind the same queue). The control methods may be called from any thread;
they return once the loop has applied them. ``bytes_up`` and ``bytes_down`` count what left
the link towards the target and towards the client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from linklab.emulator import LinkEmulator, LinkSpec
from linklab.traces import phases_trace

# The link's queue, each direction: what a stalled link takes in before the senders wait (the
# old proxy's read buffer), and the bottleneck queue behind a rate limit.
QUEUE_BYTES = 16 * 1024
RATE_TRACE_PERIOD_S = 10.0  # the constant-rate trace loops over this long
CONTROL_TIMEOUT_S = 5.0

T = TypeVar("T")


class TcpProxy:
    """Forward 127.0.0.1:``port`` to ``target_host:target_port``, under test control."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._listen_port = listen_port
        self.port = 0
        self._emulator: LinkEmulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="TcpProxy", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        emulator = LinkEmulator(("127.0.0.1", self._listen_port), self.target,
                                LinkSpec(trace=None, delay_ms=0.0, queue_packets=None,
                                         queue_bytes=QUEUE_BYTES))
        try:
            asyncio.run_coroutine_threadsafe(emulator.start(), loop).result(CONTROL_TIMEOUT_S)
        except BaseException:
            self._end_loop()
            raise
        self._emulator = emulator
        self.port = emulator.port
        thread.name = f"TcpProxy:{self.port}"

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._emulator is not None:
            asyncio.run_coroutine_threadsafe(self._emulator.stop(), self._loop).result(
                CONTROL_TIMEOUT_S)
            self._emulator = None
        self._end_loop()

    def _end_loop(self) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CONTROL_TIMEOUT_S)
        self._loop.close()
        self._loop = self._thread = None

    def _call(self, fn: Callable[[LinkEmulator], T]) -> T:
        """Run ``fn(emulator)`` on the proxy's loop and wait for it."""
        loop, emulator = self._loop, self._emulator
        if loop is None or emulator is None:
            raise RuntimeError("proxy not started")
        if threading.current_thread() is self._thread:
            return fn(emulator)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(emulator))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(CONTROL_TIMEOUT_S)

    # -- control (any thread) --------------------------------------------------------------

    def pause(self) -> None:
        """Stall the link both ways: an outage until ``resume``; connections stay open."""
        self._call(lambda e: e.begin_outage())

    def resume(self) -> None:
        self._call(lambda e: e.end_outage())

    def reset_connections(self) -> None:
        """Abort every current connection with a TCP RST on both sides."""
        self._call(lambda e: e.reset_connections())

    def refuse(self, on: bool) -> None:
        """While on, new connections are accepted and reset at once; existing ones reset now."""
        self._call(lambda e: e.refuse(on))

    def set_rate_kbps(self, kbps: float) -> None:
        """Limit client -> target to ``kbps`` kbit/s from now on, for all connections."""
        if not kbps > 0:
            raise ValueError(f"rate {kbps} kbit/s: must be > 0 (use pause() for an outage)")
        trace = phases_trace([(RATE_TRACE_PERIOD_S, kbps)], name=f"{kbps:g} kbit/s")
        self._call(lambda e: e.set_trace("up", trace))

    # -- reading (any thread) --------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._call(lambda e: e.in_outage)

    @property
    def connections_total(self) -> int:
        return self._call(lambda e: e.connections_total)

    @property
    def connections_open(self) -> int:
        return self._call(lambda e: e.connections_open)

    @property
    def bytes_up(self) -> int:
        """Bytes client -> target that left the link."""
        return self._call(lambda e: e.stats("up").delivered_bytes)

    @property
    def bytes_down(self) -> int:
        """Bytes target -> client that left the link."""
        return self._call(lambda e: e.stats("down").delivered_bytes)

    def wait_connections(self, n: int = 1, timeout: float = 10.0) -> None:
        """Block until ``connections_total >= n`` (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        while self.connections_total < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.connections_total} connections, expected {n}")
            time.sleep(0.02)

    def wait_bytes_up(self, n: int, timeout: float = 10.0) -> None:
        """Block until at least ``n`` bytes went client -> target (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        while self.bytes_up < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.bytes_up} bytes up, expected {n}")
            time.sleep(0.02)
