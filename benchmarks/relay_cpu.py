"""CPU use of the relay per transcoded stream.

Starts a real relay (recording only, no platform account needed) and a real
``steadycast encode --source testpattern`` feeding it, lets them run, and reads both
processes' CPU time from /proc over a window after a warm-up. Prints a table and one JSON
line. CPU seconds per wall second: 1.0 = one core fully busy.

    python -m benchmarks.relay_cpu --resolution 1280x720 --fps 30 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness.local_services import free_port, start_relay, stop_process, write_relay_config
from uplink.media import parse_resolution

CLK_TCK = os.sysconf("SC_CLK_TCK")
TOKEN = "bench-token-000000"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLK_TCK


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", default="1280x720", help="output and ingest size")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--output-kbps", type=int, default=2500, help="relay output bitrate")
    ap.add_argument("--ingest-kbps", type=int, default=1500, help="encoder bitrate")
    ap.add_argument("--preset", default="veryfast", help="relay x264 preset")
    ap.add_argument("--encoder-preset", default="ultrafast",
                    help="the feeding encoder's x264 preset; light by default so that on a small "
                         "machine the encoder does not starve the relay (check output_frames: "
                         "a valid run is all live)")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window")
    ap.add_argument("--warmup", type=float, default=5.0)
    args = ap.parse_args(argv)
    width, height = parse_resolution(args.resolution)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cfg = d / "relay.toml"
        write_relay_config(cfg, port, d / "rec", d / "events.jsonl",
                           f'[streams.bench]\ntoken = "{TOKEN}"\nbuffer_ms = 2000\n',
                           output={"width": width, "height": height, "fps": args.fps,
                                   "video_kbps": args.output_kbps, "audio_kbps": 128,
                                   "x264_preset": args.preset})
        py = [sys.executable, "-m", "steadycast.cli", "--log-level", "warning"]
        relay = start_relay(cfg, port, d / "relay.log", log_level="warning")
        total = args.warmup + args.seconds + 5
        enc = subprocess.Popen([*py, "encode", "--relay", f"http://127.0.0.1:{port}",
                                "--stream", "bench", "--token", TOKEN, "--resolution",
                                args.resolution, "--fps", str(args.fps), "--kbps",
                                str(args.ingest_kbps), "--duration", str(total),
                                "--preset", args.encoder_preset],
                               stdout=subprocess.DEVNULL)
        try:
            print(f"warming up {args.warmup:g} s ...", file=sys.stderr)
            time.sleep(args.warmup)
            r0, e0, t0 = cpu_seconds(relay.pid), cpu_seconds(enc.pid), time.monotonic()
            print(f"measuring {args.seconds:g} s ...", file=sys.stderr)
            time.sleep(args.seconds)
            r1, e1, t1 = cpu_seconds(relay.pid), cpu_seconds(enc.pid), time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/streams") as resp:
                status = json.loads(resp.read())["streams"][0]
        finally:
            stop_process(enc)
            stop_process(relay)
    wall = t1 - t0
    result = {
        "resolution": args.resolution, "fps": args.fps, "relay_preset": args.preset,
        "output_kbps": args.output_kbps, "window_s": round(wall, 2),
        "relay_cpu_cores": round((r1 - r0) / wall, 3),
        "encoder_cpu_cores": round((e1 - e0) / wall, 3),
        "cpu_count": os.cpu_count(),
        "output_frames": status.get("output_frames"),
        "output_source_at_end": status.get("output_source"),
    }
    print(f"{'':24}{'CPU cores (s/s)':>16}")
    print(f"{'relay (1 stream)':24}{result['relay_cpu_cores']:>16.3f}")
    print(f"{'encoder (same host)':24}{result['encoder_cpu_cores']:>16.3f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
