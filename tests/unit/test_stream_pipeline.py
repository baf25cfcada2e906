"""A real `StreamPipeline` (decode, output clock, encode) with in-memory destinations.

No network: the destination factory returns stand-ins that record what the pipeline starts,
offers and stops. The media is a real H.264 + AAC encode (tests.unit.test_recording_backfill).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any, cast

from monitor.dropout import CAUSE_RELAY_STOPPED
from relay.output.destination import Destination
from relay.output.pipeline import StreamPipeline
from relay.output.playout import AccessUnit
from relay.output.transcode import OutPacket
from relay.settings import OutputProfile, StreamSettings
from tests.unit.test_recording_backfill import encode_units
from uplink import TrackKind

PROFILE = OutputProfile(width=320, height=180, fps=30, video_kbps=300,
                        x264_preset="ultrafast")
AAC_FRAME_SAMPLES = 1024


class RecordingDestination:
    """Stands in for `relay.output.destination.Destination`: records the pipeline's calls."""

    def __init__(self) -> None:
        self.starts = 0
        self.offered: list[OutPacket] = []
        self.stops: list[tuple[bool, str | None]] = []  # (drain, end_cause)

    def start(self) -> None:
        self.starts += 1

    def offer(self, pkt: OutPacket) -> None:
        self.offered.append(pkt)

    def stop(self, drain: bool = False, timeout_s: float = 0.0,
             end_cause: str | None = None) -> None:
        self.stops.append((drain, end_cause))

    def status(self) -> dict[str, Any]:
        return {"name": "memory", "packets_offered": len(self.offered)}


class Factory:
    def __init__(self) -> None:
        self.made: list[RecordingDestination] = []

    def __call__(self, video_template: Any, audio_template: Any) -> list[Destination]:
        assert video_template is not None and audio_template is not None
        dest = RecordingDestination()
        self.made.append(dest)
        return [cast(Destination, dest)]


def wait_for(what: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.02)
    return what()


def test_pipeline_goes_on_air_at_live_media_and_finishes_after_end() -> None:
    tracks, units = encode_units(45, audio=True)  # 1.5 s at 30 fps, with AAC
    video_ids = {t.track_id for t in tracks if t.kind == TrackKind.VIDEO}
    time_bases = {t.track_id: Fraction(t.time_base_num, t.time_base_den) for t in tracks}
    settings = StreamSettings(name="farm1", token="t", buffer_ms=200, record=False)
    factory = Factory()
    pipeline = StreamPipeline(settings, PROFILE, factory)
    try:
        for track in tracks:
            pipeline.configure(track)
        for seq, u in enumerate(units):
            tb = time_bases[u.track_id]
            pipeline.push(AccessUnit(
                track_id=u.track_id, is_video=u.track_id in video_ids, pts_s=float(u.pts * tb),
                dts_s=float(u.dts * tb), keyframe=u.keyframe, payload=u.payload,
                capture_time_us=u.capture_time_us, seq=seq))
        assert wait_for(lambda: pipeline.status()["output_source"] == "live"), pipeline.status()
        status = pipeline.status()
        assert status["on_air"] and status["destinations"] == [
            {"name": "memory", "packets_offered": status["destinations"][0]["packets_offered"]}]
        pipeline.end()
        assert pipeline.finished.wait(20), "the pipeline did not finish after end()"
    finally:
        pipeline.stop()

    assert pipeline.error is None
    assert len(factory.made) == 1  # one platform session
    dest = factory.made[0]
    assert dest.starts == 1
    assert dest.stops[0] == (True, None)  # drained on the sender's end
    status = pipeline.status()
    assert status["output_source"] == "offline" and not status["on_air"]
    assert status["buffered_units"] == 0
    frames = status["output_frames"]
    assert frames["live"] > 0 and sum(frames.values()) >= 45
    video = [p for p in dest.offered if p.is_video]
    audio = [p for p in dest.offered if not p.is_video]
    assert video[0].keyframe and len(video) == sum(frames.values())  # flushed: one per frame
    # exactly one frame's worth of audio per frame: AAC frames cover the frames encoded
    audio_samples = sum(frames.values()) * PROFILE.audio_sample_rate / PROFILE.fps
    assert abs(len(audio) - audio_samples / AAC_FRAME_SAMPLES) <= 2


def test_go_on_air_opens_the_sessions_on_the_slate_and_stop_closes_them() -> None:
    settings = StreamSettings(name="farm2", token="t", buffer_ms=200, record=False)
    factory = Factory()
    pipeline = StreamPipeline(settings, PROFILE, factory)
    try:
        pipeline.go_on_air()
        assert wait_for(lambda: pipeline.status()["output_source"] == "slate"), \
            pipeline.status()
        assert wait_for(lambda: len(factory.made[0].offered) > 0)
    finally:
        pipeline.stop()
    assert pipeline.finished.is_set()
    assert len(factory.made) == 1 and factory.made[0].starts == 1
    assert factory.made[0].stops == [(False, CAUSE_RELAY_STOPPED)]
    assert pipeline.status()["output_frames"]["slate"] > 0
    assert pipeline.status()["output_frames"]["live"] == 0
