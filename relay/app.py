"""The relay's HTTP app: the routes of every part, the status API, metrics, health.

Routes:
- ``GET /ingest/{stream}`` (WebSocket upgrade): the uplink (relay/ingest/uplink.py).
- ``GET /api/streams``: JSON status of every stream.
- ``GET /metrics``: Prometheus text format.
- ``GET /healthz``: ``ok``.
- ``GET /dashboard``, ``GET /dashboard/api``: the read-only dashboard (relay/web/dashboard.py).
- ``GET /probe`` (WebSocket), ``POST``/``GET /api/probes``: the connection check
  (relay/web/probe.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from relay.ingest.uplink import ingest
from relay.settings import RelaySettings
from relay.state import RELAY_KEY, Relay
from relay.state import TICK_S as TICK_S  # the simulator paces its relay by it
from relay.web import dashboard, probe
from relay.web.responses import (
    quiet_bad_requests,
)

log = logging.getLogger(__name__)


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
