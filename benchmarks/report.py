"""The benchmark's report: a Markdown file, a terminal table and one plot per run.

Every figure is read against the oracle (DESIGN.md, "Measuring"): the link's capacity bounds
what any sender can deliver, and ``unavoidable_interruption_s`` (the sum of
``max(0, L - D)`` over outage lengths L behind a relay delay D) bounds the interruption no
sender can avoid. The report shows each controller's figures beside both bounds; the
*excess* interruption (measured minus unavoidable) is what a controller or transport could
have saved. ``floor_bound_interruption_s`` (``benchmarks.oracle``) is the tighter bound for a
sender that never encodes below the stream's floor: outages too close together for the buffer
to refill and capacity below the floor count too. *Over floor* is the interruption beyond it.

The Markdown tables pad their columns, so the file reads as well in a terminal as rendered.
Plots use matplotlib's Agg renderer through a bare ``Figure`` (no pyplot, no global backend).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import results as results_module
from benchmarks.results import RunResult, qoe_score

PLOT_SIZE_IN = (11.0, 4.5)
PLOT_DPI = 100
SCORE_TIE = 1e-9  # scores this close share the win
MISSING = "–"  # a figure the run could not measure (e.g. latency without a decoder)


# --- plain figures --------------------------------------------------------------------------
def excess_interruption_s(result: RunResult) -> float:
    """Interruption beyond the oracle's unavoidable share, never below 0. A run can come in
    a little under the oracle: the relay schedules media its buffer D after the first unit's
    *arrival*, so the media gets D plus the start-up latency, while the oracle gives it D."""
    return max(0.0, result.interruption_s - result.unavoidable_interruption_s)


def over_floor_s(result: RunResult) -> float | None:
    """Interruption beyond the floor-rate bound (never below 0); None when the run has no
    floor bound (an older results file, or the direct baseline without a buffer)."""
    if result.floor_bound_interruption_s is None:
        return None
    return max(0.0, result.interruption_s - result.floor_bound_interruption_s)


def excess_per_outage_s(result: RunResult) -> float | None:
    """The excess interruption divided by the number of outages; None when there were none."""
    if not result.outages:
        return None
    return excess_interruption_s(result) / len(result.outages)


@dataclass(frozen=True)
class ControllerSummary:
    """One controller's figures across every trace it ran on."""

    label: str
    runs: int
    mean_utilization: float
    excess_interruption_s: float
    over_floor_s: float | None  # None when a run has no floor bound
    platform_sessions: int
    mean_score: float


def summarize(results: Sequence[RunResult]) -> list[ControllerSummary]:
    """Per controller (and mode, when the results mix modes): mean utilization, total
    excess interruption, total platform sessions and mean score, best score first."""
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(_label(r, results), []).append(r)
    summaries = [
        ControllerSummary(
            label=label,
            runs=len(runs),
            mean_utilization=sum(r.utilization for r in runs) / len(runs),
            excess_interruption_s=sum(excess_interruption_s(r) for r in runs),
            over_floor_s=_sum_or_none([over_floor_s(r) for r in runs]),
            platform_sessions=sum(r.platform_sessions for r in runs),
            mean_score=sum(r.score for r in runs) / len(runs),
        )
        for label, runs in groups.items()
    ]
    return sorted(summaries, key=lambda s: -s.mean_score)


def _sum_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present and len(present) == len(values) else None


def winners(results: Sequence[RunResult]) -> list[str]:
    """The controller(s) with the highest mean score (several on a tie); empty without
    results."""
    summaries = summarize(results)
    if not summaries:
        return []
    best = summaries[0].mean_score
    return [s.label for s in summaries if best - s.mean_score <= SCORE_TIE]


def _label(result: RunResult, results: Sequence[RunResult]) -> str:
    """The controller's name, with the mode when the results mix sim and real runs."""
    if len({r.mode for r in results}) > 1:
        return f"{result.abr} ({result.mode})"
    return result.abr


# --- tables ---------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return f"{value:.{digits}f}"


def _latency(result: RunResult) -> str:
    if result.latency_ms_p50 is None and result.latency_ms_p95 is None:
        return MISSING
    return f"{_num(result.latency_ms_p50, 0)}/{_num(result.latency_ms_p95, 0)}"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]], *,
                 markdown: bool = True, left: int = 1) -> str:
    """Columns padded to their widest cell; the first ``left`` columns left-aligned (names),
    the others right (numbers). ``markdown`` gives a pipe table (with its separator line),
    else space-separated columns."""
    body = [list(row) for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h)
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if i < left else c.rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |" if markdown else "  ".join(padded).rstrip()

    lines = [line(headers)]
    if markdown:
        lines.append("|" + "|".join(("-" * (w + 1) + ":") if i >= left else ("-" * (w + 2))
                                    for i, w in enumerate(widths)) + "|")
    else:
        lines.append("  ".join("-" * w for w in widths))
    lines.extend(line(row) for row in body)
    return "\n".join(lines)


TRACE_HEADERS = ("controller", "util", "delivered kbit/s", "capacity kbit/s",
                 "interruption s", "unavoidable s", "excess s", "excess/outage s",
                 "floor bound s", "over floor s", "sessions", "latency p50/p95 ms", "switches",
                 "frames live/captured", "archived", "score")


def _trace_row(r: RunResult, results: Sequence[RunResult]) -> list[str]:
    return [
        _label(r, results),
        _num(r.utilization, 2),
        _num(r.delivered_kbps_mean, 0),
        _num(r.capacity_kbps_mean, 0),
        _num(r.interruption_s),
        _num(r.unavoidable_interruption_s),
        _num(excess_interruption_s(r)),
        _num(excess_per_outage_s(r), 2),
        _num(r.floor_bound_interruption_s),
        _num(over_floor_s(r)),
        str(r.platform_sessions),
        _latency(r),
        str(r.bitrate_switches),
        f"{r.frames_live}/{r.frames_captured}",
        str(r.frames_archived),
        _num(r.score, 2),
    ]


SUMMARY_HEADERS = ("controller", "runs", "mean util", "excess interruption s",
                   "over floor s", "sessions", "mean score")


def _summary_rows(results: Sequence[RunResult]) -> list[list[str]]:
    return [[s.label, str(s.runs), _num(s.mean_utilization, 2), _num(s.excess_interruption_s),
             _num(s.over_floor_s), str(s.platform_sessions), _num(s.mean_score, 2)]
            for s in summarize(results)]


def _winner_line(results: Sequence[RunResult]) -> str:
    names = winners(results)
    if not names:
        return "no runs"
    best = summarize(results)[0].mean_score
    if len(names) == 1:
        return f"winner by mean score: {names[0]} ({best:.2f})"
    return f"tie by mean score ({best:.2f}): {', '.join(names)}"


def by_trace(results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    """The results grouped by trace name, in first-seen order."""
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(r.trace, []).append(r)
    return groups


def summary_table(results: Sequence[RunResult]) -> str:
    """The terminal summary: one line per run, then per controller across traces and the
    winner by mean score."""
    headers = ("trace", "controller", "util", "delivered", "capacity", "interrupt s",
               "unavoid. s", "excess s", "floor bd s", "sessions", "p95 ms", "switches",
               "score")
    rows = [[r.trace, _label(r, results), _num(r.utilization, 2), _num(r.delivered_kbps_mean, 0),
             _num(r.capacity_kbps_mean, 0), _num(r.interruption_s),
             _num(r.unavoidable_interruption_s), _num(excess_interruption_s(r)),
             _num(r.floor_bound_interruption_s), str(r.platform_sessions),
             _num(r.latency_ms_p95, 0), str(r.bitrate_switches), _num(r.score, 2)]
            for r in results]
    parts = [format_table(headers, rows, markdown=False, left=2)]
    if results:
        parts += ["", "across traces:", format_table(SUMMARY_HEADERS, _summary_rows(results),
                                                     markdown=False),
                  "", _winner_line(results)]
    return "\n".join(parts)


# --- the Markdown report --------------------------------------------------------------------
def _score_formula() -> str:
    """The score's definition as ``benchmarks.results`` documents it (its module docstring
    from "The score" on, else ``qoe_score``'s own), indented as a Markdown code block."""
    module_doc = inspect.getdoc(results_module) or ""
    start = module_doc.find("The score")
    doc = (module_doc[start:] if start >= 0 else inspect.getdoc(qoe_score)
           or "(qoe_score has no docstring)")
    return "\n".join(f"    {line}" if line else "" for line in doc.splitlines())


def render_report(results: Sequence[RunResult], *, title: str, command_line: str,
                  settings: Mapping[str, object] | None = None,
                  date: datetime | None = None) -> str:
    """The report as Markdown text (``write_report`` writes it)."""
    when = (date or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M %Z").strip()
    modes = sorted({r.mode for r in results})
    buffers = sorted({r.buffer_ms for r in results})
    durations = sorted({r.duration_s for r in results})
    lines = [f"# {title}", "", "## How it was run", "", "```", command_line, "```", "",
             f"- date: {when}",
             f"- mode: {', '.join(modes) or MISSING}",
             f"- relay buffer D: {', '.join(f'{b:g} ms' for b in buffers) or MISSING}",
             f"- duration per run: {', '.join(f'{d:g} s' for d in durations) or MISSING}"]
    for key, value in (settings or {}).items():
        lines.append(f"- {key}: {value}")
    lines.append("")

    for trace, runs in by_trace(results).items():
        outages = runs[0].outages
        total = sum(length for _, length in outages)
        longest = max((length for _, length in outages), default=0.0)
        lines += [f"## {trace}", "",
                  f"{len(outages)} outage(s) (gaps without capacity, the trace's own and the "
                  f"overlay's), {total:.1f} s in all, longest {longest:.1f} s; mean capacity "
                  f"{runs[0].capacity_kbps_mean:.0f} kbit/s.", "",
                  format_table(TRACE_HEADERS, [_trace_row(r, results) for r in runs]), ""]
        notes = [(r.abr, r.notes) for r in runs if r.notes]
        for abr, note in notes:
            text = note if isinstance(note, str) else "; ".join(str(n) for n in note)
            lines.append(f"- {abr}: {' '.join(text.split())}")
        if notes:
            lines.append("")

    lines += ["## Summary across traces", "",
              format_table(SUMMARY_HEADERS, _summary_rows(results)), "",
              f"**{_winner_line(results)}**", "",
              "## How to read this", "",
              "- *capacity* is what the link could carry over the run (the oracle's bound on "
              "delivery); *util* = delivered / capacity.",
              "- *unavoidable* is the oracle: the sum of max(0, L - D) over the outage lengths L "
              "with relay buffer D. No sender can interrupt the platform for less.",
              "- *excess* = interruption - unavoidable: what the controller or transport lost "
              "beyond the oracle; *excess/outage* divides it by the number of outages.",
              "- *floor bound* is the tighter oracle for a sender that never encodes below "
              "the stream's floor (lowest video + audio bitrate): an ideal sender replayed "
              "over the link's delivery opportunities, so outages too close together for the "
              "buffer to refill and capacity below the floor count as well "
              "(`benchmarks.oracle`); *over floor* = interruption - floor bound.",
              "- *sessions* counts platform sessions (1 per destination is the goal: every "
              "extra one is a reconnect viewers saw); *switches* counts bitrate changes; "
              "*frames live/captured* is how many captured frames reached the live output, "
              "*archived* how many reached the recording.",
              "- *score* (higher is better) is `results.qoe_score`:", "",
              _score_formula(), ""]
    return "\n".join(lines)


def write_report(path: str | Path, results: Sequence[RunResult], *, title: str,
                 command_line: str, settings: Mapping[str, object] | None = None) -> Path:
    """Write the Markdown report: how it was run (``command_line``, date, buffer, and each
    ``settings`` item such as outage spec, seed and scale), one table per trace, the summary
    across traces with the winner by score, and how to read it. Returns the path."""
    path = Path(path)
    path.write_text(render_report(results, title=title, command_line=command_line,
                                  settings=settings), encoding="utf-8")
    return path


# --- plots ----------------------------------------------------------------------------------
def file_stem(trace: str, abr: str, mode: str) -> str:
    """``<trace>-<abr>-<mode>`` with anything but letters, digits, '.', '_' and '-' replaced
    by '_' (a scaled trace is named like 'norway_bus_1 x0.5')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{trace}-{abr}-{mode}")


def plot_file_name(result: RunResult) -> str:
    """The run's plot file name: ``file_stem`` + ``.png``."""
    return file_stem(result.trace, result.abr, result.mode) + ".png"


def plot_run(path: str | Path, result: RunResult) -> Path:
    """One run over time: capacity as steps, target and delivered bitrate, the relay buffer on
    a second axis, outages shaded; the title names trace, controller and mode with the
    utilization and interruption. Returns the path."""
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = Path(path)
    s = result.series
    t = list(s.get("t_s", []))
    fig = Figure(figsize=PLOT_SIZE_IN, dpi=PLOT_DPI)
    ax = fig.add_subplot()
    for start, length in result.outages:
        ax.axvspan(start, start + length, color="#f4a6a6", alpha=0.6, linewidth=0)
    handles: list[Artist] = []
    if t:
        bin_s = t[1] - t[0] if len(t) > 1 else result.duration_s
        mid = [x + bin_s / 2 for x in t]  # a bin's mean is drawn at its middle
        cap = list(s.get("capacity_kbps", []))
        if len(cap) == len(t):
            handles.append(ax.stairs(cap, [*t, t[-1] + bin_s], color="#9aa5b1", linewidth=1.0,
                                     label="capacity"))
        for key, label, color in (("target_kbps", "target", "#e08a00"),
                                  ("delivered_kbps", "delivered", "#1f4e9c")):
            values = list(s.get(key, []))
            if len(values) == len(t):
                handles += ax.plot(mid, values, color=color, linewidth=1.2, label=label)
        buffer_ms = list(s.get("relay_buffer_ms", []))
        if len(buffer_ms) == len(t):
            ax2 = ax.twinx()
            handles += ax2.plot(mid, [b / 1000 for b in buffer_ms], color="#2e8b57",
                                linewidth=0.9, linestyle="--", label="relay buffer")
            ax2.set_ylabel("relay buffer (s)")
            ax2.set_ylim(bottom=0)
    if result.outages:
        handles.append(Patch(color="#f4a6a6", label="outage"))
    ax.set_xlim(0, result.duration_s)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("kbit/s")
    ax.set_title(f"{result.trace} · {result.abr} · {result.mode}: utilization "
                 f"{result.utilization:.2f}, interruption {result.interruption_s:.1f} s "
                 f"(unavoidable {result.unavoidable_interruption_s:.1f} s)")
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13),
                  ncol=len(handles), fontsize="small", frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
