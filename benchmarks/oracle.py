"""The floor-rate oracle: the least interruption any sender can reach when it never encodes
below the stream's floor bitrate.

The issue's oracle, ``outages.unavoidable_interruption_s``, sums ``max(0, L - D)`` over the
gaps without any capacity: it assumes the relay's buffer is full again before every outage
and that any capacity at all carries the stream. This bound also counts what those miss:
between outages close together, and where the capacity dips below the floor, the buffer
cannot refill, and a later outage or the dip itself interrupts the platform whatever the
controller does (docs/benchmarks.md gives the traces where it matters).

This bound replays the link's delivery opportunities against a fluid sender that encodes
exactly ``floor_kbps`` and is ideal in every other way:

- media is captured continuously from 0 on; the instant captured at ``tau`` is shown at
  ``tau + D`` and is useful only if it leaves the bottleneck by ``tau + D - d`` (``d``: the
  one-way delay after the bottleneck);
- each opportunity carries up to ``mtu_bytes`` of the oldest media still useful (media
  already captured only: the sender cannot send the future), and media whose deadline passed
  is given up; an opportunity that finds nothing to send is wasted, as Mahimahi wastes it;
- media is divisible (a frame half-delivered counts half), so no real encoder with frames,
  keyframes and packet headers can do better.

Serving the oldest useful media first is optimal here: every instant of media has the same
size and the same slack ``D - d``, so deadlines are ordered like capture times, and any
schedule that sends a later instant while an earlier useful one waits can swap the two
without losing either (the exchange argument behind earliest-deadline-first scheduling;
Liu and Layland, JACM 1973). The missed media time is the interruption the platform sees.

With ``floor_kbps`` near 0 the bound is the issue's sum over outages (less ``d`` per outage);
it grows with the floor. Media captured in the last ``D`` seconds whose opportunities lie
beyond ``duration_s`` is not counted, so the figure stays a lower bound for a run measured
over ``[0, duration_s)``.
"""

from __future__ import annotations

import math

import numpy as np

from linklab.traces import BITS_PER_BYTE, MTU_BYTES, Trace


def floor_bound_interruption_s(link: Trace, *, floor_kbps: float, buffer_s: float,
                               one_way_delay_s: float, duration_s: float,
                               mtu_bytes: int = MTU_BYTES) -> float | None:
    """Seconds of interruption over ``[0, duration_s)`` that no sender encoding at least
    ``floor_kbps`` can avoid on ``link`` (its opportunities, outages already removed, e.g.
    ``outages.overlay_outages``) behind a relay buffer of ``buffer_s``. See the module
    docstring. None when the buffer does not even cover the one-way delay (no media can be
    shown in time, e.g. the direct-RTMP baseline with no buffer)."""
    for name, value in (("floor_kbps", floor_kbps), ("buffer_s", buffer_s),
                        ("one_way_delay_s", one_way_delay_s), ("duration_s", duration_s)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"floor_bound_interruption_s: {name} must be a finite number "
                             f">= 0, got {value!r}")
    if mtu_bytes <= 0:
        raise ValueError(f"floor_bound_interruption_s: mtu_bytes must be > 0, got {mtu_bytes}")
    window_s = buffer_s - one_way_delay_s  # capture to leaving the bottleneck, at the latest
    if window_s <= 0:
        return None
    if duration_s == 0:
        return 0.0
    if floor_kbps == 0:
        floor_kbps = 1e-9  # a sender of nothing still needs some capacity in every window
    rate_bytes_per_s = floor_kbps * 1000 / BITS_PER_BYTE
    times_ms, counts = np.unique(link.looped_ms(duration_s), return_counts=True)
    head_s = 0.0  # media captured before this has been sent or given up
    missed_s = 0.0
    for t_ms, count in zip(times_ms.tolist(), counts.tolist(), strict=True):
        t_s = t_ms / 1000
        oldest_useful_s = t_s - window_s
        if oldest_useful_s > head_s:  # media between could not leave in time: given up
            missed_s += oldest_useful_s - head_s
            head_s = oldest_useful_s
        waiting_bytes = rate_bytes_per_s * (t_s - head_s)
        if waiting_bytes > 0:
            head_s += min(count * mtu_bytes, waiting_bytes) / rate_bytes_per_s
    end_s = duration_s - window_s  # media up to here had all its chances inside the run
    if end_s > head_s:
        missed_s += end_s - head_s
    return missed_s


__all__ = ["floor_bound_interruption_s"]
