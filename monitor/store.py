"""The monitor database: dropout history and connection-check (probe) results.

SQLite, one file (``[relay] monitor_db``), so the history survives restarts. The relay's
asyncio loop and its destination threads share one ``MonitorStore``: every call takes a
lock and is one short transaction. WAL mode keeps readers (``steadycast dropouts``, the
dashboard) from blocking the writer.

The schema is plain SQL with no SQLite-only types (REAL, TEXT, INTEGER, an integer id), so
a PostgreSQL backend can later implement the same methods with the same tables. Times are
Unix seconds (UTC).

Tables:
- ``dropouts``: ``stream``; ``scope`` (``ingest``, ``destination:<name>`` or ``uplink``);
  ``kind`` (``dropout`` or ``low_throughput``); ``cause``; ``start_s``; ``end_s`` (NULL
  while open, or when the relay stopped during it); ``duration_s``.
- ``probes``: ``site``; ``time_s``; ``peer``; ``latitude``/``longitude`` (NULL when not
  given); ``verdict`` (one line); ``result`` (the whole result as JSON).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dropouts (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    scope TEXT NOT NULL,
    kind TEXT NOT NULL,
    cause TEXT NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL,
    duration_s REAL
);
CREATE INDEX IF NOT EXISTS dropouts_stream_start ON dropouts (stream, start_s);
CREATE TABLE IF NOT EXISTS probes (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    time_s REAL NOT NULL,
    peer TEXT NOT NULL,
    latitude REAL,
    longitude REAL,
    verdict TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS probes_site_time ON probes (site, time_s);
"""

KIND_DROPOUT = "dropout"
KIND_LOW_THROUGHPUT = "low_throughput"


class StoreError(Exception):
    """The database cannot be opened or has a schema this version does not know."""


@dataclass(frozen=True)
class DropoutRow:
    id: int
    stream: str
    scope: str
    kind: str
    cause: str
    start_s: float
    end_s: float | None
    duration_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "stream": self.stream, "scope": self.scope, "kind": self.kind,
            "cause": self.cause, "start_s": self.start_s, "end_s": self.end_s,
            "duration_s": self.duration_s,
        }


@dataclass(frozen=True)
class ProbeRow:
    id: int
    site: str
    time_s: float
    peer: str
    latitude: float | None
    longitude: float | None
    verdict: str
    result: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "site": self.site, "time_s": self.time_s, "peer": self.peer,
            "latitude": self.latitude, "longitude": self.longitude, "verdict": self.verdict,
            "result": self.result,
        }


class MonitorStore:
    """Dropouts and probe results in one SQLite file; safe to share between threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=5.0)
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(SCHEMA)
                self._check_version()
        except (sqlite3.Error, OSError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise StoreError(f"monitor database {self.path}: {reason}") from None

    def _check_version(self) -> None:
        row = self._db.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            self._db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            self._db.commit()
        elif row[0] != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {row[0]}, this steadycast reads version {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- dropouts ---------------------------------------------------------------------------

    def dropout_started(self, stream: str, scope: str, kind: str, cause: str,
                        start_s: float) -> int:
        """Record an open dropout; returns its id for ``dropout_ended``."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO dropouts (stream, scope, kind, cause, start_s) VALUES (?, ?, ?, ?, ?)",
                (stream, scope, kind, cause, start_s),
            )
            self._db.commit()
            assert cur.lastrowid is not None
            return cur.lastrowid

    def dropout_ended(self, row_id: int, end_s: float, cause: str | None = None) -> None:
        """Close an open dropout (``cause`` replaces the recorded one when given)."""
        with self._lock:
            self._db.execute(
                "UPDATE dropouts SET end_s = ?, duration_s = ? - start_s, "
                "cause = COALESCE(?, cause) WHERE id = ?",
                (end_s, end_s, cause, row_id),
            )
            self._db.commit()

    def add_dropout(self, stream: str, scope: str, kind: str, cause: str, start_s: float,
                    end_s: float) -> int:
        """Record a dropout already over (both ends known)."""
        row_id = self.dropout_started(stream, scope, kind, cause, start_s)
        self.dropout_ended(row_id, end_s)
        return row_id

    def dropouts(self, stream: str | None = None, since_s: float | None = None,
                 limit: int | None = None) -> list[DropoutRow]:
        """Dropouts that started at or after ``since_s`` (or are still open), oldest first;
        with ``limit``, the newest ``limit`` of them."""
        where: list[str] = ["1 = 1"]
        args: list[object] = []
        if stream is not None:
            where.append("stream = ?")
            args.append(stream)
        if since_s is not None:
            where.append("(start_s >= ? OR end_s IS NULL OR end_s >= ?)")
            args.extend([since_s, since_s])
        sql = f"SELECT * FROM dropouts WHERE {' AND '.join(where)} ORDER BY start_s DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [DropoutRow(*r) for r in reversed(rows)]

    # -- probes -----------------------------------------------------------------------------

    def add_probe(self, site: str, time_s: float, peer: str, verdict: str,
                  result: Mapping[str, Any], latitude: float | None = None,
                  longitude: float | None = None) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO probes (site, time_s, peer, latitude, longitude, verdict, result) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (site, time_s, peer, latitude, longitude, verdict,
                 json.dumps(dict(result), ensure_ascii=False)),
            )
            self._db.commit()
            assert cur.lastrowid is not None
            return cur.lastrowid

    def probes(self, site: str | None = None, limit: int | None = None) -> list[ProbeRow]:
        """Probe results, oldest first; with ``limit``, the newest ``limit``."""
        where: list[str] = ["1 = 1"]
        args: list[object] = []
        if site is not None:
            where.append("site = ?")
            args.append(site)
        sql = f"SELECT * FROM probes WHERE {' AND '.join(where)} ORDER BY time_s DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [ProbeRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]))
                for r in reversed(rows)]


class DropoutJournal:
    """One scope's dropouts (and low-throughput episodes) kept in the monitor store.

    A row is written when one starts (end NULL) and closed when it ends, so a crash leaves
    it open rather than lost. A store that fails (disk full, locked, closed) is logged and
    never stops the media. One owner (thread or event loop) calls it per scope;
    MonitorStore itself is shared and thread-safe. ``store=None`` keeps nothing.
    """

    def __init__(self, store: MonitorStore | None, stream: str, scope: str) -> None:
        self.store = store
        self.stream = stream
        self.scope = scope
        self._open: dict[str, int | None] = {}  # kind -> open row id (None: insert failed)

    def started(self, kind: str, cause: str, start_s: float) -> None:
        row_id: int | None = None
        if self.store is not None:
            try:
                row_id = self.store.dropout_started(self.stream, self.scope, kind, cause, start_s)
            except sqlite3.Error as exc:
                self._failed(exc)
        self._open[kind] = row_id

    def ended(self, kind: str, start_s: float, end_s: float, cause: str) -> None:
        row_id = self._open.pop(kind, None)
        if self.store is None:
            return
        try:
            if row_id is None:  # its start was not written: write it whole
                self.store.add_dropout(self.stream, self.scope, kind, cause, start_s, end_s)
            else:
                self.store.dropout_ended(row_id, end_s, cause)
        except sqlite3.Error as exc:
            self._failed(exc)

    def _failed(self, exc: sqlite3.Error) -> None:
        log.warning("stream %s: %s dropout not kept in the monitor database: %s", self.stream,
                    self.scope, exc)
