"""A controllable TCP proxy on loopback, for tests around real subprocesses.

It runs its own asyncio loop in its own thread and moves bytes with plain non-blocking
sockets driven by ``loop.add_reader``/``add_writer``, so every control action is exact:
``pause()`` stops reading *and* writing at once (a stalled radio link: the senders' socket
buffers fill, nobody sees an error), ``reset_connections()`` aborts with a TCP RST on both
sides, ``refuse(True)`` makes the destination look down, ``set_rate_kbps(600)`` turns the
client-to-target direction into a bottleneck of that rate (a token bucket; the sender's
bytes queue in its own socket buffer and in one read chunk here, as behind a slow radio
link). The control methods may be called from any thread; they return once the loop has
applied them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

SOCKET_BUFFER = 64 * 1024
CHUNK = 64 * 1024
RATE_LIMITED_CHUNK = 16 * 1024  # read size while rate limited (a smaller bottleneck queue)
RATE_BURST_BYTES = 8 * 1024  # token bucket depth
RATE_TICK_S = 0.005  # shortest wait for tokens
_LINGER_RST = struct.pack("ii", 1, 0)


class _Pipe:
    """One direction of one connection."""

    def __init__(self, conn: _Conn, src: socket.socket, dst: socket.socket, up: bool) -> None:
        self.conn = conn
        self.src = src
        self.dst = dst
        self.up = up
        self.buf = bytearray()
        self.eof = False  # src sent FIN
        self.shut = False  # FIN forwarded to dst
        self.rate_wait = False  # waiting for rate tokens (up direction only)

    @property
    def done(self) -> bool:
        return self.eof and not self.buf


class _Conn:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.connected = False
        self.closed = False
        self.up = _Pipe(self, client, upstream, up=True)
        self.down = _Pipe(self, upstream, client, up=False)


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)


class TcpProxy:
    """Forward 127.0.0.1:``port`` to ``target_host:target_port``, under test control."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._listen_port = listen_port
        self.port = 0
        self.connections_total = 0
        self.bytes_up = 0  # client -> target, delivered
        self.bytes_down = 0  # target -> client, delivered
        self._paused = False
        self._refusing = False
        self._rate_bps: float | None = None  # bytes/s client -> target, None = unlimited
        self._tokens = 0.0
        self._tokens_at = 0.0
        self._conns: set[_Conn] = set()
        self._listener: socket.socket | None = None
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
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _tune(lsock)  # accepted sockets inherit the small buffers
        lsock.bind(("127.0.0.1", self._listen_port))
        lsock.listen(64)
        lsock.setblocking(False)
        self._listener = lsock
        self.port = lsock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.call_soon(ready.set)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"TcpProxy:{self.port}", daemon=True)
        self._thread.start()
        ready.wait(5)
        self._call(lambda: self._loop.add_reader(lsock.fileno(), self._on_accept))  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return

        def shutdown() -> None:
            if self._listener is not None:
                self._loop.remove_reader(self._listener.fileno())  # type: ignore[union-attr]
                self._listener.close()
                self._listener = None
            for conn in list(self._conns):
                self._abort(conn)

        self._call(shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
        self._thread = None
        self._loop = None

    def _call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run ``fn`` on the proxy's loop and wait for it."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("proxy not started")
        if threading.current_thread() is self._thread:
            return fn()
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def wrapper() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

        loop.call_soon_threadsafe(wrapper)
        return fut.result(timeout)

    # -- control (any thread) --------------------------------------------------------------

    def pause(self) -> None:
        """Stop moving bytes both ways; connections stay open and nothing is read."""

        def do() -> None:
            self._paused = True
            for conn in self._conns:
                self._arm(conn)

        self._call(do)

    def resume(self) -> None:
        def do() -> None:
            self._paused = False
            for conn in list(self._conns):
                self._arm(conn)
                # deliver what was read just before the pause without waiting for the selector
                for pipe in (conn.up, conn.down):
                    if pipe.buf and conn.connected and not conn.closed:
                        self._flush(pipe)

        self._call(do)

    def reset_connections(self) -> None:
        """Abort every current connection with a TCP RST on both sides."""

        def do() -> None:
            for conn in list(self._conns):
                self._abort(conn)

        self._call(do)

    def refuse(self, on: bool) -> None:
        """While on, new connections are accepted and reset at once; existing ones reset now."""

        def do() -> None:
            self._refusing = on
            if on:
                for conn in list(self._conns):
                    self._abort(conn)

        self._call(do)

    def set_rate_kbps(self, kbps: float | None) -> None:
        """Limit client -> target to `kbps` kbit/s (None: unlimited), for all connections."""
        if kbps is not None and kbps <= 0:
            raise ValueError("rate must be positive (use pause() for an outage)")

        def do() -> None:
            self._rate_bps = None if kbps is None else kbps * 1000 / 8
            self._tokens, self._tokens_at = 0.0, time.monotonic()
            for conn in list(self._conns):
                self._arm(conn)

        self._call(do)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def connections_open(self) -> int:
        return len(self._conns)

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

    # -- loop thread -----------------------------------------------------------------------

    def _on_accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.connections_total += 1
            client.setblocking(False)
            if self._refusing:
                self._rst_close(client)
                continue
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            _tune(upstream)
            upstream.setblocking(False)
            conn = _Conn(client, upstream)
            self._conns.add(conn)
            err = upstream.connect_ex(self.target)
            if err in (0, errno.EISCONN):
                self._on_connected(conn)
            elif err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                self._loop.add_writer(upstream.fileno(), self._on_connected, conn)  # type: ignore[union-attr]
            else:
                self._abort(conn)

    def _on_connected(self, conn: _Conn) -> None:
        loop = self._loop
        assert loop is not None
        loop.remove_writer(conn.upstream.fileno())
        err = conn.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._abort(conn)
            return
        conn.connected = True
        self._arm(conn)

    def _arm(self, conn: _Conn) -> None:
        """Register exactly the selector interest each direction needs now."""
        if conn.closed:
            return
        loop = self._loop
        assert loop is not None
        for pipe in (conn.up, conn.down):
            if not conn.connected:
                continue  # the connect writer owns the upstream fd until then
            want_read = not self._paused and not pipe.buf and not pipe.eof
            want_write = not self._paused and bool(pipe.buf) and not pipe.rate_wait
            if want_read:
                loop.add_reader(pipe.src.fileno(), self._on_readable, pipe)
            else:
                loop.remove_reader(pipe.src.fileno())
            if want_write:
                loop.add_writer(pipe.dst.fileno(), self._on_writable, pipe)
            else:
                loop.remove_writer(pipe.dst.fileno())

    def _on_readable(self, pipe: _Pipe) -> None:
        conn = pipe.conn
        if conn.closed or self._paused:
            return
        limited = pipe.up and self._rate_bps is not None
        try:
            data = pipe.src.recv(RATE_LIMITED_CHUNK if limited else CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._abort(conn)  # RST from one side: pass it on to the other
            return
        if not data:
            pipe.eof = True
        else:
            pipe.buf += data
        self._flush(pipe)

    def _on_writable(self, pipe: _Pipe) -> None:
        if pipe.conn.closed or self._paused:
            return
        self._flush(pipe)

    def _flush(self, pipe: _Pipe) -> None:
        conn = pipe.conn
        if pipe.buf:
            allowed = len(pipe.buf)
            if pipe.up and self._rate_bps is not None:
                allowed = min(allowed, self._take_tokens())
                if allowed <= 0:
                    self._wait_tokens(pipe)
                    return
            try:
                n = pipe.dst.send(pipe.buf[:allowed])
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._abort(conn)
                return
            del pipe.buf[:n]
            if pipe.up and self._rate_bps is not None:
                self._tokens -= n
            if pipe.up:
                self.bytes_up += n
            else:
                self.bytes_down += n
        if pipe.done and not pipe.shut:
            pipe.shut = True
            with contextlib.suppress(OSError):
                pipe.dst.shutdown(socket.SHUT_WR)
        if conn.up.done and conn.down.done:
            self._close(conn, rst=False)
            return
        self._arm(conn)

    def _take_tokens(self) -> int:
        assert self._rate_bps is not None
        now = time.monotonic()
        self._tokens = min(RATE_BURST_BYTES,
                           self._tokens + (now - self._tokens_at) * self._rate_bps)
        self._tokens_at = now
        return int(self._tokens)

    def _wait_tokens(self, pipe: _Pipe) -> None:
        assert self._loop is not None and self._rate_bps is not None
        pipe.rate_wait = True
        self._arm(pipe.conn)
        need = max(1.0, min(len(pipe.buf), RATE_BURST_BYTES / 2) - self._tokens)

        def wake() -> None:
            pipe.rate_wait = False
            if not pipe.conn.closed and not self._paused:
                self._flush(pipe)

        self._loop.call_later(max(RATE_TICK_S, need / self._rate_bps), wake)

    def _unregister(self, conn: _Conn) -> None:
        loop = self._loop
        assert loop is not None
        for sock in (conn.client, conn.upstream):
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
                loop.remove_writer(sock.fileno())

    def _close(self, conn: _Conn, rst: bool) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._unregister(conn)
        self._conns.discard(conn)
        for sock in (conn.client, conn.upstream):
            if rst:
                self._rst_close(sock)
            else:
                sock.close()

    def _abort(self, conn: _Conn) -> None:
        self._close(conn, rst=True)

    @staticmethod
    def _rst_close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        sock.close()
