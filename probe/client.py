"""The connection check's client (``steadycast probe``): measure a site's uplink against the
relay's ``/probe`` WebSocket, then store the result at the relay.

Two phases over one WebSocket (the same kind of connection the uplink uses):

1. idle, the first ``idle_s`` (3 s): a PING every ``IDLE_PING_INTERVAL_S``, nothing else: the
   round trip of an empty link;
2. loaded, the rest of the duration: FILLER as fast as the link takes it, at most a window of
   unacknowledged bytes in flight (max(``MIN_INFLIGHT_BYTES``, the acknowledged rate of the
   last second x max(``INFLIGHT_S``, ``INFLIGHT_RTTS`` x the lowest RTT)), at most
   ``MAX_INFLIGHT_BYTES``), with a PING every ``LOADED_PING_INTERVAL_S``: the round trip the
   uplink sees while it keeps the link full.

It keeps going through outages: an outage on a connection that stays open shows as no
acknowledgement; a connection that drops, or takes nothing for ``STALL_TIMEOUT_S``, is opened
again (after ``RECONNECT_FIRST_S``, doubling to ``RECONNECT_MAX_S``), and the gap counts as a
dropout. A refused probe (HTTP 401/403/404) ends it with the relay's reason; so does a relay
certificate that does not verify (``RelayNotTrusted``, ``encoder.relay_tls``).

``ProbeSender`` decides what to send and reads what comes back, without I/O (``now`` is an
argument); ``probe.analysis.ProbeAnalysis`` turns the samples into figures, verdict and
recommendation; ``ProbeClient`` is the asyncio glue (and shows progress on stderr once a
second); ``plot_probe`` draws the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from encoder.relay_tls import RelayNotTrusted, tls_context, untrusted_reason
from encoder.settings import ACK_TIMEOUT_S, RECONNECT_FIRST_S, RECONNECT_MAX_S
from probe.analysis import ProbeAnalysis
from probe.wire import FILLER, PROBE_MAX_FILLER_BYTES, Ack, encode_ping, parse_relay_message
from uplink import CloseCode, ProtocolError

log = logging.getLogger(__name__)

DURATION_S_DEFAULT = 60.0
IDLE_S = 3.0
IDLE_PING_INTERVAL_S = 0.1
LOADED_PING_INTERVAL_S = 0.2
FILLER_MESSAGE_BYTES = 16 * 1024
MIN_INFLIGHT_BYTES = 64 * 1024
MAX_INFLIGHT_BYTES = 8 * 1024 * 1024
INFLIGHT_S = 1.0  # the window holds at least this long of the acknowledged rate ...
INFLIGHT_RTTS = 2.0  # ... or this many of the lowest RTTs, whichever is longer
RATE_WINDOW_S = 1.0
MAX_PINGS_OUTSTANDING = 512  # older unanswered pings are forgotten (a long outage)
STALL_TIMEOUT_S = ACK_TIMEOUT_S  # data outstanding and no answer this long: reconnect
CONNECT_TIMEOUT_S = 10.0
WRITER_TICK_S = 0.05
TICK_S = 0.1
STATUS_INTERVAL_S = 1.0
CLOSE_TIMEOUT_S = 2.0
POST_DEADLINE_S = 30.0  # keep trying to store the result this long (the link may be out)
POST_TIMEOUT_S = 10.0
# random, so no compression on the way makes the link look faster than it is
_FILLER = bytes([FILLER]) + random.Random(0).randbytes(FILLER_MESSAGE_BYTES - 1)
assert len(_FILLER) - 1 <= PROBE_MAX_FILLER_BYTES


class ProbeRefused(Exception):
    """The relay refused the probe (HTTP 401/403/404): retrying will not help."""


@dataclass(frozen=True)
class ProbeSettings:
    relay_url: str  # http(s)://host:port of the relay
    token: str = field(repr=False)  # secret: the probe token or a publish token
    site: str = ""
    latitude: float | None = None
    longitude: float | None = None
    duration_s: float = DURATION_S_DEFAULT
    idle_s: float = IDLE_S
    verify_tls: bool = True  # False accepts any certificate (--insecure)
    ca_file: Path | None = None  # trust only this certificate (--ca-file), not the system's
    quiet: bool = False

    @property
    def base_url(self) -> str:
        return self.relay_url.rstrip("/")

    @property
    def probe_url(self) -> str:
        base = self.base_url
        if base.startswith("https://"):
            base = "wss://" + base[len("https://"):]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://"):]
        return base + "/probe"


@dataclass(frozen=True)
class AckedTotal:
    """The relay has acknowledged ``total`` bytes since the probe started (all connections)."""

    total: int


@dataclass(frozen=True)
class RttMeasured:
    rtt_s: float
    loaded: bool  # the PING went out in the loaded phase


class ProbeSender:
    """What to send and when, and what the relay's answers mean; no I/O, ``now`` passed in.

    Byte counts are per connection (the relay's ACK counts from 0 on each); ``acked_total``
    adds up every connection's."""

    def __init__(self, start: float, idle_s: float) -> None:
        self.loaded_at = start + idle_s
        self.connected = False
        self._acked_before = 0  # acknowledged on earlier connections
        self._sent = 0
        self._acked = 0
        self._pings: dict[int, tuple[float, bool]] = {}  # id -> (sent at, loaded)
        self._next_ping_id = 1
        self.next_ping_at = start
        self._progress_at = start
        self._rate: deque[tuple[float, int]] = deque()
        self.min_rtt_s: float | None = None

    @property
    def acked_total(self) -> int:
        return self._acked_before + self._acked

    @property
    def in_flight(self) -> int:
        return self._sent - self._acked

    def loaded(self, now: float) -> bool:
        return now >= self.loaded_at

    def acked_rate_bps(self, now: float) -> float:
        """Bytes per second acknowledged over the last RATE_WINDOW_S."""
        while self._rate and self._rate[0][0] < now - RATE_WINDOW_S:
            self._rate.popleft()
        if not self._rate:
            return 0.0
        t0, acked0 = self._rate[0]
        return (self.acked_total - acked0) / max(now - t0, RATE_WINDOW_S / 2)

    def window_bytes(self, now: float) -> int:
        hold_s = max(INFLIGHT_S, INFLIGHT_RTTS * (self.min_rtt_s or 0.0))
        window = int(self.acked_rate_bps(now) * hold_s)
        return min(MAX_INFLIGHT_BYTES, max(MIN_INFLIGHT_BYTES, window))

    def connection_made(self, now: float) -> None:
        self.connected = True
        self._sent = self._acked = 0
        self._pings.clear()
        self._progress_at = now
        self.next_ping_at = now

    def connection_lost(self, now: float) -> None:
        self.connected = False
        self._acked_before += self._acked
        self._sent = self._acked = 0
        self._pings.clear()

    def messages_to_send(self, now: float) -> list[bytes]:
        """The PING if one is due, then FILLER up to the window (in the loaded phase)."""
        if not self.connected:
            return []
        out: list[bytes] = []
        loaded = self.loaded(now)
        if now >= self.next_ping_at:
            ping_id = self._next_ping_id
            self._next_ping_id += 1
            self._pings[ping_id] = (now, loaded)
            while len(self._pings) > MAX_PINGS_OUTSTANDING:
                del self._pings[next(iter(self._pings))]
            msg = encode_ping(ping_id)
            self._sent += len(msg)
            out.append(msg)
            interval = LOADED_PING_INTERVAL_S if loaded else IDLE_PING_INTERVAL_S
            self.next_ping_at = now + interval
        if loaded:
            room = self.window_bytes(now) - self.in_flight
            while room >= len(_FILLER):
                out.append(_FILLER)
                self._sent += len(_FILLER)
                room -= len(_FILLER)
        return out

    def on_message(self, data: bytes, now: float) -> list[AckedTotal | RttMeasured]:
        """A binary message from the relay. Raises ProtocolError."""
        msg = parse_relay_message(data)
        if isinstance(msg, Ack):
            if msg.received_bytes > self._sent:
                raise ProtocolError(CloseCode.BAD_VALUE, f"ACK of {msg.received_bytes} bytes, "
                                                         f"only {self._sent} were sent")
            if msg.received_bytes <= self._acked:
                return []
            self._acked = msg.received_bytes
            self._progress_at = now
            self._rate.append((now, self.acked_total))
            return [AckedTotal(self.acked_total)]
        sent = self._pings.pop(msg.ping_id, None)
        if sent is None:
            return []  # forgotten (or never sent): no sample
        self._progress_at = now
        rtt_s = now - sent[0]
        if self.min_rtt_s is None or rtt_s < self.min_rtt_s:
            self.min_rtt_s = rtt_s
        return [RttMeasured(rtt_s, sent[1])]

    def stalled(self, now: float) -> bool:
        """Something is outstanding and the relay has answered nothing for STALL_TIMEOUT_S."""
        outstanding = self.in_flight > 0 or bool(self._pings)
        return self.connected and outstanding and now - self._progress_at >= STALL_TIMEOUT_S


@dataclass
class ProbeOutcome:
    result: dict[str, Any]
    stored_id: int | None
    store_error: str | None
    connections: int
    rtts: list[tuple[float, float, bool]]  # (seconds since start, ms, loaded) for the plot


class ProbeClient:
    def __init__(self, settings: ProbeSettings, status_stream: TextIO | None = None) -> None:
        """A bad ``ca_file`` raises OSError naming it."""
        self.settings = settings
        self._ssl = tls_context(settings)
        self._status_stream = status_stream if status_stream is not None else sys.stderr
        self._wake = asyncio.Event()
        self.connections = 0
        self._end = 0.0
        self._stopped_at: float | None = None
        self.analysis: ProbeAnalysis | None = None
        self.sender: ProbeSender | None = None

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.token}"}

    def stop(self) -> None:
        """End the probe now (Ctrl-C): what was measured is still analysed and stored."""
        self._end = min(self._end, time.monotonic())
        self._wake.set()

    async def run(self) -> ProbeOutcome:
        s = self.settings
        start = time.monotonic()
        self._end = start + s.duration_s
        analysis = self.analysis = ProbeAnalysis(start, s.idle_s)
        self.sender = ProbeSender(start, s.idle_s)
        ticker = asyncio.create_task(self._tick(start))
        try:
            async with aiohttp.ClientSession() as http:
                backoff: float | None = None
                while time.monotonic() < self._end:
                    try:
                        await self._connect_and_probe(http)
                        backoff = None
                    except (ProbeRefused, RelayNotTrusted):
                        raise
                    except (aiohttp.ClientError, OSError, TimeoutError, ProtocolError) as exc:
                        now = time.monotonic()
                        analysis.on_connection_lost(now)
                        if now >= self._end:
                            break
                        backoff = RECONNECT_FIRST_S if backoff is None else min(
                            backoff * 2, RECONNECT_MAX_S)
                        log.warning("probe: %s; reconnecting in %.2f s", _describe(exc), backoff)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(),
                                                   max(0.0, min(backoff, self._end - now)))
                        self._wake.clear()
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
                if not s.quiet and self._status_stream.isatty():
                    self._status_stream.write("\n")
                result = analysis.finish(self._stopped_at or time.monotonic())
                stored_id, error = await self._store(http, result)
        finally:
            ticker.cancel()
        rtts = [(r.t_s, r.rtt_ms, r.loaded) for r in analysis.rtts]
        return ProbeOutcome(result, stored_id, error, self.connections, rtts)

    def submission(self, result: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {"site": s.site, "result": result}
        if s.latitude is not None and s.longitude is not None:
            body["latitude"], body["longitude"] = s.latitude, s.longitude
        return body

    # --- the measurement --------------------------------------------------------------------
    async def _connect_and_probe(self, http: aiohttp.ClientSession) -> None:
        s = self.settings
        assert self.sender is not None
        timeout = max(0.1, min(CONNECT_TIMEOUT_S, self._end - time.monotonic()))
        try:
            ws = await asyncio.wait_for(http.ws_connect(
                s.probe_url, headers=self._auth, heartbeat=None, autoping=True,
                max_msg_size=64, compress=0, ssl=self._ssl,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S)), timeout)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise RelayNotTrusted(untrusted_reason(exc, s.ca_file is not None)) from exc
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403, 404):
                reason = exc.message
                if exc.headers is not None:
                    reason = exc.headers.get("X-Steadycast-Error", reason)
                if exc.status == 404 and reason == exc.message:
                    reason = "this relay has no /probe endpoint (an older steadycast?)"
                raise ProbeRefused(f"the relay refused the probe (HTTP {exc.status}): "
                                   f"{reason}") from exc
            raise
        self.connections += 1
        log.info("probe: connected to %s (connection %d)", s.probe_url, self.connections)
        self.sender.connection_made(time.monotonic())
        reader = asyncio.create_task(self._read(ws))
        try:
            await self._write(ws, reader)
            self._stopped_at = time.monotonic()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.sender.connection_lost(time.monotonic())
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT_S)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        assert self.sender is not None and self.analysis is not None
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                now = time.monotonic()
                for ev in self.sender.on_message(msg.data, now):
                    if isinstance(ev, AckedTotal):
                        self.analysis.on_acked(now, ev.total)
                    else:
                        self.analysis.on_rtt(now, ev.rtt_s, ev.loaded)
                self._wake.set()
            elif msg.type == aiohttp.WSMsgType.TEXT:
                raise ProtocolError(CloseCode.MALFORMED, "the relay sent a text frame")
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                raise ConnectionError(f"the relay closed the probe connection (code {msg.data}"
                                      + (f": {msg.extra}" if msg.extra else "") + ")")
            else:
                raise ConnectionError(f"probe connection lost ({msg.type.name.lower()})")

    async def _write(self, ws: aiohttp.ClientWebSocketResponse,
                     reader: asyncio.Task[None]) -> None:
        sender = self.sender
        assert sender is not None
        while True:
            now = time.monotonic()
            if now >= self._end:
                return
            if reader.done():
                reader.result()  # raises why the connection ended
                raise ConnectionError("the probe connection ended")
            if sender.stalled(now):
                raise ConnectionError(f"no answer from the relay for {STALL_TIMEOUT_S:g} s")
            self._wake.clear()
            for data in sender.messages_to_send(now):
                await asyncio.wait_for(ws.send_bytes(data), STALL_TIMEOUT_S)
            now = time.monotonic()
            wait = min(WRITER_TICK_S, sender.next_ping_at - now, self._end - now)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def _tick(self, start: float) -> None:
        """Polls the dropout detector; a progress line every STATUS_INTERVAL_S."""
        assert self.analysis is not None and self.sender is not None
        tty = self._status_stream.isatty()
        next_status = start + STATUS_INTERVAL_S
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            self.analysis.poll(now)
            if self.settings.quiet or now < next_status:
                continue
            next_status += STATUS_INTERVAL_S
            line = self._status_line(now, start)
            self._status_stream.write(("\r\x1b[2K" + line) if tty else line + "\n")
            self._status_stream.flush()

    def _status_line(self, now: float, start: float) -> str:
        a, snd = self.analysis, self.sender
        assert a is not None and snd is not None
        phase = "loaded" if snd.loaded(now) else "idle"
        rtt = f"{a.rtts[-1].rtt_ms:.0f} ms" if a.rtts else "-"
        line = (f"probe {now - start:4.0f}/{self.settings.duration_s:.0f} s {phase:6s} "
                f"up {a.current_kbps(now):6.0f} kbit/s  rtt {rtt}  "
                f"dropouts {a.detector.count}")
        out_s = a.in_dropout_s(now)
        if out_s is not None:
            line += f" (no progress for {out_s:.1f} s)"
        if not snd.connected:
            line += " [reconnecting]"
        return line

    # --- storing the result -----------------------------------------------------------------
    async def _store(self, http: aiohttp.ClientSession,
                     result: dict[str, Any]) -> tuple[int | None, str | None]:
        """POST the result to /api/probes: (stored id, None) or (None, why not)."""
        s = self.settings
        url = s.base_url + "/api/probes"
        deadline = time.monotonic() + POST_DEADLINE_S
        backoff = RECONNECT_FIRST_S
        last_error = "not tried"
        while True:
            try:
                async with http.post(url, json=self.submission(result), headers=self._auth,
                                     ssl=self._ssl,
                                     timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S)) as r:
                    text = await r.text()
                    if r.status == 201:
                        return int(_json_field(text, "id") or 0), None
                    reason = r.headers.get("X-Steadycast-Error") or _json_field(text, "error")
                    last_error = f"HTTP {r.status}: {reason or text[:200]}"
                    if r.status < 500:
                        return None, last_error
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last_error = _describe(exc)
            if time.monotonic() + backoff > deadline:
                return None, last_error
            log.warning("probe: storing the result failed (%s); retrying in %.2f s", last_error,
                        backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)


def _json_field(text: str, key: str) -> Any:
    import json

    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj.get(key) if isinstance(obj, dict) else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


# --- the plot --------------------------------------------------------------------------------
def plot_probe(path: Path, site: str, result: dict[str, Any],
               rtts: list[tuple[float, float, bool]]) -> None:
    """Throughput per 1 s window and RTT over time, dropouts shaded, to a PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tp, ax_rtt) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    series = result["series"]["throughput_kbps"]
    if series:
        xs = [t for t, _, _ in series] + [series[-1][0] + 1]
        ys = [k for _, k, _ in series]
        ax_tp.stairs(ys, xs, color="tab:blue", label="upload per 1 s window")
    tp = result["throughput_kbps"]
    for key, style in (("p10", ":"), ("p50", "--")):
        if tp[key] is not None:
            ax_tp.axhline(tp[key], color="tab:gray", linestyle=style,
                          label=f"{key} {tp[key]:.0f} kbit/s")
    rec = result["recommendation"]
    if rec["start_kbps"] is not None:
        ax_tp.axhline(rec["start_kbps"] + rec["audio_kbps"], color="tab:green", linestyle="-.",
                      label=f"recommended start {rec['start_kbps']} + audio")
    ax_tp.set_ylabel("kbit/s")
    ax_tp.set_ylim(bottom=0)
    ax_tp.legend(loc="lower left", fontsize="small")
    for loaded, color, label in ((False, "tab:olive", "RTT idle"),
                                 (True, "tab:orange", "RTT under load")):
        pts = [(t, ms) for t, ms, lo in rtts if lo == loaded]
        if pts:
            ax_rtt.plot([t for t, _ in pts], [ms for _, ms in pts], ".", color=color,
                        markersize=3, label=label)
    ax_rtt.set_ylabel("RTT (ms)")
    ax_rtt.set_xlabel("seconds since the probe started")
    ax_rtt.set_ylim(bottom=0)
    for ax in (ax_tp, ax_rtt):
        ax.axvline(result["idle_s"], color="black", linewidth=0.5)
        for i, d in enumerate(result["dropouts"]):
            ax.axvspan(d["start_s"], d["start_s"] + d["duration_s"], color="tab:red",
                       alpha=0.2, label="dropout" if i == 0 and ax is ax_rtt else None)
    if rtts or result["dropouts"]:
        ax_rtt.legend(loc="upper left", fontsize="small")
    fig.suptitle(f"steadycast probe: {site} - {result['verdict']['en']}", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
