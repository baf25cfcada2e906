"""The report a person reads: bilingual (Vietnamese first), with the encode command."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def encode_command(rec: Mapping[str, Any]) -> str | None:
    """The ``steadycast encode`` options the recommendation stands for (None: not streamable)."""
    if not rec.get("streamable"):
        return None
    return (f"--resolution {rec['resolution']} --start-kbps {rec['start_kbps']} "
            f"--max-kbps {rec['max_kbps']}")


def format_report(site: str, result: Mapping[str, Any]) -> str:
    """The verdict, figures, recommendation and reasons, in English and Vietnamese."""
    tp, rtt, rec, v = (result["throughput_kbps"], result["rtt_ms"], result["recommendation"],
                       result["verdict"])

    def f(x: float | None, unit: str = "") -> str:
        return "-" if x is None else f"{x:.0f}{unit}"

    lines = [f"steadycast probe: site {site!r}, {result['duration_s']:.0f} s "
             f"({result['idle_s']:.0f} s idle, then loaded)",
             f"Verdict:   {v['en']}",
             f"Kết luận:  {v['vi']}",
             "",
             f"Upload throughput (kbit/s, {tp['windows']} one-second windows outside outages): "
             f"p10 {f(tp['p10'])}  median {f(tp['p50'])}  p90 {f(tp['p90'])}  mean "
             f"{f(tp['mean'])}  (overall, outages included: {f(tp['overall_mean'])})",
             f"Round trip: idle median {f(rtt['idle_median'], ' ms')}, p95 "
             f"{f(rtt['idle_p95'], ' ms')}; under load median {f(rtt['loaded_median'], ' ms')}, "
             f"p95 {f(rtt['loaded_p95'], ' ms')}; bufferbloat {f(rtt['bufferbloat'], ' ms')}; "
             f"jitter {f(rtt['jitter'], ' ms')}"]
    drops = result["dropouts"]
    if drops:
        parts = ", ".join(f"at {d['start_s']:.1f} s for {d['duration_s']:.1f} s"
                          + (" (still out at the end)" if d["open_at_end"] else "")
                          for d in drops)
        lines.append(f"Dropouts: {len(drops)}, {result['dropout_total_s']:.1f} s in all: {parts}")
    else:
        lines.append("Dropouts: none")
    lines.append("")
    cmd = encode_command(rec)
    if cmd is not None:
        lines.append("Recommendation / Khuyến nghị:")
        lines.append(f"  steadycast encode ... {cmd}")
        lines.append(f"  relay config: buffer_ms = {rec['buffer_ms']}")
    else:
        lines.append("Recommendation / Khuyến nghị: do not livestream from here / "
                     "không nên livestream từ đây")
    lines.append("Why / Vì sao:")
    for r in result["reasons"]:
        lines.append(f"  - {r['en']}")
        lines.append(f"    {r['vi']}")
    return "\n".join(lines)
