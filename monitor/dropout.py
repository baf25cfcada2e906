"""The dropout detector: media arrivals and connection events in, dropout start/end out.

Sans-I/O: ``now`` (seconds, any clock the caller chooses; the relay passes Unix time so the
events can be logged as they are) is an argument of every call. A dropout starts when no
media has arrived for ``threshold_s`` or when the connection is lost, and ends when media
flows again. Its cause is ``connection_lost`` if the connection was lost at any point
during it, else ``no_data``. The detector is armed by the first media and disarmed by
``stop()`` (a clean end of the stream is not a dropout).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DROPOUT_THRESHOLD_S_DEFAULT = 0.5


class DropoutCause(StrEnum):
    NO_DATA = "no_data"
    CONNECTION_LOST = "connection_lost"


@dataclass(frozen=True)
class DropoutStarted:
    start: float
    cause: DropoutCause


@dataclass(frozen=True)
class DropoutEnded:
    start: float
    end: float
    cause: DropoutCause

    @property
    def duration_s(self) -> float:
        return self.end - self.start


DropoutEvent = DropoutStarted | DropoutEnded


class DropoutDetector:
    def __init__(self, threshold_s: float = DROPOUT_THRESHOLD_S_DEFAULT) -> None:
        if threshold_s <= 0:
            raise ValueError(f"threshold_s must be > 0, got {threshold_s}")
        self.threshold_s = threshold_s
        self._armed = False
        self._last_media: float | None = None
        self._open_start: float | None = None
        self._open_cause = DropoutCause.NO_DATA
        self.count = 0

    @property
    def in_dropout(self) -> bool:
        return self._open_start is not None

    @property
    def current_start(self) -> float | None:
        return self._open_start

    def on_media(self, now: float) -> list[DropoutEvent]:
        self._armed = True
        self._last_media = now
        if self._open_start is None:
            return []
        ended = DropoutEnded(self._open_start, now, self._open_cause)
        self._open_start = None
        return [ended]

    def on_connection_lost(self, now: float) -> list[DropoutEvent]:
        if not self._armed:
            return []
        if self._open_start is not None:
            self._open_cause = DropoutCause.CONNECTION_LOST
            return []
        return self._start(now, DropoutCause.CONNECTION_LOST)

    def poll(self, now: float) -> list[DropoutEvent]:
        if not self._armed or self._open_start is not None or self._last_media is None:
            return []
        if now - self._last_media >= self.threshold_s:
            # the dropout began when media stopped, not when we noticed
            return self._start(self._last_media, DropoutCause.NO_DATA)
        return []

    def stop(self, now: float) -> list[DropoutEvent]:
        """A clean end of the stream: close any open dropout and disarm."""
        events: list[DropoutEvent] = []
        if self._open_start is not None:
            events.append(DropoutEnded(self._open_start, now, self._open_cause))
            self._open_start = None
        self._armed = False
        self._last_media = None
        return events

    def _start(self, start: float, cause: DropoutCause) -> list[DropoutEvent]:
        self._open_start = start
        self._open_cause = cause
        self.count += 1
        return [DropoutStarted(start, cause)]
