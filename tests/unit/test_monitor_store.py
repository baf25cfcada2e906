"""The monitor database: dropouts and probe results survive reopening; filters work."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from monitor.store import KIND_DROPOUT, KIND_LOW_THROUGHPUT, MonitorStore, StoreError


def test_dropouts_survive_reopen_and_filter(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "monitor.db"
    store = MonitorStore(db)
    a = store.dropout_started("farm1", "ingest", KIND_DROPOUT, "no_data", 100.0)
    store.dropout_ended(a, 104.5, "connection_lost")
    store.add_dropout("farm2", "destination:youtube", KIND_DROPOUT, "io_error", 200.0, 201.0)
    open_id = store.dropout_started("farm1", "ingest", KIND_LOW_THROUGHPUT, "low_rate", 300.0)
    store.close()

    again = MonitorStore(db)
    rows = again.dropouts()
    assert [r.stream for r in rows] == ["farm1", "farm2", "farm1"]
    assert rows[0].cause == "connection_lost" and rows[0].duration_s == pytest.approx(4.5)
    assert rows[2].id == open_id and rows[2].end_s is None and rows[2].duration_s is None
    assert [r.id for r in again.dropouts(stream="farm1")] == [a, open_id]
    assert [r.id for r in again.dropouts(since_s=150.0)] == [rows[1].id, open_id]
    assert [r.id for r in again.dropouts(limit=1)] == [open_id]
    assert rows[1].as_dict()["scope"] == "destination:youtube"


def test_probes_round_trip(tmp_path: Path) -> None:
    store = MonitorStore(tmp_path / "m.db")
    store.add_probe("Bản Lác", 10.0, "127.0.0.1", "Tốt / Good", {"p10_kbps": 900.5},
                    latitude=20.6, longitude=105.0)
    store.add_probe("hill", 20.0, "127.0.0.1", "Weak", {"p10_kbps": 200})
    rows = store.probes()
    assert [r.site for r in rows] == ["Bản Lác", "hill"]
    assert rows[0].result == {"p10_kbps": 900.5} and rows[0].latitude == 20.6
    assert rows[1].latitude is None
    assert [r.site for r in store.probes(site="hill")] == ["hill"]
    assert store.probes(limit=1)[0].site == "hill"


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    MonitorStore(db).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="schema version 99"):
        MonitorStore(db)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=str(db)):
        MonitorStore(db)


def test_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="monitor database .*file/m.db"):
        MonitorStore(blocker / "m.db")
