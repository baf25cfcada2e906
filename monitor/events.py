"""The dropout event log: one JSON object per line, appended, flushed per event.

The relay and the encoder write the same shape so one reader serves both:
``{"ts": <unix s>, "time": <ISO 8601 UTC>, "event": <kind>, ...fields}``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.redact import REDACTOR, Redactor

log = logging.getLogger(__name__)


def iso_utc(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")


class EventLog:
    """Appends events as JSON lines to a file (or only to the Python log when path is None)."""

    def __init__(self, path: Path | None, redactor: Redactor = REDACTOR) -> None:
        self.path = path
        self._redactor = redactor
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        now = time.time()
        record: dict[str, Any] = {"ts": round(now, 3), "time": iso_utc(now), "event": event}
        record.update(fields)
        line = self._redactor.scrub(json.dumps(record, ensure_ascii=False, default=str))
        log.info("event %s", line)
        if self.path is not None:
            with self._lock, self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
        return record


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every well-formed event in a log; a torn last line (crash mid-write) is skipped."""
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out
