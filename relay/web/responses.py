"""How the relay's HTTP endpoints refuse a request, and how a client presents a token.

Shared by the ingest (relay.ingest.uplink), the connection check (relay.web.probe) and the dashboard
(relay.web.dashboard), so every refusal looks the same: the reason in the body and in the
``X-Steadycast-Error`` header (ASCII, backslash-escaped), which WebSocket clients that drop
bodies still see. Messages never carry a secret; callers make sure of that.

Tokens are compared as bytes: aiohttp decodes header bytes that are not UTF-8 as lone
surrogates (``surrogateescape``), which ``str.encode()`` refuses, and
``hmac.compare_digest`` on ``str`` refuses anything but ASCII; encoding both sides with
``surrogateescape`` gives back the bytes the client sent, so any presented token is simply
right or wrong, never an error of the server.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Mapping

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

ERROR_HEADER = "X-Steadycast-Error"  # the reason, also for WebSocket clients that drop bodies
BAD_REQUEST_REASON_MAX_CHARS = 100


def error_headers(message: str) -> dict[str, str]:
    """The ``X-Steadycast-Error`` header carrying ``message``."""
    return {ERROR_HEADER: message.encode("ascii", "backslashreplace").decode("ascii")}


def json_error(status: int, message: str,
               headers: Mapping[str, str] | None = None) -> web.Response:
    """``{"error": message}`` with ``status``, the error header and any extra ``headers``."""
    return web.json_response({"error": message}, status=status,
                             headers={**(headers or {}), **error_headers(message)})


def too_many_attempts(retry_after_s: float, what: str,
                      headers: Mapping[str, str] | None = None) -> web.Response:
    """429 for an address locked out after wrong credentials (relay/web/throttle.py), with
    ``Retry-After`` in whole seconds (at least 1, RFC 9110 §10.2.3)."""
    wait_s = max(1, math.ceil(retry_after_s))
    return json_error(429, f"too many wrong credentials for {what} from your address: try "
                           f"again in {wait_s} s", {**(headers or {}), "Retry-After": str(wait_s)})


def token_matches(presented: str, secret: str) -> bool:
    """Whether ``presented`` is ``secret``, in constant time, for any text a client can send
    (see the module docstring); an empty ``secret`` matches nothing."""
    if not secret:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"),
                               secret.encode("utf-8", "surrogateescape"))


def presented_token(request: web.Request) -> str | None:
    """The token a client sent: ``Authorization: Bearer <token>``, else ``?token=``."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query.get("token")


class BadRequestLogFilter(logging.Filter):
    """Turns aiohttp's ``Error handling request`` record for a request its HTTP parser refused
    (it answers 400 itself; e.g. a byte that is not ASCII in the request target) into one
    WARNING line: the client's address and the parser's reason, without the traceback and
    without the request line, which may quote a token. Other records pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = str(exc.message).split("\n", 1)[0].strip().rstrip(":")
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "bad HTTP request from %s refused with %d: %s"
            record.args = (peer, exc.code, reason[:BAD_REQUEST_REASON_MAX_CHARS])
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_bad_requests(logger: logging.Logger | None = None) -> None:
    """Install :class:`BadRequestLogFilter` on aiohttp's server logger (once)."""
    logger = logger or logging.getLogger("aiohttp.server")
    if not any(isinstance(f, BadRequestLogFilter) for f in logger.filters):
        logger.addFilter(BadRequestLogFilter())
