"""The ``steadycast`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.redact import REDACTOR, install_log_redaction

if TYPE_CHECKING:
    from encoder.client import EncodeSummary, UplinkClient

log = logging.getLogger("steadycast")

EXIT_USAGE = 2
EXIT_REFUSED = 3


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    install_log_redaction()


# --- relay ---------------------------------------------------------------------------------
def cmd_relay(args: argparse.Namespace) -> int:
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
    log.info("relay listening on %s://%s:%d with %d stream(s): %s", scheme, settings.host,
             settings.port, len(settings.streams), ", ".join(s.name for s in settings.streams))
    web.run_app(build_app(settings), host=settings.host, port=settings.port, ssl_context=ssl_ctx,
                print=None, access_log=None, shutdown_timeout=5)
    return 0


# --- encode --------------------------------------------------------------------------------
RESOLUTION_RE = re.compile(r"^(\d{2,4})x(\d{2,4})$")


def cmd_encode(args: argparse.Namespace) -> int:
    from encoder.client import PublishRefused, UplinkClient
    from encoder.settings import EncoderSettings
    from encoder.sources import SourceError

    token = args.token or os.environ.get("STEADYCAST_TOKEN", "")
    if token.startswith("env:"):
        token = os.environ.get(token[4:], "")
    if not token:
        print("steadycast encode: no publish token: pass --token or set STEADYCAST_TOKEN",
              file=sys.stderr)
        return EXIT_USAGE
    REDACTOR.add(token)
    m = RESOLUTION_RE.match(args.resolution)
    if not m or int(m.group(1)) % 2 or int(m.group(2)) % 2:
        print(f"steadycast encode: --resolution {args.resolution!r} must be WIDTHxHEIGHT with "
              "even numbers, e.g. 1280x720", file=sys.stderr)
        return EXIT_USAGE
    if not args.relay.startswith(("http://", "https://")):
        print(f"steadycast encode: --relay {args.relay!r} must start with http:// or https://",
              file=sys.stderr)
        return EXIT_USAGE
    settings = EncoderSettings(
        relay_url=args.relay, stream=args.stream, token=token, source=args.source,
        kbps=args.kbps, width=int(m.group(1)), height=int(m.group(2)), fps=args.fps,
        duration_s=args.duration, title=args.title, x264_preset=args.preset,
        verify_tls=not args.insecure)
    client = UplinkClient(settings)
    try:
        summary = asyncio.run(_run_until_signal(client))
    except SourceError as exc:
        print(f"steadycast encode: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PublishRefused as exc:
        print(f"steadycast encode: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except RuntimeError as exc:
        print(f"steadycast encode: {REDACTOR.scrub(str(exc))}", file=sys.stderr)
        return 1
    print(summary.line(), flush=True)
    return 0 if summary.all_acked else 1


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

    e = sub.add_parser(
        "encode", help="capture, encode and send a stream to a relay",
        description="Capture a source, encode H.264 + AAC at a fixed bitrate and send it to the "
                    "relay. Reconnects on its own (first retry within 0.5 s, at most 2 s apart) "
                    "and resends whatever the relay has not acknowledged, so nothing is lost.")
    e.add_argument("--relay", required=True, metavar="URL",
                   help="the relay's base URL, e.g. http://relay.example:8080")
    e.add_argument("--stream", required=True, help="stream name configured at the relay")
    e.add_argument("--token", metavar="TOKEN",
                   help="publish token (or env:NAME to read it from a variable); default: "
                        "$STEADYCAST_TOKEN. Prefer the variable: arguments show in 'ps'")
    e.add_argument("--source", default="testpattern",
                   help="'testpattern' (moving picture with frame number and capture time, "
                        "plus a tone) or 'file:PATH' (looped); default: testpattern")
    e.add_argument("--kbps", type=int, default=1000, help="video bitrate in kbit/s (default 1000)")
    e.add_argument("--resolution", default="1280x720", help="WIDTHxHEIGHT (default 1280x720)")
    e.add_argument("--fps", type=int, default=30, help="frames per second (default 30)")
    e.add_argument("--duration", type=float, metavar="S",
                   help="stop after S seconds of capture, wait for the relay to acknowledge "
                        "everything, then end the stream cleanly; default: run until Ctrl-C")
    e.add_argument("--title", default="steadycast", help="title drawn in the test pattern")
    e.add_argument("--preset", default="veryfast", help="libx264 preset (default veryfast)")
    e.add_argument("--insecure", action="store_true",
                   help="accept a relay's self-signed TLS certificate (https:// relays)")
    e.set_defaults(func=cmd_encode)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    _setup_logging(args.log_level)
    if args.command == "encode":
        for name in ("kbps", "fps"):
            if getattr(args, name) <= 0:
                parser.error(f"--{name} must be positive")
        if args.duration is not None and args.duration <= 0:
            parser.error("--duration must be positive")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
