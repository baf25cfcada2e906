"""What the encoder does when its spool is full, without I/O: `OverflowGate`.

The spool (``uplink.spool.Spool``) holds every unit the relay has not acknowledged, in memory
up to ``--spool-memory-mb``, then on disk up to ``--spool-disk-mb``. When an outage outlasts
that, ``Spool.put`` raises ``SpoolFull`` and stores nothing. What a farmer wants then is the
live stream to go on: the relay still gets everything already held (the oldest media,
needed for its archive) and the newest media once the link returns. So the rules are:

- Held units are never dropped: the spool is never closed or emptied under the sender while
  it holds media. Only *new* units are dropped, from the first one that did not fit.
- While dropping, every new unit is dropped except a video keyframe, which is tried: media
  resumes at a keyframe, since a video frame after a dropped one cannot be decoded without
  it. The caller asks the encoder for frequent keyframes while ``dropping`` is true, so the
  stream resumes soon after ACKs free room (the held units stay in order and in seq: a
  dropped unit never gets a seq, so the relay sees no gap in seqs, only in capture time).
- One episode is reported once when it starts (``OverflowStarted``: how much is held) and
  once when it ends (``OverflowEnded``: how many units and video frames were dropped), never
  once per dropped unit.

Sans-I/O: ``now`` comes in as an argument; events come out as return values; the uplink
client (``encoder.client``) logs them, writes them to the event log and shows them in its
status.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OverflowStarted:
    """The spool refused a unit at `start`: from now on new units are dropped. `held_bytes`
    and `held_units`: what the spool holds (all of it will still be sent)."""

    start: float
    held_bytes: int
    held_units: int


@dataclass(frozen=True, slots=True)
class OverflowEnded:
    """A video keyframe fit again at `end`: units flow from it on. `dropped_units` (all
    tracks) and `dropped_video_frames` were dropped in [start, end)."""

    start: float
    end: float
    dropped_units: int
    dropped_video_frames: int

    @property
    def duration_s(self) -> float:
        return self.end - self.start


OverflowEvent = OverflowStarted | OverflowEnded


class OverflowGate:
    """Decides which new units to offer to a full spool (see the module docstring).

    For each new unit: ``admit`` (False: drop it, counted); if admitted, push it and call
    ``on_full`` when the spool refused it or ``on_stored`` when it was stored.
    """

    def __init__(self, video_track_id: int) -> None:
        self._video_track_id = video_track_id
        self._start: float | None = None
        self._episode_units = 0
        self._episode_video = 0
        self.dropped_units_total = 0
        self.dropped_video_frames_total = 0
        self.episodes = 0

    @property
    def dropping(self) -> bool:
        """True from the first refused unit until a video keyframe is stored again."""
        return self._start is not None

    def admit(self, track_id: int, keyframe: bool) -> bool:
        """Whether to offer this new unit to the spool. While dropping only a video
        keyframe is offered; anything else is dropped here and counted."""
        if self._start is None or (track_id == self._video_track_id and keyframe):
            return True
        self._count(track_id)
        return False

    def on_full(self, track_id: int, now: float, held_bytes: int,
                held_units: int) -> list[OverflowEvent]:
        """The spool refused an admitted unit (it is dropped). Starts an episode if none is
        open."""
        events: list[OverflowEvent] = []
        if self._start is None:
            self._start = now
            self.episodes += 1
            events.append(OverflowStarted(now, held_bytes, held_units))
        self._count(track_id)  # the refused unit belongs to the episode
        return events

    def on_stored(self, track_id: int, keyframe: bool, now: float) -> list[OverflowEvent]:
        """An admitted unit was stored. While dropping that is a video keyframe: the episode
        ends."""
        if self._start is None:
            return []
        assert track_id == self._video_track_id and keyframe, "only keyframes are admitted"
        ended = OverflowEnded(self._start, now, self._episode_units, self._episode_video)
        self._start = None
        self._episode_units = self._episode_video = 0
        return [ended]

    def _count(self, track_id: int) -> None:
        self.dropped_units_total += 1
        self._episode_units += 1
        if track_id == self._video_track_id:
            self.dropped_video_frames_total += 1
            self._episode_video += 1
