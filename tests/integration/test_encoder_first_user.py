"""What a first real user of `steadycast encode` meets, against the real relay over HTTPS with
its self-signed certificate: a refusal is one clear line and a documented exit status, a
certificate that does not verify is not retried forever, an unreachable relay is named in
plain words and retried, and a clean `--duration` end is no outage.

Real parts: the `steadycast relay` and `steadycast encode` processes on loopback.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from encoder.client import tls_context
from encoder.settings import EncoderSettings
from monitor.events import read_events
from steadycast.cli import EXIT_REFUSED, EXIT_UNTRUSTED
from tests.relay_harness import start_encoder, start_relay, stop_process, write_relay_config
from tests.support import free_port

pytestmark = pytest.mark.integration

TOKEN = "farm1-publish-token-first-user"
WRONG_TOKEN = "not-the-token-0042"
ENCODER_EXIT_S = 60  # generous: two cores shared with other test runs


class Relay:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.events = root / "relay-events.jsonl"
        self.log = root / "relay.log"
        config = root / "relay.toml"
        write_relay_config(config, self.port, root / "rec", self.events, f"""
[streams.farm1]
token = "{TOKEN}"
buffer_ms = 2000
""", relay_toml='tls = "self-signed"')
        self.cert = config.parent / "state" / "tls" / "relay-cert.pem"
        self.proc = start_relay(config, self.port, self.log, tls=True)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    r = Relay(tmp_path_factory.mktemp("relay"))
    try:
        yield r
    finally:
        stop_process(r.proc)


def _encode(relay_url: str, log: Path, *extra: str, token: str = TOKEN,
            duration_s: float = 2.0) -> subprocess.Popen[bytes]:
    return start_encoder(relay_url, "farm1", token, log, resolution="160x90", fps=10, kbps=150,
                         duration_s=duration_s, extra=("--quiet", *extra))


def test_wrong_token_is_one_clear_line_and_exit_status_3(relay: Relay, tmp_path: Path) -> None:
    log = tmp_path / "encoder.log"
    enc = _encode(relay.url, log, "--ca-file", str(relay.cert), token=WRONG_TOKEN,
                  duration_s=30)
    enc.communicate(timeout=ENCODER_EXIT_S)  # not retried for the 30 s of --duration
    text = log.read_text()
    assert enc.returncode == EXIT_REFUSED, text
    assert "Traceback" not in text
    refusals = [line for line in text.splitlines() if "refused" in line]
    assert len(refusals) == 1 and "wrong publish token" in refusals[0], text
    assert WRONG_TOKEN not in text


def test_untrusted_certificate_is_not_retried_and_suggests_the_flags(
        relay: Relay, tmp_path: Path) -> None:
    log = tmp_path / "encoder.log"
    enc = _encode(relay.url, log, duration_s=30)
    enc.communicate(timeout=ENCODER_EXIT_S)
    text = log.read_text()
    assert enc.returncode == EXIT_UNTRUSTED, text
    assert "Traceback" not in text and "reconnecting" not in text, text
    [line] = [line for line in text.splitlines() if "certificate" in line]
    assert f"127.0.0.1:{relay.port}" in line
    assert "--insecure" in line and "--ca-file" in line, line


def test_clean_duration_end_is_no_outage(relay: Relay, tmp_path: Path) -> None:
    log, events = tmp_path / "encoder.log", tmp_path / "uplink.jsonl"
    enc = _encode(relay.url, log, "--ca-file", str(relay.cert), "--events", str(events))
    out, _ = enc.communicate(timeout=ENCODER_EXIT_S)
    summary, text = out.decode(), log.read_text()
    assert enc.returncode == 0, (summary, text)
    assert "all_acked=True" in summary and "outages=0 " in summary, summary
    assert "outage" not in text, text
    assert not events.exists() or read_events(events) == [], events.read_text()
    # nor at the relay: the session ended, no ingest dropout
    relay_events = [e["event"] for e in read_events(relay.events)]
    assert "session_ended" in relay_events, relay_events
    assert not [e for e in relay_events if e.startswith("ingest_")], relay_events


def test_unreachable_relay_is_named_in_plain_words_and_retried(tmp_path: Path) -> None:
    log = tmp_path / "encoder.log"
    port = free_port()  # nothing listens there
    enc = _encode(f"http://127.0.0.1:{port}", log, duration_s=60)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and log.read_text().count("reconnecting in") < 3:
            assert enc.poll() is None, log.read_text()
            time.sleep(0.2)
        assert enc.poll() is None, "an unreachable relay is transient: it keeps retrying"
    finally:
        stop_process(enc)
    text = log.read_text()
    retries = [line for line in text.splitlines() if "reconnecting in" in line]
    assert len(retries) >= 3, text
    assert f"cannot reach relay 127.0.0.1:{port}: connection refused" in retries[0], retries[0]
    assert "ssl:" not in text and "Traceback" not in text, text


def test_a_bad_ca_file_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "relay-cert.pem"
    junk.write_text("not a certificate\n")
    for path in (junk, tmp_path / "missing.pem"):
        settings = EncoderSettings(relay_url="https://127.0.0.1:1", stream="farm1", token=TOKEN,
                                   ca_file=path)
        with pytest.raises(OSError, match=rf"--ca-file '{re.escape(str(path))}': cannot read"):
            tls_context(settings)


def test_a_throttled_upgrade_waits_as_long_as_the_relay_asks() -> None:
    """HTTP 429 from the relay's credential throttle: the encoder waits Retry-After (capped),
    instead of hammering it every RECONNECT_MAX_S; any other failure has no such wait."""
    from multidict import CIMultiDict, CIMultiDictProxy

    from encoder.client import retry_after_s
    from encoder.settings import RETRY_AFTER_MAX_S

    def refusal(status: int, retry_after: str | None) -> aiohttp.WSServerHandshakeError:
        headers = CIMultiDict({"Retry-After": retry_after} if retry_after is not None else {})
        return aiohttp.WSServerHandshakeError(
            request_info=None, history=(), status=status,  # type: ignore[arg-type]
            message="Too Many Requests", headers=CIMultiDictProxy(headers))

    assert retry_after_s(refusal(429, "17")) == 17.0
    assert retry_after_s(refusal(429, "100000")) == RETRY_AFTER_MAX_S
    assert retry_after_s(refusal(429, "soon")) is None
    assert retry_after_s(refusal(429, "nan")) is None
    assert retry_after_s(refusal(429, None)) is None
    assert retry_after_s(refusal(503, "17")) is None
    assert retry_after_s(OSError("refused")) is None
