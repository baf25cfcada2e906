"""Shared fixtures. Real-part fixtures skip when a Debian package is missing (fail under CI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import NginxRtmp, missing_ffmpeg, missing_nginx_rtmp, require_packages


@pytest.fixture
def nginx_rtmp(tmp_path: Path) -> Iterator[NginxRtmp]:
    """A started nginx-rtmp "platform" recording each publish session to its own file."""
    require_packages(missing_nginx_rtmp())
    server = NginxRtmp(tmp_path / "nginx")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nginx_rtmps(tmp_path: Path) -> Iterator[NginxRtmp]:
    """Like nginx_rtmp, plus an RTMPS front (self-signed cert at ``.cert_path``)."""
    require_packages(missing_nginx_rtmp(rtmps=True))
    server = NginxRtmp(tmp_path / "nginx", rtmps=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ffmpeg_tools() -> None:
    """Require ffmpeg and ffprobe on PATH."""
    require_packages(missing_ffmpeg())
