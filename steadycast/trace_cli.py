"""``steadycast trace``: look at a link trace before replaying it.

    steadycast trace stats FILE [--format auto] [--scale X] [--outages SPEC] [--seed N]
                               [--duration S] [--json]
    steadycast trace plot FILE -o PNG [same options] [--bin S]

The logic lives in plain functions (``trace_stats``, ``format_stats``, ``plot_trace``) that
the benchmarks reuse; the command functions only parse, call them and turn errors into one
line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from linklab.outages import (
    DEFAULT_OUTAGE_SPEC,
    OutageSpecError,
    prepare_trace,
)
from linklab.traces import FORMATS, Outage, Trace, TraceError
from steadycast.argtypes import positive_float

EXIT_OK = 0
EXIT_USAGE = 2
PERCENTILES = (5, 10, 25, 50, 75, 90, 95)
MIN_OUTAGE_S = 0.5  # shortest gap reported as an outage
LISTED_OUTAGES = 10  # the text table lists this many of the longest outages
PLOT_SIZE_IN = (11.0, 4.0)
PLOT_DPI = 100

FORMATS_HELP = """\
trace formats (--format auto decides by the first data line):
  mahimahi  one integer per line: a timestamp in ms at which 1500 bytes may leave
            (repeat a timestamp for several packets in that ms); the last timestamp
            is the loop period. E.g. ../shared/traces/mahimahi/ATT-LTE-driving.up
  cooked    'time_seconds  Mbit_per_s' per line, whitespace separated; capacity holds
            until the next sample (Pensieve's HSDPA traces, ../shared/traces/hsdpa/)
  csv       'seconds,kbps' per line, optional header line 'seconds,kbps'
  '#' starts a comment; blank lines are skipped.

outage overlay (--outages SPEC, over --duration seconds, seeded by --seed):
  none                      no overlay (default)
  default                   """ + DEFAULT_OUTAGE_SPEC + """
  30:5,120:20               explicit START:LENGTH pairs in seconds
  random[:gap=S,len=S,alpha=A,max=S,min=S,first=S]
                            exponential gaps (mean gap), heavy-tailed Pareto lengths
                            (mean len, shape alpha > 1) clipped to [min, max], none
                            before first (default 10 s)
"""


# --- plain functions ------------------------------------------------------------------------
def trace_stats(trace: Trace, duration_s: float, *,
                min_outage_s: float = MIN_OUTAGE_S) -> dict[str, Any]:
    """Capacity and outage figures of ``trace`` over ``[0, duration_s)`` as a JSON-able dict.

    Percentiles are of the capacity per one-second bin (a shorter last bin counts at its own
    rate); ``zero_capacity_s`` adds up the bins with no opportunity at all; outages are every
    gap of at least ``min_outage_s`` (native and overlay alike, see ``Trace.outages``).
    """
    caps = trace.capacity_kbps(duration_s, 1.0)
    lengths_s = np.full(caps.size, 1.0)
    lengths_s[-1] = duration_s - (caps.size - 1)
    outages = trace.outages(duration_s, min_outage_s)
    overlay = [o for o in trace.overlay if o.start_s < duration_s]
    return {
        "name": trace.name,
        "period_s": trace.period_s,
        "duration_s": float(duration_s),
        "mean_kbps": round(trace.mean_kbps(duration_s), 3),
        "capacity_percentiles_kbps": {
            f"p{p}": round(float(v), 3)
            for p, v in zip(PERCENTILES, np.percentile(caps, PERCENTILES), strict=True)
        },
        "zero_capacity_s": round(float(lengths_s[caps == 0].sum()), 3),
        "outages": _outage_summary(outages) | {"min_length_s": min_outage_s},
        "overlay_outages": _outage_summary(overlay),
    }


def _outage_summary(outages: list[Outage]) -> dict[str, Any]:
    lengths = [o.length_s for o in outages]
    return {
        "count": len(outages),
        "total_s": round(sum(lengths), 3),
        "longest_s": round(max(lengths, default=0.0), 3),
        "list": [{"start_s": round(o.start_s, 3), "length_s": round(o.length_s, 3)}
                 for o in outages],
    }


def format_stats(stats: dict[str, Any], *, listed: int = LISTED_OUTAGES) -> str:
    """The readable table for ``trace_stats``'s dict."""
    pct = stats["capacity_percentiles_kbps"]
    out = stats["outages"]
    lines = [
        f"trace          {stats['name']}",
        f"period         {stats['period_s']:.3f} s",
        f"analysed       {stats['duration_s']:.3f} s",
        f"mean           {stats['mean_kbps']:.1f} kbit/s",
        "capacity per second, kbit/s:",
        "  " + "".join(f"{key:>9}" for key in pct),
        "  " + "".join(f"{value:>9.0f}" for value in pct.values()),
        f"zero capacity  {stats['zero_capacity_s']:g} s",
        f"outages        {out['count']} of >= {out['min_length_s']:g} s, total "
        f"{out['total_s']:.1f} s, longest {out['longest_s']:.1f} s",
    ]
    overlay = stats["overlay_outages"]
    if overlay["count"]:
        lines.append(f"  of which overlay: {overlay['count']}, total {overlay['total_s']:.1f} s, "
                     f"longest {overlay['longest_s']:.1f} s")
    if out["list"]:
        longest = sorted(out["list"], key=lambda o: -o["length_s"])[:listed]
        more = out["count"] - len(longest)
        title = f"the {len(longest)} longest" if more else "all"
        lines.append(f"  {title}, in time order:")
        lines.append(f"  {'start_s':>10} {'length_s':>10}")
        for o in sorted(longest, key=lambda o: o["start_s"]):
            lines.append(f"  {o['start_s']:>10.1f} {o['length_s']:>10.1f}")
    return "\n".join(lines)


def plot_trace(trace: Trace, path: str | Path, duration_s: float, bin_s: float = 1.0, *,
               min_outage_s: float = MIN_OUTAGE_S) -> Path:
    """Capacity per ``bin_s`` over ``[0, duration_s)`` as a PNG, outages shaded: gaps of at
    least ``min_outage_s`` in light red, overlay outages in a darker hatch. Returns the path.

    Uses matplotlib's Agg renderer through a bare ``Figure`` (no pyplot, no global backend).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = Path(path)
    caps = trace.capacity_kbps(duration_s, bin_s)
    edges = np.minimum(np.arange(caps.size + 1) * bin_s, duration_s)
    fig = Figure(figsize=PLOT_SIZE_IN, dpi=PLOT_DPI)
    ax = fig.add_subplot()
    for o in trace.outages(duration_s, min_outage_s):
        ax.axvspan(o.start_s, o.end_s, color="#f4a6a6", alpha=0.6, linewidth=0)
    overlay = [o for o in trace.overlay if o.start_s < duration_s]
    for o in overlay:
        ax.axvspan(o.start_s, min(o.end_s, duration_s), facecolor="none", edgecolor="#a01818",
                   hatch="//", linewidth=0)
    ax.stairs(caps, edges, color="#1f4e9c", linewidth=1.0)
    ax.set_xlim(0, duration_s)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"capacity (kbit/s, per {bin_s:g} s)")
    ax.set_title(f"{trace.name}: mean {trace.mean_kbps(duration_s):.0f} kbit/s "
                 f"over {duration_s:g} s")
    handles = [Patch(color="#f4a6a6", label=f"no capacity >= {min_outage_s:g} s")]
    if overlay:
        handles.append(Patch(facecolor="none", edgecolor="#a01818", hatch="//",
                             label="overlay outage"))
    ax.legend(handles=handles, loc="upper right", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


# --- command line ---------------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``trace`` with its sub-commands ``stats`` and ``plot`` to ``sub``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("file", metavar="FILE", help="the trace file")
    common.add_argument("--format", dest="fmt", default="auto", choices=("auto", *FORMATS),
                        help="file format (default: auto, by content)")
    common.add_argument("--scale", type=positive_float, default=1.0, metavar="X",
                        help="multiply the capacity by X (0.5 keeps every other opportunity)")
    common.add_argument("--outages", default="none", metavar="SPEC",
                        help="outage overlay: none (default), default, START:LENGTH,... or "
                             "random[:gap=S,len=S,alpha=A,max=S,min=S,first=S]")
    common.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the random outage overlay (default 0)")
    common.add_argument("--duration", type=positive_float, default=None, metavar="S",
                        help="seconds to analyse, looping the trace (default: one period)")
    common.add_argument("--min-outage", type=positive_float, default=MIN_OUTAGE_S,
                        metavar="S", help=f"shortest gap counted as an outage "
                                          f"(default {MIN_OUTAGE_S:g} s)")

    p = sub.add_parser(
        "trace", help="show a link trace's capacity and outages (stats, plot)",
        description="Inspect a link capacity trace, optionally scaled and with an outage "
                    "overlay, before replaying it.",
        epilog=FORMATS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="trace_command", metavar="{stats,plot}", required=True)

    stats = tsub.add_parser(
        "stats", parents=[common], help="print mean, percentiles and outages",
        description="Print the trace's mean capacity, percentiles of its per-second "
                    "capacity, seconds with no capacity and its outages.",
        epilog=FORMATS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    stats.add_argument("--json", action="store_true", help="print one JSON object instead")
    stats.set_defaults(func=cmd_trace_stats)

    plot = tsub.add_parser(
        "plot", parents=[common], help="draw capacity over time with outages shaded (PNG)",
        description="Draw the capacity per bin over time with outages shaded, as a PNG.",
        epilog=FORMATS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    plot.add_argument("-o", "--output", required=True, metavar="PNG", help="where to write")
    plot.add_argument("--bin", type=positive_float, default=1.0, metavar="S",
                      help="bin width in seconds (default 1)")
    plot.set_defaults(func=cmd_trace_plot)


def _prepare(args: argparse.Namespace) -> tuple[Trace, float]:
    return prepare_trace(args.file, fmt=args.fmt, scale=args.scale, outages=args.outages,
                         seed=args.seed, duration_s=args.duration)


def _fail(exc: BaseException, args: argparse.Namespace) -> int:
    if isinstance(exc, OSError):
        target = exc.filename if exc.filename is not None else args.file
        message = f"cannot use {target}: {exc.strerror or exc}"
    else:
        message = str(exc)
    print(f"steadycast trace: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE


def cmd_trace_stats(args: argparse.Namespace) -> int:
    try:
        trace, duration = _prepare(args)
        stats = trace_stats(trace, duration, min_outage_s=args.min_outage)
    except (TraceError, OutageSpecError, OSError, ValueError) as exc:
        return _fail(exc, args)
    print(json.dumps(stats) if args.json else format_stats(stats))
    return EXIT_OK


def cmd_trace_plot(args: argparse.Namespace) -> int:
    try:
        trace, duration = _prepare(args)
        written = plot_trace(trace, args.output, duration, args.bin,
                             min_outage_s=args.min_outage)
    except (TraceError, OutageSpecError, OSError, ValueError) as exc:
        return _fail(exc, args)
    print(f"wrote {written}")
    return EXIT_OK
