"""The result of one benchmark run, its score, and its JSON file.

One ``RunResult`` per (trace, ABR controller, mode) run, whether the run was simulated
(``benchmarks.sim``, mode ``"sim"``) or went through the real pipeline (mode ``"real"``). The
report and the CLI read and write lists of them with ``write_results`` / ``read_results``.

The oracle (DESIGN.md, "Measuring"): ``unavoidable_interruption_s`` is the interruption no
sender can avoid behind the relay's buffer, and ``capacity_kbps_mean`` the most any sender
can deliver; ``interruption_s`` and ``delivered_kbps_mean`` are scored against them.
``floor_bound_interruption_s`` is the tighter bound for a sender that never goes below
``floor_kbps`` (``benchmarks.oracle``): it also counts the outages that come too close
together for the buffer to refill and the capacity dips below the floor.

The score (``qoe_score``) is Pensieve's linear QoE (Mao, Netravali, Alizadeh, "Neural Adaptive
Video Streaming with Pensieve", SIGCOMM 2017, QoE_lin): per chunk n of a video,
``q(R_n) - 4.3 * T_n - |q(R_{n+1}) - q(R_n)|`` with ``q(R)`` the bitrate in Mbit/s and ``T_n``
the rebuffering seconds of chunk n, summed over the chunks. A live stream has no chunks, so
the run is cut into ``QOE_CHUNK_S`` = 4 s chunks (Pensieve's chunk length) and the sum is
divided by their number, giving a per-chunk average that does not grow with the run's length:

    score = delivered Mbit/s
            - 4.3 * interruption_s / chunks
            - sum over consecutive chunks |mean target Mbit/s change| / chunks

The bitrate term is what reached the relay (so an encoder target the link could not carry
earns nothing), the rebuffer term is the platform's interruption, and the smoothness term
follows the target the encoder was told (what changes the picture quality).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

QOE_CHUNK_S = 4.0  # Pensieve's video chunk length
QOE_REBUFFER_PENALTY = 4.3  # Pensieve's mu for QoE_lin: the top bitrate of its ladder, Mbit/s
SERIES_KEYS = ("t_s", "capacity_kbps", "target_kbps", "delivered_kbps", "relay_buffer_ms",
               "outage")
MODES = ("sim", "real")


class ResultsFileError(ValueError):
    """A results file that cannot be read back; the message names the file, the run and the
    field."""


@dataclass
class RunResult:
    """One run: a trace, an ABR controller, simulated or real. See the module docstring."""

    trace: str
    abr: str
    mode: str  # "sim" | "real"
    duration_s: float
    buffer_ms: int
    capacity_kbps_mean: float  # the trace's capacity over the run (after scale and outages)
    sent_kbps_mean: float  # media payload the sender put on the link
    delivered_kbps_mean: float  # media payload that reached the relay
    utilization: float  # delivered / capacity
    outages: list[list[float]]  # [start_s, length_s]: overlay and native gaps >= 0.5 s
    unavoidable_interruption_s: float  # sum over outages of max(0, length - buffer)
    interruption_s: float  # seconds the platform showed slate or a frozen picture
    platform_sessions: int
    latency_ms_p50: float | None  # capture -> platform
    latency_ms_p95: float | None
    bitrate_switches: int  # changes of the target bitrate the encoder was told of
    frames_captured: int
    frames_live: int
    frames_archived: int
    score: float  # qoe_score
    series: dict[str, list[float]]  # 1 s bins, keys SERIES_KEYS
    notes: str = ""
    floor_kbps: float | None = None  # the sender's lowest audio + video bitrate
    floor_bound_interruption_s: float | None = None  # oracle.floor_bound_interruption_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "<dict>") -> RunResult:
        """Build from ``to_dict``'s shape; ResultsFileError names ``where`` and the field."""
        if not isinstance(data, dict):
            raise ResultsFileError(f"{where}: expected an object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls)
                    if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - data.keys())
        if missing:
            raise ResultsFileError(f"{where}: missing field(s) {', '.join(missing)}")
        unknown = sorted(data.keys() - names)
        if unknown:
            raise ResultsFileError(f"{where}: unknown field(s) {', '.join(unknown)}")
        if data["mode"] not in MODES:
            raise ResultsFileError(f"{where}: mode {data['mode']!r} is not one of "
                                   f"{', '.join(MODES)}")
        series = data["series"]
        if not isinstance(series, dict) or not all(
                isinstance(v, list) for v in series.values()):
            raise ResultsFileError(f"{where}: series must map names to lists of numbers")
        outages = data["outages"]
        if not isinstance(outages, list) or not all(
                isinstance(o, list) and len(o) == 2 for o in outages):
            raise ResultsFileError(f"{where}: outages must be a list of [start_s, length_s]")
        return cls(**{k: data[k] for k in names if k in data})


def qoe_score(delivered_kbps_mean: float, interruption_s: float,
              target_series_kbps: Sequence[float], duration_s: float) -> float:
    """Pensieve's linear QoE averaged per 4 s chunk (see the module docstring).

    ``target_series_kbps``: the encoder's target in 1 s bins over the run; it is averaged
    per chunk (a last partial chunk counts as a chunk of its own length)."""
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"qoe_score: duration_s must be > 0, got {duration_s!r}")
    chunks = max(1.0, duration_s / QOE_CHUNK_S)
    per_chunk = round(QOE_CHUNK_S)
    means = [sum(part) / len(part) for i in range(0, len(target_series_kbps), per_chunk)
             if (part := target_series_kbps[i:i + per_chunk])]
    switching_mbps = sum(abs(b - a) for a, b in zip(means, means[1:], strict=False)) / 1000
    return (delivered_kbps_mean / 1000 - QOE_REBUFFER_PENALTY * interruption_s / chunks
            - switching_mbps / chunks)


def write_results(path: str | Path, results: Sequence[RunResult]) -> None:
    """Write a JSON list of the results (series included), one object per run."""
    text = json.dumps([r.to_dict() for r in results], indent=1, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def read_results(path: str | Path) -> list[RunResult]:
    """Read what ``write_results`` wrote. Raises ResultsFileError naming the file and the run
    for a file that is not a list of runs, OSError when it cannot be read."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, list):
        raise ResultsFileError(f"{path}: expected a JSON list of runs, got "
                               f"{type(data).__name__}")
    return [RunResult.from_dict(item, f"{path}: run {i}") for i, item in enumerate(data)]


__all__ = ["MODES", "QOE_CHUNK_S", "QOE_REBUFFER_PENALTY", "SERIES_KEYS", "ResultsFileError",
           "RunResult", "qoe_score", "read_results", "write_results"]
