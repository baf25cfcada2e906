"""The relay's /dashboard, end to end: the real relay process, a real encoder through a TCP
proxy that stalls the uplink, and Debian's chromium (headless) driven over the Chrome
DevTools Protocol reading the page the way a trainer's browser shows it.

- auth: no password configured (404 naming the key), missing (401 + WWW-Authenticate), wrong
  (401 "wrong dashboard password", never echoed), right (200); bad query parameters (400);
  no token, stream key or password in the page or the JSON;
- a stream seen live, then on the slate while the uplink is stalled, then live again;
- a monitor database written before the relay starts (what a restart looks like) is shown
  by the API and on the page (timeline, dropout list, probe history per site);
- each stream's recording state, and a really full disk (a small tmpfs as record_dir, filled
  mid-stream) shown prominently in plain words while the live goes on, then recording again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.store import KIND_DROPOUT, KIND_LOW_THROUGHPUT, MonitorStore
from tests.integration.test_recording_disk_full_integration import fill, small_tmpfs
from tests.relay_harness import start_encoder, start_relay, stop_process, write_relay_config
from tests.support import TcpProxy, free_port, require_packages

pytestmark = pytest.mark.integration

PASSWORD = "dash-board-pass-0001"
WRONG_PASSWORD = "not-the-password-42"
PASSWORD_ENV = "STEADYCAST_TEST_DASHBOARD_PASSWORD"
LIVE_STREAM, LIVE_TOKEN = "demo", "demo-publish-token-0001"
HISTORY_STREAM, HISTORY_TOKEN = "farm1", "farm1-publish-token-0001"
DEST_KEY_LIVE = "live-stream-key-secret-0001"
DEST_KEY_HISTORY = "farm-stream-key-secret-0002"
SECRETS = (PASSWORD, LIVE_TOKEN, HISTORY_TOKEN, DEST_KEY_LIVE, DEST_KEY_HISTORY)
XSS_SITE = '<img src=x onerror="document.title=1">'

LIVE_BUFFER_MS = 1000  # the slate comes about buffer + freeze (0.5 s) after the stall
STATE_TIMEOUT_S = 40.0  # the encoder starting up, or a CPU shared with other tests
POLL_S = 0.2
CDP_TIMEOUT_S = 15.0
CHROMIUM_START_S = 20.0


# --- HTTP ----------------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def basic(password: str, user: str = "trainer") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_get(url: str, authorization: str | None = None) -> Answer:
    req = urllib.request.Request(url, headers={"Authorization": authorization}
                                 if authorization else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return Answer(r.status, dict(r.headers), r.read().decode())
    except urllib.error.HTTPError as e:
        return Answer(e.code, dict(e.headers), e.read().decode())


# --- chromium over the DevTools Protocol ---------------------------------------------------

def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@dataclass
class Browser:
    page_ws_url: str


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Debian chromium with its DevTools endpoint on a loopback port."""
    binary = chromium_binary()
    require_packages([] if binary else ["chromium"])
    assert binary is not None
    tmp = tmp_path_factory.mktemp("chromium")
    profile = tmp / "profile"
    log_path = tmp / "chromium.log"
    proc = subprocess.Popen(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--mute-audio", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    try:
        yield Browser(_page_ws_url(proc, profile, log_path))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _page_ws_url(proc: subprocess.Popen[bytes], profile: Path, log_path: Path) -> str:
    deadline = time.monotonic() + CHROMIUM_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"chromium exited with {proc.returncode}:\n"
                                 f"{log_path.read_text(errors='replace')[-3000:]}")
        port_file = profile / "DevToolsActivePort"  # chromium writes it once listening
        with contextlib.suppress(OSError, ValueError):
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                for target in json.loads(r.read()):
                    if target.get("type") == "page":
                        return str(target["webSocketDebuggerUrl"])
        time.sleep(0.2)
    raise AssertionError("chromium's DevTools endpoint did not come up:\n"
                         f"{log_path.read_text(errors='replace')[-3000:]}")


class Cdp:
    """The few Chrome DevTools Protocol commands these tests need, over aiohttp's WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._last_id = 0

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._last_id += 1
        call_id = self._last_id
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        while True:  # events (no id) and late answers are skipped
            msg = await asyncio.wait_for(self._ws.receive(), CDP_TIMEOUT_S)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"DevTools connection ended during {method}: {msg}")
            data = json.loads(msg.data)
            if data.get("id") == call_id:
                if "error" in data:
                    raise AssertionError(f"{method} failed: {data['error']}")
                result: dict[str, Any] = data.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression!r} threw: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def open(self, url: str, authorization: str) -> None:
        await self.send("Network.enable")
        await self.send("Network.setExtraHTTPHeaders", headers={"Authorization": authorization})
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && location.href", "page load")

    async def wait_for(self, expression: str, what: str,
                       timeout_s: float = STATE_TIMEOUT_S) -> Any:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            last = await self.evaluate(expression)
            if last:
                return last
            await asyncio.sleep(POLL_S)
        raise AssertionError(f"timed out waiting for {what}; last value {last!r}")


@contextlib.asynccontextmanager
async def devtools(browser: Browser) -> AsyncIterator[Cdp]:
    async with aiohttp.ClientSession() as session, session.ws_connect(
            browser.page_ws_url, max_msg_size=0) as ws:
        yield Cdp(ws)


def badge_state(stream: str) -> str:
    return (f"(document.querySelector('.badge[data-stream=\"{stream}\"]') || {{dataset: {{}}}})"
            ".dataset.state || ''")


# --- the relay: one with a dashboard password and a pre-filled monitor database ------------

@dataclass
class History:
    now_s: float
    in_last_hour: int  # dropouts of HISTORY_STREAM the hour timeline shows
    in_last_day: int  # dropouts of HISTORY_STREAM the API lists by default
    sites: dict[str, int]  # probe results per site


def fill_history(db: Path, now_s: float) -> History:
    """What a relay that ran earlier left behind: dropouts of farm1 and probe results."""
    store = MonitorStore(db)
    try:
        def ago(minutes: float) -> float:
            return now_s - minutes * 60

        store.add_dropout(HISTORY_STREAM, "ingest", KIND_DROPOUT, "no_data", ago(10), ago(10) + 12)
        store.dropout_started(HISTORY_STREAM, "ingest", KIND_DROPOUT, "connection_lost",
                              ago(20))  # the relay stopped during it: no end
        store.add_dropout(HISTORY_STREAM, "destination:youtube", KIND_DROPOUT, "connection_lost",
                          ago(30), ago(30) + 40)
        store.add_dropout(HISTORY_STREAM, "ingest", KIND_LOW_THROUGHPUT, "low_throughput",
                          ago(50), ago(50) + 20)
        store.add_dropout(HISTORY_STREAM, "ingest", KIND_DROPOUT, "no_data", ago(300), ago(300) + 7)
        store.add_dropout(HISTORY_STREAM, "ingest", KIND_DROPOUT, "no_data", ago(3000),
                          ago(3000) + 9)  # two days ago: outside the default 24 h
        store.add_probe("Bản Lác", ago(120), "10.0.0.7", "Tốt / Good",
                        {"p10_kbps": 900.5, "p50_kbps": 1400.0}, latitude=20.6, longitude=105.0)
        store.add_probe("Bản Lác", ago(60), "10.0.0.7", "fair: Weak but usable", {
            "throughput_kbps": {"p10": 310.0, "p50": 620.0, "p90": 700.0},
            "verdict": {"level": "fair", "en": "Weak but usable", "vi": "Yếu nhưng dùng được"},
            "recommendation": {"start_kbps": 150, "buffer_ms": 8000},
            "dropouts": [{"start_s": 3.0, "duration_s": 4.0, "cause": "no_data"}]})
        store.add_probe("đồi chè", ago(30), "10.0.0.8", "Tốt / Good", {"p10_kbps": 1200})
        store.add_probe(XSS_SITE, ago(5), "10.0.0.9", "<b>bold?</b>", {})
    finally:
        store.close()
    return History(now_s, in_last_hour=4, in_last_day=5,
                   sites={"Bản Lác": 2, "đồi chè": 1, XSS_SITE: 1})


@dataclass
class RelayUnderTest:
    port: int
    log_path: Path
    history: History

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _relay_config(tmp: Path, port: int, streams_toml: str, relay_keys: str) -> Path:
    config = tmp / "relay.toml"
    write_relay_config(config, port, tmp / "rec", tmp / "events.jsonl", streams_toml,
                       relay_toml=relay_keys)
    return config


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayUnderTest]:
    tmp = tmp_path_factory.mktemp("relay")
    db = tmp / "monitor.db"
    history = fill_history(db, time.time())
    port = free_port()
    dead_port = free_port()  # the destinations' platform is down: they keep retrying
    config = _relay_config(tmp, port, f"""
[streams.{LIVE_STREAM}]
token = "{LIVE_TOKEN}"
title = "Phiên thử / Test session"
buffer_ms = {LIVE_BUFFER_MS}

[[streams.{LIVE_STREAM}.destinations]]
name = "facebook"
url = "rtmp://127.0.0.1:{dead_port}/live"
key = "{DEST_KEY_LIVE}"

[streams.{HISTORY_STREAM}]
token = "{HISTORY_TOKEN}"
title = "Nông trại / Farm 1"
record = false

[[streams.{HISTORY_STREAM}.destinations]]
name = "youtube"
url = "rtmp://127.0.0.1:{dead_port}/live2"
key = "{DEST_KEY_HISTORY}"
""", f'monitor_db = "{db}"\ndashboard_password = "env:{PASSWORD_ENV}"\n')
    log_path = tmp / "relay.log"
    proc = start_relay(config, port, log_path, env={PASSWORD_ENV: PASSWORD})
    try:
        yield RelayUnderTest(port, log_path, history)
    finally:
        stop_process(proc, timeout_s=5)
    log = log_path.read_text(errors="replace")
    for secret in (*SECRETS, WRONG_PASSWORD):
        assert secret not in log, f"a secret is in the relay log: {secret[:4]}…"


def assert_no_secrets(text: str, where: str) -> None:
    for secret in (*SECRETS, WRONG_PASSWORD):
        assert secret not in text, f"{where} shows a secret ({secret[:4]}…)"


# --- auth and bad input --------------------------------------------------------------------

def test_dashboard_without_a_configured_password_is_off_and_names_the_key(
        tmp_path: Path) -> None:
    port = free_port()
    config = _relay_config(tmp_path, port, f"""
[streams.{LIVE_STREAM}]
token = "{LIVE_TOKEN}"
""", f'monitor_db = "{tmp_path / "monitor.db"}"\n')
    proc = start_relay(config, port, tmp_path / "relay.log")
    try:
        for path in ("/dashboard", "/dashboard/api"):
            a = http_get(f"http://127.0.0.1:{port}{path}", basic(PASSWORD))
            assert a.status == 404, (path, a)
            assert "dashboard_password" in a.body, a.body
    finally:
        stop_process(proc, timeout_s=5)


def test_dashboard_refuses_missing_and_wrong_passwords_and_bad_queries(
        relay: RelayUnderTest) -> None:
    for path in ("/dashboard", "/dashboard/api"):
        missing = http_get(relay.url(path))
        assert missing.status == 401, missing
        assert missing.headers["WWW-Authenticate"].startswith("Basic realm="), missing.headers
        assert "missing dashboard password" in missing.body

        wrong = http_get(relay.url(path), basic(WRONG_PASSWORD))
        assert wrong.status == 401, wrong
        assert "wrong dashboard password" in wrong.body
        assert "WWW-Authenticate" in wrong.headers  # the browser asks again
        assert_no_secrets(wrong.body + json.dumps(wrong.headers), f"401 of {path}")

        for bad in ("Bearer " + PASSWORD, "Basic !!!not-base64", "Basic " +
                    base64.b64encode(PASSWORD.encode()).decode()):  # no "user:" part
            a = http_get(relay.url(path), bad)
            assert a.status == 401, (bad, a)
            assert_no_secrets(a.body, f"401 of {path}")

        right = http_get(relay.url(path), basic(PASSWORD, user="any name"))
        assert right.status == 200, right
        assert right.headers["Cache-Control"] == "no-store"
    api = http_get(relay.url("/dashboard/api"), basic(PASSWORD, user="")).json()
    assert {s["name"] for s in api["streams"]} == {LIVE_STREAM, HISTORY_STREAM}

    for query, names in (("since=abc", "since"), ("since=0", "since"), ("since=8d", "since"),
                         ("since=-5m", "since"), ("probes=-1", "probes"), ("probes=x", "probes"),
                         ("probes=100000", "probes"), ("stream=farm1", "stream"),
                         ("since=%E1%BB%93i", "since"), ("since=" + "9" * 400, "since")):
        a = http_get(relay.url("/dashboard/api?" + query), basic(PASSWORD))
        assert a.status == 400, (query, a)
        assert names in a.json()["error"], (query, a.body)
    assert http_get(relay.url("/dashboard/api?since=30m&probes=0"), basic(PASSWORD)).status == 200
    assert http_get(relay.url("/healthz")).body == "ok\n"  # the relay carried on


# --- a stream that goes to the slate and back, in the browser -------------------------------

async def test_browser_sees_a_stream_go_live_then_slate_during_an_outage_then_live_again(
        relay: RelayUnderTest, browser: Browser, tmp_path: Path) -> None:
    uplink = TcpProxy("127.0.0.1", relay.port)
    uplink.start()
    encoder = start_encoder(f"http://127.0.0.1:{uplink.port}", LIVE_STREAM, LIVE_TOKEN,
                            tmp_path / "encoder.log", resolution="320x180", fps=15, kbps=250,
                            duration_s=120)
    seen: list[str] = []
    try:
        async with devtools(browser) as cdp:
            await cdp.open(relay.url("/dashboard"), basic(PASSWORD))
            await cdp.evaluate("window.loadedOnce = true")

            async def wait_state(state: str) -> None:
                deadline = time.monotonic() + STATE_TIMEOUT_S
                while time.monotonic() < deadline:
                    now = await cdp.evaluate(badge_state(LIVE_STREAM))
                    if not seen or seen[-1] != now:
                        seen.append(now)
                    if now == state:
                        return
                    if encoder.poll() is not None:
                        raise AssertionError("the encoder ended: " +
                                             (tmp_path / "encoder.log").read_text()[-2000:])
                    await asyncio.sleep(POLL_S)
                page_status = await cdp.evaluate("document.getElementById('status').textContent")
                api = http_get(relay.url("/dashboard/api?probes=0"), basic(PASSWORD)).body
                raise AssertionError(
                    f"the page never showed {state!r}; it showed {seen}; page status "
                    f"{page_status!r}; API {api[:1500]}; encoder log "
                    f"{(tmp_path / 'encoder.log').read_text(errors='replace')[-1500:]}")

            await wait_state("live")
            uplink.pause()  # the radio link stalls: no error, no bytes
            await wait_state("slate")
            uplink.resume()
            await wait_state("live")

            assert await cdp.evaluate("window.loadedOnce === true"), "the page reloaded"
            assert await cdp.evaluate("document.getElementById('status').dataset.fetch") == "ok"
            label = await cdp.evaluate(
                f"document.querySelector('.badge[data-stream=\"{LIVE_STREAM}\"]').textContent")
            assert "Live" in label, label
            dests = await cdp.evaluate(
                f"document.querySelector('[data-stream-card=\"{LIVE_STREAM}\"] .dests')"
                ".textContent")
            assert "facebook" in dests, dests
            assert_no_secrets(await cdp.evaluate("document.documentElement.outerHTML"), "the page")
    finally:
        stop_process(encoder, timeout_s=5)
        uplink.stop()
    # the badge followed the output: live, then slate (maybe via freeze), then live
    assert seen.index("slate") > seen.index("live") and seen[-1] == "live", seen
    api = http_get(relay.url("/dashboard/api"), basic(PASSWORD))
    assert_no_secrets(api.body, "the API")


# --- the history a restart left behind ------------------------------------------------------

async def test_dropouts_and_probes_from_before_the_start_are_on_the_api_and_the_page(
        relay: RelayUnderTest, browser: Browser) -> None:
    h = relay.history
    body = http_get(relay.url("/dashboard/api"), basic(PASSWORD))
    assert body.status == 200, body
    assert_no_secrets(body.body, "the API")
    api = body.json()
    farm = next(s for s in api["streams"] if s["name"] == HISTORY_STREAM)
    assert farm["state"] == "offline" and farm["title"] == "Nông trại / Farm 1"
    assert [d["name"] for d in farm["destinations"]] == ["youtube"]
    assert DEST_KEY_HISTORY not in json.dumps(farm["destinations"])
    drops = farm["dropouts"]
    assert len(drops) == h.in_last_day, drops
    assert [d["start_s"] for d in drops] == sorted(d["start_s"] for d in drops)
    assert {(d["scope"], d["kind"]) for d in drops} == {
        ("ingest", "dropout"), ("destination:youtube", "dropout"),
        ("ingest", "low_throughput")}
    open_ones = [d for d in drops if d["end_s"] is None]
    assert len(open_ones) == 1 and open_ones[0]["cause"] == "connection_lost"
    assert sorted(d["duration_s"] for d in drops if d["duration_s"] is not None) == pytest.approx(
        [7, 12, 20, 40])
    last_hour = http_get(relay.url("/dashboard/api?since=1h"), basic(PASSWORD)).json()
    farm_hour = next(s for s in last_hour["streams"] if s["name"] == HISTORY_STREAM)
    assert len(farm_hour["dropouts"]) == h.in_last_hour

    sites = {s["site"]: s["probes"] for s in api["sites"]}
    assert {k: len(v) for k, v in sites.items()} == h.sites
    assert [s["site"] for s in api["sites"]][0] == XSS_SITE  # newest result first
    newer, older = sites["Bản Lác"]
    assert newer == {"id": newer["id"], "time_s": newer["time_s"],
                     "verdict": "fair: Weak but usable", "verdict_vi": "Yếu nhưng dùng được",
                     "level": "fair", "p10_kbps": 310.0, "p50_kbps": 620.0, "start_kbps": 150,
                     "buffer_ms": 8000, "dropouts": 1, "latitude": None, "longitude": None}
    assert (older["p10_kbps"], older["latitude"], older["longitude"]) == (900.5, 20.6, 105.0)
    assert "peer" not in older  # the client's address is not shown

    async with devtools(browser) as cdp:
        await cdp.open(relay.url("/dashboard"), basic(PASSWORD))
        card = f"document.querySelector('[data-stream-card=\"{HISTORY_STREAM}\"]')"
        await cdp.wait_for(f"{card} && {card}.querySelector('.timeline').dataset.count",
                           "the farm's timeline")
        shown = await cdp.evaluate(f"""({{
            bars: {card}.querySelectorAll('.timeline .drop').length,
            count: {card}.querySelector('.timeline').dataset.count,
            destBars: {card}.querySelectorAll('.timeline .drop.scope-destination').length,
            lowBars: {card}.querySelectorAll('.timeline .drop.low_throughput').length,
            rows: {card}.querySelectorAll('details tbody tr[data-dropout-id]').length,
            state: {card}.querySelector('.badge').dataset.state,
            sites: [...document.querySelectorAll('#sites .site')].map(s => s.dataset.site),
            probeRows: document.querySelectorAll('#sites tr.probe').length,
            probeText: document.getElementById('sites').textContent,
            injected: document.querySelectorAll('#sites img, #sites b').length,
            fetch: document.getElementById('status').dataset.fetch,
        }})""")
        assert shown["fetch"] == "ok", shown  # a render that threw would show an error
        assert shown["bars"] == h.in_last_hour and shown["count"] == str(h.in_last_hour), shown
        assert (shown["destBars"], shown["lowBars"]) == (1, 1), shown
        assert shown["rows"] == h.in_last_day and shown["state"] == "offline", shown
        assert sorted(shown["sites"]) == sorted(h.sites), shown
        assert shown["probeRows"] == sum(h.sites.values()), shown
        for text in ("310 kbit/s", "620 kbit/s", "901 kbit/s", "1200 kbit/s", "Weak but usable",
                     "Yếu nhưng dùng được", "150 kbit/s", "8.0 s",
                     "<b>bold?</b>"):
            assert text in shown["probeText"], (text, shown["probeText"])
        assert shown["injected"] == 0, "text from a probe client was rendered as HTML"


# --- the address a trainer types: credentials inside the URL --------------------------------

async def test_page_opened_with_the_password_in_its_url_reaches_the_api(
        relay: RelayUnderTest, browser: Browser) -> None:
    """``http://user:password@host/dashboard`` (what a trainer bookmarks): Chromium's fetch()
    refuses a URL with credentials, and a relative URL resolves against the credentialed page
    address, so the page must ask its API by origin; the browser then resends the password
    it was given for the page (issue 13: the page said "relay unreachable")."""
    async with devtools(browser) as cdp:
        await cdp.send("Network.enable")
        await cdp.send("Network.setExtraHTTPHeaders", headers={})
        await cdp.send("Page.navigate",
                       url=f"http://trainer:{PASSWORD}@127.0.0.1:{relay.port}/dashboard")
        fetched = await cdp.wait_for(
            "document.readyState === 'complete' && "
            "['ok', 'error'].includes((document.getElementById('status') || {dataset: {}})"
            ".dataset.fetch) && document.getElementById('status').dataset.fetch",
            "the page's first poll")
        status = await cdp.evaluate("document.getElementById('status').textContent")
        assert fetched == "ok", status
        assert await cdp.evaluate(
            f"!!document.querySelector('.badge[data-stream=\"{HISTORY_STREAM}\"]')")
        assert_no_secrets(await cdp.evaluate("document.documentElement.outerHTML"), "the page")


# --- plain words, a language switch, and short dropouts that can be seen -------------------

SCREENSHOTS_ENV = "STEADYCAST_TEST_SCREENSHOTS"  # a folder: keep the page's screenshots there
PHONE = {"width": 412, "height": 915, "deviceScaleFactor": 1, "mobile": True}
MIN_BAR_PX = 6


async def screenshot(cdp: Cdp, path: Path) -> None:
    shot = await cdp.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    keep = os.environ.get(SCREENSHOTS_ENV)
    if keep:
        shutil.copy(path, Path(keep) / path.name)


def test_destination_errors_are_told_in_plain_words() -> None:
    from relay.web.dashboard import destination_problem

    cases = {
        "ConnectionRefusedError: [Errno 111] Connection refused": "nền tảng từ chối kết nối",
        "TimeoutError: timed out": "nền tảng không trả lời kịp",
        "ConnectionResetError: [Errno 104] Connection reset by peer": "nền tảng đã ngắt kết nối",
        "BrokenPipeError: [Errno 32] Broken pipe": "nền tảng đã ngắt kết nối",
        "gaierror: [Errno -2] Name or service not known": "không tìm thấy địa chỉ",
        "SSLCertVerificationError: certificate verify failed": "chứng chỉ",
        "PermissionError: [Errno 13] Server returned 403 Forbidden": "khóa luồng",
        "HTTPNotFoundError: Server returned 404 Not Found": "không có địa chỉ phát",
        "OSError: [Errno 101] Network is unreachable": "đường mạng",
        "ValueError: something new": "lỗi khi gửi",
    }
    for error, vi in cases.items():
        problem = destination_problem(error)
        assert problem is not None and vi in problem["vi"], (error, problem)
        assert problem["en"] and problem["en"] != error
    assert destination_problem(None) is None and destination_problem("") is None


async def test_page_speaks_vietnamese_first_and_short_dropouts_are_visible(
        relay: RelayUnderTest, browser: Browser, tmp_path: Path) -> None:
    card = f"document.querySelector('[data-stream-card=\"{HISTORY_STREAM}\"]')"
    async with devtools(browser) as cdp:
        await cdp.send("Emulation.setDeviceMetricsOverride", **PHONE)
        await cdp.open(relay.url("/dashboard"), basic(PASSWORD))
        await cdp.evaluate("localStorage.clear()")
        await cdp.send("Page.reload")
        await cdp.wait_for(f"document.readyState === 'complete' && {card} && "
                           f"{card}.querySelector('.timeline').dataset.count === '4'",
                           "the farm's timeline")
        await screenshot(cdp, tmp_path / "dashboard-vi-en-1h.png")
        shown = await cdp.evaluate(f"""({{
            badge: {card}.querySelector('.badge').textContent,
            ingest: {card}.querySelector('dl.figures div:nth-child(3) dd').textContent,
            rows: {card}.querySelector('details tbody').textContent,
            widths: [...{card}.querySelectorAll('.timeline .drop')].map(
                b => b.getBoundingClientRect().width),
            labels: [...{card}.querySelectorAll('.droplabels .droplabel')].map(
                e => e.textContent),
            lang: document.getElementById('lang').textContent,
            rec: {card}.querySelector('.rec').textContent,
        }})""")
        assert shown["badge"] == "Ngoại tuyến / Offline", shown
        assert shown["ingest"].startswith("chưa có máy phát"), shown  # not "offline"
        for words in ("không có dữ liệu", "mất kết nối", "đường lên",
                      "đích phát / destination youtube", "mất tín hiệu", "chậm"):
            assert words in shown["rows"], (words, shown["rows"])
        assert min(shown["widths"]) >= MIN_BAR_PX, shown  # a 12 s dropout is no hairline
        assert shown["rec"] == ("Không ghi hình (đã tắt trong cấu hình) / "
                                "Recording off in the config"), shown
        assert "12 s" in shown["labels"], shown

        # a dropout bar tapped says when, how long and why
        picked = await cdp.evaluate(
            f"{card}.querySelector('.timeline .drop').click(), "
            f"{card}.querySelector('.picked').textContent")
        assert picked.count(" · ") >= 4, picked

        # destinations: the state and the error in plain words, the raw error as a detail
        api = http_get(relay.url("/dashboard/api?probes=0"), basic(PASSWORD)).json()
        for st in api["streams"]:
            for d in st["destinations"]:
                if d["last_error"] and d["state"] != "connected":
                    text = await cdp.evaluate(
                        f"document.querySelector('[data-stream-card=\"{st['name']}\"] .dests')"
                        ".textContent")
                    assert d["problem"]["vi"] in text and d["problem"]["en"] in text, text
                    assert "chi tiết / detail" in text, text

        # the language switch: Vietnamese only, kept across a reload
        await cdp.evaluate("document.getElementById('lang').click()")
        await cdp.wait_for(f"{card} && {card}.querySelector('.badge').textContent === "
                           "'Ngoại tuyến'", "Vietnamese only")
        await cdp.send("Page.reload")
        await cdp.wait_for(f"document.readyState === 'complete' && {card} && "
                           f"{card}.querySelector('.badge').textContent === 'Ngoại tuyến'",
                           "Vietnamese only after a reload")
        page_text = await cdp.evaluate("document.querySelector('main').innerText")
        for english in ("Offline", "Streams", "Dropouts", "no data", "destination"):
            assert english not in page_text, english

        # the zoom: the last 10 minutes
        await cdp.evaluate("document.querySelector('.zoom button[data-window=\"600\"]').click()")
        await cdp.wait_for(f"{card}.querySelector('h4:nth-of-type(2)').textContent"
                           ".includes('10 phút')", "the 10 min timeline")
        await screenshot(cdp, tmp_path / "dashboard-vi-10min.png")
        in_ten = await cdp.evaluate(f"{card}.querySelector('.timeline').dataset.count")
        assert in_ten in ("0", "1"), in_ten  # only the dropout of 10 min ago, if still inside
        await cdp.evaluate("localStorage.clear()")  # the other tests see the defaults
        await cdp.send("Emulation.clearDeviceMetricsOverride")


# --- the archive: its state on the page, and a really full disk -----------------------------

DISK_STREAM, DISK_TOKEN = "disk", "disk-publish-token-0003"
DISK_TMPFS_KB = 8192  # the stream's archive needs ~1 MB; the recorder's probe 1 MB free
FULL_VI = "Lỗi ghi hình: đĩa đầy — phát trực tiếp vẫn tiếp tục"
FULL_EN = "Recording failed: disk full — the live stream continues"


async def test_page_shows_the_recording_state_and_a_full_disk_prominently(
        browser: Browser, tmp_path: Path) -> None:
    """A small tmpfs is the relay's record_dir (root only: skipped otherwise); a real
    encoder streams; a filler file takes every byte left, later it is deleted."""
    card = f"document.querySelector('[data-stream-card=\"{DISK_STREAM}\"]')"
    rec = f"({card} && {card}.querySelector('.rec'))"
    with small_tmpfs(tmp_path / "rec", DISK_TMPFS_KB) as record_dir:
        port = free_port()
        config = _relay_config(tmp_path, port, f"""
[streams.{DISK_STREAM}]
token = "{DISK_TOKEN}"
title = "Vườn cam / Orange garden"
buffer_ms = {LIVE_BUFFER_MS}

[[streams.{DISK_STREAM}.destinations]]
name = "facebook"
url = "rtmp://127.0.0.1:{free_port()}/live"
key = "{DEST_KEY_LIVE}"
""", f'monitor_db = "{tmp_path / "monitor.db"}"\ndashboard_password = "env:{PASSWORD_ENV}"\n')
        relay_proc = start_relay(config, port, tmp_path / "relay.log", env={PASSWORD_ENV: PASSWORD})
        encoder = start_encoder(f"http://127.0.0.1:{port}", DISK_STREAM, DISK_TOKEN,
                                tmp_path / "encoder.log", resolution="320x180", fps=15,
                                kbps=250, duration_s=120)
        filler = record_dir / "filler.bin"
        try:
            async with devtools(browser) as cdp:
                await cdp.send("Emulation.setDeviceMetricsOverride", **PHONE)
                await cdp.open(f"http://127.0.0.1:{port}/dashboard", basic(PASSWORD))
                await cdp.evaluate("localStorage.clear()")
                await cdp.send("Page.reload")
                ok = await cdp.wait_for(f"{rec} && {rec}.dataset.state === 'ok' && "
                                        f"{rec}.textContent", "recording on the page")
                assert ok.startswith("Đang ghi hình / Recording"), ok
                await screenshot(cdp, tmp_path / "dashboard-recording-vi-en.png")

                fill(filler)
                # the headline says the live stream continues while the stream is on air; on a
                # loaded machine the encoder may be between connections for a moment
                failed = await cdp.wait_for(
                    f"{rec} && {rec}.dataset.state === 'failed' && "
                    f"{rec}.querySelector('.rectext').textContent === "
                    f"{json.dumps(FULL_VI + ' / ' + FULL_EN)} && {rec}.textContent",
                    "the full disk on the page, with the live stream on air")
                await screenshot(cdp, tmp_path / "dashboard-disk-full-vi-en.png")
                shown = await cdp.evaluate(f"""({{
                    headline: {rec}.querySelector('.rectext').textContent,
                    boxed: {card}.classList.contains('rec-failed'),
                    color: getComputedStyle({rec}).backgroundColor,
                    top: {rec}.getBoundingClientRect().top,
                    width: {rec}.getBoundingClientRect().width,
                    cardWidth: {card}.getBoundingClientRect().width,
                    badge: {card}.querySelector('.badge').dataset.state,
                    pageWidth: document.documentElement.scrollWidth,
                }})""")
                assert shown["headline"] == f"{FULL_VI} / {FULL_EN}", shown
                assert "bản ghi sẽ đủ khi ghi được trở lại" in failed, failed
                assert "chi tiết / detail" in failed and "No space left on device" in failed
                assert shown["boxed"] and shown["color"] != "rgba(0, 0, 0, 0)", shown
                # prominent: on the first screen of a phone, across the card, nothing wider
                assert shown["top"] < PHONE["height"] / 2, shown
                assert shown["width"] > 0.8 * shown["cardWidth"], shown
                assert shown["pageWidth"] <= PHONE["width"], shown
                assert shown["badge"] in ("live", "freeze"), shown  # the live goes on

                await cdp.evaluate("document.getElementById('lang').click()")
                vi_only = await cdp.wait_for(
                    f"{rec}.querySelector('.rectext').textContent === {FULL_VI!r} && "
                    f"{rec}.textContent", "Vietnamese only")
                assert "Recording" not in vi_only and "sender" not in vi_only, vi_only
                await screenshot(cdp, tmp_path / "dashboard-disk-full-vi.png")
                await cdp.evaluate("document.getElementById('lang').click()")

                filler.unlink()
                again = await cdp.wait_for(f"{rec}.dataset.state === 'ok' && "
                                           f"{rec}.textContent", "recording again")
                assert again.startswith("Đang ghi hình / Recording"), again
                assert not await cdp.evaluate(f"{card}.classList.contains('rec-failed')")
                assert_no_secrets(await cdp.evaluate("document.documentElement.outerHTML"),
                                  "the page")
                await cdp.evaluate("localStorage.clear()")
                await cdp.send("Emulation.clearDeviceMetricsOverride")
        finally:
            stop_process(encoder, timeout_s=5)
            stop_process(relay_proc, timeout_s=10)


def test_recording_errors_are_told_in_plain_words() -> None:
    from relay.web.dashboard import recording_problem

    cases = {
        "cannot write the archive: [Errno 28] No space left on device: '/srv/rec/a.ts'":
            ("đĩa đầy", True),
        "cannot write the archive: [Errno 122] Disk quota exceeded": ("đĩa đầy", True),
        "cannot write the archive: [Errno 30] Read-only file system": ("chỉ cho đọc", True),
        "cannot write the archive: [Errno 13] Permission denied: '/srv/rec'":
            ("không có quyền", True),
        "cannot write the archive: [Errno 5] Input/output error": ("ổ đĩa bị lỗi", True),
        "track 1 cannot be recorded: [Errno 22] Invalid argument": ("một kênh", False),
        "recorder stopped: RuntimeError('x')": ("bộ ghi hình bị dừng", True),
        "cannot write the archive: [Errno 17] File exists": ("lỗi khi ghi", True),
    }
    for error, (vi, keeps) in cases.items():
        problem = recording_problem(error)
        assert problem is not None and vi in problem["vi"], (error, problem)
        assert problem["en"] and problem["en"] not in error
        assert problem["sender_keeps"] is keeps, (error, problem)
    assert recording_problem(None) is None and recording_problem("") is None
