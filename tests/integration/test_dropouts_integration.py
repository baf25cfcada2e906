"""Dropouts are kept across relay restarts and listed by `steadycast dropouts`.

Real parts: the `steadycast relay` and `steadycast encode` processes, nginx-rtmp as the
platform, TCP proxies on loopback that stall the uplink and reset the platform connection,
and `steadycast dropouts` run as a subprocess against the relay's own config.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from monitor.events import read_events
from tests.relay_harness import (
    ROOT,
    get_json,
    start_encoder,
    start_relay,
    steadycast_cmd,
    stop_process,
    write_relay_config,
)
from tests.support import NginxRtmp, TcpProxy, free_port

pytestmark = pytest.mark.integration

TOKEN = "farm1-publish-token-0001"
OUTAGE_AT_S, OUTAGE_S = 4.0, 3.0  # the uplink stalls for 3 s
DEST_RESET_AT_S = 9.0  # the platform connection is reset once
CUT_AT_S, RELAY_STOP_AT_S = 11.0, 12.0  # the uplink is cut; the relay stops while it is
ENCODER_DURATION_S = 60.0  # longer than the test: it is killed


def dropouts_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(steadycast_cmd("dropouts", *args), cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def wait_live(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = get_json(f"http://127.0.0.1:{port}/api/streams")["streams"][0]
        if st["state"] == "live" and st["output_source"] == "live":
            return
        time.sleep(0.2)
    pytest.fail(f"the stream did not go live again: {st}")


def test_dropouts_survive_a_relay_restart_and_are_listed(
        tmp_path: Path, nginx_rtmp: NginxRtmp) -> None:
    relay_port = free_port()
    dest_proxy = TcpProxy("127.0.0.1", nginx_rtmp.port)
    dest_proxy.start()
    config = tmp_path / "relay.toml"
    events_path = tmp_path / "events.jsonl"
    write_relay_config(config, relay_port, tmp_path / "rec", events_path, f"""
[streams.farm1]
token = "{TOKEN}"
buffer_ms = 2000
record = false

[[streams.farm1.destinations]]
name = "a"
url = "rtmp://127.0.0.1:{dest_proxy.port}/live"
key = "destA"
retry_first_s = 0.5
""")
    relay = start_relay(config, relay_port, tmp_path / "relay.log")
    uplink = TcpProxy("127.0.0.1", relay_port)
    uplink.start()
    encoder = start_encoder(f"http://127.0.0.1:{uplink.port}", "farm1", TOKEN,
                            tmp_path / "encoder.log", resolution="320x180", fps=15, kbps=200,
                            duration_s=ENCODER_DURATION_S)
    relay2 = None
    try:
        t0 = time.monotonic()

        def at(t: float) -> None:
            time.sleep(max(0.0, t0 + t - time.monotonic()))

        at(OUTAGE_AT_S)
        uplink.pause()
        at(OUTAGE_AT_S + OUTAGE_S)
        uplink.resume()
        at(DEST_RESET_AT_S)
        dest_proxy.reset_connections()
        at(CUT_AT_S)
        uplink.refuse(True)  # the encoder cannot come back: the dropout stays open
        uplink.reset_connections()
        at(RELAY_STOP_AT_S)
        stop_process(relay)
        stopped_at = time.time()
        assert relay.returncode == 0, (tmp_path / "relay.log").read_text()[-3000:]
        # the same config again: a new relay opens the same monitor database, the encoder
        # comes back to it, and the relay stops again with the encoder connected
        relay2 = start_relay(config, relay_port, tmp_path / "relay2.log")
        restarted_at = time.time()
        uplink.refuse(False)
        wait_live(relay_port)
        table = dropouts_cli("--config", str(config), "--since", "1h")  # while it runs
        stop_process(relay2)
        assert relay2.returncode == 0, (tmp_path / "relay2.log").read_text()[-3000:]
        listed = dropouts_cli("--config", str(config), "--stream", "farm1", "--json")
    finally:
        if encoder.poll() is None:
            encoder.kill()
        stop_process(relay)
        if relay2 is not None:
            stop_process(relay2)
        uplink.stop()
        dest_proxy.stop()
    relay_log = (tmp_path / "relay.log").read_text()
    assert listed.returncode == 0, listed.stderr
    data: dict[str, Any] = json.loads(listed.stdout)
    assert data["db"] == str(tmp_path / "monitor.db")
    rows = data["dropouts"]
    assert rows and {r["stream"] for r in rows} == {"farm1"}
    ingest = [r for r in rows if r["scope"] == "ingest" and r["kind"] == "dropout"]

    # the 3 s stall: no media from its start to its end
    stall = [r for r in ingest if r["cause"] == "no_data"
             and r["duration_s"] is not None and r["duration_s"] > 1.5]
    assert len(stall) == 1, (rows, relay_log[-3000:])
    assert abs(stall[0]["duration_s"] - OUTAGE_S) < 1.0, stall
    # the same dropout is in the event log, with the same start
    outages = [e for e in read_events(events_path) if e["event"] == "ingest_outage"]
    assert stall[0]["start"][:19] in {e["start"][:19] for e in outages}, outages

    # the cut open when the relay stopped was closed at the stop, not left open
    stopped = [r for r in ingest if r["cause"] == "relay_stopped"]
    assert len(stopped) == 1, rows
    assert not stopped[0]["unfinished"]
    assert stopped[0]["start_s"] < stopped[0]["end_s"] <= stopped_at
    assert stopped[0]["end_s"] - stopped[0]["start_s"] > 0.5
    assert not [r for r in rows if r["unfinished"]], rows
    # the second relay's own shutdown of a healthy connection is no dropout
    assert not [r for r in rows if r["start_s"] > restarted_at], rows

    # the platform connection reset: a destination dropout, closed when writing resumed
    dest = [r for r in rows if r["scope"] == "destination:a"]
    assert len(dest) == 1, (rows, relay_log[-3000:])
    assert dest[0]["cause"] == "connection_lost" and 0 <= dest[0]["duration_s"] < 6, dest

    # the summary, and the same history as a table (read while the second relay ran)
    ingest_summary = [s for s in data["summary"]
                      if s["scope"] == "ingest" and s["kind"] == "dropout"]
    assert ingest_summary[0]["count"] == len(ingest)
    assert ingest_summary[0]["longest_s"] >= stall[0]["duration_s"] - 0.001  # shown to 1 ms
    assert table.returncode == 0, table.stderr
    assert "destination:a" in table.stdout and "relay_stopped" in table.stdout
    assert "Summary" in table.stdout
    assert TOKEN not in relay_log and "destA" not in relay_log


def test_bad_since_and_a_missing_database_are_clear_errors(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    write_relay_config(config, free_port(), tmp_path / "rec", tmp_path / "events.jsonl", "")
    bad = dropouts_cli("--config", str(config), "--since", "last week")
    assert bad.returncode == 2
    assert "--since 'last week' is not a duration or a date" in bad.stderr
    assert "30m, 24h, 7d" in bad.stderr
    missing = dropouts_cli("--config", str(config))
    assert missing.returncode == 1
    assert (f"no monitor database at {tmp_path / 'monitor.db'}: has the relay run with this "
            "config?") in missing.stderr
    assert "Traceback" not in bad.stderr + missing.stderr
