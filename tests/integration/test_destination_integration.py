"""Platform destinations with real parts: the real relay and encoder processes, nginx-rtmp
as the platforms, and on loopback a platform that accepts TCP and never answers (a paused
tests.support.TcpProxy: its link takes in a 16 kB queue, then reads nothing) and one that
refuses the publish (nginx-rtmp, unknown application).

One 44 s run serves the checks of issue 13's faults 1, 2 and 9; a shorter one with nginx's
RTMPS front (a self-signed certificate) serves fault 10.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from monitor.events import read_events
from tests.relay_harness import (
    get_json,
    start_encoder,
    start_relay,
    stop_process,
    write_relay_config,
)
from tests.support import NginxRtmp, TcpProxy, free_port, missing_nginx_rtmp, require_packages
from tests.support.media_check import assert_platform_contract

pytestmark = pytest.mark.integration

TOKEN = "farm1-publish-token-0001"
PASSWORD = "dashboard-pass-0001"
GOOD_KEY = "good-key-0001"
STUCK_KEY = "stuck-key-0001"
REFUSED_KEY = "refused-key-0001"
URL_KEY = "inurl-key-0123456789"
FPS = 30
AUDIO_FRAME_S = 1024 / 44100
DURATION_S = 44
GOOD_MIN_S = 40.0
HEALTHZ_POLL_S = 0.15
# issue 13 asks for 100 ms; the machine is shared by several test runs, so a margin. Before
# the fix /healthz did not answer for ~85 s.
HEALTHZ_MAX_S = 0.5


def _basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"trainer:{password}".encode()).decode()


def _get_text(url: str, authorization: str | None = None) -> str:
    req = urllib.request.Request(url, headers={"Authorization": authorization}
                                 if authorization else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(r.read().decode())


@dataclass
class Run:
    nginx: NginxRtmp
    events: list[dict[str, Any]]
    relay_log: str
    healthz_s: list[float] = field(default_factory=list)
    healthz_failures: int = 0
    answers: list[str] = field(default_factory=list)  # API, dashboard and metrics bodies
    final: dict[str, Any] = field(default_factory=dict)  # destination name -> status


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    require_packages(missing_nginx_rtmp())
    tmp = tmp_path_factory.mktemp("dest")
    nginx = NginxRtmp(tmp / "nginx")
    nginx.start()
    stuck = TcpProxy("127.0.0.1", nginx.port)
    stuck.start()
    stuck.pause()  # accepts TCP, never answers: a stalled link
    relay_port = free_port()
    events_path = tmp / "events.jsonl"
    config = tmp / "relay.toml"
    write_relay_config(config, relay_port, tmp / "rec", events_path, f"""
[streams.farm1]
token = "{TOKEN}"
buffer_ms = 1000

[[streams.farm1.destinations]]
name = "good"
url = "{nginx.url()}"
key = "{GOOD_KEY}"

[[streams.farm1.destinations]]
name = "stuck"
url = "rtmp://127.0.0.1:{stuck.port}/live"
key = "{STUCK_KEY}"
connect_timeout_s = 3
io_timeout_s = 3

[[streams.farm1.destinations]]
name = "refused"
url = "{nginx.url('nosuchapp')}"
key = "{REFUSED_KEY}"

[[streams.farm1.destinations]]
name = "inurl"
url = "{nginx.url()}/{URL_KEY}"
key = ""
""", relay_toml=f'dashboard_password = "{PASSWORD}"\nmonitor_db = "{tmp / "monitor.db"}"')
    relay = start_relay(config, relay_port, tmp / "relay.log")
    base = f"http://127.0.0.1:{relay_port}"
    result = Run(nginx, [], "")
    stop = threading.Event()

    def poll_healthz() -> None:
        while not stop.is_set():
            t = time.monotonic()
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
                    r.read()
                result.healthz_s.append(time.monotonic() - t)
            except OSError:
                result.healthz_failures += 1
            stop.wait(HEALTHZ_POLL_S)

    poller = threading.Thread(target=poll_healthz, daemon=True)
    poller.start()
    encoder = start_encoder(base, "farm1", TOKEN, tmp / "encoder.log", resolution="320x180",
                            fps=FPS, kbps=250, duration_s=DURATION_S)
    try:
        time.sleep(DURATION_S / 2)
        for path, auth in (("/api/streams", None), ("/dashboard/api", _basic(PASSWORD)),
                           ("/metrics", None)):
            result.answers.append(_get_text(base + path, auth))
        result.final = {d["name"]: d for d in
                        get_json(f"{base}/api/streams")["streams"][0]["destinations"]}
        out, _ = encoder.communicate(timeout=DURATION_S + 60)
        assert encoder.returncode == 0, (tmp / "encoder.log").read_text()[-2000:]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = get_json(f"{base}/api/streams")["streams"][0]
            if st["state"] == "ended" and st["output_source"] == "offline":
                break
            time.sleep(0.3)
    finally:
        stop.set()
        poller.join(10)
        if encoder.poll() is None:
            encoder.kill()
        stop_process(relay)
        stuck.stop()
        nginx.stop()
    result.relay_log = (tmp / "relay.log").read_text()
    result.events = read_events(events_path)
    yield result


def test_a_platform_that_never_reads_costs_only_itself(run: Run) -> None:
    worst = max(run.healthz_s)
    print(f"/healthz: {len(run.healthz_s)} answers, max {worst * 1000:.0f} ms")
    assert run.healthz_failures == 0
    assert len(run.healthz_s) > DURATION_S / (HEALTHZ_POLL_S + 0.1)
    assert worst < HEALTHZ_MAX_S, f"/healthz took {worst:.3f} s"
    files = run.nginx.recordings(GOOD_KEY)
    assert len(files) == 1, (files, run.relay_log[-3000:])
    assert_platform_contract(files[0], FPS, AUDIO_FRAME_S, min_duration_s=GOOD_MIN_S)
    stuck = run.final["stuck"]
    assert stuck["sessions"] == 0 and stuck["state"] in ("connecting", "backoff"), stuck
    assert "no answer to the handshake" in stuck["last_error"], stuck


def test_a_refused_platform_is_never_connected_and_backs_off_1_2_4_5(run: Run) -> None:
    assert run.final["refused"]["sessions"] == 0
    assert "NetConnection.Connect.Rejected" in run.final["refused"]["last_error"] or \
        "refused" in run.final["refused"]["last_error"], run.final["refused"]
    mine = [e for e in run.events if e.get("destination") == "refused"]
    assert not [e for e in mine if e["event"] == "destination_connected"], mine
    assert not [e for e in mine if e["event"].startswith("destination_dropout")], mine
    delays = [e["retry_in_s"] for e in mine if e["event"] == "destination_connect_failed"]
    assert delays[:5] == [1, 2, 4, 5, 5], delays
    assert not run.nginx.recordings(REFUSED_KEY)
    # the good one was connected once
    good = [e for e in run.events if e.get("destination") == "good"
            and e["event"] == "destination_connected"]
    assert len(good) == 1, good


def test_a_key_inside_the_url_is_never_shown(run: Run) -> None:
    assert run.final["inurl"]["url"] == f"{run.nginx.url()}/****"
    assert run.final["inurl"]["sessions"] == 1  # it did publish, with the key from the URL
    assert len(run.nginx.recordings(URL_KEY)) == 1
    for text in (*run.answers, run.relay_log, json.dumps(run.events)):
        assert URL_KEY not in text
    for key in (GOOD_KEY, STUCK_KEY, REFUSED_KEY, TOKEN):
        assert key not in run.relay_log
    assert "Some options were not used" not in run.relay_log


# -- RTMPS ------------------------------------------------------------------------------------

RTMPS_DURATION_S = 12


def test_rtmps_verifies_the_certificate_unless_told_otherwise(
        tmp_path: Path, nginx_rtmps: NginxRtmp) -> None:
    relay_port = free_port()
    events_path = tmp_path / "events.jsonl"
    config = tmp_path / "relay.toml"
    write_relay_config(config, relay_port, tmp_path / "rec", events_path, f"""
[streams.farm1]
token = "{TOKEN}"
buffer_ms = 1000

[[streams.farm1.destinations]]
name = "checked"
url = "{nginx_rtmps.rtmps_url()}"
key = "default-key-0001"

[[streams.farm1.destinations]]
name = "own-ca"
url = "{nginx_rtmps.rtmps_url()}"
key = "own-ca-key-0001"
ca_file = "{nginx_rtmps.cert_path}"

[[streams.farm1.destinations]]
name = "optout"
url = "{nginx_rtmps.rtmps_url()}"
key = "optout-key-0001"
tls_verify = false
""")
    relay = start_relay(config, relay_port, tmp_path / "relay.log")
    base = f"http://127.0.0.1:{relay_port}"
    encoder = start_encoder(base, "farm1", TOKEN, tmp_path / "encoder.log",
                            resolution="320x180", fps=FPS, kbps=250,
                            duration_s=RTMPS_DURATION_S)
    try:
        time.sleep(RTMPS_DURATION_S - 3)
        dests = {d["name"]: d for d in
                 get_json(f"{base}/api/streams")["streams"][0]["destinations"]}
        encoder.communicate(timeout=RTMPS_DURATION_S + 60)
    finally:
        if encoder.poll() is None:
            encoder.kill()
        stop_process(relay)
        nginx_rtmps.stop()
    log = (tmp_path / "relay.log").read_text()
    checked = dests["checked"]
    assert checked["sessions"] == 0 and checked["tls_verify"] is True, checked
    assert "certificate" in checked["last_error"] and "not trusted" in checked["last_error"]
    assert not nginx_rtmps.recordings("default-key-0001")
    assert not nginx_rtmps.publish_sessions("default-key-0001")
    assert "default-key-0001" not in nginx_rtmps.access_log.read_text(errors="replace")
    assert dests["own-ca"]["sessions"] == 1, dests["own-ca"]
    assert dests["optout"]["sessions"] == 1 and dests["optout"]["tls_verify"] is False
    for key in ("own-ca-key-0001", "optout-key-0001"):
        files = nginx_rtmps.recordings(key)
        assert len(files) == 1, (key, files)
        assert_platform_contract(files[0], FPS, AUDIO_FRAME_S,
                                 min_duration_s=RTMPS_DURATION_S - 4)
    warnings = [line for line in log.splitlines()
                if "WARNING" in line and "certificate is NOT checked" in line]
    assert len(warnings) == 1 and "farm1/optout" in warnings[0], log[-2000:]
