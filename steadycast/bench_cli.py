"""``steadycast bench``: the command line of the benchmark (``benchmarks.bench`` runs it)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmarks.bench import (
    BUFFER_MS,
    DEFAULT_ABRS,
    DELAY_MS,
    DIRECT_RTMP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    MODES,
    REAL_DURATION_S,
    REPORT_TITLE,
    SIM_DURATION_S,
    START_KBPS,
    BenchError,
    make_jobs,
    parse_abrs,
    prepare_traces,
    real_runner,
    run_jobs,
    say,
)
from benchmarks.results import write_results
from linklab.outages import DEFAULT_OUTAGE_SPEC
from linklab.traces import FORMATS
from steadycast.argtypes import non_negative_int, positive_float, positive_int


def command_line(args: argparse.Namespace) -> str:
    """The invocation as one reproducible command (every default spelled out)."""
    argv = ["steadycast", "bench"]
    for path in args.trace:
        argv += ["--trace", str(path)]
    if args.fmt != "auto":
        argv += ["--format", args.fmt]
    argv += ["--abr", args.abr, "--mode", args.mode, "--buffer-ms", str(args.buffer_ms),
             "--outages", args.outages, "--scale", f"{args.scale:g}",
             "--duration", f"{_duration(args):g}", "--seed", str(args.seed),
             "--start-kbps", str(args.start_kbps), "--delay-ms", str(args.delay_ms),
             "--out", str(args.out)]
    if args.jobs != 1:
        argv += ["--jobs", str(args.jobs)]
    return shlex.join(argv)


def _duration(args: argparse.Namespace) -> float:
    if args.duration is not None:
        return float(args.duration)
    return SIM_DURATION_S if args.mode == "sim" else REAL_DURATION_S


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` to ``sub``."""
    p = sub.add_parser(
        "bench", help="replay link traces through the ABR controllers and score them",
        description="Run every controller on every trace (scaled, with the same seeded\n"
                    "outage overlay per trace), in the simulator or through the real pipeline,\n"
                    "and score each run against the oracle: the link's capacity and the\n"
                    "interruption no sender can avoid behind the relay buffer.\n"
                    "Writes DIR/results.json, DIR/report.md and one plot per run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="outage overlay (--outages SPEC, over --duration seconds):\n"
               "  none | default (= " + DEFAULT_OUTAGE_SPEC + ") | START:LENGTH,... |\n"
               "  random[:gap=S,len=S,alpha=A,max=S,min=S,first=S]\n"
               "  the overlay of each trace is seeded from --seed and the trace's name;\n"
               "  report.md lists the seed, so `steadycast trace plot` can show it.")
    p.add_argument("--trace", action="append", required=True, metavar="FILE",
                   help="a trace file (mahimahi, cooked or csv); repeat for several")
    p.add_argument("--format", dest="fmt", default="auto", choices=("auto", *FORMATS),
                   help="trace file format (default: auto, by content)")
    p.add_argument("--abr", default=",".join(DEFAULT_ABRS), metavar="NAMES",
                   help=f"comma-separated controllers (default {','.join(DEFAULT_ABRS)}); "
                        f"--mode real also takes {DIRECT_RTMP}")
    p.add_argument("--mode", choices=MODES, default="sim",
                   help="sim: the simulator, faster than real time (default); real: encoder, "
                        "link emulator, relay and an nginx-rtmp platform in real time")
    p.add_argument("--buffer-ms", type=positive_int, default=BUFFER_MS, metavar="MS",
                   help=f"the relay's playout delay D (default {BUFFER_MS})")
    p.add_argument("--outages", default="default", metavar="SPEC",
                   help="outage overlay (default: default); see below")
    p.add_argument("--scale", type=positive_float, default=1.0, metavar="X",
                   help="multiply the traces' capacity by X (default 1)")
    p.add_argument("--duration", type=positive_float, default=None, metavar="S",
                   help=f"seconds per run, looping the trace (default {SIM_DURATION_S:g} sim, "
                        f"{REAL_DURATION_S:g} real)")
    p.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                   help="seed of the outage overlay and the runs (default 0)")
    p.add_argument("--start-kbps", type=positive_int, default=START_KBPS, metavar="KBPS",
                   help=f"every controller's starting video bitrate (default {START_KBPS})")
    p.add_argument("--delay-ms", type=non_negative_int, default=DELAY_MS, metavar="MS",
                   help=f"one-way link delay (default {DELAY_MS})")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="where to write results.json, report.md and the plots")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                   help="simulated runs at once, in a process pool (default 1; real runs "
                        "always one at a time)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """Validate, prepare every trace, run, write the files, print the summary."""
    from benchmarks.report import plot_file_name, plot_run, summary_table, write_report

    duration_s = _duration(args)
    try:
        abrs = parse_abrs(args.abr, args.mode)
        if args.mode == "real":
            real_runner()
        prepared = prepare_traces(args.trace, fmt=args.fmt, scale=args.scale,
                                  outages=args.outages, seed=args.seed, duration_s=duration_s)
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchError(f"--out: cannot create {out}: {exc.strerror or exc}") from None
    except BenchError as exc:
        print(f"steadycast bench: {exc}", file=sys.stderr)
        return EXIT_USAGE

    if args.mode == "real" and args.jobs > 1:
        say("steadycast bench: --jobs applies to sim runs only; real runs go one at a time")
    jobs = make_jobs(prepared, abrs, mode=args.mode, duration_s=duration_s,
                     buffer_ms=args.buffer_ms, delay_ms=args.delay_ms, start_kbps=args.start_kbps)
    outcome = run_jobs(jobs, jobs_at_once=args.jobs, workdir=out / "work")
    results, failures = outcome.results, outcome.failures

    spec = args.outages.strip()
    settings: dict[str, object] = {
        "outage spec": f"{spec} (= {DEFAULT_OUTAGE_SPEC})" if spec == "default" else spec,
        "seed": f"{args.seed}; outage seed per trace: "
                + ", ".join(f"{t.name} {s}" for t, s in prepared),
        "scale": f"x{args.scale:g}",
        "link delay": f"{args.delay_ms} ms one way",
        "start bitrate": f"{args.start_kbps} kbit/s",
    }
    if failures:
        settings["failed runs"] = "; ".join(failures)
    if outcome.interrupted:
        settings["interrupted"] = f"stopped by Ctrl-C after {len(results)} of {len(jobs)} runs"
    write_results(out / "results.json", results)
    write_report(out / "report.md", results, title=REPORT_TITLE,
                 command_line=command_line(args), settings=settings)
    plots = [plot_run(out / plot_file_name(r), r) for r in results]

    print(summary_table(results))
    print()
    print(f"wrote {out / 'results.json'}, {out / 'report.md'} and {len(plots)} plot(s) in {out}")
    if failures:
        print(f"steadycast bench: {len(failures)} of {len(jobs)} run(s) failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_RUN_FAILED if failures else EXIT_OK
