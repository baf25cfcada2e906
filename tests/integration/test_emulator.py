"""The link emulator over real sockets on 127.0.0.1: integrity, fidelity to the trace's
capacity, outages, back-pressure, UDP drops, and the ``emulate`` command line.

The fidelity tests push bulk TCP traffic for 20 s and compare the bytes the receiver got with
the trace's capacity over the same 20 s (counted from the emulator's start, shifted by the
one-way delay, after 1 s for the queue to fill). Three of them take ~21 s each.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from linklab.emulator import LinkEmulator, LinkSpec
from linklab.traces import MTU_BYTES, Outage, Trace, load_trace
from steadycast.emulate_cli import add_parser
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
TMOBILE = REPO.parent / "shared" / "traces" / "mahimahi" / "TMobile-UMTS-driving.up"
WINDOW_S = (1.0, 21.0)  # fidelity window, seconds after start (1 s for the queue to fill)
TOLERANCE = 0.05
CHUNK = bytes(range(256)) * 256  # 64 KiB


def constant_trace(kbps: int, period_ms: int = 3000) -> Trace:
    """A Mahimahi-style trace of ``kbps``: evenly spread 1500-byte opportunities."""
    count = round(kbps * 1000 / 8 / MTU_BYTES * period_ms / 1000)
    opps = np.round(np.arange(1, count + 1) * period_ms / count).astype(np.int64)
    return Trace(f"constant-{kbps}", opps, period_ms)


@dataclass
class Sink:
    """A TCP server that keeps what each connection sent and when."""

    port: int = 0
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, bytes)
    received: dict[int, bytearray] = field(default_factory=dict)
    reply: bytes = b""  # sent back after the client's EOF, then close
    done: dict[int, asyncio.Event] = field(default_factory=dict)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = len(self.received)
        self.received[n] = bytearray()
        self.done[n] = asyncio.Event()
        try:
            while data := await reader.read(65536):
                self.arrivals.append((time.monotonic(), len(data)))
                self.received[n] += data
            if self.reply:
                writer.write(self.reply)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.done[n].set()
            writer.close()

    def bytes_between(self, t0: float, t1: float) -> int:
        return sum(n for t, n in self.arrivals if t0 < t <= t1)


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = Sink()
    server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
    s.port = server.sockets[0].getsockname()[1]
    try:
        yield s
    finally:
        server.close()


async def start_emulator(target_port: int, uplink: LinkSpec, downlink: LinkSpec | None = None,
                         protocol: str = "tcp") -> LinkEmulator:
    emu = LinkEmulator(("127.0.0.1", free_port()), ("127.0.0.1", target_port), uplink,
                       downlink, protocol="udp" if protocol == "udp" else "tcp")
    await emu.start()
    return emu


async def until(emu: LinkEmulator, t_s: float) -> None:
    """Sleep until ``t_s`` seconds after the emulator's start."""
    await asyncio.sleep(max(0.0, emu.start_time + t_s - time.monotonic()))


async def bulk_sender(port: int, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while not stop.is_set():
            writer.write(CHUNK)
            await writer.drain()
    finally:
        writer.close()


async def delivered_vs_capacity(emu: LinkEmulator, sink: Sink, senders: int = 1) -> float:
    """Bulk TCP through ``emu`` over WINDOW_S; the receiver's bytes / the trace's capacity."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(bulk_sender(emu.port, stop)) for _ in range(senders)]
    d_s = emu.uplink.delay_ms / 1000
    await until(emu, WINDOW_S[1] + d_s + 0.3)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    got = sink.bytes_between(emu.start_time + WINDOW_S[0] + d_s, emu.start_time + WINDOW_S[1] + d_s)
    capacity = emu.capacity_bytes("up", *WINDOW_S)
    assert capacity
    stats = emu.stats("up")
    assert stats.dropped_bytes == 0  # TCP: never dropped, the senders waited instead
    await emu.stop()
    return got / capacity


# -- TCP integrity --------------------------------------------------------------------------


async def exchange(emu: LinkEmulator, sink: Sink, payload: bytes) -> bytes:
    """Send ``payload``, half-close, read the reply until the far end closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    reply = await asyncio.wait_for(reader.read(-1), 30)
    writer.close()
    return reply


async def test_tcp_bytes_arrive_complete_and_in_order_both_ways(sink: Sink) -> None:
    up = os.urandom(600_000)
    sink.reply = os.urandom(400_000)
    emu = await start_emulator(sink.port, LinkSpec(constant_trace(12_000), delay_ms=10))
    try:
        reply = await exchange(emu, sink, up)
        await asyncio.wait_for(sink.done[0].wait(), 5)
        # the client's FIN reached the target (it replied), the target's FIN reached the client
        assert hashlib.sha256(sink.received[0]).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(reply).digest() == hashlib.sha256(sink.reply).digest()
        assert emu.stats("up").delivered_bytes == len(up)
        assert emu.stats("down").delivered_bytes == len(sink.reply)
    finally:
        await emu.stop()


async def test_tcp_loss_delays_bytes_like_retransmissions_but_never_corrupts_them(
        sink: Sink) -> None:
    up = os.urandom(150_000)
    emu = await start_emulator(sink.port,
                               LinkSpec(constant_trace(12_000), delay_ms=5, loss=0.1, seed=3))
    try:
        assert emu.retransmit_delay_ms == 200.0  # max(200 ms, 3 x 10 ms RTT)
        await exchange(emu, sink, up)
        assert bytes(sink.received[0]) == up
        stats = emu.stats("up")
        assert stats.lost_packets > 0 and stats.dropped_packets == 0
    finally:
        await emu.stop()


async def test_stop_closes_open_connections(sink: Sink) -> None:
    emu = await start_emulator(sink.port, LinkSpec(None, delay_ms=0))
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    writer.write(b"hello")
    await writer.drain()
    await asyncio.sleep(0.2)
    await emu.stop()
    assert await asyncio.wait_for(reader.read(-1), 5) == b""
    writer.close()
    await asyncio.wait_for(sink.done[0].wait(), 5)
    assert bytes(sink.received[0]) == b"hello"


# -- fidelity to the trace --------------------------------------------------------------------


async def test_constant_rate_trace_carries_bulk_tcp_at_its_capacity(sink: Sink) -> None:
    emu = await start_emulator(sink.port, LinkSpec(constant_trace(1000), delay_ms=20))
    capacity = emu.capacity_bytes("up", *WINDOW_S)
    assert capacity is not None and abs(capacity - 20 * 125_000) <= MTU_BYTES
    ratio = await delivered_vs_capacity(emu, sink)
    print(f"constant 1000 kbit/s: delivered {ratio:.4f} x capacity")
    assert abs(ratio - 1) < TOLERANCE, f"delivered {ratio:.3f} x capacity"


async def test_real_trace_carries_bulk_tcp_at_its_capacity(sink: Sink) -> None:
    if not TMOBILE.exists():
        pytest.skip(f"trace {TMOBILE} is missing (see shared/traces/README.md)")
    trace = load_trace(TMOBILE)  # 336..1440 kbit/s over its first 21 s
    emu = await start_emulator(sink.port, LinkSpec(trace, delay_ms=20))
    ratio = await delivered_vs_capacity(emu, sink, senders=2)
    stats = emu.stats("up")
    assert stats.capacity_bytes_per_s is not None
    assert len(stats.delivered_bytes_per_s) == len(stats.capacity_bytes_per_s) >= 21
    print(f"{trace.name}: delivered {ratio:.4f} x capacity")
    assert abs(ratio - 1) < TOLERANCE, f"delivered {ratio:.3f} x capacity"


async def test_iperf3_through_the_emulator_measures_the_trace_capacity() -> None:
    iperf3 = shutil.which("iperf3")
    if iperf3 is None:
        pytest.skip("iperf3 is not installed (Debian package iperf3; scripts/system-deps.sh)")
    server_port = free_port()
    server = await asyncio.create_subprocess_exec(
        iperf3, "-s", "-B", "127.0.0.1", "-p", str(server_port), "--forceflush",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(server.stdout.readline(), 10)
        while b"Server listening" not in line:
            line = await asyncio.wait_for(server.stdout.readline(), 10)
        emu = await start_emulator(server_port, LinkSpec(constant_trace(1000), delay_ms=20))
        try:
            # -w 32K: a small send buffer, so the test ends when the client stops; an
            # auto-tuned one holds megabytes that take tens of seconds to drain at 1 Mbit/s
            client = await asyncio.create_subprocess_exec(
                iperf3, "-c", "127.0.0.1", "-p", str(emu.port), "-t", "20", "-w", "32K", "-J",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(client.communicate(), 60)
        finally:
            await emu.stop()
        assert client.returncode == 0, err.decode() + out.decode()[-500:]
        received = json.loads(out)["end"]["sum_received"]
        ratio = received["bits_per_second"] / 1_000_000
        print(f"iperf3: {ratio:.4f} x capacity over {received['seconds']:.1f} s")
        assert abs(ratio - 1) < TOLERANCE, f"iperf3 measured {ratio:.3f} x capacity"
    finally:
        server.terminate()
        await server.wait()


async def test_connections_share_one_bottleneck(sink: Sink) -> None:
    emu = await start_emulator(sink.port, LinkSpec(constant_trace(1000), delay_ms=0))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(bulk_sender(emu.port, stop)) for _ in range(3)]
    await until(emu, 3.0)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.1)
    got = sink.bytes_between(emu.start_time + 1.0, emu.start_time + 3.0)
    await emu.stop()
    assert len(sink.received) == 3
    assert abs(got / 250_000 - 1) < 0.1  # 2 s of one 1000 kbit/s link, not three


# -- outages and back-pressure ------------------------------------------------------------------


async def test_outage_holds_bytes_and_they_arrive_after_it(sink: Sink) -> None:
    spec = LinkSpec(constant_trace(1000), delay_ms=20, outages=(Outage(0.5, 1.0),))
    emu = await start_emulator(sink.port, spec)
    try:
        r1, w1 = await asyncio.open_connection("127.0.0.1", emu.port)
        w1.write(b"before")
        await until(emu, 0.7)
        assert bytes(sink.received[0]) == b"before"
        assert emu.stats("up").no_capacity
        w1.write(b"x" * 10_000)  # sent during the outage
        await until(emu, 0.8)
        # a connection opened during the outage is accepted; its bytes wait too
        r2, w2 = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", emu.port), 0.5)
        w2.write(b"y" * 5_000)
        await until(emu, 1.4)
        assert bytes(sink.received[0]) == b"before"
        assert bytes(sink.received.get(1, b"")) == b""
        assert emu.stats("up").queued_bytes == 15_000  # held, not dropped
        await until(emu, 2.5)
        assert bytes(sink.received[0]) == b"before" + b"x" * 10_000
        assert bytes(sink.received[1]) == b"y" * 5_000
        after = [t - emu.start_time for t, _ in sink.arrivals[1:]]
        assert min(after) >= 1.5 + 0.02  # nothing before the outage's end + the delay
        w1.write(b"after")  # the connections stayed open through the outage
        await until(emu, 2.8)
        assert bytes(sink.received[0]).endswith(b"after")
        assert not emu.stats("up").no_capacity
        for w in (w1, w2):
            w.close()
    finally:
        await emu.stop()


async def test_full_queue_holds_the_sender_back_without_dropping(sink: Sink) -> None:
    payload = os.urandom(600_000)
    emu = await start_emulator(
        sink.port, LinkSpec(constant_trace(2000), delay_ms=10, queue_bytes=15_000))
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)  # no auto-tuning
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", emu.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        t0 = time.monotonic()
        writer.write(payload)
        await asyncio.sleep(0.5)
        assert writer.transport.get_write_buffer_size() > 150_000  # waiting at the sender
        await writer.drain()
        # at 250 kB/s, 600 kB only leave the sender as fast as the link drains them
        assert time.monotonic() - t0 > 1.0
        writer.write_eof()
        await asyncio.wait_for(sink.done[0].wait(), 10)
        assert hashlib.sha256(sink.received[0]).digest() == hashlib.sha256(payload).digest()
        stats = emu.stats("up")
        assert stats.dropped_bytes == 0
        assert 12_000 <= stats.peak_queued_bytes <= 15_000
        writer.close()
    finally:
        await emu.stop()


# -- faults on demand ---------------------------------------------------------------------------


async def finished(sink: Sink, n: int, timeout_s: float = 5.0) -> None:
    """Wait until the sink's connection ``n`` (0 = the first it accepted) has ended."""
    deadline = time.monotonic() + timeout_s
    while n not in sink.done:
        assert time.monotonic() < deadline, f"the sink never got connection {n}"
        await asyncio.sleep(0.01)
    await asyncio.wait_for(sink.done[n].wait(), max(0.0, deadline - time.monotonic()))


async def test_outage_on_demand_holds_bytes_until_it_ends(sink: Sink) -> None:
    emu = await start_emulator(sink.port, LinkSpec(None, delay_ms=0, queue_bytes=8 * MTU_BYTES))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
        writer.write(b"before")
        await asyncio.sleep(0.2)
        emu.begin_outage()
        assert emu.in_outage and emu.stats("up").no_capacity
        writer.write(b"x" * 100_000)  # more than the queue: the rest waits at the sender
        await asyncio.sleep(0.5)
        assert bytes(sink.received[0]) == b"before"
        assert emu.stats("up").queued_bytes <= 8 * MTU_BYTES
        assert emu.connections_open == 1
        emu.end_outage()
        assert not emu.in_outage
        await writer.drain()
        writer.write_eof()
        await finished(sink, 0)
        assert bytes(sink.received[0]) == b"before" + b"x" * 100_000
        assert emu.stats("up").dropped_bytes == 0
        writer.close()
    finally:
        await emu.stop()


async def test_reset_and_refuse_on_demand(sink: Sink) -> None:
    emu = await start_emulator(sink.port, LinkSpec(None, delay_ms=0))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
        writer.write(b"hi")
        await asyncio.sleep(0.2)
        emu.reset_connections()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(10), 5)
        writer.close()
        emu.refuse(True)
        assert emu.refusing
        with pytest.raises(ConnectionResetError):  # noqa: PT012 - at connect or at the read
            r2, w2 = await asyncio.open_connection("127.0.0.1", emu.port)
            await asyncio.wait_for(r2.read(10), 5)
        emu.refuse(False)
        r3, w3 = await asyncio.open_connection("127.0.0.1", emu.port)
        w3.write(b"back")
        w3.write_eof()
        await finished(sink, 1)  # the refused one never reached the target
        assert bytes(sink.received[1]) == b"back"
        assert emu.connections_total == 3
        w3.close()
    finally:
        await emu.stop()


async def test_a_new_trace_from_now_on(sink: Sink) -> None:
    emu = await start_emulator(sink.port, LinkSpec(None, delay_ms=0))
    try:
        emu.set_trace("up", constant_trace(800))  # 100 kB/s
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
        t0 = time.monotonic()
        writer.write(b"r" * 200_000)
        writer.write_eof()
        await finished(sink, 0, 10.0)
        assert 1.7 < time.monotonic() - t0 < 3.0  # 2 s at the new rate
        assert bytes(sink.received[0]) == b"r" * 200_000
        writer.close()
    finally:
        await emu.stop()


# -- UDP --------------------------------------------------------------------------------------


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.got: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.got.append(data)
        if self.echo and self.transport is not None:
            self.transport.sendto(b"re:" + data, addr)


async def udp_pair(spec: LinkSpec) -> tuple[LinkEmulator, Datagrams, Datagrams]:
    loop = asyncio.get_running_loop()
    _, target = await loop.create_datagram_endpoint(lambda: Datagrams(echo=True),
                                                    local_addr=("127.0.0.1", 0))
    assert target.transport is not None
    port = target.transport.get_extra_info("sockname")[1]
    emu = await start_emulator(port, spec, protocol="udp")
    _, client = await loop.create_datagram_endpoint(
        lambda: Datagrams(echo=False), remote_addr=("127.0.0.1", emu.port))
    return emu, target, client


def close_udp(*sides: Datagrams) -> None:
    for side in sides:
        if side.transport is not None:
            side.transport.close()


async def send_paced(client: Datagrams, datagrams: list[bytes], gap_s: float) -> None:
    assert client.transport is not None
    for data in datagrams:
        client.transport.sendto(data)
        if gap_s:
            await asyncio.sleep(gap_s)


async def test_udp_datagrams_pass_both_ways() -> None:
    emu, target, client = await udp_pair(LinkSpec(constant_trace(4000), delay_ms=10))
    try:
        sent = [f"d{i}".encode() * 50 for i in range(20)]
        await send_paced(client, sent, 0.005)
        await asyncio.sleep(0.5)
        assert target.got == sent
        assert client.got == [b"re:" + d for d in sent]
    finally:
        close_udp(target, client)
        await emu.stop()


async def test_udp_loss_drops_datagrams_at_its_rate() -> None:
    emu, target, client = await udp_pair(LinkSpec(None, delay_ms=5, loss=0.3, seed=5))
    try:
        await send_paced(client, [i.to_bytes(4, "big") for i in range(300)], 0.001)
        await asyncio.sleep(0.3)
        lost = emu.stats("up").lost_packets
        assert len(target.got) == 300 - lost
        assert 0.2 < lost / 300 < 0.4
        assert [int.from_bytes(d, "big") for d in target.got] == sorted(
            int.from_bytes(d, "big") for d in target.got)
    finally:
        close_udp(target, client)
        await emu.stop()


async def test_udp_queue_overflow_drops_datagrams() -> None:
    # one opportunity every 100 ms; a burst of 30 finds room for 5
    slow = Trace("slow", np.array([100], dtype=np.int64), 100)
    emu, target, client = await udp_pair(LinkSpec(slow, delay_ms=0, queue_packets=5))
    try:
        await send_paced(client, [bytes([i]) * 1000 for i in range(30)], 0.0)
        await asyncio.sleep(1.0)
        stats = emu.stats("up")
        assert stats.dropped_packets >= 20
        assert len(target.got) + stats.dropped_packets == 30
        assert stats.peak_queued_packets == 5
    finally:
        close_udp(target, client)
        await emu.stop()


# -- the command line -------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="steadycast")
    add_parser(p.add_subparsers(dest="command"))
    return p


def run_cli(argv: list[str]) -> int:
    args = parser().parse_args(["emulate", *argv])
    result: int = args.func(args)
    return result


def test_emulate_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["emulate", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--trace", "--listen", "--target", "--delay-ms", "--queue-packets",
                   "--queue-bytes", "--loss", "--outages", "--seed", "--scale", "--downlink",
                   "--udp", "--duration"):
        assert option in text
    assert "default 40" in text and "default 100" in text


@pytest.mark.parametrize(("extra", "words"), [
    ({"--trace": "/nonexistent/trace.up"}, "cannot read trace"),
    ({"--listen": "nowhere"}, "--listen 'nowhere': expected HOST:PORT"),
    ({"--outages": "soon"}, "--outages: outage spec: bad part 'soon'"),
    ({"--loss": "1.5"}, "--loss 1.5"),
    ({"--queue-bytes": "100"}, "--queue-bytes 100: must be >= 1500"),
])
def test_emulate_bad_argument_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: dict[str, str],
        words: str) -> None:
    good = tmp_path / "ok.up"
    good.write_text("10\n20\n")
    options = {"--trace": str(good), "--listen": "127.0.0.1:0", "--target": "127.0.0.1:9",
               **extra}
    assert run_cli([x for item in options.items() for x in item]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


def test_emulate_bad_trace_file_names_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.up"
    bad.write_text("10\n5\n")
    assert run_cli(["--trace", str(bad), "--listen", "127.0.0.1:0",
                    "--target", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:2:" in err


CLI = [sys.executable, "-c",
       "import sys; from steadycast.emulate_cli import main; sys.exit(main())"]


def test_emulate_runs_for_its_duration_with_status_lines(tmp_path: Path) -> None:
    trace = tmp_path / "flat.up"
    trace.write_text("\n".join(str(t) for t in range(12, 1201, 12)) + "\n")
    proc = subprocess.run(
        [*CLI, "emulate", "--trace", str(trace), "--listen", "127.0.0.1:0",
         "--target", f"127.0.0.1:{free_port()}", "--duration", "1.2"],
        cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("emulate: listening on port")
    assert re.search(r"up 0/(99\d|100\d) kbit/s queue 0 pkt 0 B outage off", lines[-1])
    assert "down 0/unlimited kbit/s" in lines[-1]


@pytest.mark.timeout(60)
def test_emulate_exits_0_on_ctrl_c(tmp_path: Path) -> None:
    trace = tmp_path / "flat.up"
    trace.write_text("12\n24\n")
    proc = subprocess.Popen(
        [*CLI, "emulate", "--trace", str(trace), "--listen", "127.0.0.1:0",
         "--target", f"127.0.0.1:{free_port()}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("emulate: listening on port")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
