"""Test helpers: a real RTMP platform (nginx-rtmp), a controllable TCP proxy, media checks."""

from __future__ import annotations

import os

from tests.support.media_check import (
    MediaReport,
    TrackTimeline,
    assert_platform_contract,
    decode_errors,
    max_timestamp_gap_s,
    missing_ffmpeg,
    probe,
)
from tests.support.nginx_rtmp import NginxRtmp, missing_nginx_rtmp
from tests.support.ports import free_port
from tests.support.proxy import TcpProxy


def require_packages(missing: list[str]) -> None:
    """Skip the test when Debian packages are missing; under CI (env CI set), fail instead."""
    if not missing:
        return
    import pytest

    msg = f"missing Debian package(s): {', '.join(missing)} (apt-get install {' '.join(missing)})"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{msg}; under CI the setup must install them", pytrace=False)
    pytest.skip(msg)


__all__ = [
    "MediaReport",
    "NginxRtmp",
    "TcpProxy",
    "TrackTimeline",
    "assert_platform_contract",
    "decode_errors",
    "free_port",
    "max_timestamp_gap_s",
    "missing_ffmpeg",
    "missing_nginx_rtmp",
    "probe",
    "require_packages",
]
