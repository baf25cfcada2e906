"""After hold_s of continuous slate the relay ends the platform session on purpose, says why,
and opens a new one when live media returns. The destination is RTMPS (nginx's stream module
in front of nginx-rtmp; its self-signed certificate trusted through ca_file)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from monitor.events import read_events
from tests.relay_harness import start_encoder, start_relay, stop_process, write_relay_config
from tests.support import NginxRtmp, TcpProxy, free_port

pytestmark = pytest.mark.integration

TOKEN = "hold-test-token-123456"


def test_hold_expiry_ends_the_platform_session_and_live_media_opens_a_new_one(
        tmp_path: Path, nginx_rtmps: NginxRtmp) -> None:
    port = free_port()
    events_path = tmp_path / "events.jsonl"
    config = tmp_path / "relay.toml"
    write_relay_config(config, port, tmp_path / "rec", events_path, f"""
[streams.farm1]
token = "{TOKEN}"
buffer_ms = 1000
hold_s = 2

[[streams.farm1.destinations]]
name = "tls"
url = "{nginx_rtmps.rtmps_url()}"
key = "holdkey"
ca_file = "{nginx_rtmps.cert_path}"
""")
    relay = start_relay(config, port, tmp_path / "relay.log")
    uplink = TcpProxy("127.0.0.1", port)
    uplink.start()
    encoder = start_encoder(f"http://127.0.0.1:{uplink.port}", "farm1", TOKEN,
                            tmp_path / "encoder.log", resolution="160x90", fps=15, kbps=100,
                            duration_s=16)
    try:
        time.sleep(4)
        uplink.pause()  # 1 s buffer + 0.5 s freeze + 2 s hold < 7 s
        time.sleep(7)
        uplink.resume()
        out, _ = encoder.communicate(timeout=60)
        assert encoder.returncode == 0, out
        time.sleep(3)
    finally:
        if encoder.poll() is None:
            encoder.kill()
        stop_process(relay)
        uplink.stop()
        nginx_rtmps.stop()
    events = read_events(events_path)
    ended = [e for e in events if e["event"] == "platform_sessions_ended"]
    assert len(ended) == 1 and "hold_s=2" in ended[0]["reason"], events
    connected = [e for e in events if e["event"] == "destination_connected"]
    assert len(connected) == 2, connected
    assert len(nginx_rtmps.recordings("holdkey")) == 2
