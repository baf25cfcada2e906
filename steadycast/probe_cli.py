"""``steadycast probe``: check a site's uplink against a relay before a session.

    steadycast probe --relay URL [--token TOKEN | $STEADYCAST_TOKEN] --site NAME
                     [--gps LAT,LON] [--duration 60] [--json OUT] [--plot PNG]
                     [--ca-file PEM | --insecure]

Measures for ``--duration`` seconds (``probe.client``), prints the verdict, the figures and
the recommended ``steadycast encode`` settings and relay buffer with the reasons (English and
Vietnamese) on stdout, progress on stderr, and stores the result at the relay (``GET
/api/probes`` lists them per site). The rule is in the ``probe`` package
(``probe.analysis``, ``probe.recommend``) and docs/probe.md.

Exit codes: 0 measured and stored; 1 measured but not stored (the report is printed and
written anyway); 2 bad arguments (a bad --ca-file too); 3 the relay refused the probe (token,
no /probe); 4 the relay's TLS certificate did not verify (see --ca-file, --insecure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.redact import REDACTOR
from probe.report import format_report
from probe.result import ProbeResultError, check_site

if TYPE_CHECKING:
    from probe.client import ProbeClient, ProbeOutcome

EXIT_NOT_STORED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNTRUSTED = 4
DURATION_S_DEFAULT = 60.0
MIN_DURATION_S = 5.0  # 3 s idle + at least 2 s loaded
MAX_DURATION_S = 600.0


class UsageError(Exception):
    """A bad argument; the message is the line the user sees."""


def parse_gps(text: str) -> tuple[float, float]:
    """``LAT,LON`` in decimal degrees, e.g. ``21.0285,105.8542``."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        raise UsageError(f"--gps {text!r} must be LAT,LON in decimal degrees, e.g. "
                         "21.0285,105.8542") from None
    if not (math.isfinite(lat) and -90 <= lat <= 90):
        raise UsageError(f"--gps {text!r}: latitude must be within -90..90")
    if not (math.isfinite(lon) and -180 <= lon <= 180):
        raise UsageError(f"--gps {text!r}: longitude must be within -180..180")
    return lat, lon


def _check_output(path: str | None, option: str) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.parent.is_dir():
        raise UsageError(f"{option} {path!r}: the directory {str(p.parent)!r} does not exist")
    return p


def cmd_probe(args: argparse.Namespace) -> int:
    from encoder.relay_tls import RelayNotTrusted
    from probe.client import ProbeClient, ProbeRefused, ProbeSettings, plot_probe

    try:
        token = args.token or os.environ.get("STEADYCAST_TOKEN", "")
        if token.startswith("env:"):
            token = os.environ.get(token[4:], "")
        if not token:
            raise UsageError("no token: pass --token or set STEADYCAST_TOKEN (the relay's "
                             "probe_token or a stream's publish token)")
        REDACTOR.add(token)
        if not args.relay.startswith(("http://", "https://")):
            raise UsageError(f"--relay {args.relay!r} must start with http:// or https://")
        if args.ca_file and args.insecure:
            raise UsageError("--ca-file and --insecure exclude each other: --ca-file checks "
                             "the relay's certificate, --insecure does not")
        try:
            site = check_site(args.site, "--site")
        except ProbeResultError as exc:
            raise UsageError(str(exc)) from None
        lat, lon = parse_gps(args.gps) if args.gps else (None, None)
        if not (math.isfinite(args.duration) and MIN_DURATION_S <= args.duration
                <= MAX_DURATION_S):
            raise UsageError(f"--duration {args.duration:g}: must be within "
                             f"{MIN_DURATION_S:g}..{MAX_DURATION_S:g} seconds")
        json_path = _check_output(args.json, "--json")
        plot_path = _check_output(args.plot, "--plot")
    except UsageError as exc:
        print(f"steadycast probe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = ProbeSettings(relay_url=args.relay, token=token, site=site, latitude=lat,
                             longitude=lon, duration_s=args.duration,
                             verify_tls=not args.insecure,
                             ca_file=Path(args.ca_file).expanduser() if args.ca_file else None)
    try:
        client = ProbeClient(settings)  # a bad --ca-file: OSError naming it
    except OSError as exc:
        print(f"steadycast probe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        outcome = asyncio.run(_run_until_signal(client))
    except ProbeRefused as exc:
        print(f"steadycast probe: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except RelayNotTrusted as exc:
        print(f"steadycast probe: {exc}", file=sys.stderr)
        return EXIT_UNTRUSTED
    print(format_report(site, outcome.result), flush=True)
    if json_path is not None:
        body = client.submission(outcome.result)
        body["stored_id"] = outcome.stored_id
        json_path.write_text(json.dumps(body, ensure_ascii=False, indent=1) + "\n",
                             encoding="utf-8")
    if plot_path is not None:
        plot_probe(plot_path, site, outcome.result, outcome.rtts)
    if outcome.store_error is not None:
        print(f"steadycast probe: the result was not stored at the relay: "
              f"{REDACTOR.scrub(outcome.store_error)}", file=sys.stderr)
        return EXIT_NOT_STORED
    print(f"Stored at the relay as probe {outcome.stored_id} (site {site!r}).", flush=True)
    return 0


async def _run_until_signal(client: ProbeClient) -> ProbeOutcome:
    """Ctrl-C (or SIGTERM) ends the measuring early; what was measured is still reported."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, client.stop)
    try:
        return await client.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``probe`` to ``sub``."""
    p = sub.add_parser(
        "probe", help="check a site's uplink against a relay: throughput, round trip, outages, "
                      "and the settings to stream with",
        description="Measure the uplink from here to a relay over the same kind of connection "
                    "the stream uses: 3 s of round trips on an idle link, then uploading as "
                    "fast as the link allows for the rest of --duration. Prints a verdict "
                    "(English and Vietnamese), the throughput percentiles, the round trip idle "
                    "and under load, every outage with its length, and the steadycast encode "
                    "settings (--resolution, --start-kbps, --max-kbps) and relay buffer_ms to "
                    "use, with the reasons; then stores the result at the relay, per site. "
                    "Keeps measuring through outages (reconnecting if the connection drops); "
                    "Ctrl-C ends early and still reports. See docs/probe.md.")
    p.add_argument("--relay", required=True, metavar="URL",
                   help="the relay's base URL, e.g. http://relay.example:8080")
    p.add_argument("--token", metavar="TOKEN",
                   help="the relay's probe_token or any stream's publish token (or env:NAME to "
                        "read it from a variable); default: $STEADYCAST_TOKEN. Prefer the "
                        "variable: arguments show in 'ps'")
    p.add_argument("--site", required=True, metavar="NAME",
                   help="the site's name, 1-64 characters, e.g. 'Đồi chè Tân Cương'; results are "
                        "kept per site")
    p.add_argument("--gps", metavar="LAT,LON",
                   help="the site's position in decimal degrees, stored with the result, e.g. "
                        "21.5942,105.7856")
    p.add_argument("--duration", type=float, default=DURATION_S_DEFAULT, metavar="S",
                   help=f"seconds to measure, {MIN_DURATION_S:g}..{MAX_DURATION_S:g} "
                        "(default %(default)g); longer catches more outages")
    p.add_argument("--json", metavar="OUT",
                   help="also write the result (and the site, position and stored id) as JSON")
    p.add_argument("--plot", metavar="PNG",
                   help="also draw throughput and round trip over time, outages shaded")
    p.add_argument("--insecure", action="store_true",
                   help="accept any TLS certificate from the relay (https:// relays), e.g. its "
                        "self-signed one; prefer --ca-file")
    p.add_argument("--ca-file", metavar="PEM",
                   help="trust only this certificate for the relay (e.g. a copy of the "
                        "relay's state_dir/tls/relay-cert.pem) instead of the system's CA store")
    p.set_defaults(func=cmd_probe)
