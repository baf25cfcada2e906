"""The adaptive encoder end to end: encoder -> a rate-limited link with an outage -> relay ->
nginx-rtmp.

The link (tests.support.TcpProxy: the link emulator) carries 600 kbit/s, then 1500 kbit/s with
a 10 s outage in it. The `steady` controller's target, read from the encoder's own Prometheus
endpoint, settles below 600 in the first phase and rises toward 1500 in the second; the
outage is longer than the relay's buffer, so the live edge jumps ahead and the skipped media
is backfilled; the relay's recording still holds every captured frame, in order.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from monitor.events import read_events
from tests.relay_harness import (
    frame_numbers,
    frames_captured,
    get_json,
    start_encoder,
    start_relay,
    stop_process,
    write_relay_config,
)
from tests.support import NginxRtmp, TcpProxy, free_port

pytestmark = pytest.mark.integration

TOKEN = "coop-adaptive-token-0042"
FPS = 15
DURATION_S = 62
SLOW_UNTIL_S = 26.0  # 600 kbit/s until then, 1500 after
OUTAGE_AT_S, OUTAGE_S = 34.0, 10.0
AUDIO_KBPS = 64
TARGET_RE = re.compile(r'^steadycast_encoder_target_bitrate_kbps\{stream="coop"\} (\S+)$', re.M)


def test_target_follows_the_link_and_the_recording_survives_the_outage(
        tmp_path: Path, nginx_rtmp: NginxRtmp) -> None:
    relay_port, metrics_port = free_port(), free_port()
    record_dir = tmp_path / "rec"
    config = tmp_path / "relay.toml"
    write_relay_config(config, relay_port, record_dir, tmp_path / "relay-events.jsonl", f"""
[streams.coop]
token = "{TOKEN}"
buffer_ms = 4000

[[streams.coop.destinations]]
name = "platform"
url = "{nginx_rtmp.url()}"
key = "coopkey"
""")
    relay = start_relay(config, relay_port, tmp_path / "relay.log")
    link = TcpProxy("127.0.0.1", relay_port)
    link.start()
    link.set_rate_kbps(600)
    events_path = tmp_path / "encoder-events.jsonl"
    targets: list[tuple[float, float]] = []
    stop_polling = threading.Event()
    t0 = time.monotonic()

    def poll_metrics() -> None:
        while not stop_polling.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                            timeout=2) as r:
                    m = TARGET_RE.search(r.read().decode())
                if m:
                    targets.append((time.monotonic() - t0, float(m.group(1))))
            except OSError:
                pass
            time.sleep(0.5)

    encoder = start_encoder(
        f"http://127.0.0.1:{link.port}", "coop", TOKEN, tmp_path / "encoder.log",
        resolution="640x360", fps=FPS, kbps=1000, duration_s=DURATION_S,
        extra=("--abr", "steady", "--min-kbps", "150", "--max-kbps", "1800",
               "--metrics-port", str(metrics_port), "--events", str(events_path),
               "--status-interval", "2"))
    poller = threading.Thread(target=poll_metrics, daemon=True)
    poller.start()
    try:
        def at(t: float) -> None:
            time.sleep(max(0.0, t0 + t - time.monotonic()))

        at(SLOW_UNTIL_S)
        link.set_rate_kbps(1500)
        at(OUTAGE_AT_S)
        link.pause()
        at(OUTAGE_AT_S + OUTAGE_S)
        link.resume()
        out, _ = encoder.communicate(timeout=DURATION_S + 90)
        summary = out.decode()
        encoder_log = (tmp_path / "encoder.log").read_text()
        assert encoder.returncode == 0, (summary, encoder_log[-4000:])
        assert "all_acked=True" in summary, summary
        captured = frames_captured(summary)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = get_json(f"http://127.0.0.1:{relay_port}/api/streams")["streams"][0]
            if st["state"] == "ended":
                break
            time.sleep(0.3)
    finally:
        stop_polling.set()
        if encoder.poll() is None:
            encoder.kill()
        stop_process(relay)
        link.stop()
        nginx_rtmp.stop()

    def phase(a: float, b: float) -> list[float]:
        return [k for t, k in targets if a <= t < b]

    slow = phase(14, SLOW_UNTIL_S)
    assert slow, targets
    # settled at the link: the video target below 600 kbit/s, video + audio using most of it
    # (steady keeps a small queue behind the link, so it may sit a little above at times)
    assert statistics.median(slow) < 600, slow
    assert statistics.median(slow) + AUDIO_KBPS > 0.75 * 600, slow
    assert max(slow) + AUDIO_KBPS < 1.3 * 600, slow
    during_outage = phase(OUTAGE_AT_S + 2, OUTAGE_AT_S + OUTAGE_S)
    assert max(during_outage) < 0.5 * max(phase(SLOW_UNTIL_S + 4, OUTAGE_AT_S)), targets

    # the outage is in the encoder's event log, in the relay's shape
    outages = [e for e in read_events(events_path) if e["event"] == "uplink_outage"]
    longest = max(outages, key=lambda e: e["duration_s"])
    assert OUTAGE_S - 1.5 < longest["duration_s"] < OUTAGE_S + 3, outages
    assert {"stream", "start", "end", "cause"} <= set(longest)
    assert "live_jumps=0" not in summary, summary  # 10 s > the 4 s buffer: live went first

    # the relay's recording holds every captured frame once, in order (backfill merged)
    recordings = sorted((record_dir / "coop").glob("*.ts"))
    assert len(recordings) == 1, recordings
    numbers = frame_numbers(recordings[0])
    assert numbers == list(range(captured)), (
        f"{len(numbers)} of {captured} frames; first unreadable or out of order at "
        f"{next((i for i, n in enumerate(numbers) if n != i), None)}")
    # the platform kept one session through the outage (the relay's slate)
    assert len(nginx_rtmp.recordings("coopkey")) == 1

    # after the outage, on the 1500 kbit/s link, the target climbs well above phase 1
    fast = phase(OUTAGE_AT_S + OUTAGE_S + 8, DURATION_S)
    assert fast, targets
    assert statistics.median(fast) > 1000 and statistics.median(fast) > max(slow) + 300, fast
