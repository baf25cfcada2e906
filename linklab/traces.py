"""Link capacity traces: read them, loop them, scale them, measure them.

A trace is a list of *delivery opportunities*: at each listed millisecond the bottleneck may
send ``MTU_BYTES`` bytes. This is the Mahimahi model (Netravali et al., "Mahimahi: Accurate
Record-and-Replay for HTTP", USENIX ATC 2015; trace files recorded with Saturator, Winstein et
al., NSDI 2013), written here from its published description, not from its (GPL) code:

- one opportunity = 1500 bytes. The original tool counts 1504 (1500 + a 4-byte tunnel
  header); we use ``MTU_BYTES = 1500`` because our emulator carries no tunnel header, so a
  trace's mean capacity here is 1500/1504 of what Mahimahi would report;
- the same millisecond listed n times means n opportunities in that millisecond;
- a trace loops with a period equal to its last timestamp: opportunity ``t`` of loop ``k`` is
  at ``t + k * period_ms``.

Three file formats are read (see ``load_trace``):

- ``mahimahi``: one integer per line, milliseconds, non-decreasing, last one > 0;
- ``cooked`` (Pensieve's processed HSDPA traces): ``time_seconds  Mbit_per_s`` per line;
- ``csv``: ``seconds,kbps`` per line, with an optional header line ``seconds,kbps``.

Rate traces (cooked, csv) are turned into opportunities by ``rate_to_opportunities``.
Every problem in a file raises ``TraceError`` naming the file, the line and the reason.
Clean Mahimahi files take a vectorised path; anything else (comments, CRLF, errors) goes
through the line-by-line reader that finds the exact line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MTU_BYTES = 1500  # bytes per delivery opportunity (Mahimahi uses 1504: 1500 + tunnel header)
BITS_PER_BYTE = 8
MAX_TIMESTAMP_MS = 10**10  # ~115 days; anything beyond is a broken file, not a trace
MAX_TIME_S = MAX_TIMESTAMP_MS / 1000
MAX_RATE_KBPS = 10_000_000.0  # 10 Gbit/s; far above any cellular link
MAX_OPPORTUNITIES = 50_000_000  # 400 MB of int64; a rate trace asking for more is an error
DEFAULT_SAMPLE_SPACING_S = 1.0  # rate-trace period padding when the spacing cannot be measured
FORMATS = ("mahimahi", "cooked", "csv")
BUNDLED_TRACES_DIR = Path(__file__).resolve().parent / "data"  # traces that ship (README there)
CSV_HEADER = ("seconds", "kbps")

_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER_RE = re.compile(r"[+-]?[0-9]+")
_NON_FINITE = {"nan", "inf", "infinity"}
_FAST_MAX_DIGITS = 11
_SHAPE_WORDS = {
    "mahimahi": "one integer (mahimahi)",
    "cooked": "two whitespace-separated numbers (cooked)",
    "csv": "comma-separated values (csv)",
}


class TraceError(ValueError):
    """A trace file that cannot be used: ``str(e) == f"{path}:{line}: {reason}"``.

    ``line`` is 1-based; 0 when the problem concerns the whole file.
    """

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Outage:
    """No delivery opportunity from ``start_s`` for ``length_s`` seconds."""

    start_s: float
    length_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.length_s


@dataclass(frozen=True, eq=False)
class Trace:
    """Delivery opportunities of one loop period.

    ``opportunities_ms`` is a read-only int64 array, non-decreasing, each value in
    ``[0, period_ms]``; each is one ``MTU_BYTES`` opportunity. ``overlay`` lists the outages an
    outage overlay added (their opportunities are already removed). Compared by identity
    (``eq=False``): two traces with equal arrays are still two traces.
    """

    name: str
    opportunities_ms: np.ndarray
    period_ms: int
    overlay: tuple[Outage, ...] = field(default=())

    def __post_init__(self) -> None:
        opps = np.array(self.opportunities_ms, dtype=np.int64, copy=True).reshape(-1)
        opps.setflags(write=False)
        object.__setattr__(self, "opportunities_ms", opps)
        object.__setattr__(self, "overlay", tuple(self.overlay))
        if int(self.period_ms) != self.period_ms or self.period_ms <= 0:
            raise ValueError(f"trace {self.name!r}: period_ms must be a positive integer, "
                             f"got {self.period_ms!r}")
        object.__setattr__(self, "period_ms", int(self.period_ms))
        if opps.size:
            if opps[0] < 0 or opps[-1] > self.period_ms:
                raise ValueError(f"trace {self.name!r}: opportunities must lie in "
                                 f"[0, period_ms={self.period_ms}]")
            if opps.size > 1 and bool((np.diff(opps) < 0).any()):
                raise ValueError(f"trace {self.name!r}: opportunities must not decrease")

    @property
    def period_s(self) -> float:
        return self.period_ms / 1000

    def looped_ms(self, duration_s: float) -> np.ndarray:
        """Opportunity times (int64 ms) in ``[0, duration_s)``, looping the trace."""
        duration_ms = _duration_ms(duration_s)
        opps = self.opportunities_ms
        if opps.size == 0 or duration_ms <= 0:
            return np.zeros(0, dtype=np.int64)
        loops = max(1, math.ceil(duration_ms / self.period_ms))
        offsets = np.arange(loops, dtype=np.int64) * self.period_ms
        times = (offsets[:, None] + opps[None, :]).reshape(-1)
        return times[: int(np.searchsorted(times, duration_ms, side="left"))]

    def capacity_kbps(self, duration_s: float, bin_s: float = 1.0) -> np.ndarray:
        """Capacity per bin over ``[0, duration_s)`` in kbit/s (a shorter last bin is scaled
        by its own length)."""
        duration_ms = _duration_ms(duration_s)
        if duration_ms <= 0:
            raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
        if not (bin_s > 0 and math.isfinite(bin_s)):
            raise ValueError(f"bin_s must be > 0, got {bin_s!r}")
        bin_ms = bin_s * 1000
        n_bins = max(1, math.ceil(duration_ms / bin_ms - 1e-9))
        times = self.looped_ms(duration_s)
        index = np.minimum((times / bin_ms).astype(np.int64), n_bins - 1)
        counts = np.bincount(index, minlength=n_bins)[:n_bins]
        lengths_ms = np.full(n_bins, bin_ms)
        lengths_ms[-1] = duration_ms - bin_ms * (n_bins - 1)
        # bits per millisecond == kbit per second
        return counts * (MTU_BYTES * BITS_PER_BYTE) / lengths_ms

    def mean_kbps(self, duration_s: float | None = None) -> float:
        """Mean capacity in kbit/s: over one period by default, else over ``[0, duration_s)``."""
        if duration_s is None:
            return self.opportunities_ms.size * MTU_BYTES * BITS_PER_BYTE / self.period_ms
        duration_ms = _duration_ms(duration_s)
        if duration_ms <= 0:
            raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
        return self.looped_ms(duration_s).size * MTU_BYTES * BITS_PER_BYTE / duration_ms

    def outages(self, duration_s: float, min_length_s: float = 0.5) -> list[Outage]:
        """Every interval of at least ``min_length_s`` with no opportunity in
        ``[0, duration_s)``, looping: native gaps of the trace and overlay outages alike.

        Opportunities are instants: a gap runs from one opportunity to the next (from 0 to the
        first one, from the last one to the end of the window, which truncates it). An
        overlay outage therefore shows up as a gap a little longer than the overlay's own
        interval (up to the neighbouring opportunities).
        """
        duration_ms = _duration_ms(duration_s)
        if duration_ms <= 0:
            return []
        times = self.looped_ms(duration_s).astype(np.float64)
        points = np.concatenate(([0.0], times, [duration_ms]))
        gaps = np.diff(points)
        min_ms = min_length_s * 1000
        found = np.nonzero(gaps >= min_ms - 1e-9)[0]
        return [Outage(float(points[i]) / 1000, float(gaps[i]) / 1000) for i in found
                if gaps[i] > 0]


def _duration_ms(duration_s: float) -> float:
    if not math.isfinite(duration_s):
        raise ValueError(f"duration_s must be finite, got {duration_s!r}")
    return duration_s * 1000


# --- rate traces -----------------------------------------------------------------------------
def rate_to_opportunities(
    times_s: Sequence[float] | np.ndarray,
    rates_kbps: Sequence[float] | np.ndarray,
    *,
    mtu_bytes: int = MTU_BYTES,
    period_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """Turn a capacity-over-time trace into Mahimahi opportunities.

    Capacity ``rates_kbps[i]`` holds from ``times_s[i]`` until the next sample. The trace
    starts at its first sample (times are shifted so it is at 0). The last sample holds for
    the *typical sample spacing* (the median of the positive spacings; 1 s when there is none),
    so ``period = last - first + spacing``: the last sample counts like every other one
    instead of being dropped or stretched. Give ``period_s`` to override it.

    Bytes accumulate continuously; each time the integrated capacity passes another
    ``mtu_bytes`` there is one opportunity, listed at the millisecond during which that happens
    (a crossing at 10.0 ms completes during millisecond 9, one at 10.2 ms during 10: the listed
    value is ``ceil(crossing_ms) - 1``), so a second of capacity yields its opportunities
    inside that second and every value is in ``[0, period_ms)``. The remainder carries over
    from sample to sample (Mahimahi-style), but not from one loop to the next: each loop
    starts from zero bytes.

    Returns ``(opportunities_ms, period_ms)``. Raises ``ValueError`` on bad input.
    """
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    r = np.asarray(rates_kbps, dtype=np.float64).reshape(-1)
    if t.size == 0 or t.size != r.size:
        raise ValueError(f"need as many times as rates (>= 1), got {t.size} and {r.size}")
    if not (np.isfinite(t).all() and np.isfinite(r).all()):
        raise ValueError("times and rates must be finite")
    if (r < 0).any() or (np.diff(t) < 0).any():
        raise ValueError("rates must be >= 0 and times must not decrease")
    if mtu_bytes <= 0:
        raise ValueError(f"mtu_bytes must be > 0, got {mtu_bytes}")
    t = t - t[0]
    if period_s is None:
        spacings = np.diff(t)
        spacings = spacings[spacings > 0]
        spacing = float(np.median(spacings)) if spacings.size else DEFAULT_SAMPLE_SPACING_S
        period_s = float(t[-1]) + spacing
    if not (math.isfinite(period_s) and period_s > t[-1]):
        raise ValueError(f"period_s must be after the last sample ({t[-1]} s), got {period_s}")
    period_ms = max(1, round(period_s * 1000))
    ends = np.append(t[1:], period_s)
    bytes_per_s = r * 1000 / BITS_PER_BYTE
    seg_bytes = (ends - t) * bytes_per_s
    cumulative = np.concatenate(([0.0], np.cumsum(seg_bytes)))
    total = float(cumulative[-1])
    count = math.floor(total / mtu_bytes + 1e-9)
    if count > MAX_OPPORTUNITIES:
        raise ValueError(f"{count} opportunities per period is more than the "
                         f"{MAX_OPPORTUNITIES} allowed")
    if count == 0:
        return np.zeros(0, dtype=np.int64), period_ms
    targets = mtu_bytes * np.arange(1, count + 1, dtype=np.float64)
    seg = np.searchsorted(cumulative, targets, side="left") - 1
    seg = np.clip(seg, 0, t.size - 1)
    crossing_s = t[seg] + (targets - cumulative[seg]) / np.where(bytes_per_s[seg] > 0,
                                                                   bytes_per_s[seg], np.inf)
    opps = np.ceil(crossing_s * 1000 - 1e-6).astype(np.int64) - 1
    opps = np.clip(opps, 0, period_ms - 1)
    return np.maximum.accumulate(opps), period_ms


def phases_trace(phases: Sequence[tuple[float, float]], *, name: str = "phases") -> Trace:
    """A trace of capacity phases played one after the other: ``(seconds, kbps)`` each
    (0 kbit/s: no opportunity). One period is the phases' total; the trace loops like any
    other. Built by ``rate_to_opportunities``, so a phase's bytes carry over into the next.
    Raises ``ValueError`` for no phases, a phase of no positive finite length, or a bad rate.
    """
    if not phases:
        raise ValueError("phases_trace: needs at least one (seconds, kbps) phase")
    starts, rates, total = [], [], 0.0
    for seconds, kbps in phases:
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"phases_trace: phase length {seconds!r} s must be > 0")
        starts.append(total)
        rates.append(kbps)
        total += seconds
    opps, period_ms = rate_to_opportunities(starts, rates, period_s=total)
    return Trace(name=name, opportunities_ms=opps, period_ms=period_ms)


# --- scaling ---------------------------------------------------------------------------------
def scale_trace(trace: Trace, factor: float) -> Trace:
    """Multiply the capacity by ``factor`` (> 0) deterministically.

    Opportunity i is emitted ``floor((i+1)*factor) - floor(i*factor)`` times: x0.5 keeps every
    other one, x2 doubles each, x0.3 keeps 3 of every 10 evenly spread. The name gets
    `` x<factor>``; the overlay outages stay (their opportunities stay removed).
    """
    if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
        raise ValueError(f"scale factor must be a finite number > 0, got {factor!r}")
    n = trace.opportunities_ms.size
    if n * factor > MAX_OPPORTUNITIES:
        raise ValueError(f"scaling {trace.name!r} by {factor:g} gives more than "
                         f"{MAX_OPPORTUNITIES} opportunities per period")
    marks = np.floor(np.arange(n + 1, dtype=np.float64) * factor + 1e-9).astype(np.int64)
    counts = np.diff(marks)
    return Trace(
        name=f"{trace.name} x{factor:g}",
        opportunities_ms=np.repeat(trace.opportunities_ms, counts),
        period_ms=trace.period_ms,
        overlay=trace.overlay,
    )


# --- reading ---------------------------------------------------------------------------------
def load_trace(path: str | Path, *, fmt: str = "auto", scale: float = 1.0) -> Trace:
    """Read a trace file (``fmt``: "mahimahi", "cooked", "csv" or "auto").

    "auto" decides by the first data line: one integer -> mahimahi; two whitespace-separated
    numbers -> cooked; comma-separated (or the header ``seconds,kbps``) -> csv. ``#`` starts a
    comment; blank lines are skipped. The name is the file stem. ``scale`` != 1 applies
    ``scale_trace``. Raises ``TraceError`` for any problem in the file, ``OSError`` when it
    cannot be read, ``ValueError`` for a bad ``fmt`` or ``scale``.
    """
    path = Path(path)
    data = path.read_bytes()
    trace = parse_trace(data, path=path, fmt=fmt)
    if scale != 1.0:
        trace = scale_trace(trace, scale)
    return trace


def parse_trace(data: bytes, *, path: str | Path = "<bytes>", fmt: str = "auto",
                name: str | None = None) -> Trace:
    """Parse the bytes of a trace file; ``path`` is only used in messages and for the name."""
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"unknown trace format {fmt!r}; valid: auto, {', '.join(FORMATS)}")
    if name is None:
        name = Path(str(path)).stem or str(path)
    if fmt in ("auto", "mahimahi"):
        fast = _mahimahi_fast(data)
        if fast is not None:
            return Trace(name=name, opportunities_ms=fast, period_ms=int(fast[-1]))
    lines = _data_lines(path, data)
    origin = f"format asked: {fmt}"
    if fmt == "auto":
        fmt = _detect_format(path, lines[0])
        origin = f"format set by line {lines[0][0]}"
    if fmt == "mahimahi":
        opps = _parse_mahimahi(path, lines, origin)
        return Trace(name=name, opportunities_ms=opps, period_ms=int(opps[-1]))
    times, rates = _parse_rates(path, lines, fmt, origin)
    try:
        opps, period_ms = rate_to_opportunities(times, rates)
    except ValueError as exc:
        raise TraceError(path, 0, str(exc)) from None
    if opps.size == 0:
        raise TraceError(path, 0, f"capacity too low: less than one {MTU_BYTES}-byte "
                                  f"opportunity in the whole {period_ms / 1000:g} s period")
    return Trace(name=name, opportunities_ms=opps, period_ms=period_ms)


def _mahimahi_fast(data: bytes) -> np.ndarray | None:
    """A clean Mahimahi file (digits and LF only, no blank line, no number over 11 digits,
    non-decreasing, last > 0) parsed by numpy; None sends it to the line-by-line reader."""
    if not data or data.translate(None, b"0123456789\n"):
        return None
    if data.startswith(b"\n") or b"\n\n" in data:
        return None
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    line_ends = np.concatenate(([-1], newlines, [len(data)]))
    if int(np.diff(line_ends).max()) > _FAST_MAX_DIGITS + 1:  # int64 cannot overflow
        return None
    values = np.fromstring(data.decode("ascii"), dtype=np.int64, sep="\n")
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if values.size != lines or values[-1] <= 0 or values[-1] > MAX_TIMESTAMP_MS:
        return None
    if values.size > 1 and bool((np.diff(values) < 0).any()):
        return None
    return values


def _data_lines(path: str | Path, data: bytes) -> list[tuple[int, str]]:
    if not data.strip():
        raise TraceError(path, 0, "empty file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TraceError(path, line, f"not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
    lines = []
    for number, raw in enumerate(text.split("\n"), 1):
        content = raw.split("#", 1)[0].strip()
        if content:
            lines.append((number, content))
    if not lines:
        raise TraceError(path, 0, "no data lines (only comments and blank lines)")
    return lines


def _shape(content: str) -> str:
    if "," in content:
        return "csv"
    columns = len(content.split())
    return {1: "mahimahi", 2: "cooked"}.get(columns, f"{columns} columns")


def _detect_format(path: str | Path, first: tuple[int, str]) -> str:
    number, content = first
    shape = _shape(content)
    if shape in FORMATS:
        return shape
    raise TraceError(path, number, f"cannot tell the format: {shape}; expected one integer "
                                   "(mahimahi), two whitespace-separated numbers (cooked) or "
                                   "comma-separated seconds,kbps (csv)")


def _column_error(path: str | Path, number: int, content: str, fmt: str,
                  origin: str, expected: str) -> TraceError:
    shape = _shape(content)
    if shape in FORMATS and shape != fmt:
        return TraceError(path, number, f"mixed formats: {_SHAPE_WORDS[shape]} in a {fmt} "
                                        f"trace ({origin})")
    got = len(content.split(",")) if fmt == "csv" else len(content.split())
    return TraceError(path, number, f"wrong column count: expected {expected}, got {got}")


def _number(path: str | Path, number: int, token: str, what: str) -> float:
    if _NUMBER_RE.fullmatch(token):
        value = float(token)
        if not math.isfinite(value):
            raise TraceError(path, number, f"{what} {token!r} is not a finite number")
    elif token.lower().lstrip("+-") in _NON_FINITE:
        raise TraceError(path, number, f"{what} {token!r}: NaN and infinity are not allowed")
    else:
        shown = token if len(token) <= 40 else token[:37] + "..."
        raise TraceError(path, number, f"{what} {shown!r} is not a number")
    if value < 0:
        raise TraceError(path, number, f"negative {what} {token!r}")
    return value


def _parse_mahimahi(path: str | Path, lines: list[tuple[int, str]], origin: str) -> np.ndarray:
    values = np.empty(len(lines), dtype=np.int64)
    previous = 0
    for i, (number, content) in enumerate(lines):
        tokens = content.split()
        if len(tokens) != 1 or "," in content:
            raise _column_error(path, number, content, "mahimahi", origin,
                                "1 (a timestamp in ms)")
        token = tokens[0]
        value = _number(path, number, token, "timestamp")
        if not _INTEGER_RE.fullmatch(token):
            raise TraceError(path, number, f"timestamp {token!r} is not a whole number of ms")
        if value > MAX_TIMESTAMP_MS:
            raise TraceError(path, number, f"timestamp {token} ms is too large "
                                           f"(max {MAX_TIMESTAMP_MS})")
        stamp = int(token)
        if stamp < previous:
            raise TraceError(path, number, f"timestamp {stamp} is before the previous one "
                                           f"({previous}); timestamps must not decrease")
        values[i] = previous = stamp
    if previous == 0:
        raise TraceError(path, lines[-1][0], "the last timestamp is 0; it sets the loop "
                                             "period and must be > 0")
    return values


def _parse_rates(path: str | Path, lines: list[tuple[int, str]],
                 fmt: str, origin: str) -> tuple[np.ndarray, np.ndarray]:
    if fmt == "csv":
        header = tuple(f.strip().lower() for f in lines[0][1].split(","))
        if header == CSV_HEADER:
            lines = lines[1:]
            if not lines:
                raise TraceError(path, 0, "no data lines after the header")
        expected, unit = "2 (seconds,kbps)", 1.0
    else:
        expected, unit = "2 (time_s Mbit_per_s)", 1000.0
    times = np.empty(len(lines), dtype=np.float64)
    rates = np.empty(len(lines), dtype=np.float64)
    previous = 0.0
    for i, (number, content) in enumerate(lines):
        if fmt == "csv":
            fields = [f.strip() for f in content.split(",")]
            if "," not in content or len(fields) != 2:
                raise _column_error(path, number, content, "csv", origin, expected)
        else:
            fields = content.split()
            if "," in content or len(fields) != 2:
                raise _column_error(path, number, content, "cooked", origin, expected)
        time_s = _number(path, number, fields[0], "time")
        rate = _number(path, number, fields[1], "rate") * unit
        if time_s > MAX_TIME_S:
            raise TraceError(path, number, f"time {fields[0]} s is too large (max {MAX_TIME_S:g})")
        if rate > MAX_RATE_KBPS:
            raise TraceError(path, number, f"rate {fields[1]} is too large "
                                           f"(max {MAX_RATE_KBPS / unit:g})")
        if i and time_s < previous:
            raise TraceError(path, number, f"time {fields[0]} is before the previous one "
                                           f"({previous:g}); times must not decrease")
        times[i], rates[i] = time_s, rate
        previous = time_s
    if not (rates > 0).any():
        raise TraceError(path, 0, "no positive capacity: every rate is 0")
    return times, rates
