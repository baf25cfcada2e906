"""kill -9 of the relay mid-stream loses nothing it acknowledged (issue 13, fault 3).

Real parts: nginx-rtmp as the platform, the real `steadycast relay` (killed with SIGKILL ~10 s
in, then started again on the same state_dir and record_dir) and `steadycast encode` with the
test pattern. The archive (every part of the session) must hold every captured frame code
exactly once, and the restarted relay must put the platform on the slate at once.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.relay_harness import (
    frame_numbers,
    frames_captured,
    get_json,
    start_encoder,
    start_relay,
    stop_process,
    write_relay_config,
)
from tests.support import NginxRtmp, free_port

pytestmark = pytest.mark.integration

TOKEN = "farm1-publish-token-0001"
FPS = 30
DURATION_S = 24
KILL_AT_S = 10.0
SLATE_WITHIN_S = 8.0  # generous: the machine is shared


def part_number(path: Path) -> int:
    m = re.search(r"-part(\d+)\.ts$", path.name)
    return int(m.group(1)) if m else 1


def test_kill_9_of_the_relay_loses_no_acknowledged_frame_and_restarts_on_slate(
        tmp_path: Path, nginx_rtmp: NginxRtmp) -> None:
    relay_port = free_port()
    record_dir = tmp_path / "rec"
    config = tmp_path / "relay.toml"
    write_relay_config(config, relay_port, record_dir, tmp_path / "events.jsonl", f"""
[streams.farm1]
token = "{TOKEN}"
buffer_ms = 2000

[[streams.farm1.destinations]]
name = "a"
url = "{nginx_rtmp.url()}"
key = "destA"
""")
    relay = start_relay(config, relay_port, tmp_path / "relay1.log")
    encoder = start_encoder(f"http://127.0.0.1:{relay_port}", "farm1", TOKEN,
                            tmp_path / "encoder.log", resolution="320x180", fps=FPS, kbps=250,
                            duration_s=DURATION_S)
    restarted = None
    try:
        time.sleep(KILL_AT_S)
        relay.kill()  # SIGKILL: no shutdown code runs
        relay.wait(5)
        restarted = start_relay(config, relay_port, tmp_path / "relay2.log")
        t_restart = time.monotonic()
        on_slate_after_s = None
        while time.monotonic() - t_restart < SLATE_WITHIN_S:
            st = get_json(f"http://127.0.0.1:{relay_port}/api/streams")["streams"][0]
            if st["output_source"] in ("slate", "live"):
                on_slate_after_s = time.monotonic() - t_restart
                break
            time.sleep(0.1)
        out, _ = encoder.communicate(timeout=DURATION_S + 60)
        summary = out.decode()
        assert encoder.returncode == 0, (summary, (tmp_path / "encoder.log").read_text())
        assert "all_acked=True" in summary, summary
        captured = frames_captured(summary)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = get_json(f"http://127.0.0.1:{relay_port}/api/streams")["streams"][0]
            if st["state"] == "ended":
                break
            time.sleep(0.3)
    finally:
        if encoder.poll() is None:
            encoder.kill()
        if relay.poll() is None:
            relay.kill()
        if restarted is not None:
            stop_process(restarted)
        nginx_rtmp.stop()
    log2 = (tmp_path / "relay2.log").read_text()
    assert "restored session" in log2, log2[-3000:]
    assert on_slate_after_s is not None, log2[-3000:]
    # the restarted relay opened its platform session on the slate, before live returned
    assert len(nginx_rtmp.recordings("destA")) == 2

    parts = sorted((record_dir / "farm1").glob("*.ts"), key=part_number)
    assert len(parts) >= 2, parts  # the part cut by the kill, then the continuation
    # the parts of a session concatenate into one MPEG-TS stream (a GOP may straddle them)
    joined = tmp_path / "archive.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    numbers = frame_numbers(joined)
    missing = sorted(set(range(captured)) - set(numbers))
    dupes = len(numbers) - len(set(numbers))
    assert numbers == list(range(captured)), (
        f"{len(numbers)} frames of {captured}: {len(missing)} missing {missing[:10]}, "
        f"{dupes} twice; parts {[p.name for p in parts]}")
