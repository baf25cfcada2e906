"""The relay's HTTP face: ingest WebSocket, status API, metrics, health.

Routes:
- ``GET /ingest/{stream}`` (WebSocket upgrade): the uplink; publish token as
  ``Authorization: Bearer <token>`` or ``?token=<token>``.
- ``GET /api/streams``: JSON status of every stream.
- ``GET /metrics``: Prometheus text format.
- ``GET /healthz``: ``ok``.
- ``GET /dashboard``, ``GET /dashboard/api``: the read-only dashboard (relay/web/dashboard.py).
- ``GET /probe`` (WebSocket), ``POST``/``GET /api/probes``: the connection check
  (relay/web/probe.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from relay.settings import RelaySettings
from relay.state import RELAY_KEY, Relay
from relay.state import TICK_S as TICK_S  # the simulator paces its relay by it
from relay.web import dashboard, probe
from relay.web.responses import (
    json_error,
    presented_token,
    quiet_bad_requests,
    token_matches,
    too_many_attempts,
)

log = logging.getLogger(__name__)

WS_HEARTBEAT_S = 10.0
# After the relay sends a close frame, it waits at most this long for the peer's close frame
# before dropping the connection (aiohttp's default is 10 s): a refused client cannot hold a
# connection's buffers by never answering.
WS_CLOSE_TIMEOUT_S = 2.0
MESSAGE_SLACK_BYTES = 1024


class IngestWebSocket(web.WebSocketResponse):
    """aiohttp's server WebSocket, released as soon as it is closed.

    aiohttp 3.14 resets the heartbeat on every chunk of bytes received (PR aio-libs/aiohttp
    #12030), also on the peer's close frame that arrives after the relay closed the connection
    (a refused message, a replaced connection, BYE). The heartbeat timer it arms then holds the
    closed response, its request and parser buffers in the event loop for WS_HEARTBEAT_S plus
    half that, so a flood of refused connections was held for 15 s each (issue 13, fault 5:
    ~10-40 KB a connection). Rule: bytes that arrive after close reset no heartbeat.
    """

    def _on_data_received(self) -> None:
        if not self.closed:
            super()._on_data_received()


async def ingest(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY_KEY]
    name = request.match_info["stream"]
    peer = request.remote or "?"
    runtime = relay.streams.get(name)
    if runtime is None:
        relay.metrics.ingest_rejected.labels("unknown_stream").inc()
        log.warning("ingest refused from %s: unknown stream %r", peer, name[:64])
        return json_error(404, f"unknown stream {name[:64]!r}: this relay has no such stream "
                                "in its config")
    throttle = relay.throttle(f"ingest:{name}")
    retry_after_s = throttle.allow(peer, time.monotonic())
    if retry_after_s is not None:  # locked out: refused without looking at the token
        relay.metrics.ingest_rejected.labels("throttled").inc()
        relay.metrics.auth_throttled.labels("ingest").inc()
        return too_many_attempts(retry_after_s, f"stream {name!r}")
    token = presented_token(request)
    if not token:
        relay.metrics.ingest_rejected.labels("missing_token").inc()
        log.warning("ingest refused from %s for stream %s: no publish token", peer, name)
        return json_error(401, "missing publish token: send 'Authorization: Bearer <token>' "
                                "or ?token=<token>")
    if not token_matches(token, runtime.settings.token):
        relay.metrics.ingest_rejected.labels("wrong_token").inc()
        relay.events.write("publish_rejected", stream=name, peer=peer, reason="wrong token")
        log.warning("ingest refused from %s for stream %s: wrong publish token", peer, name)
        locked_s = throttle.failed(peer, time.monotonic())
        if locked_s is not None:
            log.warning("ingest from %s for stream %s: too many wrong tokens, locked out for "
                        "%g s", peer, name, locked_s)
        return json_error(403, f"wrong publish token for stream {name!r}")
    throttle.succeeded(peer, time.monotonic())
    ws = IngestWebSocket(max_msg_size=relay.settings.max_message_bytes + MESSAGE_SLACK_BYTES,
                         heartbeat=WS_HEARTBEAT_S, timeout=WS_CLOSE_TIMEOUT_S)
    if not ws.can_prepare(request).ok:
        return json_error(426, "the ingest endpoint needs a WebSocket upgrade")
    await ws.prepare(request)
    log.info("stream %s: sender connected from %s", name, peer)
    await runtime.serve(ws, peer)
    log.info("stream %s: sender from %s disconnected", name, peer)
    return ws


async def streams_api(request: web.Request) -> web.Response:
    relay = request.app[RELAY_KEY]
    body: dict[str, Any] = {"streams": [s.status() for s in relay.streams.values()]}
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    relay = request.app[RELAY_KEY]
    return web.Response(body=relay.metrics.render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def build_app(settings: RelaySettings) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    quiet_bad_requests()  # a request aiohttp's parser refuses: one line, no traceback
    relay = Relay(settings)
    app[RELAY_KEY] = relay

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await relay.start()
        yield
        await relay.close()

    app.cleanup_ctx.append(lifecycle)

    async def shutting_down(app: web.Application) -> None:
        for s in relay.streams.values():
            s.begin_shutdown()  # what the shutdown does to the ingest is no dropout

    app.on_shutdown.append(shutting_down)
    app.router.add_get("/ingest/{stream}", ingest)
    app.router.add_get("/api/streams", streams_api)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    dashboard.add_routes(app)  # /dashboard, /dashboard/api (behind dashboard_password)
    probe.add_routes(app)  # /probe, /api/probes (probe_token or a publish token)
    return app
