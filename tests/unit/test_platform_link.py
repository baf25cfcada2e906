"""The relay's platform socket on loopback: a platform that stops reading is found out
after io_timeout_s of no progress, and waiting never blocks for longer than asked."""

from __future__ import annotations

import socket
import time

import pytest

from relay.output.platform_link import PlatformLink, PlatformStalled

IO_TIMEOUT_S = 0.5


def test_a_platform_that_never_reads_is_a_stall_after_io_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        link = PlatformLink("127.0.0.1", server.getsockname()[1], ssl_context=None,
                            connect_timeout_s=2, io_timeout_s=IO_TIMEOUT_S)
        link.open()
        peer, _ = server.accept()  # accepted, never read
        try:
            link.send(b"x" * (32 << 20))  # more than any socket buffer holds
            t0 = time.monotonic()
            longest_s = 0.0
            with pytest.raises(PlatformStalled, match="took no data for 0.5 s"):
                while time.monotonic() - t0 < 30:
                    t = time.monotonic()
                    link.pump(0.05)
                    longest_s = max(longest_s, time.monotonic() - t)
            assert link.bytes_sent > 0 and link.pending_bytes > 0
            assert longest_s < 2.0  # each pump returned about when asked (generous)
            assert time.monotonic() - t0 < 15
        finally:
            link.close()
            peer.close()


def test_bytes_flow_both_ways_and_eof_is_seen() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        link = PlatformLink("127.0.0.1", server.getsockname()[1], ssl_context=None,
                            connect_timeout_s=2, io_timeout_s=IO_TIMEOUT_S)
        link.open()
        peer, _ = server.accept()
        try:
            link.send(b"hello")
            while link.pending_bytes:
                link.pump(0.05)
            assert peer.recv(5) == b"hello"
            peer.sendall(b"world")
            got = b""
            deadline = time.monotonic() + 5
            while len(got) < 5 and time.monotonic() < deadline:
                got += link.pump(0.05)
            assert got == b"world"
            peer.close()
            while not link.eof and time.monotonic() < deadline:
                link.pump(0.05)
            assert link.eof
        finally:
            link.close()
