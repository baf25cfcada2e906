"""``steadycast --version``, and the warning a relay gives when it listens beyond localhost
with the built-in demo token (issue 13, "What a first real user meets")."""

from __future__ import annotations

import logging
import subprocess
import tomllib
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import pytest

from steadycast import cli
from steadycast.config import load_relay_config
from tests.relay_harness import ROOT, steadycast_cmd

PYPROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_version_prints_the_package_version() -> None:
    out = subprocess.run(steadycast_cmd("--version"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"steadycast {PYPROJECT_VERSION}"


def test_version_falls_back_to_pyproject_when_not_installed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert cli.version() == PYPROJECT_VERSION
    monkeypatch.setattr(cli, "PYPROJECT", ROOT / "no-such-pyproject.toml")
    assert cli.version() == "unknown"


def test_the_embedded_default_config_uses_the_demo_token_the_warning_knows() -> None:
    settings = load_relay_config(None, env={})
    assert [s.token for s in settings.streams] == [cli.DEMO_TOKEN]


@pytest.mark.parametrize(("host", "warns"), [
    ("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("[::1]", False),
    ("localhost", False), ("0.0.0.0", True), ("::", True), ("192.168.1.10", True),
    ("relay.example.net", True),
])
def test_demo_token_beyond_localhost_is_warned_about(host: str, warns: bool) -> None:
    settings = replace(load_relay_config(None, env={}), host=host)
    warning = cli.demo_token_warning(settings)
    assert (warning is not None) == warns, (host, warning)
    if warning:
        assert "demo" in warning and "built-in demo token" in warning and host in warning
        assert cli.DEMO_TOKEN not in warning
        assert "STEADYCAST_DEMO_TOKEN" in warning


def test_a_token_of_ones_own_is_not_warned_about() -> None:
    settings = load_relay_config(None, env={"STEADYCAST_DEMO_TOKEN": "my-own-secret-token-77"})
    assert cli.demo_token_warning(replace(settings, host="0.0.0.0")) is None


def test_the_relay_command_logs_the_warning_at_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """``steadycast relay`` on the embedded config and a listen address beyond localhost:
    the WARNING is logged before serving (serving itself is replaced: nothing is bound)."""
    from aiohttp import web

    served: list[str] = []
    monkeypatch.setattr(web, "run_app", lambda app, **kw: served.append(kw["host"]))
    monkeypatch.chdir(tmp_path)  # the embedded config's state and database go here
    monkeypatch.delenv("STEADYCAST_DEMO_TOKEN", raising=False)
    monkeypatch.setenv("PYTHONMALLOC", "pymalloc")  # in process: no exec onto the allocator
    with caplog.at_level(logging.WARNING, logger="steadycast"):
        assert cli.main(["relay", "--listen", "0.0.0.0:8080"]) == 0
    assert served == ["0.0.0.0"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("built-in demo token" in w and "demo" in w for w in warnings), warnings
    assert not any(cli.DEMO_TOKEN in w for w in warnings)
