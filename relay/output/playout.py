"""Playout buffer: holds received access units for a fixed delay and releases them when due.

A sans-I/O data structure: time comes in as ``now`` (monotonic seconds), units come in with
``push`` and due units come out of ``pop_due``. It serves only the live edge; the recording
receives every unit separately.

Timing model
------------
The first unit pushed (after construction or ``reset``) anchors the sender's media timeline to
the relay's clock::

    due(unit) = anchor_now + delay_s + (unit.dts_s - anchor_dts_s)

The anchor never moves on its own, so after an outage longer than the delay the output comes
back at exactly the configured delay and the media that is too old for the live edge is
skipped. (No clock-drift compensation: the sender's media clock is trusted to run at wall-clock
rate.)

Late units (due before ``now - LATE_TOLERANCE_S``) are dropped and counted in
``skipped_late_units``. On a video track, a late unit that continues the track (its dts is not
older than what the track already had) puts the track into "waiting for keyframe": later video
units of that track are dropped until a keyframe that is on time. A late unit that is older than
what its track already had (a retransmission, or archive backfill sent after an outage) is
dropped alone, so it cannot stall the live video. Audio late units are always dropped alone.
Video tracks also wait for a keyframe at the start and after ``reset``.

Discontinuities
---------------
A unit whose dts jumps backward by more than ``DISCONTINUITY_S`` or forward by more than
``max_buffered_s`` from the newest unit of its track starts a new timeline: the buffer
re-anchors at that unit. Units already buffered keep the due times they had; only the mapping
for later units changes. After a re-anchor every video track waits for a keyframe again. Three
refinements keep this from firing by mistake:

* a jump that agrees with the current mapping (its due time would lie between
  ``DISCONTINUITY_S`` before ``now`` and ``DISCONTINUITY_S`` after the live point ``now + delay_s``)
  is not a new timeline: it is the other track of a jump already handled, or a sender whose
  clock kept running through a long outage;
* a unit whose ``seq`` is lower than the newest ``seq`` seen on its track is a retransmission or
  backfill, never a new timeline;
* after a re-anchor, units from the old timeline are skipped: those with ``seq`` below the unit
  that re-anchored, and, on a track that has not yet joined the new timeline, those that do not
  fit the new mapping.

Memory
------
Units due ahead are accepted (media may arrive early in a burst) up to ``max_buffered_s``
after the live point (``now + delay_s``); a unit due later than that (a sender running faster
than its media clock) is dropped on arrival (``dropped_overflow_units``; on a video track the
track then waits for a keyframe). When the buffered payload exceeds ``MAX_BUFFERED_BYTES``,
or the buffer holds more than ``MAX_BUFFERED_UNITS`` units, the oldest units are dropped
(``dropped_overflow_units``). The count bound stops tiny units, whose Python objects cost
far more than their payload, from growing the relay; the time bound stops them from being
held long (an ended stream plays out what is buffered; docs/relay.md, "Memory under hostile
input").
When a unit dropped from the buffer is video, its track's output skips ahead to the next
buffered keyframe.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

LATE_TOLERANCE_S = 0.05  # about one video frame
DISCONTINUITY_S = 5.0  # a backward dts jump larger than this starts a new timeline
MAX_BUFFERED_S_DEFAULT = 120.0
MAX_BUFFERED_BYTES = 64 * 1024 * 1024
# 120 s (MAX_BUFFERED_S_DEFAULT) of 60 fps video with 48 kHz AAC is ~12 000 units; four
# times that leaves room for bursts and costs at most ~12 MB of unit objects.
MAX_BUFFERED_UNITS = 50_000


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One encoded access unit (a video frame or an audio packet) on the sender's timeline."""

    track_id: int
    is_video: bool
    pts_s: float  # presentation time on the sender's media timeline, seconds
    dts_s: float  # decode time, seconds; orders units and sets their due time
    keyframe: bool
    payload: bytes
    capture_time_us: int = 0
    seq: int = 0


@dataclass
class _Track:
    is_video: bool
    newest_dts_s: float | None = None  # highest dts pushed on this track's current timeline
    newest_seq: int = 0
    waiting_for_keyframe: bool = False  # input gate: drop video until an on-time keyframe
    output_needs_keyframe: bool = False  # output gate: set when overflow dropped a video unit
    stale: bool = False  # history predates the last re-anchor


class PlayoutBuffer:
    """Delays access units by ``delay_s`` and releases them in due-time order."""

    def __init__(
        self,
        delay_s: float,
        max_buffered_s: float = MAX_BUFFERED_S_DEFAULT,
        *,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s!r}")
        if max_buffered_s <= 0:
            raise ValueError(f"max_buffered_s must be > 0, got {max_buffered_s!r}")
        if max_buffered_bytes <= 0:
            raise ValueError(f"max_buffered_bytes must be > 0, got {max_buffered_bytes!r}")
        self._delay_s = delay_s
        self._max_buffered_s = max_buffered_s
        self._max_buffered_bytes = max_buffered_bytes
        self._heap: list[tuple[float, int, AccessUnit]] = []
        self._push_count = 0
        self._bytes = 0
        self._max_due_s = 0.0  # due time of the newest buffered unit; valid while non-empty
        self._anchor_now_s: float | None = None
        self._anchor_dts_s = 0.0
        self._timeline_start_seq = 0
        self._tracks: dict[int, _Track] = {}
        self.skipped_late_units = 0
        self.dropped_overflow_units = 0
        self.discontinuities = 0

    # -- state ---------------------------------------------------------------------------

    @property
    def delay_s(self) -> float:
        return self._delay_s

    @property
    def anchored(self) -> bool:
        return self._anchor_now_s is not None

    @property
    def units_buffered(self) -> int:
        return len(self._heap)

    @property
    def bytes_buffered(self) -> int:
        return self._bytes

    def level_s(self, now: float) -> float:
        """Seconds of media buffered ahead of ``now`` (0 when empty)."""
        if not self._heap:
            return 0.0
        return max(0.0, self._max_due_s - now)

    def next_due_s(self) -> float | None:
        """Due time of the earliest buffered unit, or None when empty (for a timer)."""
        return self._heap[0][0] if self._heap else None

    def due_time_s(self, dts_s: float) -> float | None:
        """The due time the current anchor gives a dts, or None before the anchor."""
        if self._anchor_now_s is None:
            return None
        return self._due_s(dts_s)

    # -- input ---------------------------------------------------------------------------

    def push(self, unit: AccessUnit, now: float) -> None:
        track = self._tracks.get(unit.track_id)
        if track is None:
            track = _Track(is_video=unit.is_video, waiting_for_keyframe=unit.is_video)
            self._tracks[unit.track_id] = track

        if self._anchor_now_s is None:
            self._anchor(unit, now)
            jumped = False
        else:
            if unit.seq < self._timeline_start_seq:
                # Sent before the unit that started the current timeline.
                self.skipped_late_units += 1
                return
            jumped = self._jumped(unit, track)
            fits = self._fits_mapping(unit, now)
            if jumped and not fits:
                self.discontinuities += 1
                self._reanchor(unit, now)
            elif track.stale and not jumped and not fits:
                # A straggler from the timeline before the last re-anchor.
                self.skipped_late_units += 1
                return

        previous_dts_s = track.newest_dts_s
        out_of_order = (
            previous_dts_s is not None
            and not jumped
            and not track.stale
            and unit.dts_s < previous_dts_s
        )
        if jumped or track.stale or previous_dts_s is None:
            track.newest_dts_s = unit.dts_s
            track.stale = False
        elif not out_of_order:
            track.newest_dts_s = unit.dts_s
        track.newest_seq = max(track.newest_seq, unit.seq)

        due_s = self._due_s(unit.dts_s)
        late = due_s < now - LATE_TOLERANCE_S

        if unit.is_video:
            if track.waiting_for_keyframe:
                if late or not unit.keyframe:
                    self.skipped_late_units += 1
                    return
                track.waiting_for_keyframe = False
            elif late:
                self.skipped_late_units += 1
                if not out_of_order:
                    track.waiting_for_keyframe = True
                return
        elif late:
            self.skipped_late_units += 1
            return
        if due_s > now + self._delay_s + self._max_buffered_s:  # too far ahead to hold
            self.dropped_overflow_units += 1
            track.waiting_for_keyframe = track.is_video
            return

        if not self._heap or due_s > self._max_due_s:
            self._max_due_s = due_s
        heapq.heappush(self._heap, (due_s, self._push_count, unit))
        self._push_count += 1
        self._bytes += len(unit.payload)
        self._enforce_byte_bound()

    # -- output --------------------------------------------------------------------------

    def pop_due(self, now: float) -> list[AccessUnit]:
        """Every unit whose due time is <= ``now``, ordered by (due time, push order)."""
        due: list[AccessUnit] = []
        while self._heap and self._heap[0][0] <= now:
            unit = self._pop_oldest()
            track = self._tracks.get(unit.track_id)
            if unit.is_video and track is not None and track.output_needs_keyframe:
                if not unit.keyframe:
                    self.dropped_overflow_units += 1
                    continue
                track.output_needs_keyframe = False
            due.append(unit)
        return due

    def reset(self) -> None:
        """Forget the anchor, the contents and the tracks (a new sender session).

        Counters (skipped_late_units, dropped_overflow_units, discontinuities) keep counting.
        """
        self._heap.clear()
        self._bytes = 0
        self._max_due_s = 0.0
        self._anchor_now_s = None
        self._anchor_dts_s = 0.0
        self._timeline_start_seq = 0
        self._tracks.clear()

    # -- internals -----------------------------------------------------------------------

    def _anchor(self, unit: AccessUnit, now: float) -> None:
        self._anchor_now_s = now
        self._anchor_dts_s = unit.dts_s

    def _reanchor(self, unit: AccessUnit, now: float) -> None:
        self._anchor(unit, now)
        self._timeline_start_seq = unit.seq
        for track in self._tracks.values():
            track.stale = True
            track.waiting_for_keyframe = track.is_video

    def _jumped(self, unit: AccessUnit, track: _Track) -> bool:
        if track.newest_dts_s is None or unit.seq < track.newest_seq:
            return False
        step_s = unit.dts_s - track.newest_dts_s
        return step_s < -DISCONTINUITY_S or step_s > self._max_buffered_s

    def _due_s(self, dts_s: float) -> float:
        anchor_now_s = self._anchor_now_s
        assert anchor_now_s is not None, "no anchor yet"
        return anchor_now_s + self._delay_s + (dts_s - self._anchor_dts_s)

    def _fits_mapping(self, unit: AccessUnit, now: float) -> bool:
        due_s = self._due_s(unit.dts_s)
        return now - DISCONTINUITY_S <= due_s <= now + self._delay_s + DISCONTINUITY_S

    def _pop_oldest(self) -> AccessUnit:
        _, _, unit = heapq.heappop(self._heap)
        self._bytes -= len(unit.payload)
        return unit

    def _enforce_byte_bound(self) -> None:
        while self._heap and (self._bytes > self._max_buffered_bytes
                              or len(self._heap) > MAX_BUFFERED_UNITS):
            unit = self._pop_oldest()
            self.dropped_overflow_units += 1
            if unit.is_video:
                self._tracks[unit.track_id].output_needs_keyframe = True
