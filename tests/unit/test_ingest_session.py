"""The ingest session core (relay/ingest/session.py): receiver events in, actions out.

Most tests feed ``IngestSession`` hand-made receiver events with hand-picked ``now``; one
feeds it through a real ``UplinkReceiver``, and the last drives ``StreamRuntime`` itself
with stand-ins for the pipeline and recorder threads (no network, no encoder).
"""

from __future__ import annotations

import asyncio
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.dropout import (
    DropoutCause,
    DropoutDetector,
    DropoutEnded,
    DropoutStarted,
    LowThroughputCause,
    LowThroughputDetector,
    LowThroughputEnded,
)
from monitor.events import EventLog, read_events
from monitor.metrics import RelayMetrics
from relay import stream as stream_module
from relay.ingest.session import (
    ConfigureTrack,
    EndOutput,
    IngestAction,
    IngestSession,
    NewTimeline,
    PushUnit,
    RecordEnd,
    RecordMedia,
    RecordSession,
    RecordTrack,
    SessionClosed,
    SessionKind,
    SessionOpened,
    StatsStored,
)
from relay.output.playout import AccessUnit
from relay.settings import RelaySettings, StreamSettings
from relay.stream import StreamRuntime
from uplink import (
    Bye,
    Codec,
    Hello,
    Media,
    MediaReceived,
    SenderStats,
    SessionEnded,
    SessionStarted,
    StatsReceived,
    TrackConfig,
    TrackConfigured,
    TrackKind,
    UplinkReceiver,
    encode,
)

SESSION = b"S" * 16
OTHER_SESSION = b"T" * 16
VIDEO_90K = TrackConfig(track_id=1, kind=TrackKind.VIDEO, codec=Codec.H264, time_base_num=1,
                        time_base_den=90_000, width=640, height=360, sample_rate=0,
                        channels=0, extradata=b"\x01")
AUDIO_48K = TrackConfig(track_id=2, kind=TrackKind.AUDIO, codec=Codec.AAC, time_base_num=1,
                        time_base_den=48_000, width=0, height=0, sample_rate=48_000,
                        channels=1, extradata=b"\x11\x88")


def media(seq: int, track_id: int = 1, pts: int | None = None, *, keyframe: bool = True,
          backfill: bool = False, payload: bytes = b"x" * 100) -> Media:
    ticks = seq * 3000 if pts is None else pts
    return Media(seq=seq, track_id=track_id, keyframe=keyframe, pts=ticks, dts=ticks,
                 capture_time_us=1_000_000 + seq, payload=payload, backfill=backfill)


def started(session_id: bytes = SESSION, resumed: bool = False, next_seq: int = 0,
            continued: bool = False) -> SessionStarted:
    return SessionStarted(session_id=session_id, resumed=resumed, next_seq=next_seq,
                          continued=continued)


def of(kind: type, actions: list[IngestAction]) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def pushed(actions: list[IngestAction]) -> list[AccessUnit]:
    return [a.unit for a in of(PushUnit, actions)]


def open_session(core: IngestSession, *tracks: TrackConfig,
                 now: float = 0.0) -> list[IngestAction]:
    out = core.on_event(started(), now)
    for t in tracks or (VIDEO_90K, AUDIO_48K):
        out += core.on_event(TrackConfigured(t, changed=True), now)
    return out


# --- sessions and tracks ---------------------------------------------------------------------


def test_a_new_session_opens_a_recording_session_and_a_new_timeline_in_that_order() -> None:
    core = IngestSession()
    actions = core.on_event(started(), 0.0)
    assert actions == [SessionOpened(SESSION, SessionKind.NEW, 0), RecordSession(SESSION),
                       NewTimeline()]


def test_a_changed_track_reaches_recorder_then_pipeline_and_a_repeat_configures_nothing() -> None:
    core = IngestSession()
    core.on_event(started(), 0.0)
    assert core.on_event(TrackConfigured(VIDEO_90K, changed=True), 0.0) == [
        RecordTrack(VIDEO_90K), ConfigureTrack(VIDEO_90K)]
    assert core.on_event(TrackConfigured(VIDEO_90K, changed=False), 0.0) == []
    assert core.is_video(1) and core.time_base(1) == Fraction(1, 90_000)


def test_a_new_session_forgets_time_bases_video_tracks_and_the_live_edge() -> None:
    core = IngestSession()
    open_session(core)
    core.on_event(MediaReceived(media(10)), 0.0)
    assert core.live_next_seq == 11
    core.on_event(started(OTHER_SESSION), 1.0)
    assert core.live_next_seq == 0
    assert core.time_base(1) is None and not core.is_video(1)
    # its seq 0 is live again once its TRACK came
    core.on_event(TrackConfigured(VIDEO_90K, changed=True), 1.0)
    assert [u.seq for u in pushed(core.on_event(MediaReceived(media(0)), 1.0))] == [0]


@pytest.mark.parametrize("kind", [SessionKind.RESUMED, SessionKind.CONTINUED])
def test_resumed_and_continued_sessions_keep_time_bases_and_the_live_edge(
        kind: SessionKind) -> None:
    core = IngestSession()
    open_session(core)
    core.on_event(MediaReceived(media(10)), 0.0)
    ev = started(resumed=kind == SessionKind.RESUMED, next_seq=11,
                 continued=kind == SessionKind.CONTINUED)
    assert core.on_event(ev, 1.0) == [SessionOpened(SESSION, kind, 11)]  # no new timeline
    assert core.live_next_seq == 11
    assert core.time_base(1) == Fraction(1, 90_000) and core.is_video(1)
    # a resend of what the live already had is archived only
    actions = core.on_event(MediaReceived(media(10)), 1.0)
    assert of(RecordMedia, actions) and not pushed(actions)
    assert [u.seq for u in pushed(core.on_event(MediaReceived(media(11)), 1.0))] == [11]


# --- media -----------------------------------------------------------------------------------


def test_every_unit_goes_to_the_recorder_with_received_below() -> None:
    core = IngestSession()
    open_session(core)
    m = media(0)
    actions = core.on_event(MediaReceived(m), 0.0, next_seq=1)
    assert of(RecordMedia, actions) == [RecordMedia(m, 1)]
    assert of(RecordMedia, core.on_event(MediaReceived(media(5)), 0.0)) == [
        RecordMedia(media(5), None)]  # no next_seq given: the recorder skips no gap early


def test_a_live_unit_becomes_one_playout_unit_after_its_recording() -> None:
    core = IngestSession()
    open_session(core)
    m = Media(seq=0, track_id=1, keyframe=True, pts=183_003, dts=180_000,
              capture_time_us=1_700_000_000_123_456, payload=b"frame")
    actions = core.on_event(MediaReceived(m), 0.0, next_seq=1)
    assert [type(a) for a in actions] == [RecordMedia, PushUnit]
    assert pushed(actions) == [AccessUnit(track_id=1, is_video=True, pts_s=183_003 / 90_000,
                                          dts_s=2.0, keyframe=True, payload=b"frame",
                                          capture_time_us=1_700_000_000_123_456, seq=0)]


def test_backfill_and_resends_below_the_live_edge_go_to_the_recorder_but_not_to_playout() -> None:
    core = IngestSession()
    open_session(core)
    assert [u.seq for u in pushed(core.on_event(MediaReceived(media(0)), 0.0))] == [0]
    assert [u.seq for u in pushed(core.on_event(MediaReceived(media(5)), 0.0))] == [5]
    for late in (media(3, backfill=True), media(4), media(5)):  # backfill, resend, repeat
        actions = core.on_event(MediaReceived(late), 0.0)
        assert of(RecordMedia, actions) == [RecordMedia(late, None)]
        assert pushed(actions) == []
    assert core.live_next_seq == 6
    # backfill above the live edge is not live either, and does not move the edge
    assert pushed(core.on_event(MediaReceived(media(9, backfill=True)), 0.0)) == []
    assert core.live_next_seq == 6


def test_pts_and_dts_are_converted_exactly_from_90_khz_and_1_48000() -> None:
    core = IngestSession()
    open_session(core)
    v = pushed(core.on_event(MediaReceived(media(0, pts=90_000 * 3600 + 1)), 0.0))[0]
    assert v.pts_s == float(Fraction(90_000 * 3600 + 1, 90_000)) and v.is_video
    a = pushed(core.on_event(MediaReceived(media(1, track_id=2, pts=1024 * 7)), 0.0))[0]
    assert a.pts_s == a.dts_s == 7168 / 48_000 == float(Fraction(7168, 48_000))
    assert not a.is_video


@given(ticks=st.integers(min_value=-(2**62), max_value=2**63),
       num=st.integers(min_value=1, max_value=2**31 - 1),
       den=st.integers(min_value=1, max_value=2**31 - 1))
def test_time_conversion_is_the_correctly_rounded_fraction(ticks: int, num: int,
                                                           den: int) -> None:
    core = IngestSession()
    track = TrackConfig(track_id=3, kind=TrackKind.VIDEO, codec=Codec.H264, time_base_num=num,
                        time_base_den=den, width=2, height=2, sample_rate=0, channels=0)
    open_session(core, track)
    unit = pushed(core.on_event(MediaReceived(media(0, track_id=3, pts=ticks)), 0.0))[0]
    assert unit.pts_s == float(ticks * Fraction(num, den)) == unit.dts_s


def test_a_unit_of_a_track_without_track_config_is_archived_never_played() -> None:
    core = IngestSession()
    open_session(core, VIDEO_90K)
    m = media(0, track_id=7)
    actions = core.on_event(MediaReceived(m), 0.0, next_seq=1)  # no exception
    assert actions == [RecordMedia(m, 1)]
    assert core.units_without_track == 1 and core.live_next_seq == 0
    assert [u.seq for u in pushed(core.on_event(MediaReceived(media(1)), 0.0))] == [1]


def test_sender_stats_are_stored_and_become_the_low_throughput_reference() -> None:
    core = IngestSession()
    actions = core.on_event(StatsReceived(SenderStats(5000, 1200, 900)), 0.0)
    assert actions == [StatsStored(5000, 1200, 900)]
    assert StatsStored(5000, 1200, 900).as_dict() == {"backlog_bytes": 5000, "backlog_ms": 1200,
                                    "target_kbps": 900}
    assert core.low_throughput.reference_kbps == 900.0


# --- the detectors and the end ---------------------------------------------------------------


def test_dropout_events_come_out_as_values_before_the_unit_that_ends_them() -> None:
    core = IngestSession(DropoutDetector(threshold_s=0.5))
    open_session(core)
    assert core.connection_lost(0.5) == []  # not armed before the first media
    core.on_event(MediaReceived(media(0)), 1.0)
    assert core.poll(1.4) == []
    assert core.poll(1.5) == [DropoutStarted(1.0, DropoutCause.NO_DATA)]
    assert core.in_dropout
    assert core.connection_lost(2.0) == []  # already open: its cause becomes the loss
    actions = core.on_event(MediaReceived(media(1)), 4.0)
    assert actions[0] == DropoutEnded(1.0, 4.0, DropoutCause.CONNECTION_LOST)
    assert [type(a) for a in actions[1:]] == [RecordMedia, PushUnit]
    assert not core.in_dropout
    assert core.connection_lost(5.0) == [DropoutStarted(5.0, DropoutCause.CONNECTION_LOST)]


def test_a_dropout_ends_an_open_low_throughput_episode_first() -> None:
    lt = LowThroughputDetector(share=0.5, min_s=1.0, recover_s=1.0, window_s=1.0)
    core = IngestSession(DropoutDetector(threshold_s=2.0), lt)
    open_session(core)
    core.on_event(StatsReceived(SenderStats(0, 5000, 1000)), 0.0)  # target 1000 kbit/s
    t = 0.0
    while not core.in_low_throughput:  # 100 kbit/s: a tenth of the target
        assert t < 10, "no low-throughput episode"
        core.on_event(MediaReceived(media(round(t * 4), payload=b"x" * 3125)), t)
        t += 0.25
        core.poll(t)
    start = lt.current_start
    assert start is not None
    assert core.connection_lost(t) == [
        LowThroughputEnded(start, t, LowThroughputCause.BELOW_TARGET),
        DropoutStarted(t, DropoutCause.CONNECTION_LOST)]
    assert not core.in_low_throughput and core.in_dropout


def test_session_end_stops_the_detectors_then_ends_pipeline_and_recorder() -> None:
    core = IngestSession(DropoutDetector(threshold_s=0.5))
    open_session(core)
    core.on_event(MediaReceived(media(0)), 1.0)
    core.connection_lost(2.0)
    actions = core.on_event(SessionEnded("done"), 3.0)
    assert actions == [SessionClosed("done"), DropoutEnded(2.0, 3.0, DropoutCause.CONNECTION_LOST),
                       EndOutput(), RecordEnd()]
    assert not core.in_dropout
    assert core.poll(10.0) == []  # disarmed until the next media
    assert core.on_event(SessionEnded(""), 11.0) == [SessionClosed(""), EndOutput(), RecordEnd()]


def test_anything_but_a_receiver_event_is_refused() -> None:
    with pytest.raises(TypeError):
        IngestSession().on_event("MEDIA", 0.0)  # type: ignore[arg-type]


# --- through a real receiver -----------------------------------------------------------------


def test_through_a_receiver_a_gap_filled_after_a_jump_is_archived_not_played() -> None:
    receiver = UplinkReceiver(buffer_ms=1000)
    core = IngestSession()
    actions: list[IngestAction] = []

    def send(*messages: object) -> None:
        for msg in messages:
            for ev in receiver.receive(encode(msg), 0.0):  # type: ignore[arg-type]
                actions.extend(core.on_event(ev, 0.0, receiver.next_seq))

    receiver.connection_made(0.0)
    send(Hello(SESSION), VIDEO_90K, AUDIO_48K, media(0), media(1, track_id=2), media(4))
    receiver.connection_lost(0.1)
    receiver.connection_made(0.2)  # the sender resends what it holds: 2 and 3 are new here
    send(Hello(SESSION, acked_seq=2), VIDEO_90K, AUDIO_48K, media(2), media(3), media(4),
         media(5))
    assert [u.seq for u in pushed(actions)] == [0, 1, 4, 5]
    assert [(a.media.seq, a.received_below) for a in of(RecordMedia, actions)] == [
        (0, 1), (1, 2), (4, 2), (2, 3), (3, 5), (5, 6)]  # 4 again is a duplicate: no event
    assert of(SessionOpened, actions) == [SessionOpened(SESSION, SessionKind.NEW, 0),
                                          SessionOpened(SESSION, SessionKind.RESUMED, 2)]
    assert len(of(NewTimeline, actions)) == 1
    assert of(ConfigureTrack, actions) == [ConfigureTrack(VIDEO_90K), ConfigureTrack(AUDIO_48K)]


# --- StreamRuntime applies the actions -------------------------------------------------------


class FakePipeline:
    """Stands in for StreamPipeline's thread: records what it is told."""

    made: list[FakePipeline] = []

    def __init__(self, *args: object) -> None:
        self.calls: list[tuple[str, object]] = []
        self.finished = threading.Event()
        self.error: str | None = None
        self.buffer_ms = 0
        FakePipeline.made.append(self)

    def configure(self, track: TrackConfig) -> None:
        self.calls.append(("configure", track.track_id))

    def push(self, unit: AccessUnit) -> None:
        self.calls.append(("push", unit))

    def new_timeline(self) -> None:
        self.calls.append(("new_timeline", None))

    def end(self) -> None:
        self.calls.append(("end", None))
        self.finished.set()

    def stop(self) -> None:
        self.finished.set()

    def status(self) -> dict[str, Any]:
        return {"output_source": "live", "buffer_ms": 0, "on_air": True, "destinations": []}


class FakeRecorder:
    """Stands in for Recorder's thread: records what it is told."""

    made: list[FakeRecorder] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.calls: list[tuple[str, object]] = []
        self.alive = True
        self.kept = None
        FakeRecorder.made.append(self)

    def new_session(self, session_id: bytes) -> None:
        self.calls.append(("new_session", session_id))

    def track(self, track: TrackConfig, changed: bool) -> None:
        self.calls.append(("track", (track.track_id, changed)))

    def media(self, m: Media, received_below: int | None = None) -> None:
        self.calls.append(("media", (m.seq, received_below)))

    def end_session(self) -> None:
        self.calls.append(("end_session", None))

    def close(self, wait: bool = True) -> None:
        self.calls.append(("close", wait))

    def take_notices(self) -> list[object]:
        return []

    def backlogged(self, share: float = 1.0) -> bool:
        return False

    def status(self) -> dict[str, Any]:
        return {"state": "recording", "error": None, "file": None}


def test_stream_runtime_applies_the_core_actions_to_pipeline_recorder_and_event_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "StreamPipeline", FakePipeline)
    monkeypatch.setattr(stream_module, "Recorder", FakeRecorder)
    FakePipeline.made.clear()
    FakeRecorder.made.clear()
    settings = StreamSettings(name="farm1", token="t" * 20, buffer_ms=1000, record=True)
    relay = RelaySettings(state_dir=tmp_path / "state", record_dir=tmp_path / "rec",
                          dropout_ms=50, streams=(settings,))
    metrics = RelayMetrics()
    events_path = tmp_path / "events.jsonl"
    runtime = StreamRuntime(settings, relay, metrics, EventLog(events_path))
    receiver = runtime.receiver = runtime._new_receiver()

    def send(*messages: object) -> None:
        for msg in messages:
            for ev in receiver.receive(encode(msg), time.monotonic()):  # type: ignore[arg-type]
                runtime._on_event(ev)

    receiver.connection_made(time.monotonic())
    send(Hello(SESSION), VIDEO_90K, media(0), media(2, backfill=True), media(1),
         SenderStats(10, 20, 30))
    (pipeline,), (recorder,) = FakePipeline.made, FakeRecorder.made
    assert [c for c in pipeline.calls if c[0] != "push"] == [("new_timeline", None),
                                                            ("configure", 1)]
    assert [u.seq for k, u in pipeline.calls
            if k == "push" and isinstance(u, AccessUnit)] == [0, 1]  # not the backfill
    assert recorder.calls == [("new_session", SESSION), ("track", (1, True)),
                              ("media", (0, 1)), ("media", (2, 1)), ("media", (1, 3))]
    assert runtime.last_stats == {"backlog_bytes": 10, "backlog_ms": 20, "target_kbps": 30}
    assert metrics.ingest_bytes.labels("farm1")._value.get() == 300
    assert runtime.state == "reconnecting"  # no WebSocket attached in this test

    time.sleep(0.1)  # longer than dropout_ms without media
    asyncio.run(runtime.tick())
    assert runtime.status()["in_dropout"]
    send(media(3), Bye("bye"))
    assert runtime.ended and runtime.recorder is None and runtime.dropouts == 1
    assert pipeline.calls[-1] == ("end", None)
    assert recorder.calls[-3:] == [("media", (3, 4)), ("end_session", None), ("close", False)]
    names = [e["event"] for e in read_events(events_path)]
    assert names == ["session_started", "ingest_dropout_started", "ingest_outage",
                     "session_ended"]
