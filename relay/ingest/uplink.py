"""The uplink ingest's door: ``GET /ingest/{stream}``, a WebSocket upgrade with the publish
token as ``Authorization: Bearer <token>`` or ``?token=<token>``.

Refusals before the upgrade: 404 for a stream not in the config, 401 without a token, 403 for
a wrong one (counted by the stream's credential throttle: 429 with Retry-After once locked
out, without looking at the token). An accepted connection is handed to its stream
(``relay.stream.StreamRuntime.serve``), which runs the uplink protocol and applies what the
ingest session (``relay.ingest.session``) decides.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from relay.state import RELAY_KEY
from relay.web.responses import json_error, presented_token, token_matches, too_many_attempts

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
