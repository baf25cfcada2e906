"""``steadycast emulate``: the link emulator (``linklab.emulator``) as a command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace

from linklab.emulator import (
    DELAY_MS_DEFAULT,
    QUEUE_PACKETS_DEFAULT,
    RETRANSMIT_MIN_MS,
    RETRANSMIT_RTT_FACTOR,
    Direction,
    EmulatorError,
    LinkEmulator,
    LinkSpec,
)
from linklab.link_model import LinkModelError
from linklab.outages import SPEC_HELP, OutageSpecError, parse_outages
from linklab.traces import MTU_BYTES, TraceError, load_trace

STATUS_INTERVAL_S = 5.0
OUTAGE_HORIZON_S = 3600.0  # without --duration, random outages are drawn over the first hour
EXIT_USAGE = 2

def _host_port(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise EmulatorError(f"{option} {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9000")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``emulate`` command to a subparsers object (its handler is ``args.func``)."""
    p = sub.add_parser(
        "emulate", help="replay a link trace between a client and a server (TCP or UDP proxy)",
        description="Forward TCP connections (or UDP datagrams) to a target through an "
                    "emulated weak link: "
                    "a capacity trace (Mahimahi delivery opportunities of 1500 bytes, or a "
                    "Pensieve/CSV rate trace), a drop-tail queue, random loss, a fixed delay "
                    "and outages. The trace starts when the emulator starts and loops; all "
                    "connections share one link per direction. TCP bytes are never dropped: "
                    "when the queue is full the sender waits, and a 'lost' packet arrives "
                    "late as a retransmission would. Prints a status line every "
                    f"{STATUS_INTERVAL_S:g} s; Ctrl-C stops it.")
    p.add_argument("--trace", required=True, metavar="FILE",
                   help="uplink capacity trace (client -> target): a Mahimahi file, a Pensieve "
                        "'cooked' file or seconds,kbps CSV; 'none' for no rate limit")
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="where clients connect (port 0 picks a free one)")
    p.add_argument("--target", required=True, metavar="HOST:PORT",
                   help="the server behind the link (e.g. the relay)")
    p.add_argument("--delay-ms", type=float, default=DELAY_MS_DEFAULT, metavar="MS",
                   help="one-way propagation delay in each direction "
                        "(default %(default)g: ~80 ms RTT, a 3G/4G path before queueing)")
    p.add_argument("--queue-packets", type=int, default=QUEUE_PACKETS_DEFAULT, metavar="N",
                   help="bottleneck queue limit in packets, each direction (default "
                        "%(default)s = 150 kB: 1.2 s at 1 Mbit/s; cellular links buffer "
                        "deeply). TCP senders wait when it is full; UDP datagrams are dropped")
    p.add_argument("--queue-bytes", type=int, metavar="N",
                   help="also limit the queue in bytes (default: no byte limit)")
    p.add_argument("--loss", type=float, default=0.0, metavar="P",
                   help="random loss probability on the uplink, 0..1 (default %(default)g); "
                        "UDP: dropped; TCP: delayed like a retransmission, "
                        f"max({RETRANSMIT_MIN_MS:g} ms, {RETRANSMIT_RTT_FACTOR:g} x RTT)")
    p.add_argument("--outages", default="none", metavar="SPEC",
                   help="outages with no capacity in either direction, seconds from start: "
                        f"{SPEC_HELP} (default %(default)s). Without --duration, random "
                        f"outages are drawn over the first {OUTAGE_HORIZON_S:g} s")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed for random loss and random outages (default %(default)s)")
    p.add_argument("--scale", type=float, default=1.0, metavar="X",
                   help="multiply the traces' capacity by X, e.g. 0.5 (default %(default)g)")
    p.add_argument("--downlink", metavar="FILE",
                   help="downlink capacity trace (target -> client); default: no rate limit, "
                        "same delay, queue and outages")
    p.add_argument("--udp", action="store_true",
                   help="forward UDP datagrams instead of TCP connections (replies go to the "
                        "most recent client)")
    p.add_argument("--duration", type=float, metavar="S",
                   help="stop after S seconds (default: run until Ctrl-C)")
    p.set_defaults(func=cmd_emulate)


def emulator_from_args(args: argparse.Namespace) -> tuple[LinkEmulator, float | None]:
    """Build the emulator an ``emulate`` command line asks for (and its duration).

    Raises EmulatorError, TraceError, OutageSpecError or OSError with a message naming the
    option at fault."""
    listen = _host_port(args.listen, "--listen")
    target = _host_port(args.target, "--target")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise EmulatorError(f"--duration {args.duration:g}: must be a number of seconds > 0")
    if not (math.isfinite(args.scale) and args.scale > 0):
        raise EmulatorError(f"--scale {args.scale:g}: must be > 0")
    if not 0.0 <= args.loss < 1.0:
        raise EmulatorError(f"--loss {args.loss:g}: must be within [0, 1)")
    if args.queue_packets is not None and args.queue_packets < 1:
        raise EmulatorError(f"--queue-packets {args.queue_packets}: must be >= 1")
    if args.queue_bytes is not None and args.queue_bytes < MTU_BYTES:
        raise EmulatorError(f"--queue-bytes {args.queue_bytes}: must be >= {MTU_BYTES}")
    if not (math.isfinite(args.delay_ms) and args.delay_ms >= 0):
        raise EmulatorError(f"--delay-ms {args.delay_ms:g}: must be >= 0")
    up_trace = None if args.trace == "none" else load_trace(args.trace, scale=args.scale)
    down_trace = None
    if args.downlink and args.downlink != "none":
        down_trace = load_trace(args.downlink, scale=args.scale)
    horizon = args.duration if args.duration is not None else OUTAGE_HORIZON_S
    try:
        outages = tuple(parse_outages(args.outages, duration_s=horizon, seed=args.seed))
    except OutageSpecError as exc:
        raise OutageSpecError(f"--outages: {exc}") from None
    uplink = LinkSpec(trace=up_trace, delay_ms=args.delay_ms, queue_packets=args.queue_packets,
                      queue_bytes=args.queue_bytes, loss=args.loss, outages=outages,
                      seed=args.seed)
    downlink = replace(uplink, trace=down_trace, loss=0.0, seed=args.seed + 1)
    emulator = LinkEmulator(listen, target, uplink, downlink,
                            protocol="udp" if args.udp else "tcp")
    return emulator, args.duration


def status_line(emulator: LinkEmulator, since_s: float, until_s: float,
                delivered_before: dict[Direction, int]) -> str:
    """One line: per direction, delivered vs capacity over ``(since_s, until_s]``, queue and
    outage state. ``delivered_before`` holds each direction's delivered bytes at ``since_s``
    and is updated."""
    parts = [f"t={until_s:.0f}s"]
    span = max(until_s - since_s, 1e-9)
    directions: tuple[Direction, ...] = ("up", "down")
    for d in directions:
        s = emulator.stats(d)
        delivered_kbps = (s.delivered_bytes - delivered_before.get(d, 0)) * 8 / span / 1000
        delivered_before[d] = s.delivered_bytes
        capacity = emulator.capacity_bytes(d, since_s, until_s)
        cap = "unlimited" if capacity is None else f"{capacity * 8 / span / 1000:.0f}"
        parts.append(f"{d} {delivered_kbps:.0f}/{cap} kbit/s queue {s.queued_packets} "
                     f"pkt {s.queued_bytes} B outage {'on' if s.no_capacity else 'off'}")
        if s.dropped_packets or s.lost_packets:
            parts[-1] += f" dropped {s.dropped_packets} lost {s.lost_packets}"
    return " | ".join(parts)


async def run_emulator(emulator: LinkEmulator, duration_s: float | None,
                       status_interval_s: float = STATUS_INTERVAL_S) -> None:
    """Run until ``duration_s`` has passed, SIGINT or SIGTERM; one status line per interval."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    await emulator.start()
    print(f"emulate: listening on port {emulator.port}, forwarding to "
          f"{emulator.target[0]}:{emulator.target[1]} ({emulator.protocol})", flush=True)
    before: dict[Direction, int] = {}
    last_s = 0.0
    try:
        while not stop.is_set():
            elapsed = emulator.elapsed_s()
            wake_s = last_s + status_interval_s
            if duration_s is not None:
                wake_s = min(wake_s, duration_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, wake_s - elapsed))
            now_s = emulator.elapsed_s()
            if now_s - last_s >= 0.5:
                print(status_line(emulator, last_s, now_s, before), flush=True)
                last_s = now_s
            if duration_s is not None and now_s >= duration_s:
                break
    finally:
        await emulator.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)


def cmd_emulate(args: argparse.Namespace) -> int:
    """The ``emulate`` command: 0 when stopped by Ctrl-C or --duration, 2 on a bad argument."""
    try:
        emulator, duration = emulator_from_args(args)
    except (EmulatorError, LinkModelError, TraceError, OutageSpecError) as exc:
        print(f"steadycast emulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"steadycast emulate: cannot read trace: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"steadycast emulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(run_emulator(emulator, duration))
    except OSError as exc:
        print(f"steadycast emulate: cannot listen on {args.listen} or reach {args.target}: "
              f"{exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m linklab.emulator emulate --trace ...`` (the same as ``steadycast``)."""
    parser = argparse.ArgumentParser(prog="python -m linklab.emulator")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
