"""The outage overlay: an on/off process that cuts a capacity trace, seeded and reproducible.

Mahimahi composes an on/off outage shell with its trace-driven link; this is the same idea
(written from the published description, not the GPL code) as a pure function on a trace.

The random process alternates an "on" gap, exponential with mean ``gap`` seconds (outages
arrive as a Poisson process), with an outage whose length is heavy-tailed: numpy's
``Generator.pareto(alpha)`` (Pareto II, also called Lomax, support from 0) times
``len * (alpha - 1)``, which makes the unclipped mean ``len``, then clipped to
``[min, max]``. Pareto II rather than classic Pareto I because its support starts at 0: most
outages are a second or two and many are fractions of a second, while a few run to the
``max`` cap. The first outage starts no earlier than ``first`` seconds (default 10 s: let a
stream start), outages never overlap, and those starting at or after the duration are dropped
(the last one is truncated at the end).

Defaults (``DEFAULT_OUTAGE_SPEC``), for weak rural 3G/4G uplinks (DESIGN.md): ``gap=45``,
``len=4``, ``alpha=1.5``, ``max=60``, ``min=0.2``. docs/benchmarks.md ("Traces") says what
they give and why they were chosen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from linklab.traces import Outage, Trace, load_trace

DEFAULT_OUTAGE_SPEC = "random:gap=45,len=4,alpha=1.5,max=60"
RANDOM_DEFAULTS: dict[str, float] = {
    "gap": 45.0,  # mean seconds between outages (exponential)
    "len": 4.0,  # mean outage seconds before clipping (Pareto II)
    "alpha": 1.5,  # Pareto shape, must be > 1 for a finite mean
    "max": 60.0,  # longest outage, seconds
    "min": 0.2,  # shortest outage, seconds
    "first": 10.0,  # no outage before this second
}
MAX_OUTAGES = 1_000_000  # a spec asking for more is a mistake, not a model
SPEC_HELP = ("valid: 'none', 'default' (= " + DEFAULT_OUTAGE_SPEC + "), explicit "
             "'START:LENGTH,START:LENGTH' in seconds, or 'random[:gap=S,len=S,alpha=A,max=S,"
             "min=S,first=S]'")


class OutageSpecError(ValueError):
    """An outage spec that cannot be used; the message names the bad part and what is valid."""


def parse_outages(spec: str, *, duration_s: float, seed: int = 0) -> list[Outage]:
    """Outages over ``[0, duration_s)`` from a spec (see the module docstring and SPEC_HELP).

    The same spec, duration and seed always give the same outages.
    """
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise OutageSpecError(f"duration must be a positive number of seconds, got {duration_s!r}")
    text = spec.strip()
    if text == "none":
        return []
    if text == "default":
        text = DEFAULT_OUTAGE_SPEC
    if text == "random" or text.startswith("random:"):
        params = _random_params(text[len("random:"):] if ":" in text else "")
        return _random_outages(params, duration_s, seed)
    return _explicit_outages(text, duration_s)


def _random_params(body: str) -> dict[str, float]:
    params = dict(RANDOM_DEFAULTS)
    seen: set[str] = set()
    for part in (p.strip() for p in body.split(",")) if body.strip() else ():
        key, eq, raw = (s.strip() for s in part.partition("="))
        if not eq or key not in RANDOM_DEFAULTS:
            raise OutageSpecError(f"outage spec: bad part {part!r}; random takes KEY=VALUE with "
                                  f"KEY one of {', '.join(RANDOM_DEFAULTS)}; {SPEC_HELP}")
        if key in seen:
            raise OutageSpecError(f"outage spec: {key!r} given twice")
        seen.add(key)
        try:
            value = float(raw)
        except ValueError:
            raise OutageSpecError(f"outage spec: {key}={raw!r} is not a number") from None
        if not math.isfinite(value):
            raise OutageSpecError(f"outage spec: {key}={raw!r} must be finite")
        params[key] = value
    checks = [
        ("gap", params["gap"] > 0, "> 0"),
        ("len", params["len"] > 0, "> 0"),
        ("alpha", params["alpha"] > 1, "> 1 (the mean is infinite otherwise)"),
        ("min", params["min"] >= 0, ">= 0"),
        ("max", params["max"] > 0 and params["max"] >= params["min"], "> 0 and >= min"),
        ("first", params["first"] >= 0, ">= 0"),
    ]
    for key, ok, rule in checks:
        if not ok:
            raise OutageSpecError(f"outage spec: {key}={params[key]:g} must be {rule}")
    return params


def _random_outages(params: dict[str, float], duration_s: float, seed: int) -> list[Outage]:
    rng = np.random.default_rng(seed)
    scale_s = params["len"] * (params["alpha"] - 1)
    outages: list[Outage] = []
    t = params["first"]
    while True:
        if len(outages) >= MAX_OUTAGES:
            raise OutageSpecError(f"outage spec gives more than {MAX_OUTAGES} outages over "
                                  f"{duration_s:g} s; make gap or len larger")
        start = t + float(rng.exponential(params["gap"]))
        length = float(np.clip(rng.pareto(params["alpha"]) * scale_s,
                               params["min"], params["max"]))
        if start >= duration_s:
            return outages
        length = min(length, duration_s - start)
        if length > 0:
            outages.append(Outage(start, length))
        t = start + length


def _explicit_outages(text: str, duration_s: float) -> list[Outage]:
    if not text:
        raise OutageSpecError(f"outage spec is empty; {SPEC_HELP}")
    parsed: list[Outage] = []
    for part in (p.strip() for p in text.split(",")):
        start_raw, colon, length_raw = part.partition(":")
        try:
            if not colon:
                raise ValueError
            start, length = float(start_raw), float(length_raw)
        except ValueError:
            raise OutageSpecError(f"outage spec: bad part {part!r}; {SPEC_HELP}") from None
        if not (math.isfinite(start) and start >= 0 and math.isfinite(length) and length > 0):
            raise OutageSpecError(f"outage spec: bad part {part!r}; START must be >= 0 and "
                                  "LENGTH > 0 seconds")
        parsed.append(Outage(start, length))
    parsed.sort(key=lambda o: o.start_s)
    for before, after in zip(parsed, parsed[1:], strict=False):
        if after.start_s < before.end_s:
            raise OutageSpecError(f"outage spec: {after.start_s:g}:{after.length_s:g} overlaps "
                                  f"{before.start_s:g}:{before.length_s:g}; outages must not "
                                  "overlap")
    return [Outage(o.start_s, min(o.length_s, duration_s - o.start_s))
            for o in parsed if o.start_s < duration_s]


def overlay_outages(trace: Trace, outages: Sequence[Outage], duration_s: float) -> Trace:
    """The trace unrolled over ``duration_s`` (period = duration in ms) without the
    opportunities inside any outage (``start <= t < end``), with ``overlay`` set to the
    trace's own overlay (looped over the duration) plus these outages, sorted by start."""
    duration_ms = round(duration_s * 1000) if math.isfinite(duration_s) else 0
    if duration_ms <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
    times = trace.looped_ms(duration_ms / 1000)
    keep = np.ones(times.size, dtype=bool)
    for outage in outages:
        lo = np.searchsorted(times, outage.start_s * 1000, side="left")
        hi = np.searchsorted(times, outage.end_s * 1000, side="left")
        keep[lo:hi] = False
    inherited = []
    for k in range(math.ceil(duration_ms / trace.period_ms)):
        offset_s = k * trace.period_s
        for o in trace.overlay:
            start = o.start_s + offset_s
            if start < duration_ms / 1000:
                inherited.append(Outage(start, min(o.length_s, duration_ms / 1000 - start)))
    clipped = [Outage(o.start_s, min(o.length_s, duration_ms / 1000 - o.start_s))
               for o in outages if o.start_s < duration_ms / 1000 and o.length_s > 0]
    return Trace(
        name=trace.name,
        opportunities_ms=times[keep],
        period_ms=duration_ms,
        overlay=tuple(sorted(inherited + clipped, key=lambda o: o.start_s)),
    )


def unavoidable_interruption_s(outages: Sequence[Outage], buffer_s: float) -> float:
    """Seconds of interruption no sender can avoid behind a relay buffer of ``buffer_s``:
    the sum of ``max(0, L - buffer_s)`` over outage lengths L (the oracle in DESIGN.md)."""
    if not (math.isfinite(buffer_s) and buffer_s >= 0):
        raise ValueError(f"buffer_s must be >= 0, got {buffer_s!r}")
    return float(sum(max(0.0, o.length_s - buffer_s) for o in outages))


def prepare_trace(path: str | Path, *, fmt: str = "auto", scale: float = 1.0,
                  outages: str = "none", seed: int = 0,
                  duration_s: float | None = None) -> tuple[Trace, float]:
    """Load, scale and overlay a trace as the command-line options say; returns the trace and
    the duration to analyse (default: one period of the file)."""
    trace = load_trace(path, fmt=fmt, scale=scale)
    duration = trace.period_s if duration_s is None else duration_s
    spec = outages.strip()
    if spec != "none":
        trace = overlay_outages(trace, parse_outages(spec, duration_s=duration, seed=seed),
                                duration)
    return trace, duration
