"""How closely the real H.264 encoder follows the bitrates it is asked for, per VBV buffer size.

    python -m benchmarks.encoder_rate [--size 640x360] [--fps 15] [--vbv 2.5,1,0.25]

Runs ``encoder.av_encoder.MediaEncoder`` (libx264, the test pattern) through a schedule of
bitrate steps of the kind the ABR controller makes on a failing link (1000 -> 150 kbit/s
after a stretch where the picture needed less than the target, and so on), once per VBV
buffer size (seconds at the ceiling; ``encoder.av_encoder.VBV_BUFFER_S`` is the default),
side by side in one run. For each it prints:

- the kbit/s produced in the seconds after each drop, against the target;
- ``excess Mbit``: bits produced above the simulator's model of the encoder (the target
  through the first-order lags of ``benchmarks.sim.follow_kbps``), summed over the schedule:
  media that waits in the sender's queue when the link is failing;
- ``mean |error|``: mean relative error of each second's bitrate against that model;
- keyframe/P-frame size at steady 300, 800 and 1500 kbit/s (smaller = flatter keyframes,
  what a small buffer costs in picture quality).

Encoding is CPU work (about 30 s per buffer size at 640x360 with ``--preset veryfast``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.sim import follow_kbps
from encoder.av_encoder import VBV_BUFFER_S, VIDEO_TRACK_ID, MediaEncoder
from encoder.testpattern import TestPattern

CEILING_KBPS = 2500  # the encoder's default --max-kbps
# (start second, target kbit/s): drops after stretches above and below what the picture needs
SCHEDULE = ((0, 1000), (40, 150), (60, 1000), (80, 150), (100, 600), (110, 300), (120, 1500),
            (130, 200))
SCHEDULE_END_S = 140
SKIP_S = 10  # the encoder's first seconds (its rate control settling) are not scored
STEADY_KBPS = (300, 800, 1500)
STEADY_S = 24


def _target(t_s: float) -> int:
    return [kbps for start, kbps in SCHEDULE if t_s >= start][-1]


def _encode(width: int, height: int, fps: int, preset: str, vbv_buffer_s: float,
            seconds: float, target: int | None) -> tuple[dict[int, int], set[int]]:
    """(bytes by frame number, keyframe numbers) for the schedule, or a steady ``target``."""
    first = target if target is not None else _target(0)
    enc = MediaEncoder(width, height, fps, first, 2.0, 48000, 64, preset,
                       max_kbps=CEILING_KBPS, vbv_buffer_s=vbv_buffer_s)
    pattern = TestPattern(width, height, fps, "rate")
    sizes: dict[int, int] = {}
    keys: set[int] = set()
    current = None
    for n in range(round(seconds * fps)):
        kbps = target if target is not None else _target(n / fps)
        if kbps != current:
            enc.set_kbps(kbps)
            current = kbps
        for u in enc.encode_video(pattern.video_frame(n, round(n * 1000 / fps)), n, 0):
            if u.track_id == VIDEO_TRACK_ID:
                sizes[u.pts] = len(u.payload)
                if u.keyframe:
                    keys.add(u.pts)
    for u in enc.flush():
        sizes[u.pts] = len(u.payload)
    return sizes, keys


def _per_second_kbps(sizes: dict[int, int], fps: int, seconds: int) -> list[float]:
    return [sum(sizes.get(n, 0) for n in range(s * fps, (s + 1) * fps)) * 8 / 1000
            for s in range(seconds)]


def _model_kbps(fps: int, seconds: int) -> list[float]:
    """Each second's mean of the target through the simulator's model of the encoder."""
    rate = float(_target(0))
    out = []
    for s in range(seconds):
        total = 0.0
        for n in range(s * fps, (s + 1) * fps):
            rate = follow_kbps(rate, _target(n / fps), fps)
            total += rate
        out.append(total / fps)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.encoder_rate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT (default 640x360)")
    parser.add_argument("--fps", type=int, default=15, help="frame rate (default 15)")
    parser.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    parser.add_argument("--vbv", default=f"2.5,1,{VBV_BUFFER_S:g}",
                        help="VBV buffer sizes to compare, seconds at the ceiling "
                             f"(default 2.5,1,{VBV_BUFFER_S:g}; 1 was the old setting)")
    args = parser.parse_args(argv)
    try:
        width, height = (int(x) for x in args.size.lower().split("x"))
        sizes_s = [float(x) for x in args.vbv.split(",")]
    except ValueError:
        parser.error(f"--size {args.size!r} or --vbv {args.vbv!r} is not a number list")
    fps = args.fps
    model = _model_kbps(fps, SCHEDULE_END_S)
    drops = [start for (start, kbps), (_, before) in zip(SCHEDULE[1:], SCHEDULE, strict=False)
             if kbps < before]
    print(f"{width}x{height} at {fps} fps, preset {args.preset}, ceiling {CEILING_KBPS} "
          f"kbit/s; schedule {SCHEDULE}")
    print("| VBV s at ceiling | kbit/s in the 3 s after each drop (target) | excess Mbit | "
          "mean abs error | keyframe/P at " + ", ".join(map(str, STEADY_KBPS)) + " |")
    print("|---|---|---|---|---|")
    for vbv_s in sizes_s:
        started = time.monotonic()
        sizes, _ = _encode(width, height, fps, args.preset, vbv_s, SCHEDULE_END_S, None)
        real = _per_second_kbps(sizes, fps, SCHEDULE_END_S)
        scored = range(SKIP_S, SCHEDULE_END_S)
        excess = sum(max(0.0, real[s] - model[s]) for s in scored) / 1000
        error = float(np.mean([abs(real[s] - model[s]) / model[s] for s in scored]))
        after = "; ".join(f"{start}s: " + "/".join(f"{real[s]:.0f}" for s in
                                                   range(start + 1, start + 4))
                          + f" ({_target(start)})" for start in drops)
        ratios = []
        for kbps in STEADY_KBPS:
            steady, keys = _encode(width, height, fps, args.preset, vbv_s, STEADY_S, kbps)
            later = {n: b for n, b in steady.items() if n >= STEADY_S * fps // 2}
            k = [b for n, b in later.items() if n in keys]
            p = [b for n, b in later.items() if n not in keys]
            ratios.append(f"{np.mean(k) / np.mean(p):.1f}" if k and p else "-")
        print(f"| {vbv_s:g} | {after} | {excess:.2f} | {error:.3f} | {' / '.join(ratios)} |"
              f"  ({time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
