"""A full spool keeps what it holds and keeps the stream going (encoder.spool_overflow).

Real parts: the `steadycast relay` (recording on) and `steadycast encode` processes, and a
TCP proxy on loopback that stalls the uplink (no byte moves, no error) far longer than a
tiny spool lasts. The encoder must not crash: it drops new frames while full, says so once,
sends everything it held once the link returns, and ends with exit status 5.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from monitor.events import read_events
from steadycast.cli import EXIT_SPOOL_OVERFLOW
from tests.relay_harness import (
    frame_numbers,
    frames_captured,
    start_encoder,
    start_relay,
    stop_process,
    write_relay_config,
)
from tests.support import TcpProxy, free_port

pytestmark = pytest.mark.integration

TOKEN = "farm1-publish-token-spool-full"
FPS = 10
DURATION_S = 26
STALL_AT_S, STALL_S = 4.0, 14.0
# 0.2 MB of spool: about 6 s of this stream (150 kbit/s video + 64 audio), far less than
# the stall
SPOOL_ARGS = ("--abr", "fixed", "--spool-memory-mb", "0.05", "--spool-disk-mb", "0.15")


def test_full_spool_drops_new_frames_keeps_held_ones_and_streams_on(tmp_path: Path) -> None:
    relay_port = free_port()
    record_dir = tmp_path / "rec"
    config = tmp_path / "relay.toml"
    write_relay_config(config, relay_port, record_dir, tmp_path / "relay-events.jsonl", f"""
[streams.farm1]
token = "{TOKEN}"
buffer_ms = 2000
""")
    relay = start_relay(config, relay_port, tmp_path / "relay.log")
    uplink = TcpProxy("127.0.0.1", relay_port)
    uplink.start()
    log, events = tmp_path / "encoder.log", tmp_path / "uplink.jsonl"
    encoder = start_encoder(f"http://127.0.0.1:{uplink.port}", "farm1", TOKEN, log,
                            resolution="320x180", fps=FPS, kbps=150, duration_s=DURATION_S,
                            extra=(*SPOOL_ARGS, "--quiet", "--events", str(events)))
    try:
        t0 = time.monotonic()
        time.sleep(max(0.0, t0 + STALL_AT_S - time.monotonic()))
        uplink.pause()
        time.sleep(max(0.0, t0 + STALL_AT_S + STALL_S - time.monotonic()))
        assert encoder.poll() is None, log.read_text()  # still streaming through it
        uplink.resume()
        out, _ = encoder.communicate(timeout=DURATION_S + 60)
    finally:
        if encoder.poll() is None:
            encoder.kill()
        stop_process(relay)
        uplink.stop()
    summary, text = out.decode(), log.read_text()
    assert "Traceback" not in text, text
    assert encoder.returncode == EXIT_SPOOL_OVERFLOW, (summary, text)
    assert "all_acked=True" in summary, summary
    m = re.search(r"spool_dropped_frames=(\d+)", summary)
    assert m, summary
    dropped = int(m.group(1))
    assert dropped > 0, summary

    # said plainly, once per episode (not once per dropped frame), with the limit
    full = [line for line in text.splitlines() if "spool full" in line]
    assert 1 <= len(full) <= 3, full
    assert "--spool-disk-mb 0.15" in full[0] and "new frames are dropped" in full[0], full[0]
    assert len([line for line in text.splitlines() if "spool has room again" in line]) == len(full)
    kinds = [e["event"] for e in read_events(events)]
    assert kinds.count("spool_full_started") == len(full), kinds

    # everything the encoder held reached the relay's recording once, in order: only the
    # dropped frames are missing, and the stream went on after them
    captured = frames_captured(summary)
    [recording] = sorted((record_dir / "farm1").glob("*.ts"))
    numbers = frame_numbers(recording)
    assert None not in numbers
    assert numbers == sorted(set(numbers)), "duplicated or out of order"
    assert len(numbers) == captured - dropped, (len(numbers), captured, dropped)
    held_before_stall = int(STALL_AT_S * FPS)
    assert numbers[:held_before_stall] == list(range(held_before_stall))
    assert numbers[-1] >= captured - FPS  # the live stream after the stall arrived too
    missing = sorted(set(range(captured)) - set(numbers))
    assert missing[0] > held_before_stall, missing[:5]
