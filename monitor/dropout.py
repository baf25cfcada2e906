"""The dropout detector: media arrivals and connection events in, dropout start/end out.

Sans-I/O: ``now`` (seconds, any clock the caller chooses; the relay passes Unix time so the
events can be logged as they are) is an argument of every call. A dropout starts when no
media has arrived for ``threshold_s`` or when the connection is lost, and ends when media
flows again. Its cause is ``connection_lost`` if the connection was lost at any point
during it, else ``no_data``. The detector is armed by the first media and disarmed by
``stop()`` (a clean end of the stream is not a dropout).

``LowThroughputDetector`` (below) is the second kind of event: media still arrives, but far
slower than the stream's bitrate for some seconds. The relay runs one of each per ingest;
each destination runs a ``DropoutDetector`` fed by its writes to the platform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from uplink.window import WindowedSum

DROPOUT_THRESHOLD_S_DEFAULT = 0.5
# the cause a dropout (or low-throughput episode) still open when the relay stops is closed
# with; the detectors never give it themselves
CAUSE_RELAY_STOPPED = "relay_stopped"


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


# -- low throughput ---------------------------------------------------------------------------

LOW_THROUGHPUT_SHARE_DEFAULT = 0.5
LOW_THROUGHPUT_S_DEFAULT = 5.0
LOW_THROUGHPUT_RECOVER_S_DEFAULT = 2.0
RATE_WINDOW_S = 2.0  # the arriving rate is the media payload of the last RATE_WINDOW_S
AVERAGE_TAU_S = 30.0  # time constant of the slow average, the reference without a target
SENDER_BACKLOG_MIN_MS = 1000  # a sender holding back less than this is not short of link


class LowThroughputCause(StrEnum):
    BELOW_TARGET = "below_target"  # below the share of the sender's target bitrate
    BELOW_AVERAGE = "below_average"  # below the share of the stream's slow average rate


@dataclass(frozen=True)
class LowThroughputStarted:
    start: float
    cause: LowThroughputCause
    rate_kbps: float  # the arriving rate when the episode was reported
    reference_kbps: float  # the stream's bitrate it was compared with


@dataclass(frozen=True)
class LowThroughputEnded:
    start: float
    end: float
    cause: LowThroughputCause

    @property
    def duration_s(self) -> float:
        return self.end - self.start


LowThroughputEvent = LowThroughputStarted | LowThroughputEnded
# what the two detectors report (the dropout reporter writes each one out)
DetectorEvent = DropoutEvent | LowThroughputEvent


class LowThroughputDetector:
    """Low-throughput episodes: media still arrives, but far slower than the stream's bitrate.

    Sans-I/O like ``DropoutDetector``: ``on_media(now, nbytes)`` for each media payload,
    ``on_sender_stats(target_kbps, backlog_ms)`` for each STATS from the sender,
    ``dropout_started(now)``/``dropout_ended(now)`` from the dropout detector, and
    ``poll(now)`` often (the relay: every 0.1 s); events come back as return values.

    The arriving rate is the media payload of the last ``window_s`` (2 s), judged only once a
    whole window has been seen since the first media or the end of the last dropout (the
    silence of a dropout is not low throughput).

    The stream's bitrate (the reference):

    - the sender's target bitrate from its latest STATS, when it sends one (cause
      ``below_target``). Then the rate counts as low only while the sender also reports at
      least ``SENDER_BACKLOG_MIN_MS`` of unacknowledged media: a sender with nothing held
      back is sending all it encodes, and an encoder producing less than its target (a
      still picture) is not a weak link. An adaptive sender that lowers its target to what
      the link carries ends the episode: the link carries the stream again, at a lower
      quality.
    - otherwise a slow average of the arriving rate itself (exponential, time constant
      ``AVERAGE_TAU_S`` = 30 s), started with the first whole window (cause
      ``below_average``). It is updated only while the rate is not below the share of it,
      so it does not follow the rate down into an episode; a sender that lowers its
      bitrate for good without sending STATS therefore stays in one long episode.

    An episode starts when the rate has been below ``share`` × reference continuously for
    ``min_s`` (default 5 s); its start is the first poll that saw it below. It ends when
    the rate has been at or above the line for ``recover_s`` (default 2 s); its end is the
    first poll that saw it back above. Times are those polls' ``now``: the rate is a 2-s
    average, so they trail the link's own changes by up to a window.

    Never an episode while a dropout is open: ``dropout_started`` ends an open episode at
    that time (the dropout takes over) and judging resumes a whole window after
    ``dropout_ended``. ``stop(now)`` ends an open episode and disarms until the next media.
    """

    def __init__(self, share: float = LOW_THROUGHPUT_SHARE_DEFAULT,
                 min_s: float = LOW_THROUGHPUT_S_DEFAULT,
                 recover_s: float = LOW_THROUGHPUT_RECOVER_S_DEFAULT,
                 window_s: float = RATE_WINDOW_S) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        for name, value in (("min_s", min_s), ("recover_s", recover_s), ("window_s", window_s)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.share = share
        self.min_s = min_s
        self.recover_s = recover_s
        self.window_s = window_s
        self._arrivals = WindowedSum(window_s)  # media payload bytes, in bounded buckets
        self._measure_from: float | None = None  # None: disarmed (no media yet, or stopped)
        self._in_dropout = False
        self._target_kbps: float | None = None
        self._backlog_ms: int | None = None
        self._average_kbps: float | None = None
        self._average_at: float | None = None
        self._below_since: float | None = None
        self._above_since: float | None = None
        self._open: tuple[float, LowThroughputCause] | None = None
        self.count = 0

    @property
    def in_episode(self) -> bool:
        return self._open is not None

    @property
    def current_start(self) -> float | None:
        return self._open[0] if self._open is not None else None

    @property
    def reference_kbps(self) -> float | None:
        """The stream's bitrate the rate is compared with (None until known)."""
        if self._target_kbps is not None:
            return self._target_kbps
        return self._average_kbps

    def rate_kbps(self, now: float) -> float:
        """Media payload arrived in (now - window_s, now], in kbit/s."""
        return self._arrivals.total(now) * 8 / 1000 / self.window_s

    # -- inputs ----------------------------------------------------------------------------

    def on_media(self, now: float, nbytes: int) -> None:
        if self._measure_from is None:
            self._measure_from = now
        self._arrivals.add(now, nbytes)

    def on_sender_stats(self, target_kbps: int, backlog_ms: int | None = None) -> None:
        """The sender's STATS: its target bitrate (0: none) and its unacknowledged media."""
        self._target_kbps = float(target_kbps) if target_kbps > 0 else None
        self._backlog_ms = backlog_ms

    def dropout_started(self, now: float) -> list[LowThroughputEvent]:
        self._in_dropout = True
        events = self._close(now)
        self._below_since = self._above_since = None
        return events

    def dropout_ended(self, now: float) -> None:
        self._in_dropout = False
        self._arrivals.clear()
        self._measure_from = now
        self._average_at = None

    def stop(self, now: float) -> list[LowThroughputEvent]:
        """A clean end of the stream: close any open episode and disarm."""
        events = self._close(now)
        self._arrivals.clear()
        self._measure_from = None
        self._in_dropout = False
        self._below_since = self._above_since = None
        self._average_at = None
        return events

    def poll(self, now: float) -> list[LowThroughputEvent]:
        if self._in_dropout or self._measure_from is None:
            return []
        if now - self._measure_from < self.window_s:
            return []  # not a whole window yet
        rate = self.rate_kbps(now)
        self._update_average(now, rate)
        reference = self.reference_kbps
        if reference is None:
            return []
        low = rate < self.share * reference
        if (low and self._target_kbps is not None and self._backlog_ms is not None
                and self._backlog_ms < SENDER_BACKLOG_MIN_MS):
            low = False  # the sender has nothing held back: the link carries what it sends
        if self._open is None:
            if not low:
                self._below_since = None
                return []
            if self._below_since is None:
                self._below_since = now
            if now - self._below_since < self.min_s:
                return []
            cause = (LowThroughputCause.BELOW_TARGET if self._target_kbps is not None
                     else LowThroughputCause.BELOW_AVERAGE)
            self._open = (self._below_since, cause)
            self._below_since = None
            self.count += 1
            return [LowThroughputStarted(self._open[0], cause, rate, reference)]
        if low:
            self._above_since = None
            return []
        if self._above_since is None:
            self._above_since = now
        if now - self._above_since < self.recover_s:
            return []
        end = self._above_since
        self._above_since = None
        return self._close(end)

    # -- internals -------------------------------------------------------------------------

    def _update_average(self, now: float, rate: float) -> None:
        avg = self._average_kbps
        if avg is None:
            self._average_kbps, self._average_at = rate, now
            return
        if self._average_at is None or rate < self.share * avg:
            self._average_at = now  # not followed down into an episode
            return
        alpha = 1 - math.exp(-max(0.0, now - self._average_at) / AVERAGE_TAU_S)
        self._average_kbps = avg + (rate - avg) * alpha
        self._average_at = now

    def _close(self, end: float) -> list[LowThroughputEvent]:
        if self._open is None:
            return []
        start, cause = self._open
        self._open = None
        return [LowThroughputEnded(start, max(start, end), cause)]
