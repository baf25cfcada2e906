"""How fast the simulator runs: runs per second and the speed-up over real time, per ABR
controller, on one trace with the default outage overlay.

    python -m benchmarks.sim_speed [--trace PATH] [--scale 0.5] [--duration 300] [--repeat 1]

The speed-up is simulated seconds per second of CPU time of this process (``process_time``:
on a shared machine, other processes' load shows less in it than in the wall clock, which is
printed beside it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.sim import simulate
from encoder.abr import names
from linklab.outages import DEFAULT_OUTAGE_SPEC, parse_outages
from linklab.traces import load_trace

TRACE_DEFAULT = Path(__file__).resolve().parents[2] / "shared/traces/hsdpa/norway_bus_1"
CONTROLLERS = ("steady", "belacoder", "obs", "gcc", "fixed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, default=TRACE_DEFAULT)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=300.0, help="simulated seconds")
    parser.add_argument("--outages", default=DEFAULT_OUTAGE_SPEC)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per controller (best kept)")
    parser.add_argument("--abr", action="append", choices=names(),
                        help="controller (repeatable; default: all five)")
    args = parser.parse_args(argv)
    trace = load_trace(args.trace, scale=args.scale)
    outages = parse_outages(args.outages, duration_s=args.duration, seed=args.seed)
    print(f"trace {trace.name}, {args.duration:g} s simulated, outages {args.outages} "
          f"seed {args.seed}, best of {args.repeat}")
    print(f"{'abr':<10} {'cpu s':>7} {'wall s':>7} {'runs/s':>7} {'speed-up':>9}")
    for abr in args.abr or CONTROLLERS:
        best_cpu = best_wall = float("inf")
        for _ in range(max(1, args.repeat)):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            simulate(trace, abr, duration_s=args.duration, outages=outages)
            best_cpu = min(best_cpu, time.process_time() - cpu0)
            best_wall = min(best_wall, time.perf_counter() - wall0)
        print(f"{abr:<10} {best_cpu:7.2f} {best_wall:7.2f} {1 / best_cpu:7.2f} "
              f"{args.duration / best_cpu:8.0f}x")


if __name__ == "__main__":
    main()
