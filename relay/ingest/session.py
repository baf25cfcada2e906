"""The ingest session core: what received uplink events do to the outputs, without I/O.

``IngestSession`` is fed the events of an ``uplink.UplinkReceiver`` (one call per event, with
``now``, and the receiver's ``next_seq`` right after the event) and answers with actions as
values, in the order they must be applied. It holds no socket, thread or clock; the relay's
``StreamRuntime`` applies the actions (logs, event log, metrics, recorder, pipeline) and the
simulator (``benchmarks.sim``) applies the pipeline's. The output side is ingest-neutral: any
ingest that produces ``TrackConfig`` and ``Media`` values can drive the same actions.

Rules:

- Session. A new session (neither resumed nor continued) forgets the time bases, the video
  tracks and the live edge, starts a recording session and a new playout timeline. A
  resumed or continued session keeps them all: the sender repeats its TRACKs, and what the
  live already had is not played again. Every session start is reported (``SessionOpened``)
  before anything it causes, so the caller can make sure its outputs exist first.
- Tracks. A TRACK sets its track's time base and kind (video or not); only a changed one
  reaches the recorder and the pipeline (a repeat configures nothing).
- Media. Every unit feeds the dropout detector and the low-throughput detector and goes to
  the recorder with ``received_below`` (the receiver's ``next_seq``: every seq below it has
  arrived or never will). It goes to playout only if it is live: not backfill, and a seq at
  or above the live edge (``live_next_seq``, one past the last unit played), so backfill and
  resends of what the live already had reach the archive only. A unit of a track with no
  TRACK in this session (the receiver refuses such MEDIA, so only a caller that fed the core
  and the receiver differently can cause it) is archived, never played, and counted in
  ``units_without_track``; it does not move the live edge.
- Time. pts and dts become seconds exactly from the track's time base: the correctly rounded
  float of ``ticks * num / den`` (``float(ticks * Fraction(num, den))``, faster).
- Detectors. A dropout that starts ends any open low-throughput episode first (its end
  event comes before the dropout's start); one that ends restarts the low-throughput window.
  The detectors' events come out as the values ``monitor.dropout`` defines.
- End. BYE ends the playout (what is buffered plays out) and the recording session, and
  stops both detectors (what is open is closed at ``now``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from monitor.dropout import (
    DetectorEvent,
    DropoutDetector,
    DropoutEnded,
    DropoutEvent,
    DropoutStarted,
    LowThroughputDetector,
)
from relay.output.playout import AccessUnit
from uplink import (
    Media,
    MediaReceived,
    ReceiverEvent,
    SessionEnded,
    SessionStarted,
    StatsReceived,
    TrackConfig,
    TrackConfigured,
    TrackKind,
)


class SessionKind(StrEnum):
    NEW = "new"  # a session the relay did not have: new archive, new timeline
    RESUMED = "resumed"  # the same session, its state kept
    CONTINUED = "continued"  # the same session for the archive; the sender resends (restart)


# --- the session --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """A session started (its first action: make sure the outputs exist)."""

    session_id: bytes
    kind: SessionKind
    next_seq: int


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The sender ended the session (BYE), with its reason."""

    reason: str


@dataclass(frozen=True, slots=True)
class StatsStored:
    """The sender's latest STATS, to show in the stream's status."""

    backlog_bytes: int
    backlog_ms: int
    target_kbps: int

    def as_dict(self) -> dict[str, int]:
        return {"backlog_bytes": self.backlog_bytes, "backlog_ms": self.backlog_ms,
                "target_kbps": self.target_kbps}


# --- the recorder -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordSession:
    """``Recorder.new_session``: a new archive for this session."""

    session_id: bytes


@dataclass(frozen=True, slots=True)
class RecordTrack:
    """``Recorder.track(track, changed=True)``: the track's config changed."""

    track: TrackConfig


@dataclass(frozen=True, slots=True)
class RecordMedia:
    """``Recorder.media(media, received_below)``: every unit that arrived, live or not."""

    media: Media
    received_below: int | None


@dataclass(frozen=True, slots=True)
class RecordEnd:
    """``Recorder.end_session`` then close it: the archive of this session is complete."""


# --- the output pipeline ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewTimeline:
    """``StreamPipeline.new_timeline``: the playout buffer starts over (a new session)."""


@dataclass(frozen=True, slots=True)
class ConfigureTrack:
    """``StreamPipeline.configure``: the track's config changed."""

    track: TrackConfig


@dataclass(frozen=True, slots=True)
class PushUnit:
    """``StreamPipeline.push``: a live unit for playout."""

    unit: AccessUnit


@dataclass(frozen=True, slots=True)
class EndOutput:
    """``StreamPipeline.end``: play out what is buffered, then end the platform sessions."""


IngestAction = (SessionOpened | SessionClosed | StatsStored
                | RecordSession | RecordTrack | RecordMedia | RecordEnd
                | NewTimeline | ConfigureTrack | PushUnit | EndOutput
                | DetectorEvent)


class IngestSession:
    """Sans-I/O: receiver events in, actions out (see the module docstring for the rules).

    One per stream, for as long as the stream is configured: the detectors span sessions
    (they are stopped at a session's end and armed again by the next media)."""

    def __init__(self, detector: DropoutDetector | None = None,
                 low_throughput: LowThroughputDetector | None = None) -> None:
        self.detector = detector if detector is not None else DropoutDetector()
        self.low_throughput = (low_throughput if low_throughput is not None
                               else LowThroughputDetector())
        self._time_bases: dict[int, tuple[int, int]] = {}  # track -> (num, den), reduced
        self._video_tracks: set[int] = set()
        self._live_next_seq = 0  # live units below it went to playout already
        self.units_without_track = 0

    # -- observable state ------------------------------------------------------------------

    @property
    def live_next_seq(self) -> int:
        """One past the seq of the last unit played: media below it is not live."""
        return self._live_next_seq

    @property
    def in_dropout(self) -> bool:
        return self.detector.in_dropout

    @property
    def in_low_throughput(self) -> bool:
        return self.low_throughput.in_episode

    def is_video(self, track_id: int) -> bool:
        """Whether the track's TRACK in this session says video."""
        return track_id in self._video_tracks

    def time_base(self, track_id: int) -> Fraction | None:
        """Seconds per tick of the track, None before its TRACK in this session."""
        tb = self._time_bases.get(track_id)
        return None if tb is None else Fraction(*tb)

    # -- inputs ----------------------------------------------------------------------------

    def on_event(self, ev: ReceiverEvent, now: float,
                 next_seq: int | None = None) -> list[IngestAction]:
        """The actions one receiver event causes, in order. ``now``: the detectors' clock
        (the relay uses Unix time, so their events can be logged as they are);
        ``next_seq``: the receiver's next_seq right after the event (for the recorder)."""
        if isinstance(ev, MediaReceived):
            return self._on_media(ev.media, now, next_seq)
        if isinstance(ev, SessionStarted):
            return self._on_session(ev)
        if isinstance(ev, TrackConfigured):
            return self._on_track(ev)
        if isinstance(ev, StatsReceived):
            st = ev.stats
            self.low_throughput.on_sender_stats(st.target_kbps, st.backlog_ms)
            return [StatsStored(st.backlog_bytes, st.backlog_ms, st.target_kbps)]
        if isinstance(ev, SessionEnded):
            return [SessionClosed(ev.reason), *self.stop(now), EndOutput(), RecordEnd()]
        raise TypeError(f"not a receiver event: {ev!r}")

    def connection_lost(self, now: float) -> list[DetectorEvent]:
        """The ingest connection went away while the session goes on."""
        return self._dropout(self.detector.on_connection_lost(now))

    def poll(self, now: float) -> list[DetectorEvent]:
        """Call often (the relay: every tick): a silence or a slow stream becomes an event."""
        return [*self._dropout(self.detector.poll(now)), *self.low_throughput.poll(now)]

    def stop(self, now: float) -> list[DetectorEvent]:
        """A clean end (BYE, expiry, the relay stopping): close what is open, disarm both."""
        return [*self._dropout(self.detector.stop(now)), *self.low_throughput.stop(now)]

    # -- internals -------------------------------------------------------------------------

    def _on_session(self, ev: SessionStarted) -> list[IngestAction]:
        kind = (SessionKind.CONTINUED if ev.continued
                else SessionKind.RESUMED if ev.resumed else SessionKind.NEW)
        opened = SessionOpened(ev.session_id, kind, ev.next_seq)
        if kind != SessionKind.NEW:
            return [opened]
        self._time_bases.clear()
        self._video_tracks.clear()
        self._live_next_seq = 0
        return [opened, RecordSession(ev.session_id), NewTimeline()]

    def _on_track(self, ev: TrackConfigured) -> list[IngestAction]:
        t = ev.track
        tb = Fraction(t.time_base_num, t.time_base_den)
        self._time_bases[t.track_id] = (tb.numerator, tb.denominator)
        if t.kind == TrackKind.VIDEO:
            self._video_tracks.add(t.track_id)
        if not ev.changed:
            return []
        return [RecordTrack(t), ConfigureTrack(t)]

    def _on_media(self, m: Media, now: float, next_seq: int | None) -> list[IngestAction]:
        out: list[IngestAction] = [*self._dropout(self.detector.on_media(now))]
        self.low_throughput.on_media(now, len(m.payload))
        out.append(RecordMedia(m, next_seq))
        if m.backfill or m.seq < self._live_next_seq:
            return out  # behind the live edge, or a resend the live has had already
        tb = self._time_bases.get(m.track_id)
        if tb is None:
            self.units_without_track += 1
            return out
        num, den = tb
        self._live_next_seq = m.seq + 1
        out.append(PushUnit(AccessUnit(
            track_id=m.track_id, is_video=m.track_id in self._video_tracks,
            pts_s=m.pts * num / den, dts_s=m.dts * num / den, keyframe=m.keyframe,
            payload=m.payload, capture_time_us=m.capture_time_us, seq=m.seq)))
        return out

    def _dropout(self, events: list[DropoutEvent]) -> list[DetectorEvent]:
        """Dropout events, each preceded by what it does to the low-throughput detector."""
        out: list[DetectorEvent] = []
        for ev in events:
            if isinstance(ev, DropoutStarted):
                out.extend(self.low_throughput.dropout_started(ev.start))
            elif isinstance(ev, DropoutEnded):
                self.low_throughput.dropout_ended(ev.end)
            out.append(ev)
        return out
