"""One platform destination: an RTMP(S) push with its own thread, queue and reconnect.

A destination never slows the stream or the other destinations: ``offer`` never blocks;
when the queue holds more than ``queue_s`` of media the oldest packets are dropped and the
session resumes at the next keyframe. Reconnects back off from ``retry_first_s`` doubling
to at most ``retry_max_s``. Every session's timestamps start at zero.

Each destination has a ``DropoutDetector`` fed from its own thread: a successful write to
the platform is "media", a failed connection or write is "connection lost". A destination
dropout therefore starts at the last write the platform took before the failure (a write
that blocks until ``io_timeout_s`` has not reached the platform either) and ends at the
first write of the next session. A destination that never connected has no dropouts (its
state and ``last_error`` say why). Dropouts go to the event log
(``destination_dropout_started``, ``destination_outage``) and to the monitor store with
scope ``destination:<name>``; one still open when the destination stops is closed then
(cause ``relay_stopped`` when the relay is shutting down).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from enum import StrEnum
from typing import Any

import av

from monitor.dropout import DropoutDetector, DropoutEnded, DropoutEvent, DropoutStarted
from monitor.events import EventLog, iso_utc
from monitor.metrics import RelayMetrics
from monitor.redact import REDACTOR
from monitor.store import KIND_DROPOUT, DropoutJournal, MonitorStore
from relay.settings import DestinationSettings
from relay.transcode import OutPacket

log = logging.getLogger(__name__)

POLL_S = 0.2
DRAIN_TIMEOUT_S = 5.0


class DestinationState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    STOPPED = "stopped"


def next_backoff_s(previous_s: float | None, first_s: float, max_s: float) -> float:
    """Capped exponential backoff: first_s, 2×, 4×, ... never above max_s."""
    if previous_s is None:
        return min(first_s, max_s)
    return min(previous_s * 2, max_s)


class Destination:
    def __init__(self, stream: str, settings: DestinationSettings, video_template: Any,
                 audio_template: Any, metrics: RelayMetrics | None = None,
                 events: EventLog | None = None, store: MonitorStore | None = None) -> None:
        self.stream = stream
        self.settings = settings
        self._video_template = video_template
        self._audio_template = audio_template
        self._metrics = metrics
        self._events = events
        self._queue: collections.deque[OutPacket] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._drain = False
        self.state = DestinationState.CONNECTING
        self.sessions = 0
        self.reconnects = 0
        self.dropped_packets = 0
        self.packets_sent = 0
        self.bytes_sent = 0
        self.last_error = ""
        self._labels = (stream, settings.name)
        # touched only by the destination's thread
        self.detector = DropoutDetector()
        self._journal = DropoutJournal(store, stream, f"destination:{settings.name}")
        self._last_write_s: float | None = None
        self._end_cause: str | None = None  # replaces the cause of a dropout open at stop
        self._thread = threading.Thread(target=self._run, name=f"dest-{stream}-{settings.name}",
                                        daemon=True)

    # --- called from the pipeline thread -------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def offer(self, pkt: OutPacket) -> None:
        with self._cond:
            q = self._queue
            q.append(pkt)
            if q[-1].dts_s - q[0].dts_s > self.settings.queue_s:
                dropped = len(q) - 1
                q.clear()
                q.append(pkt)
                self._count_dropped(dropped)
            self._cond.notify()

    def stop(self, drain: bool = False, timeout_s: float = DRAIN_TIMEOUT_S,
             end_cause: str | None = None) -> None:
        """End the platform session. With drain, send what is queued first (a clean end).
        A dropout still open is closed now, with ``end_cause`` as its cause when given."""
        with self._cond:
            if not self._stop:
                self._end_cause = end_cause
            self._stop = True
            self._drain = drain
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s + self.settings.io_timeout_s)

    def status(self) -> dict[str, Any]:
        return {
            "name": self.settings.name,
            "url": self.settings.url,  # the key is kept apart and never shown
            "state": self.state.value,
            "sessions": self.sessions,
            "reconnects": self.reconnects,
            "dropped_packets": self.dropped_packets,
            "packets_sent": self.packets_sent,
            "queue_packets": len(self._queue),
            "last_error": self.last_error,
        }

    # --- the destination's own thread ----------------------------------------------------
    def _count_dropped(self, n: int) -> None:
        self.dropped_packets += n
        if self._metrics is not None and n:
            self._metrics.dest_dropped.labels(*self._labels).inc(n)

    def _dropout_events(self, events: list[DropoutEvent], end_cause: str | None = None) -> None:
        name = self.settings.name
        for ev in events:
            if isinstance(ev, DropoutStarted):
                self._journal.started(KIND_DROPOUT, ev.cause.value, ev.start)
                if self._events is not None:
                    self._events.write("destination_dropout_started", stream=self.stream,
                                       destination=name, start=iso_utc(ev.start),
                                       cause=ev.cause.value)
            elif isinstance(ev, DropoutEnded):
                cause = end_cause or ev.cause.value
                self._journal.ended(KIND_DROPOUT, ev.start, ev.end, cause)
                log.warning("destination %s/%s: dropout ended after %.2f s (%s)", self.stream,
                            name, ev.duration_s, cause)
                if self._events is not None:
                    self._events.write("destination_outage", stream=self.stream,
                                       destination=name, start=iso_utc(ev.start),
                                       end=iso_utc(ev.end), duration_s=round(ev.duration_s, 3),
                                       cause=cause)

    def _set_state(self, state: DestinationState) -> None:
        self.state = state
        if self._metrics is not None:
            self._metrics.dest_up.labels(*self._labels).set(
                1 if state == DestinationState.CONNECTED else 0)

    def _next_packet(self) -> OutPacket | None:
        with self._cond:
            while not self._queue:
                if self._stop:
                    return None
                self._cond.wait(POLL_S)
            if self._stop and not self._drain:
                return None
            return self._queue.popleft()

    def _wait_keyframe(self) -> OutPacket | None:
        """Drop queued packets up to the first video keyframe; a session starts there."""
        while True:
            pkt = self._next_packet()
            if pkt is None or (pkt.is_video and pkt.keyframe):
                return pkt
            self._count_dropped(1)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._stop and time.monotonic() < deadline:
                self._cond.wait(min(POLL_S, deadline - time.monotonic()))

    def _open(self) -> tuple[Any, Any, Any]:
        s = self.settings
        container = av.open(
            s.publish_url, "w", format="flv",
            options={"rw_timeout": str(int(s.io_timeout_s * 1_000_000)), "tcp_nodelay": "1"},
            timeout=(s.connect_timeout_s, s.io_timeout_s),
        )
        v = container.add_stream_from_template(self._video_template)
        a = container.add_stream_from_template(self._audio_template)
        return container, v, a

    def _run(self) -> None:
        backoff: float | None = None
        while not self._stop:
            first = self._wait_keyframe()
            if first is None:
                break
            self._set_state(DestinationState.CONNECTING)
            container = None
            try:
                container, vs, as_ = self._open()
                self.sessions += 1
                if self.sessions > 1:
                    self.reconnects += 1
                    if self._metrics is not None:
                        self._metrics.dest_reconnects.labels(*self._labels).inc()
                self._set_state(DestinationState.CONNECTED)
                if self._events is not None:
                    self._events.write("destination_connected", stream=self.stream,
                                       destination=self.settings.name, session=self.sessions)
                backoff = None
                self._push(container, vs, as_, first)
                # a clean end: the session is closed on purpose
                container.close()
                container = None
                break
            except (av.FFmpegError, OSError, ValueError, RuntimeError) as exc:
                self.last_error = REDACTOR.scrub(f"{type(exc).__name__}: {exc}")
                # the platform has had nothing since the last write that went through
                self._dropout_events(self.detector.on_connection_lost(
                    self._last_write_s if self._last_write_s is not None else time.time()))
                was_connected = self.state == DestinationState.CONNECTED
                self._set_state(DestinationState.BACKOFF)
                if container is not None:
                    with contextlib.suppress(av.FFmpegError, OSError, ValueError, RuntimeError):
                        container.close()
                backoff = next_backoff_s(backoff, self.settings.retry_first_s,
                                         self.settings.retry_max_s)
                if was_connected:
                    if self._metrics is not None:
                        self._metrics.dest_disconnects.labels(*self._labels).inc()
                    if self._events is not None:
                        self._events.write("destination_disconnect", stream=self.stream,
                                           destination=self.settings.name, error=self.last_error,
                                           retry_in_s=backoff)
                log.warning("destination %s/%s: %s; retry in %.1f s", self.stream,
                            self.settings.name, self.last_error, backoff)
                self._sleep(backoff)
        self._dropout_events(self.detector.stop(time.time()), self._end_cause)
        self._set_state(DestinationState.STOPPED)

    def _push(self, container: Any, vs: Any, as_: Any, first: OutPacket) -> None:
        origin_s = first.dts_s
        pkt: OutPacket | None = first
        while pkt is not None:
            if pkt.dts_s >= origin_s:
                offset = round(origin_s / pkt.time_base)
                p = pkt.to_av()
                p.pts, p.dts = pkt.pts - offset, pkt.dts - offset
                p.stream = vs if pkt.is_video else as_
                container.mux(p)
                self.packets_sent += 1
                self.bytes_sent += len(pkt.data)
                self._last_write_s = time.time()
                self._dropout_events(self.detector.on_media(self._last_write_s))
            pkt = self._next_packet()
