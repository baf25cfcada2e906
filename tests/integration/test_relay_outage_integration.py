"""The relay's promise, end to end: a stream that survives outages reaches every platform as
one continuous session, and the relay's recording holds every captured frame.

Real parts: nginx-rtmp as the platform, the real `steadycast relay` and `steadycast encode`
processes, and TCP proxies on loopback that stall and reset the uplink and keep one
destination down for a while.
"""

from __future__ import annotations

import threading
import time
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
from tests.support.media_check import assert_platform_contract

pytestmark = pytest.mark.integration

TOKEN = "farm1-publish-token-0001"
FPS = 30
AUDIO_FRAME_S = 1024 / 44100
DURATION_S = 34
STALL_AT_S, STALL_S = 8.0, 8.0
RESET_AT_S = 22.0
DEST_B_DOWN_UNTIL_S = 5.0


def test_outages_keep_one_platform_session_per_destination_and_lose_no_frame(
        tmp_path: Path, nginx_rtmp: NginxRtmp) -> None:
    relay_port = free_port()
    record_dir = tmp_path / "rec"
    events_path = tmp_path / "events.jsonl"
    dest_b_proxy = TcpProxy("127.0.0.1", nginx_rtmp.port)
    dest_b_proxy.start()
    dest_b_proxy.refuse(True)  # destination B is down at first
    config = tmp_path / "relay.toml"
    write_relay_config(config, relay_port, record_dir, events_path, f"""
[streams.farm1]
token = "{TOKEN}"
title = "Nông trại thử nghiệm"
buffer_ms = 3000

[[streams.farm1.destinations]]
name = "a"
url = "{nginx_rtmp.url()}"
key = "destA"

[[streams.farm1.destinations]]
name = "b"
url = "rtmp://127.0.0.1:{dest_b_proxy.port}/live"
key = "destB"
""")
    relay = start_relay(config, relay_port, tmp_path / "relay.log")
    uplink = TcpProxy("127.0.0.1", relay_port)
    uplink.start()
    sources_seen: set[str] = set()
    stop_polling = threading.Event()

    def poll_status() -> None:
        while not stop_polling.is_set():
            try:
                st = get_json(f"http://127.0.0.1:{relay_port}/api/streams")["streams"][0]
                sources_seen.add(st["output_source"])
            except OSError:
                pass
            time.sleep(0.2)

    poller = threading.Thread(target=poll_status, daemon=True)
    poller.start()
    encoder = start_encoder(f"http://127.0.0.1:{uplink.port}", "farm1", TOKEN,
                            tmp_path / "encoder.log", resolution="320x180", fps=FPS, kbps=250,
                            duration_s=DURATION_S)
    try:
        t0 = time.monotonic()

        def at(t: float) -> None:
            time.sleep(max(0.0, t0 + t - time.monotonic()))

        at(DEST_B_DOWN_UNTIL_S)
        dest_b_proxy.refuse(False)
        at(STALL_AT_S)
        uplink.pause()
        at(STALL_AT_S + STALL_S)
        uplink.resume()
        at(RESET_AT_S)
        uplink.reset_connections()
        out, _ = encoder.communicate(timeout=DURATION_S + 60)
        summary = out.decode()
        assert encoder.returncode == 0, (summary, (tmp_path / "encoder.log").read_text())
        captured = frames_captured(summary)
        assert "all_acked=True" in summary
        # the relay plays out its buffer and ends the platform sessions on its own
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = get_json(f"http://127.0.0.1:{relay_port}/api/streams")["streams"][0]
            if st["state"] == "ended" and st["output_source"] == "offline":
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"relay did not end the stream: {st}")
    finally:
        stop_polling.set()
        if encoder.poll() is None:
            encoder.kill()
        stop_process(relay)
        uplink.stop()
        dest_b_proxy.stop()
        nginx_rtmp.stop()
    relay_log = (tmp_path / "relay.log").read_text()
    assert TOKEN not in relay_log

    # the viewers saw the slate during the stall, and live before and after it
    assert {"live", "slate"} <= sources_seen, sources_seen

    # one platform session per destination, each continuous and clean
    for key in ("destA", "destB"):
        files = nginx_rtmp.recordings(key)
        assert len(files) == 1, (key, files, relay_log[-3000:])
    min_duration = DURATION_S - DEST_B_DOWN_UNTIL_S - 3
    assert_platform_contract(nginx_rtmp.recordings("destA")[0], FPS, AUDIO_FRAME_S,
                             min_duration_s=DURATION_S - 2)
    assert_platform_contract(nginx_rtmp.recordings("destB")[0], FPS, AUDIO_FRAME_S,
                             min_duration_s=min_duration)

    # the relay's own recording holds every captured frame, in order, once
    # (one session; a pause of the ingest continues it in a new part: they concatenate)
    recordings = sorted((record_dir / "farm1").glob("*.ts"), key=lambda p: p.stat().st_mtime)
    assert len({p.name.split("-")[3].split(".")[0] for p in recordings}) == 1, recordings
    joined = tmp_path / "archive.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p in recordings))
    numbers = frame_numbers(joined)
    assert numbers == list(range(captured)), (
        f"{len(numbers)} frames, first unreadable or out of order at "
        f"{next((i for i, n in enumerate(numbers) if n != i), None)}")

    # the outages are in the event log with their causes
    events = read_events(events_path)
    outages = [e for e in events if e["event"] == "ingest_outage"]
    causes = [e["cause"] for e in outages]
    assert "no_data" in causes, outages
    assert "connection_lost" in causes, outages
    stall = max(outages, key=lambda e: e["duration_s"])
    assert STALL_S - 1.5 < stall["duration_s"] < STALL_S + 2.5, stall
    # destination A never noticed destination B's trouble
    disconnects = [e for e in events if e["event"] == "destination_disconnect"]
    assert not [e for e in disconnects if e["destination"] == "a"], disconnects
