"""The dropout detector, secret redaction, the event log and the destination backoff."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from monitor.dropout import DropoutCause, DropoutDetector, DropoutEnded, DropoutStarted
from monitor.events import EventLog, read_events
from monitor.redact import RedactingFilter, Redactor, mask_secret
from monitor.store import KIND_DROPOUT, DropoutJournal, MonitorStore
from uplink.backoff import next_backoff_s


def test_no_dropout_before_first_media() -> None:
    d = DropoutDetector(threshold_s=0.5)
    assert d.poll(10.0) == []
    assert d.on_connection_lost(11.0) == []


def test_no_data_dropout_starts_when_media_stopped_and_ends_when_it_returns() -> None:
    d = DropoutDetector(threshold_s=0.5)
    d.on_media(1.0)
    assert d.poll(1.4) == []
    assert d.poll(1.6) == [DropoutStarted(1.0, DropoutCause.NO_DATA)]
    assert d.poll(5.0) == []  # reported once
    ended = d.on_media(9.0)
    assert ended == [DropoutEnded(1.0, 9.0, DropoutCause.NO_DATA)]
    assert isinstance(ended[0], DropoutEnded) and ended[0].duration_s == pytest.approx(8.0)


def test_connection_lost_during_a_stall_marks_the_cause() -> None:
    d = DropoutDetector(threshold_s=0.5)
    d.on_media(1.0)
    d.poll(2.0)
    assert d.on_connection_lost(3.0) == []
    assert d.on_media(4.0) == [DropoutEnded(1.0, 4.0, DropoutCause.CONNECTION_LOST)]


def test_connection_lost_starts_a_dropout_at_once() -> None:
    d = DropoutDetector(threshold_s=0.5)
    d.on_media(1.0)
    assert d.on_connection_lost(1.1) == [DropoutStarted(1.1, DropoutCause.CONNECTION_LOST)]
    assert d.count == 1


def test_clean_stop_closes_and_disarms() -> None:
    d = DropoutDetector(threshold_s=0.5)
    d.on_media(1.0)
    d.poll(2.0)
    assert d.stop(3.0) == [DropoutEnded(1.0, 3.0, DropoutCause.NO_DATA)]
    assert d.poll(100.0) == []


def test_mask_secret_shows_at_most_four_characters() -> None:
    assert mask_secret("abcdefghijkl1234") == "****1234"
    assert mask_secret("short") == "****"


def test_redacting_filter_scrubs_messages_arguments_and_tracebacks(
        caplog: pytest.LogCaptureFixture) -> None:
    secret = "stream-key-abcdef-9876"
    logger = logging.getLogger("test.redact")
    handler = logging.Handler()
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign, assignment]
    handler.addFilter(RedactingFilter(Redactor([secret])))
    logger.addHandler(handler)
    try:
        logger.warning("push to rtmp://x/live/%s failed", secret)
        try:
            raise OSError(f"Connection refused: rtmp://x/live/{secret}")
        except OSError:
            logger.exception("destination failed")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(r.getMessage() for r in records)
    assert secret not in text
    assert "****9876" in text
    assert "Connection refused" in text


def test_event_log_writes_json_lines_and_masks_secrets(tmp_path: Path) -> None:
    secret = "token-abcdefghijk-0000"
    log = EventLog(tmp_path / "ev.jsonl", Redactor([secret]))
    log.write("ingest_outage", stream="farm1", duration_s=8.2, cause="no_data")
    log.write("protocol_error", stream="farm1", detail=f"bad {secret}")
    with (tmp_path / "ev.jsonl").open("a") as f:
        f.write('{"torn": ')  # a crash mid-write leaves a torn line: it is skipped
    events = read_events(tmp_path / "ev.jsonl")
    assert [e["event"] for e in events] == ["ingest_outage", "protocol_error"]
    assert events[0]["duration_s"] == 8.2
    assert secret not in (tmp_path / "ev.jsonl").read_text()


def test_destination_backoff_starts_within_a_second_and_caps_at_five() -> None:
    delays = []
    b = None
    for _ in range(6):
        b = next_backoff_s(b, 1.0, 5.0)
        delays.append(b)
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_dropout_journal_writes_the_row_at_start_and_closes_it(tmp_path: Path) -> None:
    store = MonitorStore(tmp_path / "m.db")
    journal = DropoutJournal(store, "farm1", "destination:yt")
    journal.started(KIND_DROPOUT, "connection_lost", 10.0)
    (row,) = store.dropouts()
    assert (row.stream, row.scope, row.kind, row.end_s) == ("farm1", "destination:yt",
                                                            KIND_DROPOUT, None)
    journal.ended(KIND_DROPOUT, 10.0, 12.5, "relay_stopped")
    (row,) = store.dropouts()
    assert (row.end_s, row.duration_s, row.cause) == (12.5, 2.5, "relay_stopped")


def test_dropout_journal_never_raises_when_the_store_fails(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = MonitorStore(tmp_path / "m.db")
    store.close()  # e.g. a destination thread outliving the relay's shutdown
    journal = DropoutJournal(store, "farm1", "ingest")
    journal.started(KIND_DROPOUT, "no_data", 1.0)
    journal.ended(KIND_DROPOUT, 1.0, 2.0, "no_data")
    assert "not kept in the monitor database" in caplog.text
