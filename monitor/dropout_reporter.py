"""The dropout reporter: one scope's dropout and low-throughput events, written everywhere.

The detectors (``monitor.dropout``) decide; the reporter applies what they return, for one
scope: the ingest of a stream at the relay, one platform destination of a stream, or the
encoder's uplink. Each event goes, in this order, to

1. the tally (``ended_count``, ``ended_s_total``: ended dropouts only) and, when given, the
   relay's Prometheus counters ``steadycast_dropouts{stream,cause}`` and
   ``steadycast_dropout_seconds{stream}`` (the ingest's; the cause label is the detector's
   own, never an ``end_cause``);
2. one WARNING line on the caller's logger (``<subject>: <noun> started (<cause>)``,
   ``<subject>: <noun> ended after 1.23 s (<cause>)``; a scope with ``log_started`` false
   logs only the end);
3. the event log, when given: ``<prefix>_dropout_started``, ``<prefix>_outage``,
   ``<prefix>_low_throughput_started``, ``<prefix>_low_throughput``, each led by the scope's
   fields (``stream``, then ``destination`` for a destination);
4. the monitor database, when given (``DropoutJournal``): a row when one starts, closed when
   it ends. A store that fails is logged and never stops the others (nor the media).

``end_cause`` replaces the cause an episode ends with in the log line, the event and the
row (the relay stopping: ``relay_stopped``). One owner (thread or event loop) calls a
reporter; the event log, the store and the metrics are shared and thread-safe.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from monitor.dropout import (
    DetectorEvent,
    DropoutEnded,
    DropoutStarted,
    LowThroughputEnded,
    LowThroughputStarted,
)
from monitor.events import EventLog, iso_utc
from monitor.metrics import RelayMetrics
from monitor.store import KIND_DROPOUT, KIND_LOW_THROUGHPUT, DropoutJournal, MonitorStore


@dataclass(frozen=True)
class DropoutScope:
    """Whose dropouts a reporter writes, and what its outputs are called."""

    stream: str
    store_scope: str  # the monitor database's ``scope``: ingest, destination:<name>, uplink
    event_prefix: str  # events <prefix>_dropout_started, <prefix>_outage, ...
    event_fields: tuple[tuple[str, str], ...]  # the fields every event starts with
    log_subject: str  # "<subject>: <noun> started (...)"
    dropout_noun: str
    log_started: bool = True  # False: only the end of a dropout is logged


def ingest_scope(stream: str) -> DropoutScope:
    """A stream's ingest at the relay (dropouts and low-throughput episodes)."""
    return DropoutScope(stream=stream, store_scope="ingest", event_prefix="ingest",
                        event_fields=(("stream", stream),), log_subject=f"stream {stream}",
                        dropout_noun="ingest dropout")


def destination_scope(stream: str, destination: str) -> DropoutScope:
    """The relay's push of a stream to one platform destination (its start is not logged)."""
    return DropoutScope(stream=stream, store_scope=f"destination:{destination}",
                        event_prefix="destination",
                        event_fields=(("stream", stream), ("destination", destination)),
                        log_subject=f"destination {stream}/{destination}",
                        dropout_noun="dropout", log_started=False)


def uplink_scope(stream: str) -> DropoutScope:
    """The encoder's uplink to the relay."""
    return DropoutScope(stream=stream, store_scope="uplink", event_prefix="uplink",
                        event_fields=(("stream", stream),), log_subject="uplink",
                        dropout_noun="outage")


class DropoutReporter:
    """Writes one scope's detector events to the tally, metrics, log, event log and store
    (see the module docstring for the order and the names). ``events``, ``store`` and
    ``metrics`` may each be None: that output is skipped."""

    def __init__(self, scope: DropoutScope, logger: logging.Logger,
                 events: EventLog | None = None, store: MonitorStore | None = None,
                 metrics: RelayMetrics | None = None) -> None:
        self.scope = scope
        self._log = logger
        self._events = events
        self._metrics = metrics
        self._journal = DropoutJournal(store, scope.stream, scope.store_scope)
        self._fields = dict(scope.event_fields)
        self.ended_count = 0  # dropouts ended so far
        self.ended_s_total = 0.0  # their total length

    def report(self, events: Iterable[DetectorEvent], end_cause: str | None = None) -> None:
        """Write each event; ``end_cause`` replaces the cause of those that end."""
        for ev in events:
            if isinstance(ev, DropoutStarted):
                self._dropout_started(ev)
            elif isinstance(ev, DropoutEnded):
                self._dropout_ended(ev, end_cause or ev.cause.value)
            elif isinstance(ev, LowThroughputStarted):
                self._low_started(ev)
            elif isinstance(ev, LowThroughputEnded):
                self._low_ended(ev, end_cause or ev.cause.value)

    def _write(self, suffix: str, **fields: object) -> None:
        if self._events is not None:
            self._events.write(f"{self.scope.event_prefix}_{suffix}", **self._fields, **fields)

    def _dropout_started(self, ev: DropoutStarted) -> None:
        s = self.scope
        if s.log_started:
            self._log.warning("%s: %s started (%s)", s.log_subject, s.dropout_noun,
                              ev.cause.value)
        self._write("dropout_started", start=iso_utc(ev.start), cause=ev.cause.value)
        self._journal.started(KIND_DROPOUT, ev.cause.value, ev.start)

    def _dropout_ended(self, ev: DropoutEnded, cause: str) -> None:
        s = self.scope
        self.ended_count += 1
        self.ended_s_total += ev.duration_s
        if self._metrics is not None:
            self._metrics.dropouts.labels(s.stream, ev.cause.value).inc()
            self._metrics.dropout_seconds.labels(s.stream).inc(ev.duration_s)
        self._log.warning("%s: %s ended after %.2f s (%s)", s.log_subject, s.dropout_noun,
                          ev.duration_s, cause)
        self._write("outage", start=iso_utc(ev.start), end=iso_utc(ev.end),
                    duration_s=round(ev.duration_s, 3), cause=cause)
        self._journal.ended(KIND_DROPOUT, ev.start, ev.end, cause)

    def _low_started(self, ev: LowThroughputStarted) -> None:
        self._log.warning("%s: low throughput: %.0f kbit/s arriving, the stream's bitrate is "
                          "%.0f (%s)", self.scope.log_subject, ev.rate_kbps, ev.reference_kbps,
                          ev.cause.value)
        self._write("low_throughput_started", start=iso_utc(ev.start), cause=ev.cause.value,
                    rate_kbps=round(ev.rate_kbps), reference_kbps=round(ev.reference_kbps))
        self._journal.started(KIND_LOW_THROUGHPUT, ev.cause.value, ev.start)

    def _low_ended(self, ev: LowThroughputEnded, cause: str) -> None:
        self._log.warning("%s: low throughput ended after %.1f s (%s)", self.scope.log_subject,
                          ev.duration_s, cause)
        self._write("low_throughput", start=iso_utc(ev.start), end=iso_utc(ev.end),
                    duration_s=round(ev.duration_s, 3), cause=cause)
        self._journal.ended(KIND_LOW_THROUGHPUT, ev.start, ev.end, cause)
