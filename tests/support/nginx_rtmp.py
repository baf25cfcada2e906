"""The nginx-rtmp test platform; it lives in :mod:`harness.nginx_platform` (the benchmark
starts it too, and ``benchmarks/`` may not import ``tests/``). Re-exported here unchanged."""

from __future__ import annotations

from harness.nginx_platform import (
    NGINX_MODULES_DIR,
    RTMP_MODULE,
    STREAM_MODULE,
    NginxRtmp,
    make_self_signed_cert,
    missing_nginx_rtmp,
    nginx_binary,
)
from tests.support.ports import free_port

__all__ = [
    "NGINX_MODULES_DIR",
    "RTMP_MODULE",
    "STREAM_MODULE",
    "NginxRtmp",
    "free_port",
    "make_self_signed_cert",
    "missing_nginx_rtmp",
    "nginx_binary",
]
