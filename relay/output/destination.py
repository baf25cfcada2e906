"""One platform destination: an RTMP(S) push with its own thread, queue, socket and reconnect.

A destination never slows the stream or the other destinations: ``offer`` never blocks;
when the queue holds more than ``queue_s`` of media the oldest packets are dropped and the
session resumes at the next keyframe. Every session's timestamps start at zero.

The relay owns the platform connection (relay/output/platform_link.py): PyAV only muxes FLV into
memory (relay/output/flv_muxer.py), the FLV tags go through the RTMP publisher core
(relay/rtmp/publisher.py), and the bytes go out on a non-blocking socket with real
timeouts: ``connect_timeout_s`` for TCP and TLS, ``io_timeout_s`` for each answer the
publish handshake awaits and for a platform that stops taking data. A stuck platform costs
only its own thread: socket calls release the interpreter, FFmpeg's network code (which
did not, and ignored its timeouts) is not used.

A session is *connected* only once the platform has accepted the publish (onStatus
NetStream.Publish.Start): only then is it counted, ``destination_connected`` written, and
the backoff reset. Until then every failure (refused TCP, TLS certificate not trusted, a
refused or unanswered publish) is ``destination_connect_failed`` with the retry delay,
which grows from ``retry_first_s`` doubling to at most ``retry_max_s`` (1, 2, 4, 5 s).

Each destination has a ``DropoutDetector`` fed from its own thread: a packet handed to a
platform that is taking data is "media", a failed connection or write is "connection lost".
A destination dropout therefore starts at the last write the platform took before the
failure and ends at the first write of the next session. A destination that never
connected has no dropouts (its state and ``last_error`` say why). Dropouts go to the event
log (``destination_dropout_started``, ``destination_outage``) and to the monitor store with
scope ``destination:<name>``; one still open when the destination stops is closed then
(cause ``relay_stopped`` when the relay is shutting down).
"""

from __future__ import annotations

import collections
import logging
import ssl
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import av

from monitor.dropout import DropoutDetector
from monitor.dropout_reporter import DropoutReporter, destination_scope
from monitor.events import EventLog
from monitor.metrics import RelayMetrics
from monitor.redact import REDACTOR
from monitor.store import MonitorStore
from relay.output.flv_muxer import FlvMemoryMuxer
from relay.output.platform_link import PlatformLink, client_ssl_context
from relay.output.transcode import OutPacket
from relay.rtmp.publisher import Closed, PublishRefused, PublishStarted, RtmpPublisher
from relay.rtmp.url import split_rtmp_url
from relay.settings import DestinationSettings
from uplink.backoff import next_backoff_s

log = logging.getLogger(__name__)

POLL_S = 0.2
DRAIN_TIMEOUT_S = 5.0
SEND_HIGH_WATER_BYTES = 256 * 1024  # bytes waiting for the socket before muxing pauses
SESSION_ERRORS = (av.FFmpegError, OSError, ValueError, RuntimeError, ssl.SSLError)


class DestinationState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    STOPPED = "stopped"


class PublishFailed(ConnectionError):
    """The platform did not accept the publish, or ended the session."""


def ssl_context_for(settings: DestinationSettings) -> ssl.SSLContext | None:
    """The TLS context of an rtmps:// destination (None for rtmp://)."""
    if not split_rtmp_url(settings.url).tls:
        return None
    return client_ssl_context(settings.ca_file, settings.tls_verify)


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
        self._dropouts = DropoutReporter(destination_scope(stream, settings.name), log, events,
                                         store)
        self._last_write_s: float | None = None
        self._end_cause: str | None = None  # replaces the cause of a dropout open at stop
        self._thread = threading.Thread(target=self._run, name=f"dest-{stream}-{settings.name}",
                                        daemon=True)

    # --- called from the pipeline thread -------------------------------------------------
    def start(self) -> None:
        if split_rtmp_url(self.settings.url).tls and not self.settings.tls_verify:
            log.warning("destination %s/%s: tls_verify = false: the platform's certificate is "
                        "NOT checked; anyone on the path can take the stream key",
                        self.stream, self.settings.name)
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
            "url": self.settings.shown_url,  # never the key, in `key` or inside the URL
            "tls_verify": self.settings.tls_verify,
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

    def _set_state(self, state: DestinationState) -> None:
        self.state = state
        if self._metrics is not None:
            self._metrics.dest_up.labels(*self._labels).set(
                1 if state == DestinationState.CONNECTED else 0)

    def _next_packet(self, idle: Callable[[], None] | None = None) -> OutPacket | None:
        """The next queued packet; None when stopping. ``idle`` runs (outside the lock)
        every POLL_S while the queue is empty: the session reads the platform then."""
        while True:
            with self._cond:
                if self._queue and not (self._stop and not self._drain):
                    return self._queue.popleft()
                if self._stop:
                    return None
                self._cond.wait(POLL_S)
                if self._queue or self._stop:
                    continue
            if idle is not None:
                idle()

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

    def _run(self) -> None:
        backoff: float | None = None
        while not self._stop:
            first = self._wait_keyframe()
            if first is None:
                break
            self._set_state(DestinationState.CONNECTING)
            link: PlatformLink | None = None
            published = False
            try:
                link, pub = self._connect()
                if link is None or pub is None:
                    break  # stopped while connecting
                published = True
                self.sessions += 1
                if self.sessions > 1:
                    self.reconnects += 1
                    if self._metrics is not None:
                        self._metrics.dest_reconnects.labels(*self._labels).inc()
                self._set_state(DestinationState.CONNECTED)
                if self._events is not None:
                    self._events.write("destination_connected", stream=self.stream,
                                       destination=self.settings.name, session=self.sessions)
                log.info("destination %s/%s: publishing (session %d)", self.stream,
                         self.settings.name, self.sessions)
                backoff = None
                self._push(link, pub, first)
                break  # a clean end: the session is closed on purpose
            except SESSION_ERRORS as exc:
                self.last_error = REDACTOR.scrub(
                    str(exc) if isinstance(exc, PublishFailed) else f"{type(exc).__name__}: {exc}")
                # the platform has had nothing since the last write that went through
                self._dropouts.report(self.detector.on_connection_lost(
                    self._last_write_s if self._last_write_s is not None else time.time()))
                self._set_state(DestinationState.BACKOFF)
                backoff = next_backoff_s(backoff, self.settings.retry_first_s,
                                         self.settings.retry_max_s)
                if published:
                    if self._metrics is not None:
                        self._metrics.dest_disconnects.labels(*self._labels).inc()
                    if self._events is not None:
                        self._events.write("destination_disconnect", stream=self.stream,
                                           destination=self.settings.name, error=self.last_error,
                                           retry_in_s=backoff)
                elif self._events is not None:
                    self._events.write("destination_connect_failed", stream=self.stream,
                                       destination=self.settings.name, error=self.last_error,
                                       retry_in_s=backoff)
                log.warning("destination %s/%s: %s; retry in %.1f s", self.stream,
                            self.settings.name, self.last_error, backoff)
                self._sleep(backoff)
            finally:
                if link is not None:
                    link.close()
        self._dropouts.report(self.detector.stop(time.time()), self._end_cause)
        self._set_state(DestinationState.STOPPED)

    def _connect(self) -> tuple[PlatformLink | None, RtmpPublisher | None]:
        """Open the socket and run the publisher until the platform accepts the publish.
        Raises (OSError, PublishFailed) on any failure; (None, None) when stopped."""
        s = self.settings
        target = split_rtmp_url(s.publish_url)
        link = PlatformLink(target.host, target.port, ssl_context=ssl_context_for(s),
                            connect_timeout_s=s.connect_timeout_s, io_timeout_s=s.io_timeout_s)
        try:
            link.open()
            pub = RtmpPublisher(target, now=time.monotonic(), reply_timeout_s=s.io_timeout_s)
            while not self._stop:
                link.send(pub.data_to_send())
                data = link.pump(POLL_S)
                now = time.monotonic()
                events = pub.receive(data, now) if data else []
                if link.eof:
                    events += pub.eof()
                events += pub.handle_timer(now)
                for ev in events:
                    if isinstance(ev, PublishRefused):
                        raise PublishFailed(f"publish refused: {ev.reason}")
                    if isinstance(ev, PublishStarted):
                        link.send(pub.data_to_send())
                        return link, pub
        except BaseException:
            link.close()
            raise
        link.close()
        return None, None

    def _service(self, link: PlatformLink, pub: RtmpPublisher, wait_s: float) -> None:
        """Move bytes both ways once; raises when the platform ended the session or stalled."""
        link.send(pub.data_to_send())
        data = link.pump(wait_s)
        events = pub.receive(data, time.monotonic()) if data else []
        if link.eof:
            events += pub.eof()
        link.send(pub.data_to_send())  # acknowledgements, ping responses
        for ev in events:
            if isinstance(ev, Closed | PublishRefused):
                raise PublishFailed(ev.reason)

    def _stopping_hard(self) -> bool:
        return self._stop and not self._drain

    def _push(self, link: PlatformLink, pub: RtmpPublisher, first: OutPacket) -> None:
        origin_s = first.dts_s
        muxer = FlvMemoryMuxer(self._video_template, self._audio_template)
        pkt: OutPacket | None = first

        def idle() -> None:
            self._service(link, pub, 0)

        try:
            while pkt is not None:
                if pkt.dts_s >= origin_s:
                    for tag in muxer.mux(pkt, origin_s):
                        pub.send_tag(tag)
                    self._service(link, pub, 0)
                    while link.pending_bytes > SEND_HIGH_WATER_BYTES and not self._stopping_hard():
                        self._service(link, pub, POLL_S)
                    self.packets_sent += 1
                    self.bytes_sent += len(pkt.data)
                    self._last_write_s = time.time()
                    self._dropouts.report(self.detector.on_media(self._last_write_s))
                pkt = self._next_packet(idle)
            for tag in muxer.close():
                pub.send_tag(tag)
            pub.close()
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while (link.pending_bytes and time.monotonic() < deadline and not link.eof
                   and not self._stopping_hard()):
                self._service(link, pub, POLL_S)
        finally:
            muxer.close()
