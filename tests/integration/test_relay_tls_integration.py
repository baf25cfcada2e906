"""A relay with its self-signed certificate listening on every address (``listen =
"0.0.0.0:PORT"``, as configs/relay.toml has), trusted with ``--ca-file``: the real
``steadycast relay``, ``encode`` and ``probe`` processes, reached over loopback.

127.0.0.1 is among the certificate's default names, so both clients connect through it; 127.0.0.2
(loopback too, and served by the same 0.0.0.0 socket) is not, so both are refused at once, in
one line naming the address and ``tls_names``. Before ``tls_names``, the certificate named only
``localhost`` and ``0.0.0.0`` and the first case failed with "IP address mismatch".
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.tls import certificate_names
from tests.relay_harness import (
    start_encoder,
    start_relay,
    steadycast_cmd,
    stop_process,
    write_relay_config,
)
from tests.support import free_port

pytestmark = pytest.mark.integration

TOKEN = "farm1-publish-token-tls-names"
CLIENT_EXIT_S = 60  # generous: two cores shared with other test runs
EXIT_UNTRUSTED = 4  # encode and probe alike
UNNAMED = "127.0.0.2"  # loopback, not among the certificate's names


class Relay:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.log = root / "relay.log"
        config = root / "relay.toml"
        write_relay_config(config, self.port, root / "rec", root / "events.jsonl", f"""
[streams.farm1]
token = "{TOKEN}"
buffer_ms = 1000
""", relay_toml='tls = "self-signed"', listen_host="0.0.0.0")
        self.cert = config.parent / "state" / "tls" / "relay-cert.pem"
        self.proc = start_relay(config, self.port, self.log, tls=True)

    def url(self, host: str) -> str:
        return f"https://{host}:{self.port}"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    r = Relay(tmp_path_factory.mktemp("tls-relay"))
    try:
        yield r
    finally:
        stop_process(r.proc)


def _encode(url: str, log: Path, *extra: str) -> tuple[int, str, str]:
    enc = start_encoder(url, "farm1", TOKEN, log, resolution="160x90", fps=10, kbps=150,
                        duration_s=2.0, extra=("--quiet", *extra))
    out, _ = enc.communicate(timeout=CLIENT_EXIT_S)
    return enc.returncode, out.decode(), log.read_text()


def _probe(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        steadycast_cmd("probe", "--relay", url, "--site", "Đồi chè", "--duration", "5", *extra),
        env={**os.environ, "STEADYCAST_TOKEN": TOKEN}, capture_output=True, text=True,
        timeout=CLIENT_EXIT_S)


def test_wildcard_relay_names_loopback_and_says_how_to_add_a_name(relay: Relay) -> None:
    names = {str(n) for n in certificate_names(relay.cert.read_bytes())}
    assert {"localhost", "127.0.0.1", "::1"} <= names and "0.0.0.0" not in names, names
    text = relay.log.read_text()
    [line] = [x for x in text.splitlines() if "listening on every address" in x]
    assert "127.0.0.1" in line and "tls_names" in line, line


def test_encoder_with_ca_file_connects_through_a_name_the_certificate_carries(
        relay: Relay, tmp_path: Path) -> None:
    code, summary, text = _encode(relay.url("127.0.0.1"), tmp_path / "enc.log",
                                  "--ca-file", str(relay.cert))
    assert code == 0, (summary, text)
    assert "all_acked=True" in summary, summary


def test_encoder_is_refused_at_once_through_a_name_the_certificate_lacks(
        relay: Relay, tmp_path: Path) -> None:
    code, summary, text = _encode(relay.url(UNNAMED), tmp_path / "enc.log",
                                  "--ca-file", str(relay.cert))
    assert code == EXIT_UNTRUSTED, (summary, text)
    assert "Traceback" not in text and "reconnecting" not in text, text
    [line] = [x for x in text.splitlines() if "certificate" in x]
    assert "IP address mismatch" in line and f"does not name '{UNNAMED}'" in line, line
    assert "tls_names" in line, line


def test_probe_with_ca_file_measures_and_stores(relay: Relay) -> None:
    probe = _probe(relay.url("127.0.0.1"), "--ca-file", str(relay.cert))
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert "Stored at the relay as probe" in probe.stdout, probe.stdout


def test_probe_is_refused_at_once_through_a_name_the_certificate_lacks(relay: Relay) -> None:
    probe = _probe(relay.url(UNNAMED), "--ca-file", str(relay.cert))
    assert probe.returncode == EXIT_UNTRUSTED, probe.stdout + probe.stderr
    assert "reconnecting" not in probe.stderr and "Traceback" not in probe.stderr, probe.stderr
    assert f"does not name '{UNNAMED}'" in probe.stderr, probe.stderr


def test_probe_ca_file_and_insecure_exclude_each_other(relay: Relay, tmp_path: Path) -> None:
    both = _probe(relay.url("127.0.0.1"), "--ca-file", str(relay.cert), "--insecure")
    assert both.returncode == 2 and "exclude each other" in both.stderr, both.stderr
    missing = _probe(relay.url("127.0.0.1"), "--ca-file", str(tmp_path / "nope.pem"))
    assert missing.returncode == 2 and "--ca-file" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr, missing.stderr
