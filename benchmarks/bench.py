"""``steadycast bench``: replay link traces through every ABR controller and score them.

    steadycast bench --trace FILE [--trace FILE ...] [--abr steady,belacoder,obs,gcc,fixed]
                     [--mode sim|real] [--buffer-ms 5000] [--outages SPEC] [--scale X]
                     [--duration S] [--seed N] [--start-kbps 800] [--delay-ms 40]
                     --out DIR [--jobs N]

Each trace is loaded once, scaled, and cut by the outage overlay seeded for that trace, so
every controller meets exactly the same link; then each (trace, controller) pair runs in the
simulator (``benchmarks.sim``) or through the real pipeline (``benchmarks.real``). The
results go to ``DIR/results.json`` (``benchmarks.results``), ``DIR/report.md`` and one plot
per run (``benchmarks.report``); the summary table goes to stdout, progress to stderr.

Bad arguments (unknown controller, unreadable trace, bad outage spec) end with one line on
stderr and exit code 2, before any run starts.
"""

from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from benchmarks.results import RunResult
from linklab.outages import OutageSpecError, prepare_trace
from linklab.traces import Outage, Trace, TraceError

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it
MODES = ("sim", "real")
DEFAULT_ABRS = ("steady", "belacoder", "obs", "gcc", "fixed")
DIRECT_RTMP = "direct-rtmp"  # real mode only: the phone-app baseline, RTMP straight to nginx
SIM_DURATION_S = 300.0
REAL_DURATION_S = 60.0
BUFFER_MS = 5000
START_KBPS = 800
DELAY_MS = 40  # one-way link delay
SEED_SPREAD = 1_000_003  # a prime: --seed N and N+1 give unrelated per-trace seeds
REPORT_TITLE = "steadycast bench"


class BenchError(Exception):
    """A bench invocation that cannot run; the message is the one line the user sees."""


@dataclass(frozen=True)
class Job:
    """One run: a prepared trace, one controller and the run's settings."""

    index: int  # 1-based, for the progress line
    trace: Trace
    abr: str
    mode: str
    duration_s: float
    buffer_ms: int
    outages: tuple[Outage, ...]  # the overlay, already cut out of ``trace`` (see make_jobs)
    delay_ms: int
    seed: int
    start_kbps: int

    def label(self, total: int) -> str:
        return f"[{self.index}/{total}] {self.trace.name} · {self.abr} · {self.mode}"


# --- plain functions ------------------------------------------------------------------------
def parse_abrs(text: str, mode: str) -> list[str]:
    """The controllers named in ``--abr`` (comma-separated, order kept, duplicates dropped);
    ``direct-rtmp`` is valid in real mode only. Raises ``BenchError`` naming the bad one."""
    from encoder.abr import names

    known = names()
    valid = [*known, DIRECT_RTMP] if mode == "real" else known
    chosen: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        if name == DIRECT_RTMP and mode != "real":
            raise BenchError(f"--abr {DIRECT_RTMP} runs only with --mode real (it pushes RTMP "
                             "straight to the platform, with no relay to simulate)")
        if name not in valid:
            raise BenchError(f"--abr: unknown controller {name!r}; choose from "
                             f"{', '.join(valid)}"
                             + ("" if mode == "real" else f" (and {DIRECT_RTMP} in real mode)"))
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise BenchError(f"--abr names no controller; choose from {', '.join(valid)}")
    return chosen


def trace_seed(seed: int, trace_name: str) -> int:
    """The outage overlay's seed for one trace: fixed by ``--seed`` and the trace's name, so
    every controller sees the same outages on a trace, different traces get different ones,
    and the order of ``--trace`` options changes nothing."""
    return (seed * SEED_SPREAD + zlib.crc32(trace_name.encode("utf-8"))) % 2**32


def prepare_traces(paths: Sequence[str], *, fmt: str, scale: float, outages: str, seed: int,
                   duration_s: float) -> list[tuple[Trace, int]]:
    """Load every trace (scaled, with the overlay seeded by ``trace_seed``) and its seed.

    Raises ``BenchError`` with one line for an unreadable or malformed file or a bad spec.
    """
    prepared: list[tuple[Trace, int]] = []
    seen: dict[str, str] = {}
    for path in paths:
        name = Path(path).stem
        if name in seen:
            raise BenchError(f"--trace: {seen[name]} and {path} are both named {name!r}; the "
                             "report and the plots name runs by trace, so give each a "
                             "different file name")
        seen[name] = str(path)
        per_trace = trace_seed(seed, name)
        try:
            trace, _ = prepare_trace(path, fmt=fmt, scale=scale, outages=outages,
                                     seed=per_trace, duration_s=duration_s)
        except OSError as exc:
            target = exc.filename if exc.filename is not None else path
            raise BenchError(f"--trace: cannot read {target}: {exc.strerror or exc}") from None
        except (TraceError, OutageSpecError, ValueError) as exc:
            raise BenchError(" ".join(str(exc).split())) from None
        prepared.append((trace, per_trace))
    return prepared


def make_jobs(prepared: Sequence[tuple[Trace, int]], abrs: Sequence[str], *, mode: str,
              duration_s: float, buffer_ms: int, delay_ms: int,
              start_kbps: int) -> list[Job]:
    """One job per (trace, controller), trace-major, controllers in ``abrs`` order; every
    job on a trace gets the trace's seed (the same link, loss included, for each controller).

    A job carries the prepared trace (its overlay already cut out) and that overlay as its
    outage list: the simulator and the emulator overlay the list again, which removes nothing
    more, and use it for what only they know (a dead radio holds the downlink too). They find
    the oracle's outages themselves: the overlay's and the trace's own gaps of >= 0.5 s."""
    jobs: list[Job] = []
    for trace, per_trace in prepared:
        outages = tuple(trace.overlay)
        for abr in abrs:
            jobs.append(Job(index=len(jobs) + 1, trace=trace, abr=abr, mode=mode,
                            duration_s=duration_s, buffer_ms=buffer_ms, outages=outages,
                            delay_ms=delay_ms, seed=per_trace,
                            start_kbps=start_kbps))
    return jobs


def run_sim_job(job: Job) -> tuple[RunResult, float]:
    """Run one simulated job; returns the ``RunResult`` and the seconds it took (top level,
    so a process pool can call it)."""
    from benchmarks.sim import simulate

    started = time.monotonic()
    result = simulate(job.trace, job.abr, duration_s=job.duration_s, buffer_ms=job.buffer_ms,
                      outages=list(job.outages), delay_ms=job.delay_ms, seed=job.seed,
                      start_kbps=job.start_kbps)
    return result, time.monotonic() - started


def real_runner() -> Callable[..., RunResult]:
    """``benchmarks.real.run_real``, or ``BenchError`` saying why real mode cannot run."""
    try:
        from benchmarks.real import run_real
    except ImportError as exc:
        raise BenchError(f"real mode is not available: {exc} (benchmarks/real.py is missing "
                         "or cannot be imported); use --mode sim") from None
    return run_real


def done_line(result: RunResult, elapsed_s: float) -> str:
    return (f"done in {elapsed_s:.1f} s: utilization {result.utilization:.2f}, interruption "
            f"{result.interruption_s:.1f} s (unavoidable {result.unavoidable_interruption_s:.1f}"
            + ("" if result.floor_bound_interruption_s is None else
               f", floor bound {result.floor_bound_interruption_s:.1f}") + ")")


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


Finished = Callable[[Job, tuple[RunResult, float] | BaseException], None]


@dataclass
class Outcome:
    """What ``run_jobs`` brings back: the results in job order, one line per failed run, and
    whether Ctrl-C stopped it early."""

    results: list[RunResult]
    failures: list[str]
    interrupted: bool = False


def run_jobs(jobs: Sequence[Job], *, jobs_at_once: int = 1,
             workdir: Path | None = None) -> Outcome:
    """Run every job with a progress line at each start and end (stderr). A failed run does
    not stop the others; Ctrl-C stops them all and keeps what finished."""
    total = len(jobs)
    done: dict[int, RunResult] = {}
    failures: list[str] = []

    def finished(job: Job, outcome: tuple[RunResult, float] | BaseException) -> None:
        if isinstance(outcome, BaseException):
            line = f"{job.label(total)} … failed: {type(outcome).__name__}: {outcome}"
            failures.append(" ".join(line.split()))
            say(failures[-1])
        else:
            result, elapsed = outcome
            done[job.index] = result
            say(f"{job.label(total)} … {done_line(result, elapsed)}")

    interrupted = False
    try:
        if jobs and jobs[0].mode == "real":
            _run_real_jobs(jobs, total, workdir or Path("."), finished)
        elif jobs_at_once <= 1:
            for job in jobs:
                say(f"{job.label(total)} …")
                try:
                    outcome: tuple[RunResult, float] | BaseException = run_sim_job(job)
                except Exception as exc:  # one failed run must not lose the others
                    outcome = exc
                finished(job, outcome)
        else:
            _run_pool(jobs, total, jobs_at_once, finished)
    except KeyboardInterrupt:
        interrupted = True
        say(f"interrupted: {len(done)} of {total} run(s) finished")
    return Outcome([done[j.index] for j in jobs if j.index in done], failures, interrupted)


def _run_real_jobs(jobs: Sequence[Job], total: int, workdir: Path,
                   finished: Finished) -> None:
    from benchmarks.report import file_stem

    run_real = real_runner()
    for job in jobs:
        say(f"{job.label(total)} …")
        started = time.monotonic()
        try:
            result = run_real(job.trace, job.abr, duration_s=job.duration_s,
                              buffer_ms=job.buffer_ms, outages=list(job.outages),
                              delay_ms=job.delay_ms, seed=job.seed,
                              workdir=workdir / file_stem(job.trace.name, job.abr, job.mode),
                              start_kbps=job.start_kbps,
                              progress=lambda line: say(f"    {line}"))
        except Exception as exc:  # one failed run must not lose the others
            finished(job, exc)
        else:
            finished(job, (result, time.monotonic() - started))


def _run_pool(jobs: Sequence[Job], total: int, workers: int,
              finished: Finished) -> None:
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        futures: dict[Future[tuple[RunResult, float]], Job] = {}
        for job in jobs:
            futures[pool.submit(run_sim_job, job)] = job
            say(f"{job.label(total)} …")
        for future in as_completed(futures):
            error = future.exception()
            finished(futures[future], error if error is not None else future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
