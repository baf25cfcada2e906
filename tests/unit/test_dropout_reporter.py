"""The dropout reporter: one event in, the log line, event-log entry, database row and metric
out, named as the relay's ingest, its destinations and the encoder's uplink name them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from monitor.dropout import (
    CAUSE_RELAY_STOPPED,
    DropoutCause,
    DropoutEnded,
    DropoutStarted,
    LowThroughputCause,
    LowThroughputEnded,
    LowThroughputStarted,
)
from monitor.dropout_reporter import (
    DropoutReporter,
    destination_scope,
    ingest_scope,
    uplink_scope,
)
from monitor.events import EventLog, iso_utc, read_events
from monitor.metrics import RelayMetrics
from monitor.store import KIND_DROPOUT, KIND_LOW_THROUGHPUT, MonitorStore

LOGGER = "test.dropout_reporter"
T0 = 1_700_000_000.0


@pytest.fixture
def outputs(tmp_path: Path) -> tuple[EventLog, MonitorStore, RelayMetrics]:
    return EventLog(tmp_path / "events.jsonl"), MonitorStore(tmp_path / "m.db"), RelayMetrics()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING]


def logged(events: EventLog) -> list[dict[str, Any]]:
    """The events in the log, without their write times."""
    assert events.path is not None
    return [{k: v for k, v in e.items() if k not in ("ts", "time")}
            for e in read_events(events.path)]


def dropouts_metric(metrics: RelayMetrics, stream: str, cause: str) -> float | None:
    return metrics.registry.get_sample_value("steadycast_dropouts_total",
                                             {"stream": stream, "cause": cause})


def dropout_seconds_metric(metrics: RelayMetrics, stream: str) -> float | None:
    return metrics.registry.get_sample_value("steadycast_dropout_seconds_total",
                                             {"stream": stream})


def test_ingest_dropout_start_and_end_reach_log_events_store_and_metrics(
        outputs: tuple[EventLog, MonitorStore, RelayMetrics],
        caplog: pytest.LogCaptureFixture) -> None:
    events, store, metrics = outputs
    caplog.set_level(logging.INFO, logger=LOGGER)
    r = DropoutReporter(ingest_scope("farm1"), logging.getLogger(LOGGER), events, store, metrics)

    r.report([DropoutStarted(T0, DropoutCause.NO_DATA)])
    assert warnings(caplog) == ["stream farm1: ingest dropout started (no_data)"]
    assert logged(events) == [
        {"event": "ingest_dropout_started", "stream": "farm1", "start": iso_utc(T0),
         "cause": "no_data"}]
    (row,) = store.dropouts()
    assert (row.stream, row.scope, row.kind, row.cause, row.start_s, row.end_s) == (
        "farm1", "ingest", KIND_DROPOUT, "no_data", T0, None)
    assert dropouts_metric(metrics, "farm1", "no_data") is None  # counted when it ends

    r.report([DropoutEnded(T0, T0 + 2.5, DropoutCause.CONNECTION_LOST)])
    assert warnings(caplog)[1:] == [
        "stream farm1: ingest dropout ended after 2.50 s (connection_lost)"]
    assert logged(events)[1:] == [
        {"event": "ingest_outage", "stream": "farm1", "start": iso_utc(T0),
         "end": iso_utc(T0 + 2.5), "duration_s": 2.5, "cause": "connection_lost"}]
    (row,) = store.dropouts()
    assert (row.end_s, row.duration_s, row.cause) == (T0 + 2.5, 2.5, "connection_lost")
    assert dropouts_metric(metrics, "farm1", "connection_lost") == 1
    assert dropout_seconds_metric(metrics, "farm1") == 2.5
    assert (r.ended_count, r.ended_s_total) == (1, 2.5)


def test_ingest_low_throughput_start_and_end(
        outputs: tuple[EventLog, MonitorStore, RelayMetrics],
        caplog: pytest.LogCaptureFixture) -> None:
    events, store, metrics = outputs
    caplog.set_level(logging.INFO, logger=LOGGER)
    r = DropoutReporter(ingest_scope("farm1"), logging.getLogger(LOGGER), events, store, metrics)
    r.report([LowThroughputStarted(T0, LowThroughputCause.BELOW_TARGET, 312.4, 1499.6),
              LowThroughputEnded(T0, T0 + 7.5, LowThroughputCause.BELOW_TARGET)])
    assert warnings(caplog) == [
        "stream farm1: low throughput: 312 kbit/s arriving, the stream's bitrate is 1500 "
        "(below_target)",
        "stream farm1: low throughput ended after 7.5 s (below_target)"]
    assert logged(events) == [
        {"event": "ingest_low_throughput_started", "stream": "farm1", "start": iso_utc(T0),
         "cause": "below_target", "rate_kbps": 312, "reference_kbps": 1500},
        {"event": "ingest_low_throughput", "stream": "farm1", "start": iso_utc(T0),
         "end": iso_utc(T0 + 7.5), "duration_s": 7.5, "cause": "below_target"}]
    (row,) = store.dropouts()
    assert (row.kind, row.cause, row.duration_s) == (KIND_LOW_THROUGHPUT, "below_target", 7.5)
    # an episode is no dropout: neither the metric nor the tally counts it
    assert dropout_seconds_metric(metrics, "farm1") is None
    assert r.ended_count == 0


def test_end_cause_replaces_the_cause_except_in_the_metric_label(
        outputs: tuple[EventLog, MonitorStore, RelayMetrics],
        caplog: pytest.LogCaptureFixture) -> None:
    events, store, metrics = outputs
    caplog.set_level(logging.INFO, logger=LOGGER)
    r = DropoutReporter(ingest_scope("farm1"), logging.getLogger(LOGGER), events, store, metrics)
    r.report([DropoutStarted(T0, DropoutCause.NO_DATA)])
    r.report([DropoutEnded(T0, T0 + 1, DropoutCause.NO_DATA)], CAUSE_RELAY_STOPPED)
    assert warnings(caplog)[-1] == "stream farm1: ingest dropout ended after 1.00 s (relay_stopped)"
    assert logged(events)[-1]["cause"] == CAUSE_RELAY_STOPPED
    (row,) = store.dropouts()
    assert row.cause == CAUSE_RELAY_STOPPED
    assert dropouts_metric(metrics, "farm1", "no_data") == 1
    assert dropouts_metric(metrics, "farm1", CAUSE_RELAY_STOPPED) is None


def test_destination_logs_only_the_end_and_names_the_destination(
        outputs: tuple[EventLog, MonitorStore, RelayMetrics],
        caplog: pytest.LogCaptureFixture) -> None:
    events, store, metrics = outputs
    caplog.set_level(logging.INFO, logger=LOGGER)
    r = DropoutReporter(destination_scope("farm1", "yt"), logging.getLogger(LOGGER), events,
                        store)
    r.report([DropoutStarted(T0, DropoutCause.CONNECTION_LOST)])
    assert warnings(caplog) == []
    r.report([DropoutEnded(T0, T0 + 3, DropoutCause.CONNECTION_LOST)])
    assert warnings(caplog) == ["destination farm1/yt: dropout ended after 3.00 s "
                                "(connection_lost)"]
    assert logged(events) == [
        {"event": "destination_dropout_started", "stream": "farm1", "destination": "yt",
         "start": iso_utc(T0), "cause": "connection_lost"},
        {"event": "destination_outage", "stream": "farm1", "destination": "yt",
         "start": iso_utc(T0), "end": iso_utc(T0 + 3), "duration_s": 3.0,
         "cause": "connection_lost"}]
    (row,) = store.dropouts()
    assert (row.scope, row.duration_s) == ("destination:yt", 3.0)
    assert dropout_seconds_metric(metrics, "farm1") is None  # the relay's metric is the ingest's


def test_uplink_without_store_or_metrics_keeps_its_tally(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    events = EventLog(tmp_path / "enc.jsonl")
    caplog.set_level(logging.INFO, logger=LOGGER)
    r = DropoutReporter(uplink_scope("farm1"), logging.getLogger(LOGGER), events)
    r.report([DropoutStarted(T0, DropoutCause.CONNECTION_LOST),
              DropoutEnded(T0, T0 + 1.5, DropoutCause.CONNECTION_LOST),
              DropoutStarted(T0 + 4, DropoutCause.NO_DATA),
              DropoutEnded(T0 + 4, T0 + 4.5, DropoutCause.NO_DATA)])
    assert warnings(caplog) == ["uplink: outage started (connection_lost)",
                                "uplink: outage ended after 1.50 s (connection_lost)",
                                "uplink: outage started (no_data)",
                                "uplink: outage ended after 0.50 s (no_data)"]
    assert [e["event"] for e in logged(events)] == [
        "uplink_dropout_started", "uplink_outage"] * 2
    assert (r.ended_count, r.ended_s_total) == (2, 2.0)


def test_a_failing_store_does_not_stop_the_log_the_events_or_the_metric(
        outputs: tuple[EventLog, MonitorStore, RelayMetrics],
        caplog: pytest.LogCaptureFixture) -> None:
    events, store, metrics = outputs
    store.close()  # every write now fails, as on a full or locked disk
    caplog.set_level(logging.INFO)
    r = DropoutReporter(ingest_scope("farm1"), logging.getLogger(LOGGER), events, store, metrics)
    r.report([DropoutStarted(T0, DropoutCause.NO_DATA),
              DropoutEnded(T0, T0 + 2, DropoutCause.NO_DATA)])
    assert warnings(caplog) == ["stream farm1: ingest dropout started (no_data)",
                                "stream farm1: ingest dropout ended after 2.00 s (no_data)"]
    assert [e["event"] for e in logged(events)] == ["ingest_dropout_started",
                                                             "ingest_outage"]
    assert dropouts_metric(metrics, "farm1", "no_data") == 1
    assert caplog.text.count("ingest dropout not kept in the monitor database") == 2
