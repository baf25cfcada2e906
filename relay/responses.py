"""How the relay's HTTP endpoints refuse a request, and how a client presents a token.

Shared by the ingest (relay.app), the connection check (relay.probe) and the dashboard
(relay.dashboard), so every refusal looks the same: the reason in the body and in the
``X-Steadycast-Error`` header (ASCII, backslash-escaped), which WebSocket clients that drop
bodies still see. Messages never carry a secret; callers make sure of that.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

ERROR_HEADER = "X-Steadycast-Error"  # the reason, also for WebSocket clients that drop bodies


def error_headers(message: str) -> dict[str, str]:
    """The ``X-Steadycast-Error`` header carrying ``message``."""
    return {ERROR_HEADER: message.encode("ascii", "backslashreplace").decode("ascii")}


def json_error(status: int, message: str,
               headers: Mapping[str, str] | None = None) -> web.Response:
    """``{"error": message}`` with ``status``, the error header and any extra ``headers``."""
    return web.json_response({"error": message}, status=status,
                             headers={**(headers or {}), **error_headers(message)})


def presented_token(request: web.Request) -> str | None:
    """The token a client sent: ``Authorization: Bearer <token>``, else ``?token=``."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query.get("token")
