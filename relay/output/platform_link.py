"""The relay's own connection to one platform: TCP, optionally TLS, never blocking for long.

The socket is non-blocking and driven by ``select`` with short waits; TLS runs in memory
(``ssl.SSLObject`` over two ``MemoryBIO``), so one thread both writes and reads without
ever being stuck in a call that holds the interpreter. Every wait is bounded:

* connecting (TCP, then the TLS handshake) gives up after ``connect_timeout_s``;
* once bytes are waiting to go, no progress for ``io_timeout_s`` is a
  :class:`PlatformStalled` (the platform has stopped reading: close it and reconnect).

Bytes received are handed back as they come; what they mean is the RTMP publisher's
business (relay/rtmp/publisher.py). Certificates are checked against the system's CA store
by default (``ssl.create_default_context``: chain and host name), or against a PEM
``ca_file`` for a self-hosted platform; ``verify=False`` turns checking off (the caller
warns).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from pathlib import Path

RECV_BYTES = 64 * 1024
SEND_BYTES = 256 * 1024  # at most this much handed to the kernel per send call


class PlatformStalled(OSError):
    """The platform took none of the bytes waiting for it for ``io_timeout_s``."""


class CertificateNotTrusted(OSError):
    """The platform's TLS certificate did not verify; the stream key was not sent."""


def client_ssl_context(ca_file: Path | None = None, verify: bool = True) -> ssl.SSLContext:
    """A TLS client context: the system CA store (or only ``ca_file``), host names checked.
    Raises ssl.SSLError / OSError when ``ca_file`` cannot be read as PEM certificates."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class PlatformLink:
    def __init__(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None,
                 connect_timeout_s: float, io_timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.io_timeout_s = io_timeout_s
        self.eof = False
        self.bytes_sent = 0  # to the kernel, after TLS
        self._ctx = ssl_context
        self._sock: socket.socket | None = None
        self._tls: ssl.SSLObject | None = None
        self._bio_in = ssl.MemoryBIO()
        self._bio_out = ssl.MemoryBIO()
        self._pending = bytearray()  # bytes for the socket (after TLS)
        self._progress_at = time.monotonic()

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    # -- opening ---------------------------------------------------------------------------

    def open(self) -> None:
        """Connect (and complete TLS) within ``connect_timeout_s``; OSError otherwise."""
        deadline = time.monotonic() + self.connect_timeout_s
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        self._sock = sock
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ctx is None:
            return
        self._tls = self._ctx.wrap_bio(self._bio_in, self._bio_out, server_hostname=self.host)
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError as exc:
                raise CertificateNotTrusted(
                    f"TLS certificate of {self.host} not trusted "
                    f"({exc.verify_message or exc.reason}); the stream key was not sent. "
                    "For a self-hosted platform set ca_file, or tls_verify = false") from None
            self._take_tls_output()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"TLS handshake with {self.host} took over "
                                   f"{self.connect_timeout_s:g} s")
            self._io(min(left, 0.2), handshake=True)
            if self.eof:
                raise ConnectionError(f"{self.host} closed the connection during the TLS "
                                      "handshake")
        self._take_tls_output()

    # -- moving bytes ----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes for the platform; :meth:`pump` moves them."""
        if not data:
            return
        if not self._pending:
            self._progress_at = time.monotonic()  # the stall clock starts with waiting bytes
        if self._tls is not None:
            self._tls.write(data)
            self._take_tls_output()
        else:
            self._pending += data

    def pump(self, wait_s: float) -> bytes:
        """Write what the socket takes and read what has arrived, waiting at most
        ``wait_s`` for either; returns the bytes received (TLS removed). Raises
        PlatformStalled when waiting bytes made no progress for ``io_timeout_s``."""
        received = self._io(wait_s)
        if self._pending and time.monotonic() - self._progress_at > self.io_timeout_s:
            raise PlatformStalled(
                f"the platform took no data for {self.io_timeout_s:g} s "
                f"({len(self._pending)} bytes waiting)")
        return received

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    # -- inside ----------------------------------------------------------------------------

    def _take_tls_output(self) -> None:
        out = self._bio_out.read()
        if out:
            self._pending += out

    def _io(self, wait_s: float, handshake: bool = False) -> bytes:
        sock = self._sock
        if sock is None:
            raise ConnectionError("not connected")
        want_write = [sock] if self._pending else []
        readable, writable, _ = select.select([sock], want_write, [], max(0.0, wait_s))
        if writable:
            try:
                n = sock.send(self._pending[:SEND_BYTES])
            except (BlockingIOError, InterruptedError):
                n = 0
            if n:
                del self._pending[:n]
                self.bytes_sent += n
                self._progress_at = time.monotonic()
        if not readable:
            return b""
        try:
            raw = sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return b""
        if not raw:
            self.eof = True
            if self._tls is not None:
                self._bio_in.write_eof()
            return b""
        if self._tls is None:
            return raw
        self._bio_in.write(raw)
        if handshake:
            return b""
        plain = bytearray()
        while True:
            try:
                chunk = self._tls.read(RECV_BYTES)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.eof = True
                break
            if not chunk:
                break
            plain += chunk
        self._take_tls_output()  # TLS may answer (key updates, tickets)
        return bytes(plain)
