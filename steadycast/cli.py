"""The ``steadycast`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.redact import REDACTOR, install_log_redaction

if TYPE_CHECKING:
    from encoder.client import EncodeSummary, UplinkClient
    from relay.settings import RelaySettings

log = logging.getLogger("steadycast")

EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNTRUSTED = 4  # encode: the relay's TLS certificate did not verify
EXIT_SPOOL_OVERFLOW = 5  # encode: all acknowledged, but the full spool dropped new frames
MIN_KBPS_DEFAULT = 150  # video; with 64 kbit/s of audio, a 0.3 Mbit/s link still carries it
MAX_KBPS_DEFAULT = 2500
DEMO_TOKEN = "demo-token-change-me"  # the public fallback in steadycast/default_relay.toml
LOCAL_HOSTS = ("localhost", "localhost.")
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def version() -> str:
    """The installed package's version (importlib.metadata), else pyproject.toml's (a source
    tree that was never installed), else ``unknown``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("steadycast")
    except PackageNotFoundError:
        pass
    import tomllib

    try:
        found = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["version"]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        return "unknown"
    return str(found)


def listens_beyond_localhost(host: str) -> bool:
    """Whether a relay listening on ``host`` can be reached from another machine: anything
    but a loopback address (127.0.0.0/8, ::1) or ``localhost`` (0.0.0.0 and :: are all)."""
    if host.lower() in LOCAL_HOSTS:
        return False
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return True  # a host name: whatever it resolves to, it is meant for others


def demo_token_warning(settings: RelaySettings) -> str | None:
    """The warning for a relay that listens beyond localhost while a stream still has the
    built-in demo token (public: it is in the README); None when there is nothing to say.
    Names the streams, never the token."""
    streams = [s.name for s in settings.streams if s.token == DEMO_TOKEN]
    if not streams or not listens_beyond_localhost(settings.host):
        return None
    return (f"SECURITY: stream(s) {', '.join(streams)} still use the built-in demo token, which is "
            f"public, and the relay listens on {settings.host}, beyond localhost: anyone who "
            "can reach it can publish. Set STEADYCAST_DEMO_TOKEN (or the stream's token in "
            "your config) to a secret of your own, or listen on 127.0.0.1")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    install_log_redaction()


# --- relay ---------------------------------------------------------------------------------
# The relay runs on the C library's allocator, not Python's small-object arenas: an arena goes
# back to the OS only when every object in it is gone, so after a burst of connections or a
# long gap a few survivors held the relay ~14% above its resting RSS; with glibc's malloc (and
# `relay.heap_trim` after growth) it comes back within 10% (issue 13, fault 5; why in
# docs/relay.md, figures in docs/benchmarks.md). Relay CPU per transcoded stream: the same
# within noise.
RELAY_ALLOCATOR = "malloc"


def _reexec_with_relay_allocator() -> None:
    """Start this same command again (same pid: exec) with PYTHONMALLOC=RELAY_ALLOCATOR,
    unless PYTHONMALLOC is already set (by the user, or by the exec itself)."""
    if os.environ.get("PYTHONMALLOC"):
        return
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              {**os.environ, "PYTHONMALLOC": RELAY_ALLOCATOR})


def cmd_relay(args: argparse.Namespace) -> int:
    _reexec_with_relay_allocator()
    from aiohttp import web

    from relay.app import build_app
    from relay.tls import server_ssl_context
    from steadycast.config import ConfigError, load_relay_config

    try:
        settings = load_relay_config(Path(args.config) if args.config else None)
    except ConfigError as exc:
        print(f"steadycast relay: bad config, not starting:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    for secret in settings.secrets():
        REDACTOR.add(secret)
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        if not port.isdigit() or not host:
            print(f"steadycast relay: --listen {args.listen!r} is not HOST:PORT", file=sys.stderr)
            return EXIT_USAGE
        from dataclasses import replace

        settings = replace(settings, host=host.strip("[]"), port=int(port))
    ssl_ctx = server_ssl_context(settings.tls, settings.state_dir, settings.host)
    scheme = "https" if ssl_ctx else "http"
    from monitor.store import StoreError

    try:
        app = build_app(settings)
    except StoreError as exc:
        print(f"steadycast relay: cannot open the monitor database, not starting: {exc}; set "
              "[relay] monitor_db to a writable path", file=sys.stderr)
        return EXIT_USAGE
    log.info("relay listening on %s://%s:%d with %d stream(s): %s", scheme, settings.host,
             settings.port, len(settings.streams), ", ".join(s.name for s in settings.streams))
    warning = demo_token_warning(settings)
    if warning:
        log.warning("%s", warning)
    web.run_app(app, host=settings.host, port=settings.port, ssl_context=ssl_ctx,
                print=None, access_log=None, shutdown_timeout=5)
    return 0


# --- encode --------------------------------------------------------------------------------
def cmd_encode(args: argparse.Namespace) -> int:
    from encoder.client import PublishRefused, RelayNotTrusted, UplinkClient
    from encoder.settings import EncoderSettings
    from encoder.sources import SourceError
    from uplink.media import parse_resolution

    token = args.token or os.environ.get("STEADYCAST_TOKEN", "")
    if token.startswith("env:"):
        token = os.environ.get(token[4:], "")
    if not token:
        print("steadycast encode: no publish token: pass --token or set STEADYCAST_TOKEN",
              file=sys.stderr)
        return EXIT_USAGE
    REDACTOR.add(token)
    try:
        width, height = parse_resolution(args.resolution)
    except ValueError:
        print(f"steadycast encode: --resolution {args.resolution!r} must be WIDTHxHEIGHT with "
              "even numbers, e.g. 1280x720", file=sys.stderr)
        return EXIT_USAGE
    if not args.relay.startswith(("http://", "https://")):
        print(f"steadycast encode: --relay {args.relay!r} must start with http:// or https://",
              file=sys.stderr)
        return EXIT_USAGE
    if args.framecode and not (args.source == "testpattern" or args.source.startswith("file:")):
        print(f"steadycast encode: --framecode draws over a file:PATH source (the test pattern "
              f"always has it), not over {args.source!r}", file=sys.stderr)
        return EXIT_USAGE
    if args.ca_file and args.insecure:
        print("steadycast encode: --ca-file and --insecure exclude each other: --ca-file checks "
              "the relay's certificate, --insecure does not", file=sys.stderr)
        return EXIT_USAGE
    start_kbps = args.start_kbps if args.start_kbps is not None else args.kbps
    # unset bounds make room for the start bitrate; bounds given explicitly must hold it
    min_kbps = args.min_kbps if args.min_kbps is not None else min(MIN_KBPS_DEFAULT, start_kbps)
    max_kbps = args.max_kbps if args.max_kbps is not None else max(MAX_KBPS_DEFAULT, start_kbps)
    if not min_kbps <= start_kbps <= max_kbps:
        print(f"steadycast encode: the start bitrate {start_kbps} kbit/s must lie within "
              f"--min-kbps {min_kbps} and --max-kbps {max_kbps}", file=sys.stderr)
        return EXIT_USAGE
    settings = EncoderSettings(
        relay_url=args.relay, stream=args.stream, token=token, source=args.source,
        audio=args.audio, abr=args.abr, start_kbps=start_kbps, min_kbps=min_kbps,
        max_kbps=max_kbps, fps_floor_kbps=args.fps_floor_kbps,
        width=width, height=height, fps=args.fps,
        duration_s=args.duration, title=args.title, x264_preset=args.preset,
        verify_tls=not args.insecure,
        ca_file=Path(args.ca_file).expanduser() if args.ca_file else None,
        framecode=args.framecode, spool_memory_mb=args.spool_memory_mb,
        spool_disk_mb=args.spool_disk_mb,
        spool_dir=Path(args.spool_dir).expanduser() if args.spool_dir else None,
        record_path=Path(args.record).expanduser() if args.record else None,
        record_kbps=args.record_kbps, quiet=args.quiet, status_interval_s=args.status_interval,
        metrics_port=args.metrics_port, metrics_host=args.metrics_host,
        events_path=Path(args.events).expanduser() if args.events else None)
    try:
        client = UplinkClient(settings)  # a bad --ca-file: OSError
        summary = asyncio.run(_run_until_signal(client))
    except SourceError as exc:
        print(f"steadycast encode: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PublishRefused as exc:
        print(f"steadycast encode: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except RelayNotTrusted as exc:
        print(f"steadycast encode: {exc}", file=sys.stderr)
        return EXIT_UNTRUSTED
    except (ValueError, OSError) as exc:  # a bad --record path, a metrics port in use, ...
        print(f"steadycast encode: {REDACTOR.scrub(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        print(f"steadycast encode: {REDACTOR.scrub(str(exc))}", file=sys.stderr)
        return 1
    print(summary.line(), flush=True)
    if not summary.all_acked:
        return 1
    if summary.dropped_video_frames or summary.dropped_units:
        print(f"steadycast encode: the spool was full: {summary.dropped_video_frames} video "
              f"frames were dropped and are missing from the relay's recording (raise "
              f"--spool-disk-mb; the --record copy, if any, has them)", file=sys.stderr)
        return EXIT_SPOOL_OVERFLOW
    return 0


async def _run_until_signal(client: UplinkClient) -> EncodeSummary:
    task = asyncio.ensure_future(client.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        raise SystemExit(130) from None


# --- the parser ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="steadycast",
        description="Livestream over weak, outage-prone links: an adaptive encoder, a buffering "
                    "relay that keeps every platform session open through outages, and tools "
                    "to measure the link.",
    )
    p.add_argument("--version", action="version", version=f"steadycast {version()}",
                   help="print the version and exit")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="how much to log on stderr (default: info)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser(
        "relay", help="run the buffering relay (ingest, playout buffer, platform outputs)",
        description="Run the relay: accepts one upload per stream over the uplink protocol "
                    "(WebSocket /ingest/STREAM), delays it by buffer_ms, re-encodes it to one "
                    "constant profile and pushes it to every destination in the config, "
                    "showing a 'reconnecting' slate while the uplink is away. Also serves "
                    "/api/streams, /metrics and /healthz.")
    r.add_argument("--config", metavar="FILE",
                   help="relay config (TOML); default: the embedded config (stream 'demo', "
                        "localhost only, recording only); see configs/relay.toml")
    r.add_argument("--listen", metavar="HOST:PORT",
                   help="override [relay] listen from the config")
    r.set_defaults(func=cmd_relay)

    from encoder.abr import names as abr_names
    from encoder.settings import (
        RECORD_KBPS_DEFAULT,
        SPOOL_DISK_MB_DEFAULT,
        SPOOL_MEMORY_MB_DEFAULT,
    )

    e = sub.add_parser(
        "encode", help="capture, encode and send a stream to a relay, adapting to the link",
        description="Capture a source, encode H.264 + AAC and send it to the relay. The video "
                    "bitrate follows the link (--abr); below the resolution's floor the frame "
                    "rate is lowered instead of the picture falling apart. Reconnects on its "
                    "own (first retry within 0.5 s, at most 2 s apart) and keeps every byte "
                    "the relay has not acknowledged (in memory, then on disk), so nothing is "
                    "lost; after an outage longer than the relay's buffer the live edge is "
                    "sent first and the rest follows for the relay's recording.",
        epilog="Exit status: 0 the stream ended and the relay acknowledged everything; "
               "1 it ended with media unacknowledged, or capture failed; 2 a bad option, "
               "source or file; 3 the relay refused the stream (wrong token, unknown "
               "stream); 4 the relay's TLS certificate did not verify (see --ca-file, "
               "--insecure); 5 everything held was acknowledged, but the spool was full for "
               "a while and new frames were dropped; 130 interrupted (Ctrl-C).",
    )
    e.add_argument("--relay", required=True, metavar="URL",
                   help="the relay's base URL, e.g. http://relay.example:8080")
    e.add_argument("--stream", required=True, help="stream name configured at the relay")
    e.add_argument("--token", metavar="TOKEN",
                   help="publish token (or env:NAME to read it from a variable); default: "
                        "$STEADYCAST_TOKEN. Prefer the variable: arguments show in 'ps'")
    g = e.add_argument_group("source")
    g.add_argument("--source", default="testpattern",
                   help="'testpattern' (moving picture with frame number and capture time), "
                        "'file:PATH' (looped) or 'camera:N' (camera number or /dev/videoN; "
                        "reconnected on its own if unplugged); default: %(default)s")
    g.add_argument("--audio", default="auto",
                   help="'none' (a silent track), 'tone' (a beep), 'file' (the file source's "
                        "audio) or 'device:NAME' (e.g. device:default, through PulseAudio or "
                        "ALSA); auto (the default): tone for testpattern, file for file:, "
                        "none for camera:")
    g.add_argument("--resolution", default="1280x720",
                   help="WIDTHxHEIGHT, constant for the session (default %(default)s)")
    g.add_argument("--fps", type=int, default=30, help="frames per second (default %(default)s)")
    g.add_argument("--framecode", action="store_true",
                   help="also draw the machine-readable frame number and capture time band "
                        "over a file:PATH source, for measuring (the test pattern always "
                        "carries it)")
    g.add_argument("--title", default="steadycast",
                   help="title drawn in the test pattern (default %(default)s)")
    g.add_argument("--duration", type=float, metavar="S",
                   help="stop after S seconds of capture, wait for the relay to acknowledge "
                        "everything, then end the stream cleanly; default: run until Ctrl-C")
    b = e.add_argument_group("bitrate")
    b.add_argument("--abr", default="steady", choices=abr_names(),
                   help="bitrate controller: steady (ours, for links with outages), belacoder, "
                        "obs, gcc (re-implementations of those projects' published rules) or "
                        "fixed (always the start bitrate); default: %(default)s")
    b.add_argument("--start-kbps", type=int, metavar="KBPS",
                   help="video bitrate at the start (default 1000)")
    b.add_argument("--kbps", type=int, default=1000, help=argparse.SUPPRESS)
    b.add_argument("--min-kbps", type=int,
                   help=f"never below this video bitrate (default {MIN_KBPS_DEFAULT}, or the "
                        "start bitrate if lower)")
    b.add_argument("--max-kbps", type=int,
                   help=f"never above this video bitrate, also the encoder's VBV ceiling "
                        f"(default {MAX_KBPS_DEFAULT}, or the start bitrate if higher)")
    b.add_argument("--fps-floor-kbps", type=int, metavar="KBPS",
                   help="below this video bitrate, lower the frame rate (30 -> 15 -> 10 fps); "
                        "default: 0.03 bit per pixel per frame (829 at 1280x720@30, 207 at "
                        "640x360@30)")
    b.add_argument("--preset", default="veryfast", help="libx264 preset (default %(default)s)")
    k = e.add_argument_group("nothing lost")
    k.add_argument("--spool-memory-mb", type=float, default=SPOOL_MEMORY_MB_DEFAULT,
                   help="unacknowledged media kept in memory before spilling to disk "
                        "(default %(default)s)")
    k.add_argument("--spool-disk-mb", type=float, default=SPOOL_DISK_MB_DEFAULT,
                   help="at most this much spilled to disk; if an outage outlasts it, new "
                        "frames are dropped (everything held is still sent, the stream goes "
                        "on, the exit status is 5) (default %(default)s)")
    k.add_argument("--spool-dir", metavar="DIR",
                   help="where to spill (default: the system's temp directory)")
    k.add_argument("--record", metavar="PATH.mp4",
                   help="also keep a local full-quality copy (fragmented MP4, playable even "
                        "after a crash), encoded at --record-kbps on its own thread")
    k.add_argument("--record-kbps", type=int, default=RECORD_KBPS_DEFAULT,
                   help="video bitrate of the local copy (default %(default)s)")
    k.add_argument("--insecure", action="store_true",
                   help="accept any TLS certificate from the relay (https:// relays), "
                        "e.g. its self-signed one; prefer --ca-file")
    k.add_argument("--ca-file", metavar="PEM",
                   help="trust only this certificate for the relay (e.g. a copy of the "
                        "relay's state_dir/tls/relay-cert.pem) instead of the system's CA store")
    o = e.add_argument_group("observability")
    o.add_argument("--quiet", action="store_true", help="no live status line")
    o.add_argument("--status-interval", type=float, metavar="S",
                   help="seconds between status lines (default: 1 on a terminal, where the "
                        "line is redrawn in place; 10 otherwise)")
    o.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on this port (/metrics)")
    o.add_argument("--metrics-host", default="127.0.0.1",
                   help="address for --metrics-port (default %(default)s; 0.0.0.0 lets another "
                        "machine scrape)")
    o.add_argument("--events", metavar="PATH",
                   help="append uplink outages, live-edge jumps and full-spool episodes to "
                        "this JSON-lines file (the same shape as the relay's event log)")
    e.set_defaults(func=cmd_encode)

    from steadycast import bench_cli, demo, emulate_cli, probe_cli, trace_cli

    demo.add_parser(sub)
    trace_cli.add_parser(sub)
    emulate_cli.add_parser(sub)
    bench_cli.add_parser(sub)
    probe_cli.add_parser(sub)
    from steadycast import dropouts_cli

    dropouts_cli.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    _setup_logging(args.log_level)
    if args.command == "encode":
        for name in ("kbps", "fps", "record_kbps", "spool_memory_mb", "spool_disk_mb"):
            if getattr(args, name) <= 0:
                parser.error(f"--{name.replace('_', '-')} must be positive")
        for name in ("start_kbps", "min_kbps", "max_kbps", "fps_floor_kbps", "metrics_port",
                     "status_interval"):
            value = getattr(args, name)
            if value is not None and value <= 0:
                parser.error(f"--{name.replace('_', '-')} must be positive")
        if args.duration is not None and args.duration <= 0:
            parser.error("--duration must be positive")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
