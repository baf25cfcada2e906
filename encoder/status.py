"""What the encoder shows about itself: one snapshot, one status line.

``SenderStatus`` is filled by the uplink client about once a second and read by the terminal
status line, the Prometheus collector (encoder/metrics.py) and the final summary.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SenderStatus:
    state: str  # connecting | live | catching-up | outage | finishing
    abr: str  # controller name
    abr_state: str  # the controller's own word (probe, drain, ...)
    target_kbps: int  # video bitrate asked of the encoder
    sent_kbps: float  # media payload handed to the link, last second
    acked_kbps: float  # media payload the relay acknowledged, last second
    effective_fps: float
    backlog_bytes: int
    backlog_ms: int
    relay_buffer_ms: int | None
    srtt_ms: float | None
    connections: int
    reconnects: int
    outages: int
    outage_s_total: float
    in_outage_s: float | None  # length of the current outage so far, if in one
    sent_bytes_total: int
    acked_bytes_total: int
    retransmitted_bytes_total: int
    frames_captured: int
    frames_encoded: int
    spool_memory_bytes: int
    spool_disk_bytes: int
    backfill_pending: bool
    spool_full: bool = False  # new frames are being dropped (encoder.spool_overflow)
    dropped_frames_total: int = 0  # video frames dropped while the spool was full


def _kb(n: int) -> str:
    return f"{n / 1000:.0f} kB" if n < 10_000_000 else f"{n / 1e6:.0f} MB"


def status_line(s: SenderStatus) -> str:
    """One line for the terminal, e.g.
    ``LIVE  target 980 kbit/s  sent 1012  backlog 0.3 s/41 kB  relay buffer 5.0 s  rtt 85 ms
    outages 1 (12.3 s)  steady:probe``"""
    parts = [s.state.upper()]
    if s.in_outage_s is not None:
        parts[0] += f" {s.in_outage_s:.0f}s"
    parts.append(f"target {s.target_kbps} kbit/s")
    if s.effective_fps:
        parts.append(f"{s.effective_fps:.0f} fps")
    parts.append(f"sent {s.sent_kbps:.0f}")
    parts.append(f"backlog {s.backlog_ms / 1000:.1f} s/{_kb(s.backlog_bytes)}")
    if s.spool_disk_bytes:
        parts.append(f"spool disk {_kb(s.spool_disk_bytes)}")
    if s.spool_full:
        parts.append("SPOOL FULL: dropping new frames")
    if s.dropped_frames_total:
        parts.append(f"dropped {s.dropped_frames_total} frames")
    if s.relay_buffer_ms is not None:
        parts.append(f"relay buffer {s.relay_buffer_ms / 1000:.1f} s")
    if s.srtt_ms is not None:
        parts.append(f"rtt {s.srtt_ms:.0f} ms")
    parts.append(f"outages {s.outages} ({s.outage_s_total:.1f} s)")
    if s.backfill_pending:
        parts.append("backfilling")
    parts.append(f"{s.abr}:{s.abr_state}" if s.abr_state else s.abr)
    return "  ".join(parts)
