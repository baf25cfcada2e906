"""A fingerprint of the simulator's full results, to show that a refactor changed no behaviour.

Runs every ABR controller on each given trace (scaled, with the bench's default outage
overlay seeded per trace, as ``steadycast bench --mode sim`` prepares it) and hashes each
run's complete ``RunResult`` (every figure and every 1 s series, as JSON with sorted keys).
The same code gives the same hashes on any machine (the simulator is deterministic); a change
of behaviour changes the hash of every run it touches. Prints one line per run and the
combined fingerprint; ``--json FILE`` writes the per-run hashes and headline figures, so two
fingerprints can be compared run by run.

    python -m benchmarks.sim_fingerprint ../shared/traces/mahimahi/ATT-LTE-driving.up \\
        ../shared/traces/hsdpa/norway_bus_1 --duration 120
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from benchmarks.bench import DEFAULT_ABRS, make_jobs, prepare_traces, run_sim_job
from linklab.outages import DEFAULT_OUTAGE_SPEC

DURATION_S_DEFAULT = 120.0
HEADLINE_KEYS = ("utilization", "interruption_s", "platform_sessions", "frames_live",
                 "frames_archived", "score")


def run_hash(result_dict: dict[str, object]) -> str:
    """SHA-256 (first 16 hex digits) of one run's results as sorted-key JSON."""
    text = json.dumps(result_dict, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("traces", nargs="+", help="trace files (any format the bench reads)")
    ap.add_argument("--abr", default=",".join(DEFAULT_ABRS), help="controllers, comma-separated")
    ap.add_argument("--duration", type=float, default=DURATION_S_DEFAULT, help="seconds per run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="write the per-run hashes here")
    args = ap.parse_args(argv)
    prepared = prepare_traces(args.traces, fmt="auto", scale=1.0, outages=DEFAULT_OUTAGE_SPEC,
                              seed=args.seed, duration_s=args.duration)
    jobs = make_jobs(prepared, args.abr.split(","), mode="sim", duration_s=args.duration,
                     buffer_ms=5000, delay_ms=40, start_kbps=800)
    runs = []
    total = hashlib.sha256()
    for job in jobs:
        result, took_s = run_sim_job(job)
        d = result.to_dict()
        h = run_hash(d)
        total.update(h.encode())
        runs.append({"trace": result.trace, "abr": result.abr, "hash": h,
                     **{k: d[k] for k in HEADLINE_KEYS}})
        print(f"{result.trace:28} {result.abr:10} {h}  "
              + " ".join(f"{k}={d[k]}" for k in HEADLINE_KEYS) + f"  ({took_s:.1f} s)",
              file=sys.stderr)
    fingerprint = total.hexdigest()[:16]
    print(f"fingerprint {fingerprint} ({len(runs)} runs, {args.duration:g} s each)")
    if args.json is not None:
        args.json.write_text(json.dumps({"fingerprint": fingerprint, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
