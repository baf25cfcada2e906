"""The connection check end to end: a real relay process, the real ``steadycast probe`` and
``steadycast emulate`` processes on loopback, and bad input at the relay's probe endpoints.

The acceptance run takes ~35 s: a 30 s probe through a 1500 kbit/s emulated link with two
4 s outages.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from probe.client import ProbeClient, ProbeSettings
from probe.wire import Ack, Pong, encode_filler, encode_ping, parse_relay_message
from tests.relay_harness import (
    get_json,
    start_relay,
    steadycast_cmd,
    stop_process,
    write_relay_config,
    ws_handshake,
)
from tests.support import TcpProxy, free_port
from uplink import CloseCode

pytestmark = pytest.mark.integration

PUBLISH_TOKEN = "farm1-publish-token-8812"
PROBE_TOKEN = "trainer-probe-token-5521"
WRONG_TOKEN = "not-the-right-token-0000"
LINK_KBPS = 1500
OUTAGES = "10:4,22:4"  # seconds of the emulator's clock; the probe starts ~1-2 s after it
OUTAGE_S = 4.0
PROBE_S = 30


@dataclass
class RunningRelay:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def probes(self, site: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"site": site, "token": PROBE_TOKEN})
        sites = get_json(f"{self.url}/api/probes?{query}")["sites"]
        return [p for s in sites if s["site"] == site for p in s["probes"]]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRelay]:
    tmp = tmp_path_factory.mktemp("probe-relay")
    port = free_port()
    config = tmp / "relay.toml"
    write_relay_config(config, port, tmp / "rec", tmp / "events.jsonl", f"""
[streams.farm1]
token = "{PUBLISH_TOKEN}"
record = false
""", relay_toml=f'monitor_db = "{tmp / "monitor.db"}"\nprobe_token = "{PROBE_TOKEN}"')
    log = tmp / "relay.log"
    proc = start_relay(config, port, log)
    try:
        yield RunningRelay(port, log, proc)
    finally:
        stop_process(proc)
    assert PROBE_TOKEN not in log.read_text() and WRONG_TOKEN not in log.read_text()


def test_probe_through_a_1500_kbps_link_with_two_4_s_outages(relay: RunningRelay,
                                                             tmp_path: Path) -> None:
    trace = tmp_path / "constant.csv"
    trace.write_text("seconds,kbps\n0,1500\n1,1500\n2,1500\n", encoding="utf-8")
    emulator = subprocess.Popen(
        steadycast_cmd("emulate", "--trace", str(trace), "--listen", "127.0.0.1:0",
                       "--target", f"127.0.0.1:{relay.port}", "--outages", OUTAGES),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out_json, plot = tmp_path / "probe.json", tmp_path / "probe.png"
    try:
        assert emulator.stdout is not None
        first = emulator.stdout.readline().decode()
        assert first.startswith("emulate: listening on port"), first
        link_port = int(first.split()[4].rstrip(","))
        probe = subprocess.run(
            steadycast_cmd("probe", "--relay", f"http://127.0.0.1:{link_port}",
                           "--site", "Đồi chè Tân Cương", "--gps", "21.5942,105.7856",
                           "--duration", str(PROBE_S), "--json", str(out_json),
                           "--plot", str(plot)),
            env={**os.environ, "STEADYCAST_TOKEN": PUBLISH_TOKEN},
            capture_output=True, text=True, timeout=PROBE_S + 60)
    finally:
        stop_process(emulator)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    body = json.loads(out_json.read_text(encoding="utf-8"))
    result = body["result"]
    tp = result["throughput_kbps"]
    drops = result["dropouts"]
    summary = f"{tp} dropouts={drops}\n{probe.stdout}"
    assert abs(tp["p50"] - LINK_KBPS) <= 0.15 * LINK_KBPS, summary
    assert abs(tp["mean"] - LINK_KBPS) <= 0.15 * LINK_KBPS, summary
    assert len(drops) == 2, summary
    assert all(abs(d["duration_s"] - OUTAGE_S) <= 1.0 for d in drops), summary
    assert all(not d["open_at_end"] for d in drops)
    rtt = result["rtt_ms"]
    assert rtt["idle_median"] is not None and rtt["loaded_median"] > rtt["idle_median"]
    rec = result["recommendation"]
    assert rec["streamable"] and 0 < rec["start_kbps"] < LINK_KBPS, summary
    assert rec["start_kbps"] <= rec["max_kbps"] < LINK_KBPS
    assert 6000 <= rec["buffer_ms"] <= 7000  # a 4 s (+/- 1 s) outage + 2 s, whole seconds
    # what a person reads, in both languages
    assert "Verdict:" in probe.stdout and "Kết luận:" in probe.stdout
    assert f"--start-kbps {rec['start_kbps']}" in probe.stdout
    assert f"buffer_ms = {rec['buffer_ms']}" in probe.stdout
    assert "loaded" in probe.stderr and "kbit/s" in probe.stderr  # progress once a second
    assert PUBLISH_TOKEN not in probe.stdout + probe.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the relay stored it, with the position, for the trainer to compare sites
    stored = relay.probes("Đồi chè Tân Cương")
    assert [p["id"] for p in stored] == [body["stored_id"]]
    assert stored[0]["result"] == result
    assert (stored[0]["latitude"], stored[0]["longitude"]) == (21.5942, 105.7856)
    assert stored[0]["verdict"] == result["verdict"]["en"]


def test_probe_reconnects_when_the_connection_drops(relay: RunningRelay) -> None:
    status = io.StringIO()

    async def run() -> Any:
        with TcpProxy("127.0.0.1", relay.port) as proxy:
            client = ProbeClient(ProbeSettings(
                relay_url=f"http://127.0.0.1:{proxy.port}", token=PROBE_TOKEN,
                site="reconnect test", duration_s=8.0), status_stream=status)
            loop = asyncio.get_running_loop()
            loop.call_later(4.0, proxy.refuse, True)  # resets the connection, refuses new ones
            loop.call_later(5.5, proxy.refuse, False)
            return await client.run()

    outcome = asyncio.run(run())
    drops = outcome.result["dropouts"]
    assert outcome.connections >= 2, status.getvalue()
    assert len(drops) == 1 and drops[0]["cause"] == "connection_lost", drops
    assert 1.0 <= drops[0]["duration_s"] <= 4.0, drops
    assert outcome.result["throughput_kbps"]["windows"] >= 2
    assert outcome.stored_id is not None and outcome.store_error is None
    assert "reconnecting" in status.getvalue()


# --- bad input ---------------------------------------------------------------------------------
def _http(method: str, url: str, body: bytes | None = None,
          token: str | None = PROBE_TOKEN) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_unauthorised_probes_are_refused_with_clear_errors(relay: RunningRelay) -> None:
    ws_url = f"ws://127.0.0.1:{relay.port}/probe"
    status, reason = asyncio.run(ws_handshake(ws_url))
    assert status == 401 and "missing token" in reason and "probe_token" in reason
    status, reason = asyncio.run(ws_handshake(ws_url, {"Authorization": f"Bearer {WRONG_TOKEN}"}))
    assert status == 403 and "wrong token" in reason and WRONG_TOKEN not in reason
    # both kinds of token are accepted, as a header or in the query
    assert asyncio.run(ws_handshake(f"{ws_url}?token={PROBE_TOKEN}"))[0] == 101
    assert asyncio.run(ws_handshake(ws_url, {"Authorization": f"Bearer {PUBLISH_TOKEN}"}))[0] == 101
    api = f"{relay.url}/api/probes"
    status, body = _http("POST", api, b"{}", token=None)
    assert status == 401 and "missing token" in body["error"]
    status, body = _http("GET", api, token=WRONG_TOKEN)
    assert status == 403 and WRONG_TOKEN not in body["error"]
    # the command line says it in one line and exits 3
    cli = subprocess.run(
        steadycast_cmd("probe", "--relay", relay.url, "--site", "x", "--token", WRONG_TOKEN,
                       "--duration", "5"), capture_output=True, text=True, timeout=60)
    assert cli.returncode == 3, cli.stderr
    assert "refused the probe (HTTP 403)" in cli.stderr and WRONG_TOKEN not in cli.stderr


def _valid_result() -> dict[str, Any]:
    from tests.unit.test_probe_analysis import VALID_RESULT

    return json.loads(json.dumps(VALID_RESULT))


def test_malformed_probe_results_are_refused_naming_the_field(relay: RunningRelay) -> None:
    api = f"{relay.url}/api/probes"
    good = {"site": "bad input site", "result": _valid_result()}
    cases: list[tuple[bytes, str]] = [
        (b"not json", "not valid JSON"),
        (b"[" * 50_000, "not valid JSON"),
        (json.dumps({**good, "site": ""}).encode(), "site:"),
        (json.dumps({**good, "site": "a\nb"}).encode(), "site:"),
        (json.dumps({**good, "latitude": 91.0, "longitude": 0.0}).encode(), "latitude:"),
        (json.dumps({**good, "latitude": 10.0}).encode(), "longitude:"),
        (json.dumps({**good, "colour": "red"}).encode(), "colour: unknown field"),
    ]
    bad_p10 = _valid_result()
    bad_p10["throughput_kbps"]["p10"] = "fast"
    cases.append((json.dumps({**good, "result": bad_p10}).encode(),
                  "result.throughput_kbps.p10:"))
    nan_rtt = json.dumps({**good, "result": _valid_result()}).replace(
        '"jitter": 20.0', '"jitter": NaN')
    cases.append((nan_rtt.encode(), "result.rtt_ms.jitter:"))
    bad_drop = _valid_result()
    bad_drop["dropouts"][0]["duration_s"] = -4
    cases.append((json.dumps({**good, "result": bad_drop}).encode(),
                  "result.dropouts[0].duration_s:"))
    for body, expected in cases:
        status, answer = _http("POST", api, body)
        assert status == 400 and expected in answer["error"], (body[:80], answer)
    status, answer = _http("POST", api, b'{"site": "' + b"x" * 70_000 + b'"}')
    assert status == 413 and "bad probe result" in answer["error"]
    status, answer = _http("GET", f"{api}?limit=0")
    assert status == 400 and "limit" in answer["error"]
    # nothing was stored, and a good result still is
    assert relay.probes("bad input site") == []
    status, answer = _http("POST", api, json.dumps(good).encode())
    assert status == 201 and [p["id"] for p in relay.probes("bad input site")] == [answer["id"]]


async def _close_of(url: str, send: bytes | str) -> tuple[int | None, str]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
        try:
            if isinstance(send, str):
                await ws.send_str(send)
            else:
                await ws.send_bytes(send)
        except ConnectionError:
            pass
        msg = await asyncio.wait_for(ws.receive(), 10)
        reason = msg.extra if msg.type == aiohttp.WSMsgType.CLOSE else ""
        return ws.close_code, str(reason or "")


async def _ping_pong(ws: aiohttp.ClientWebSocketResponse, ping_id: int) -> None:
    await ws.send_bytes(encode_filler(1000))
    await ws.send_bytes(encode_ping(ping_id))
    got: list[Any] = []
    while not any(isinstance(m, Pong) for m in got):
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        got.append(parse_relay_message(msg.data))
    assert Pong(ping_id) in got and any(isinstance(m, Ack) for m in got)


def test_malformed_probe_messages_close_only_that_connection(relay: RunningRelay) -> None:
    url = f"ws://127.0.0.1:{relay.port}/probe?token={PROBE_TOKEN}"

    async def run() -> list[tuple[int | None, str]]:
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as other:
            await _ping_pong(other, 1)
            closes = []
            for bad in ("hello", b"\x7f" + bytes(8), b"\x02\x00", b"",
                        b"\x01" + bytes(70_000)):
                closes.append(await _close_of(url, bad))
                await _ping_pong(other, len(closes) + 1)  # the other probe carries on
            return closes

    closes = asyncio.run(run())
    assert closes[0] == (CloseCode.MALFORMED, "text frames are not part of the probe protocol")
    assert closes[1][0] == CloseCode.UNKNOWN_TYPE and "0x7f" in closes[1][1]
    assert closes[2][0] == CloseCode.MALFORMED and "PING" in closes[2][1]
    assert closes[3][0] == CloseCode.MALFORMED and "empty" in closes[3][1]
    assert closes[4][0] == 1009  # larger than a FILLER may be
    assert relay.proc.poll() is None
    assert get_json(f"{relay.url}/api/streams")["streams"][0]["name"] == "farm1"
