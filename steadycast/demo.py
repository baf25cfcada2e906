"""``steadycast demo``: one command, one minute, no account and no network.

A stream of the test pattern goes from the real encoder over an emulated weak rural link
(a shared 3G trace at half its capacity, with a few outages, one of them longer than the
relay's buffer) through the real relay to a local stand-in for the platform (nginx-rtmp when
it is installed; otherwise the relay's recording is the only output). Progress is printed
every few seconds; at the end the demo says in plain words what happened and where the
recording, the results and the plot are. It is one ``benchmarks.real.run_real`` run.

The link, in order of preference:

1. ``--trace FILE`` (any format ``linklab.traces.load_trace`` reads), scaled by ``--scale``;
2. ``hsdpa/norway_bus_19`` (a Norwegian bus commute on 3G, Riiser et al., MMSys 2013), which
   ships with the link lab (``linklab/data/``), at x0.5: 280-1500 kbit/s, mean about
   840 kbit/s over the first minute;
3. a built-in synthetic trace, should that file be missing: a seeded random walk between 400
   and 1400 kbit/s.

The outages (``demo_outages``): a short one at a quarter of the run, one of 70 % of the buffer
at 45 %, and one 3 s longer than the buffer at 70 %: the first two should not show at all on
the platform, the last one can only show for its 3 s beyond the buffer.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.real import (
    DIRECT_RTMP,
    RealRunError,
    platform_recordings,
    relay_recordings,
    run_real,
)
from benchmarks.results import RunResult, write_results
from linklab.traces import (
    BUNDLED_TRACES_DIR,
    Outage,
    Trace,
    TraceError,
    load_trace,
    rate_to_opportunities,
)
from relay.settings import BUFFER_MS_DEFAULT

DURATION_S_DEFAULT = 60.0
START_KBPS = 800
OUT_DIR_DEFAULT = "steadycast-demo"
DEFAULT_TRACES: tuple[tuple[str, float], ...] = (("hsdpa/norway_bus_19", 0.5),)
SYNTHETIC_MIN_KBPS = 400.0
SYNTHETIC_MAX_KBPS = 1400.0
SYNTHETIC_STEP_KBPS = 150.0  # largest change from one second to the next
SYNTHETIC_SEED = 7
SHORT_OUTAGE_S = 1.5
LONGER_THAN_BUFFER_S = 3.0  # the long outage outlasts the buffer by this much
END_MARGIN_S = 5.0  # no outage ends closer than this to the end of the run
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def synthetic_trace(duration_s: float = 120.0, seed: int = SYNTHETIC_SEED) -> Trace:
    """A seeded random walk of the capacity, one step a second, within 400-1400 kbit/s."""
    rng = np.random.default_rng(seed)
    seconds = max(2, math.ceil(duration_s))
    steps = rng.uniform(-SYNTHETIC_STEP_KBPS, SYNTHETIC_STEP_KBPS, seconds)
    rates = np.empty(seconds)
    level = (SYNTHETIC_MIN_KBPS + SYNTHETIC_MAX_KBPS) / 2
    for i, step in enumerate(steps):
        level = min(SYNTHETIC_MAX_KBPS, max(SYNTHETIC_MIN_KBPS, level + step))
        rates[i] = level
    opportunities, period_ms = rate_to_opportunities(np.arange(seconds, dtype=float), rates)
    return Trace("synthetic rural 3G", opportunities, period_ms)


def pick_trace(path: str | None, scale: float | None,
               traces_dir: Path = BUNDLED_TRACES_DIR) -> tuple[Trace, str]:
    """The demo's link and a few words on where it comes from (see the module docstring).
    Raises TraceError or OSError for a ``path`` that cannot be read."""
    if path is not None:
        trace = load_trace(path, scale=scale or 1.0)
        return trace, f"trace {path}" + (f" x{scale:g}" if scale and scale != 1 else "")
    for relative, default_scale in DEFAULT_TRACES:
        candidate = traces_dir / relative
        if candidate.is_file():
            factor = scale or default_scale
            return load_trace(candidate, scale=factor), f"trace {relative} x{factor:g}"
    trace = synthetic_trace()
    return trace, f"a built-in synthetic trace ({traces_dir} has none of the demo's traces)"


def demo_outages(duration_s: float, buffer_s: float) -> list[Outage]:
    """A short outage at 25 % of the run, one of 70 % of the buffer at 45 %, one 3 s longer
    than the buffer at 70 %; those that would end within 5 s of the end are left out."""
    planned = [(0.25, SHORT_OUTAGE_S), (0.45, 0.7 * buffer_s),
               (0.70, buffer_s + LONGER_THAN_BUFFER_S)]
    outages = []
    last_end = 0.0
    for fraction, length in planned:
        start = max(round(fraction * duration_s, 1), last_end + 1.0)
        if length > 0 and start + length <= duration_s - END_MARGIN_S:
            outages.append(Outage(start, round(length, 1)))
            last_end = start + length
    return outages


def _seconds(x: float) -> str:
    return f"{x:.1f} s"


def describe(result: RunResult, *, link: str, planned: Sequence[Outage], workdir: Path,
             results_path: Path, plot_path: Path | None) -> str:
    """What happened, in plain words, and where the files are."""
    buffer_s = result.buffer_ms / 1000
    direct = result.abr == DIRECT_RTMP
    lines = [f"What happened in {result.duration_s:g} s over {link} (mean "
             f"{result.capacity_kbps_mean:.0f} kbit/s):"]
    if planned:
        listed = ", ".join(f"{_seconds(o.length_s)} at {o.start_s:g} s" for o in planned)
        lines.append(f"- the link went dead {len(planned)} time(s): {listed}.")
    native = [o for o in result.outages
              if not any(p.start_s - 1 <= o[0] <= p.end_s for p in planned)]
    if native:
        lines.append(f"- the trace itself had {len(native)} more gap(s) of at least 0.5 s, "
                     f"{_seconds(sum(o[1] for o in native))} in all.")
    if direct:
        lines.append(f"- no relay: RTMP went straight to the platform, so no outage could be "
                     f"hidden; at least {_seconds(result.unavoidable_interruption_s)} of "
                     f"interruption was unavoidable.")
    else:
        longer = [o for o in result.outages if o[1] > buffer_s]
        lines.append(f"- the relay held {_seconds(buffer_s)} of video: outages shorter than "
                     f"that need not show at all; {len(longer)} outage(s) were longer, so at "
                     f"least {_seconds(result.unavoidable_interruption_s)} of interruption was "
                     f"unavoidable.")
    if result.latency_ms_p50 is not None:
        what = "a frozen picture or nothing" if direct else "slate or frozen picture"
        lines.append(f"- viewers on the platform saw {_seconds(result.interruption_s)} of "
                     f"interruption ({what}) and {result.frames_live} of "
                     f"{result.frames_captured} captured frames live, "
                     f"{result.latency_ms_p50 / 1000:.1f} s behind the camera.")
    else:
        lines.append(f"- the relay's output was interrupted (slate or frozen picture) for "
                     f"{_seconds(result.interruption_s)} (no platform: nginx-rtmp is not "
                     f"installed, so this is the relay's own count).")
    target = result.series.get("target_kbps", [])
    if target and not direct:
        lines.append(f"- the encoder's bitrate followed the link between {min(target):.0f} and "
                     f"{max(target):.0f} kbit/s ({result.bitrate_switches} changes); the link "
                     f"delivered {result.delivered_kbps_mean:.0f} kbit/s, "
                     f"{result.utilization:.0%} of what it could carry.")
    elif direct:
        lines.append(f"- the bitrate stayed at {target[0] if target else START_KBPS:.0f} "
                     f"kbit/s; the link delivered {result.delivered_kbps_mean:.0f} kbit/s, "
                     f"{result.utilization:.0%} of what it could carry.")
    if result.latency_ms_p50 is not None:
        if result.platform_sessions == 1:
            lines.append("- the platform saw one session from start to end: no \"stream "
                         "interrupted\", no new live.")
        else:
            lines.append(f"- the platform saw {result.platform_sessions} sessions: each new one "
                         "is a \"stream interrupted\" or a new live for the viewers.")
    archive = "the platform's recordings" if direct else "the relay's recording"
    lines.append(f"- {archive} kept {result.frames_archived} of {result.frames_captured} "
                 "captured frames.")
    lines += ["", "Files:"]
    recordings = platform_recordings(workdir) if direct else relay_recordings(workdir)
    for path in recordings:
        lines.append(f"  recording:  {path}")
    if not direct:
        for path in platform_recordings(workdir):
            lines.append(f"  platform:   {path}")
    lines.append(f"  results:    {results_path}")
    if plot_path is not None:
        lines.append(f"  plot:       {plot_path}")
    lines.append(f"  logs:       {workdir}")
    return "\n".join(lines)


def save_plot(path: Path, result: RunResult) -> Path | None:
    """The run's plot (``benchmarks.report.plot_run``; a minimal one if the report module is
    not there). None if matplotlib cannot draw it."""
    try:
        from benchmarks.report import plot_run
    except ImportError:
        return _minimal_plot(path, result)
    return plot_run(path, result)


def _minimal_plot(path: Path, result: RunResult) -> Path | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    s = result.series
    fig = Figure(figsize=(11, 4.5), dpi=100)
    ax = fig.add_subplot()
    for start, length in result.outages:
        ax.axvspan(start, start + length, color="#f4a6a6", alpha=0.6, linewidth=0)
    for key, label in (("capacity_kbps", "capacity"), ("target_kbps", "target"),
                       ("delivered_kbps", "delivered")):
        if len(s.get(key, [])) == len(s.get("t_s", [])):
            ax.plot(s["t_s"], s[key], label=label)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("kbit/s")
    ax.legend()
    fig.savefig(path, format="png")
    return path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command to a subparsers object (its handler is ``args.func``)."""
    p = sub.add_parser(
        "demo", help="a one-minute demo: a stream through an emulated weak rural link with "
                     "outages, the relay and a local platform",
        description="Stream the test pattern for a minute through an emulated weak 3G link "
                    "(a real trace at half its capacity, with a few outages, one longer than "
                    "the relay's buffer), through the real relay, to a local stand-in for the "
                    "platform (nginx-rtmp when installed). No account and no network: "
                    "everything runs on 127.0.0.1. At the end it says what the viewers saw "
                    "and where the recording, the results and the plot are.")
    p.add_argument("--duration", type=float, default=DURATION_S_DEFAULT, metavar="S",
                   help="seconds of stream (default %(default)g)")
    p.add_argument("--out", default=OUT_DIR_DEFAULT, metavar="DIR",
                   help="where each run's folder goes (default ./%(default)s)")
    p.add_argument("--trace", metavar="FILE",
                   help="the link's capacity trace (default: a shared 3G trace at x0.5, or a "
                        "built-in one)")
    p.add_argument("--scale", type=float, metavar="X",
                   help="multiply the trace's capacity by X (default 0.5 for the shared "
                        "3G trace, 1 otherwise)")
    p.add_argument("--buffer-ms", type=int, default=BUFFER_MS_DEFAULT, metavar="MS",
                   help="the relay's buffer (default %(default)s)")
    p.add_argument("--abr", default="steady",
                   help="the bitrate controller (steady, belacoder, obs, gcc, fixed), or "
                        f"{DIRECT_RTMP} to see what happens without the relay "
                        "(default %(default)s)")
    p.set_defaults(func=cmd_demo)


def _check(args: argparse.Namespace) -> str | None:
    from encoder.abr import names

    if not (math.isfinite(args.duration) and args.duration >= 10):
        return f"--duration {args.duration:g}: must be at least 10 seconds"
    if args.scale is not None and not (math.isfinite(args.scale) and args.scale > 0):
        return f"--scale {args.scale:g}: must be > 0"
    if not 0 <= args.buffer_ms <= 120_000:
        return f"--buffer-ms {args.buffer_ms}: must be within 0..120000"
    valid = [*names(), DIRECT_RTMP]
    if args.abr not in valid:
        return f"--abr {args.abr!r}: choose from {', '.join(valid)}"
    return None


def cmd_demo(args: argparse.Namespace) -> int:
    """The ``demo`` command: 0 when the run finished, 1 when it failed, 2 on a bad argument,
    130 on Ctrl-C (every process it started is stopped first)."""
    problem = _check(args)
    if problem:
        print(f"steadycast demo: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        trace, link = pick_trace(args.trace, args.scale)
    except (TraceError, OSError, ValueError) as exc:
        print(f"steadycast demo: cannot use --trace: {exc}", file=sys.stderr)
        return EXIT_USAGE
    buffer_s = args.buffer_ms / 1000
    planned = demo_outages(args.duration, buffer_s)
    workdir = Path(args.out).expanduser().resolve() / time.strftime("run-%Y%m%d-%H%M%S")
    listed = ", ".join(_seconds(o.length_s) for o in planned) or "none"
    path = (f"the {args.abr} encoder through the relay (buffer {_seconds(buffer_s)})"
            if args.abr != DIRECT_RTMP else "RTMP straight to the platform, no relay")
    print(f"steadycast demo: {args.duration:g} s of test pattern over {link} with outages of "
          f"{listed}, {path}. Everything runs on this machine; files in {workdir}",
          flush=True)
    started = time.monotonic()
    try:
        result = run_real(trace, args.abr, duration_s=args.duration, buffer_ms=args.buffer_ms,
                          outages=planned, workdir=workdir, start_kbps=START_KBPS,
                          progress=lambda line: print(f"  {line}", flush=True),
                          require_platform=False)
    except KeyboardInterrupt:
        print("steadycast demo: interrupted; everything it started is stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RealRunError as exc:
        print(f"steadycast demo: the run failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    results_path = workdir / "results.json"
    write_results(results_path, [result])
    plot_path = save_plot(workdir / "plot.png", result)
    text = describe(result, link=link, planned=planned, workdir=workdir,
                    results_path=results_path, plot_path=plot_path)
    (workdir / "summary.txt").write_text(text + "\n", encoding="utf-8")
    print(f"\nDone in {time.monotonic() - started:.0f} s.\n{text}", flush=True)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m steadycast.demo demo [options]`` (the same as ``steadycast demo``)."""
    parser = argparse.ArgumentParser(prog="python -m steadycast.demo")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
