"""The relay's side of the connection check (``steadycast probe``): a WebSocket that measures
the uplink, and the store of probe results per site.

Routes (``add_routes``):

- ``GET /probe`` (WebSocket upgrade), over the same kind of connection as the uplink's
  ``/ingest/{stream}``. The client uploads filler as fast as the link takes it, keeping a
  bounded number of unacknowledged bytes in flight; the relay acknowledges what arrived and
  answers pings, so the client measures throughput, RTT and outages.
- ``POST /api/probes``: store one probe result (``probe.result.validate_submission``
  checks every field; a bad one gets HTTP 400 naming it). The relay records its own time and
  the client's address beside it.
- ``GET /api/probes[?site=NAME][&limit=N]``: the stored results grouped per site, oldest first
  within a site (``limit``, default 100, at most 1000: the newest N over all sites).

Authentication on all three, like the ingest: ``Authorization: Bearer <token>`` or
``?token=<token>`` carrying the relay's ``probe_token`` or any stream's publish token. No
token: 401; a wrong one: 403; after too many wrong ones from one address, 429 with
``Retry-After`` (relay/web/throttle.py, one throttle for the three routes); the reason is in the
JSON body and the ``X-Steadycast-Error`` header; the token is never echoed or logged.

Probe messages (binary WebSocket messages; first byte the type, integers big-endian;
encoded and parsed by ``probe.wire``):

==========  ======  ==========================  =============================================
message     type    rest                        meaning
==========  ======  ==========================  =============================================
FILLER      0x01    1..65536 bytes, any         client -> relay: bytes to count
PING        0x02    u64 id (9 bytes in all)     client -> relay: answer with a PONG at once
ACK         0x81    u64 bytes (9 bytes in all)  relay -> client: binary message bytes received
                                                on this connection so far, type bytes included
PONG        0x82    u64 id (9 bytes in all)     relay -> client: the id of the PING answered
==========  ======  ==========================  =============================================

The relay sends an ACK at most ``ACK_INTERVAL_S`` after bytes arrive (at most one per
interval) and one just before every PONG. Anything else closes that connection with a
reason and a WebSocket close code: a text frame, a wrong length or an empty message 4400
(``uplink.CloseCode.MALFORMED``), an unknown type 4401 (``UNKNOWN_TYPE``), a message over
65537 bytes 1009 (too big); the relay and its streams carry on. A connection with no message
for ``IDLE_TIMEOUT_S`` is closed, as is one older than ``MAX_PROBE_S`` or one that reads
nothing for ``IDLE_TIMEOUT_S``; at most ``MAX_CONCURRENT_PROBES`` run at once (then HTTP
503).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from probe.result import ProbeResultError, check_site, validate_submission
from probe.wire import PROBE_MAX_MESSAGE_BYTES, Ping, encode_ack, encode_pong, parse_client_message
from relay.state import RELAY_KEY
from relay.web.responses import json_error, presented_token, token_matches, too_many_attempts
from uplink import CloseCode, ProtocolError

log = logging.getLogger(__name__)

ACK_INTERVAL_S = 0.1
IDLE_TIMEOUT_S = 60.0  # no message for this long: the probe is gone (outages are shorter)
MAX_PROBE_S = 900.0  # the client's --duration is at most 600 s
MAX_CONCURRENT_PROBES = 4
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000
TOKEN_HELP = ("send 'Authorization: Bearer <token>' or ?token=<token> with the relay's "
              "probe_token or a stream's publish token")


@dataclass
class _ProbeCount:
    active: int = 0


PROBES_KEY: web.AppKey[_ProbeCount] = web.AppKey("probes", _ProbeCount)


class ProbeServerSession:
    """One probe connection at the relay, without I/O: messages in, messages to send out.

    ``receive`` returns what to send now; ``ack_due`` says when to call ``on_timer`` if
    nothing arrives before then."""

    def __init__(self, now: float, ack_interval_s: float = ACK_INTERVAL_S) -> None:
        self.started = now
        self.ack_interval_s = ack_interval_s
        self.received_bytes = 0
        self.acked_bytes = 0
        self.pings = 0
        self._last_ack = -float("inf")

    @property
    def ack_due(self) -> float | None:
        if self.received_bytes == self.acked_bytes:
            return None
        return self._last_ack + self.ack_interval_s

    def receive(self, data: bytes, now: float) -> list[bytes]:
        """Raises ProtocolError on a malformed message."""
        message = parse_client_message(data)
        self.received_bytes += len(data)
        if isinstance(message, Ping):
            self.pings += 1
            return [self._ack(now), encode_pong(message.ping_id)]
        return self.on_timer(now)

    def on_timer(self, now: float) -> list[bytes]:
        due = self.ack_due
        if due is not None and now >= due:
            return [self._ack(now)]
        return []

    def _ack(self, now: float) -> bytes:
        self._last_ack = now
        self.acked_bytes = self.received_bytes
        return encode_ack(self.received_bytes)


# --- authentication --------------------------------------------------------------------------
def _refusal(request: web.Request, what: str) -> web.Response | None:
    """None when the request carries the probe token or a publish token, else the 401/403,
    or 429 while the client's address is locked out after wrong tokens (relay/web/throttle.py;
    one throttle for the three routes)."""
    relay = request.app[RELAY_KEY]
    peer = request.remote or "?"
    throttle = relay.throttle("probe")
    retry_after_s = throttle.allow(peer, time.monotonic())
    if retry_after_s is not None:  # locked out: refused without looking at the token
        relay.metrics.auth_throttled.labels("probe").inc()
        return too_many_attempts(retry_after_s, what)
    token = presented_token(request)
    if not token:
        log.warning("refused %s from %s: no token", what, peer)
        relay.events.write("probe_rejected", peer=peer, reason="missing token", what=what)
        return json_error(401, f"missing token for {what}: {TOKEN_HELP}")
    accepted = [relay.settings.probe_token] + [s.token for s in relay.settings.streams]
    ok = False
    for secret in accepted:  # every one compared, so the time does not tell which matched
        if token_matches(token, secret):
            ok = True
    if not ok:
        log.warning("refused %s from %s: wrong token", what, peer)
        relay.events.write("probe_rejected", peer=peer, reason="wrong token", what=what)
        locked_s = throttle.failed(peer, time.monotonic())
        if locked_s is not None:
            log.warning("%s from %s: too many wrong tokens, locked out for %g s", what, peer,
                        locked_s)
        return json_error(403, f"wrong token for {what}: it is neither the relay's "
                                          "probe_token nor a stream's publish token")
    throttle.succeeded(peer, time.monotonic())
    return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _authenticated(what: str) -> Callable[[Handler], Handler]:
    """The handler runs only for a request that carries an accepted token."""
    def wrap(handler: Handler) -> Handler:
        async def inner(request: web.Request) -> web.StreamResponse:
            refused = _refusal(request, what)
            if refused is not None:
                return refused
            return await handler(request)
        return inner
    return wrap


# --- GET /probe --------------------------------------------------------------------------------
@_authenticated("the probe")
async def probe_ws(request: web.Request) -> web.StreamResponse:
    count = request.app[PROBES_KEY]
    peer = request.remote or "?"
    if count.active >= MAX_CONCURRENT_PROBES:
        return json_error(503, f"{MAX_CONCURRENT_PROBES} probes are running already; "
                                          "try again in a minute")
    ws = web.WebSocketResponse(max_msg_size=PROBE_MAX_MESSAGE_BYTES, heartbeat=None,
                               compress=False)
    if not ws.can_prepare(request).ok:
        return json_error(426, "the probe endpoint needs a WebSocket upgrade")
    count.active += 1
    try:
        await ws.prepare(request)
        log.info("probe from %s: connected", peer)
        session = ProbeServerSession(time.monotonic())
        reason = await _serve(ws, session, peer)
        log.info("probe from %s: ended (%s) after %.1f s, %d bytes, %d pings", peer, reason,
                 time.monotonic() - session.started, session.received_bytes, session.pings)
    finally:
        count.active -= 1
    return ws


async def _serve(ws: web.WebSocketResponse, session: ProbeServerSession, peer: str) -> str:
    while True:
        now = time.monotonic()
        if now - session.started > MAX_PROBE_S:
            await ws.close(code=int(WSCloseCode.OK), message=b"probe time limit reached")
            return "time limit"
        due = session.ack_due
        timeout = IDLE_TIMEOUT_S if due is None else max(0.0, due - now)
        try:
            msg = await ws.receive(timeout=timeout)
        except TimeoutError:
            if due is None:
                await ws.close(code=int(WSCloseCode.OK),
                               message=f"no message for {IDLE_TIMEOUT_S:g} s".encode())
                return "idle"
            if not await _send(ws, session.on_timer(time.monotonic())):
                return "not reading"
            continue
        if msg.type == WSMsgType.BINARY:
            try:
                out = session.receive(msg.data, time.monotonic())
            except ProtocolError as err:
                log.warning("probe from %s: closing: %s (code %d)", peer, err.detail,
                            int(err.code))
                await ws.close(code=int(err.code), message=err.close_reason().encode())
                return "bad message"
            if not await _send(ws, out):
                return "not reading"
        elif msg.type == WSMsgType.TEXT:
            detail = "text frames are not part of the probe protocol"
            log.warning("probe from %s: closing: %s", peer, detail)
            await ws.close(code=int(CloseCode.MALFORMED), message=detail.encode())
            return "bad message"
        elif msg.type == WSMsgType.ERROR:
            exc = ws.exception()
            if isinstance(exc, WebSocketError) and exc.code == WSCloseCode.MESSAGE_TOO_BIG:
                log.warning("probe from %s: closing: message larger than %d bytes", peer,
                            PROBE_MAX_MESSAGE_BYTES)
                return "message too big"
            return f"error: {exc}"
        else:  # CLOSE, CLOSING, CLOSED
            return "closed by the client"


async def _send(ws: web.WebSocketResponse, messages: list[bytes]) -> bool:
    """Send; False (and the connection closed) when the client read nothing for
    IDLE_TIMEOUT_S, so a client that never reads cannot hold a probe slot."""
    try:
        for data in messages:
            await asyncio.wait_for(ws.send_bytes(data), IDLE_TIMEOUT_S)
    except TimeoutError:
        await ws.close(code=int(WSCloseCode.POLICY_VIOLATION),
                       message=f"nothing read for {IDLE_TIMEOUT_S:g} s".encode())
        return False
    return True


# --- /api/probes -------------------------------------------------------------------------------
@_authenticated("probe results")
async def post_probe(request: web.Request) -> web.Response:
    relay = request.app[RELAY_KEY]
    peer = request.remote or "?"
    try:
        text = await request.text()
    except web.HTTPRequestEntityTooLarge as exc:
        return json_error(413, f"bad probe result: {exc.text}")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return json_error(400, "bad probe result: the body is not valid JSON")
    try:
        sub = validate_submission(body)
    except ProbeResultError as err:
        log.warning("probe result from %s refused: field %s", peer, err.field)
        return json_error(400, f"bad probe result: {err}")
    row_id = await asyncio.to_thread(
        relay.store.add_probe, sub.site, time.time(), peer, sub.verdict_line, sub.result,
        sub.latitude, sub.longitude)
    relay.events.write("probe_stored", site=sub.site, peer=peer, id=row_id,
                       verdict=sub.result["verdict"]["level"])
    return web.json_response({"id": row_id, "site": sub.site}, status=201)


@_authenticated("probe results")
async def list_probes(request: web.Request) -> web.Response:
    relay = request.app[RELAY_KEY]
    site: str | None = None
    if "site" in request.query:
        try:
            site = check_site(request.query["site"])
        except ProbeResultError as err:
            return json_error(400, f"bad query: {err}")
    raw_limit = request.query.get("limit", str(LIST_LIMIT_DEFAULT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= LIST_LIMIT_MAX:
        return json_error(400, f"bad query: limit must be an integer within "
                                          f"[1, {LIST_LIMIT_MAX}], got {raw_limit[:20]!r}")
    rows = await asyncio.to_thread(relay.store.probes, site=site, limit=int(raw_limit))
    sites: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        sites.setdefault(row.site, []).append(row.as_dict())
    return web.json_response({"sites": [{"site": name, "probes": probes}
                                        for name, probes in sorted(sites.items())]})


def add_routes(app: web.Application) -> None:
    """Register ``/probe`` and ``/api/probes`` on the relay's app (``relay.app.build_app``)."""
    app[PROBES_KEY] = _ProbeCount()
    app.router.add_get("/probe", probe_ws)
    app.router.add_post("/api/probes", post_probe)
    app.router.add_get("/api/probes", list_probes)
