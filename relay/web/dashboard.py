"""The relay's dashboard: one read-only page for trainers, behind the dashboard password.

Routes (added by :func:`add_routes`):
- ``GET /dashboard``: the page (``relay/static/dashboard.html``, plain HTML/CSS/JS, no
  framework, nothing fetched from outside the relay); it polls the API about once a second.
- ``GET /dashboard/api``: JSON: every configured stream with its state (``live``,
  ``freeze``, ``slate`` or ``offline``: what the platforms see), ingest bitrate, buffer,
  destinations with their state, its recording (archive) state with what an error means,
  and its dropouts since ``since`` (default 24 h); the
  connection-check (probe) history per site. Query parameters: ``since`` (``90s``, ``30m``,
  ``24h``, ``7d`` or plain seconds; at most 7 days) and ``probes`` (how many of the newest
  probe results, 0 to 1000, default 200).

Auth: HTTP Basic with ``[relay] dashboard_password`` (any user name), compared in constant
time. No password configured: both routes answer 404 naming the config key. After too many
wrong passwords from one address, 429 with ``Retry-After`` (relay/web/throttle.py; missing or
malformed credentials are not guesses and do not count). Nothing secret
goes out: destinations are shown by name and URL without their stream key, and every text
that could quote one (errors, causes) passes through the process-wide redactor.

:func:`dashboard_view` builds the JSON from plain values (statuses, store rows, ``now``), with
no I/O; the handlers only gather those values and answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import importlib.resources
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from monitor.redact import REDACTOR
from monitor.store import DropoutRow, ProbeRow
from monitor.validate import DURATION_UNITS, is_integer, is_number, parse_duration_s
from relay.state import RELAY_KEY, Relay
from relay.web.responses import error_headers, json_error, too_many_attempts

log = logging.getLogger(__name__)

PAGE_RESOURCE = ("static", "dashboard.html")
REALM = "steadycast dashboard"
PASSWORD_KEY = "[relay] dashboard_password"
WRONG_PASSWORD = "wrong dashboard password"  # the one refusal that counts as a guess

SINCE_S_DEFAULT = 24 * 3600.0
SINCE_S_MAX = 7 * 24 * 3600.0
PROBES_DEFAULT = 200
PROBES_MAX = 1000
DROPOUTS_PER_STREAM_MAX = 500  # newest first; the page's timeline shows the last hour
QUERY_PARAMS = ("since", "probes")
OUTPUT_STATES = ("live", "freeze", "slate")  # anything else the platforms see: offline


_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
             "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
             "frame-ancestors 'none'")


class QueryError(ValueError):
    """A query parameter of ``/dashboard/api`` is not valid; the message says which and why."""


# --- pure parts: query parsing and the view ---------------------------------------------------

def parse_since_s(text: str) -> float:
    """A duration (``monitor.validate.parse_duration_s``: ``90s``, ``30m``, ``24h``, ``7d``; plain
    numbers are seconds) as seconds, 0 < x <= 7 days."""
    seconds = parse_duration_s(text, default_unit="s")
    if seconds is None:
        raise QueryError(f"since={text[:32]!r} is not a duration; valid: a number with an "
                         f"optional unit {DURATION_UNITS} (e.g. 30m, 24h)")
    if not 0 < seconds <= SINCE_S_MAX:
        raise QueryError(f"since={text[:32]!r} is out of range; valid: more than 0 and at most "
                         f"{SINCE_S_MAX / 86400:g} days")
    return seconds


def parse_query(query: Mapping[str, str]) -> tuple[float, int]:
    """``(since_s, probes)`` from the API's query parameters."""
    unknown = sorted(k for k in query if k not in QUERY_PARAMS)
    if unknown:
        raise QueryError(f"unknown query parameter {unknown[0][:32]!r}; valid: "
                         + ", ".join(QUERY_PARAMS))
    since_s = parse_since_s(query["since"]) if "since" in query else SINCE_S_DEFAULT
    probes = PROBES_DEFAULT
    if "probes" in query:
        text = query["probes"]
        if not text.strip().isdigit() or not 0 <= int(text) <= PROBES_MAX:
            raise QueryError(f"probes={text[:32]!r} is not valid; valid: a whole number from 0 "
                             f"to {PROBES_MAX}")
        probes = int(text)
    return since_s, probes


def _number(value: object) -> float | None:
    if not is_number(value):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: object) -> int:
    return value if is_integer(value) else 0


def _text(value: object, max_chars: int = 200) -> str | None:
    if value is None:
        return None
    return REDACTOR.scrub(str(value))[:max_chars]


def probe_figure(result: Mapping[str, Any], name: str) -> float | None:
    """A throughput percentile (``name``: ``p10``, ``p50``) in kbit/s from a probe result:
    ``{"p10_kbps": ..}``, ``{"throughput_p10_kbps": ..}`` or nested under ``throughput_kbps``
    / ``throughput`` / ``upload_kbps`` as ``{"p10": ..}`` or ``{"p10_kbps": ..}``."""
    for key in (f"{name}_kbps", f"throughput_{name}_kbps", f"upload_{name}_kbps"):
        v = _number(result.get(key))
        if v is not None:
            return v
    for group in ("throughput_kbps", "throughput", "upload_kbps", "upload"):
        sub = result.get(group)
        if isinstance(sub, Mapping):
            for key in (name, f"{name}_kbps"):
                v = _number(sub.get(key))
                if v is not None:
                    return v
    return None


# What a destination's error means, in words a trainer can act on: (pattern searched in the
# error text, which starts with the exception's class name; Vietnamese; English). First match
# wins; the raw error stays beside it as a detail.
_PROBLEMS: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), vi, en) for pattern, vi, en in (
        (r"ConnectionRefused|Connection refused",
         "nền tảng từ chối kết nối", "the platform refused the connection"),
        (r"certificate|SSL|TLS",
         "chứng chỉ bảo mật của nền tảng không được chấp nhận",
         "the platform's security certificate was not accepted"),
        (r"gaierror|Name or service not known|name resolution|No address associated",
         "không tìm thấy địa chỉ của nền tảng", "the platform's address was not found"),
        (r"Timeout|timed out",
         "nền tảng không trả lời kịp", "the platform did not answer in time"),
        (r"ConnectionReset|BrokenPipe|ConnectionAborted|Connection reset|Broken pipe|EOFError|"
         r"End of file",
         "nền tảng đã ngắt kết nối", "the platform dropped the connection"),
        (r"PermissionError|Forbidden|Unauthorized|\b40[13]\b",
         "nền tảng từ chối khóa luồng (stream key)", "the platform refused the stream key"),
        (r"NotFound|\b404\b",
         "nền tảng không có địa chỉ phát này", "the platform has no such ingest address"),
        (r"Network is unreachable|No route to host|Host is unreachable",
         "máy chủ relay không có đường mạng tới nền tảng",
         "the relay's server has no network path to the platform"),
    ))
_PROBLEM_OTHER = ("lỗi khi gửi tới nền tảng", "an error while sending to the platform")


def destination_problem(last_error: str | None) -> dict[str, str] | None:
    """A destination's last error as a plain phrase, ``{"vi": .., "en": ..}``; None when there
    is no error. Unknown errors get a general phrase (the raw text stays in ``last_error``)."""
    if not last_error:
        return None
    for pattern, vi, en in _PROBLEMS:
        if pattern.search(last_error):
            return {"vi": vi, "en": en}
    return {"vi": _PROBLEM_OTHER[0], "en": _PROBLEM_OTHER[1]}


def _destination_view(d: Mapping[str, Any]) -> dict[str, Any]:
    last_error = _text(d.get("last_error"))
    return {
        "name": _text(d.get("name"), 64),
        "url": _text(d.get("url")),  # the URL without its key; scrubbed in case it holds one
        "state": _text(d.get("state"), 32),
        "sessions": _count(d.get("sessions")),
        "reconnects": _count(d.get("reconnects")),
        "last_error": last_error,
        "problem": destination_problem(last_error),
    }


def _dropout_view(row: DropoutRow) -> dict[str, Any]:
    return {
        "id": row.id, "scope": _text(row.scope, 96), "kind": _text(row.kind, 32),
        "cause": _text(row.cause), "start_s": row.start_s, "end_s": row.end_s,
        "duration_s": row.duration_s,
    }


def _sub(result: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = result.get(key)
    return value if isinstance(value, Mapping) else {}


def _probe_view(row: ProbeRow) -> dict[str, Any]:
    """One stored probe result: the figures a trainer compares (probe/result.py's
    result format; a field the result lacks is null)."""
    result = row.result if isinstance(row.result, Mapping) else {}
    verdict, rec = _sub(result, "verdict"), _sub(result, "recommendation")
    drops = result.get("dropouts")
    level = verdict.get("level")
    return {
        "id": row.id, "time_s": row.time_s, "verdict": _text(row.verdict, 300),
        "verdict_vi": _text(verdict.get("vi"), 300),
        "level": level if level in ("good", "fair", "poor") else None,
        "p10_kbps": probe_figure(result, "p10"), "p50_kbps": probe_figure(result, "p50"),
        "start_kbps": _number(rec.get("start_kbps")), "buffer_ms": _number(rec.get("buffer_ms")),
        "dropouts": len(drops) if isinstance(drops, list) else None,
        "latitude": row.latitude, "longitude": row.longitude,
    }


def stream_view(status: Mapping[str, Any], buffer_target_ms: int,
                dropouts: Iterable[DropoutRow]) -> dict[str, Any]:
    """One stream for the dashboard, from ``StreamRuntime.status()`` and its dropout rows."""
    source = status.get("output_source")
    return {
        "name": _text(status.get("name"), 64),
        "title": _text(status.get("title")),
        "state": source if source in OUTPUT_STATES else "offline",
        "ingest": _text(status.get("state"), 32),
        "ingest_kbps": _number(status.get("ingest_kbps")) or 0,
        "buffer_ms": _number(status.get("buffer_ms")) or 0,
        "buffer_target_ms": buffer_target_ms,
        "connections": _count(status.get("connections")),
        "destinations": [_destination_view(d) for d in status.get("destinations") or ()
                         if isinstance(d, Mapping)],
        "dropouts": [_dropout_view(r) for r in dropouts],
        "recording": _recording_view(status.get("recording")),
    }


# What a recording error means, like _PROBLEMS for destinations: (pattern searched in the
# recorder's error text, relay/archive/recording.py; Vietnamese; English; whether the sender still
# holds what was not written). Storage errors are OSError texts ("[Errno 28] No space left on
# device"; errno numbers and messages as Linux's errno(3) lists them); while the archive
# fails nothing unwritten is acknowledged, so the encoder keeps it (docs/relay.md "Full disk
# or another write error"). A track the muxer refuses is left out of the archive for good.
_RECORDING_PROBLEMS: tuple[tuple[re.Pattern[str], str, str, bool], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), vi, en, keeps) for pattern, vi, en, keeps in (
        (r"cannot be recorded",
         "một kênh (hình hoặc tiếng) của luồng không ghi được, phần còn lại vẫn được ghi",
         "a track of the stream cannot be recorded; the rest is recorded", False),
        (r"No space left|ENOSPC|\[Errno 28\]|Disk quota|\[Errno 122\]",
         "đĩa đầy", "disk full", True),
        (r"Read-only file system|\[Errno 30\]",
         "ổ đĩa chỉ cho đọc, không ghi được", "the disk is read-only", True),
        (r"Permission denied|Operation not permitted|\[Errno 1[3]?\]",
         "không có quyền ghi vào thư mục ghi hình",
         "no permission to write to the recording folder", True),
        (r"Input/output error|\[Errno 5\]",
         "ổ đĩa bị lỗi", "the disk has an error", True),
        (r"recorder stopped",
         "bộ ghi hình bị dừng, đang khởi động lại", "the recorder stopped and is restarting",
         True),
    ))
_RECORDING_OTHER = ("lỗi khi ghi vào đĩa", "an error while writing to the disk")


def recording_problem(error: str | None) -> dict[str, Any] | None:
    """A recording error as a plain phrase: ``{"vi": .., "en": .., "sender_keeps": bool}``
    (``sender_keeps``: the encoder still holds what was not written, so the archive is
    completed once writing works); None when there is no error."""
    if not error:
        return None
    for pattern, vi, en, keeps in _RECORDING_PROBLEMS:
        if pattern.search(error):
            return {"vi": vi, "en": en, "sender_keeps": keeps}
    return {"vi": _RECORDING_OTHER[0], "en": _RECORDING_OTHER[1], "sender_keeps": True}


def _recording_view(rec: Any) -> dict[str, Any] | None:
    """The archive's state as StreamRuntime.status() gives it (state ok/failed/idle/off,
    error, file), with ``problem`` (:func:`recording_problem`) while it has an error."""
    if not isinstance(rec, Mapping):
        return None
    error = _text(rec.get("error"), 300)
    return {"state": _text(rec.get("state"), 16), "error": error,
            "file": _text(rec.get("file"), 255), "problem": recording_problem(error)}


def dashboard_view(streams: Sequence[dict[str, Any]], probes: Iterable[ProbeRow], now_s: float,
                   since_s: float) -> dict[str, Any]:
    """The API's JSON: streams as given (see :func:`stream_view`); probe results grouped per
    site, newest first, sites ordered by their newest result."""
    sites: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(probes, key=lambda r: (r.time_s, r.id), reverse=True):
        sites.setdefault(_text(row.site, 96) or "", []).append(_probe_view(row))
    return {
        "now_s": now_s,
        "since_s": since_s,
        "streams": list(streams),
        "sites": [{"site": site, "probes": runs} for site, runs in sites.items()],
    }


def check_basic_auth(header: str | None, password: str) -> str | None:
    """None when the Basic credentials carry ``password`` (any user name); else the reason."""
    if not header:
        return ("missing dashboard password: the dashboard needs HTTP Basic auth "
                "(any user name, the dashboard password)")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return "the dashboard needs HTTP Basic auth (any user name, the dashboard password)"
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "malformed Basic credentials: expected base64 of 'user:password'"
    _, sep, presented = decoded.partition(b":")
    if not sep:
        return "malformed Basic credentials: expected base64 of 'user:password'"
    if not hmac.compare_digest(presented, password.encode("utf-8", "surrogateescape")):
        return WRONG_PASSWORD
    return None


# --- the aiohttp side --------------------------------------------------------------------------

def _refuse(status: int, message: str, as_json: bool,
            extra: Mapping[str, str] | None = None) -> web.Response:
    headers = {**_SECURITY_HEADERS, **(extra or {})}
    if as_json:
        return json_error(status, message, headers)
    return web.Response(status=status, text=message + "\n",
                        headers={**headers, **error_headers(message)})


def _load_page() -> str:
    return importlib.resources.files("relay").joinpath(*PAGE_RESOURCE).read_text(encoding="utf-8")


def add_routes(app: web.Application) -> None:
    """Add ``/dashboard`` and ``/dashboard/api`` for the app's relay (set before this call)."""
    relay: Relay = app[RELAY_KEY]
    password = relay.settings.dashboard_password
    page = _load_page()

    def guarded(handler: Callable[[web.Request], Any], as_json: bool
                ) -> Callable[[web.Request], Any]:
        async def guard(request: web.Request) -> web.StreamResponse:
            if not password:
                return _refuse(404, f"the dashboard is off: set {PASSWORD_KEY} in the relay "
                                    "config to turn it on", as_json)
            peer = request.remote or "?"
            throttle = relay.throttle("dashboard")
            retry_after_s = throttle.allow(peer, time.monotonic())
            if retry_after_s is not None:  # locked out: refused without a look at the password
                relay.metrics.auth_throttled.labels("dashboard").inc()
                return too_many_attempts(retry_after_s, "the dashboard", _SECURITY_HEADERS)
            reason = check_basic_auth(request.headers.get("Authorization"), password)
            if reason is not None:
                if request.headers.get("Authorization"):
                    log.warning("dashboard refused for %s: %s", peer, reason)
                if reason == WRONG_PASSWORD:
                    locked_s = throttle.failed(peer, time.monotonic())
                    if locked_s is not None:
                        log.warning("dashboard from %s: too many wrong passwords, locked out "
                                    "for %g s", peer, locked_s)
                return _refuse(401, reason, as_json, {
                    "WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
            throttle.succeeded(peer, time.monotonic())
            response: web.StreamResponse = await handler(request)
            return response
        return guard

    async def page_handler(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", charset="utf-8",
                            headers={**_SECURITY_HEADERS, "Content-Security-Policy": _PAGE_CSP})

    async def api_handler(request: web.Request) -> web.Response:
        try:
            since_s, probe_limit = parse_query(request.query)
        except QueryError as e:
            return _refuse(400, str(e), True)
        now_s = time.time()
        statuses = [(s.status(), s.settings.buffer_ms) for s in relay.streams.values()]

        def read_store() -> tuple[list[list[DropoutRow]], list[ProbeRow]]:
            drops = [relay.store.dropouts(stream=str(st["name"]), since_s=now_s - since_s,
                                          limit=DROPOUTS_PER_STREAM_MAX) for st, _ in statuses]
            probes = relay.store.probes(limit=probe_limit) if probe_limit else []
            return drops, probes

        drops, probes = await asyncio.to_thread(read_store)  # SQLite off the event loop
        streams = [stream_view(st, target, rows)
                   for (st, target), rows in zip(statuses, drops, strict=True)]
        return web.json_response(dashboard_view(streams, probes, now_s, since_s),
                                 headers=_SECURITY_HEADERS)

    app.router.add_get("/dashboard", guarded(page_handler, as_json=False))
    app.router.add_get("/dashboard/api", guarded(api_handler, as_json=True))
