"""An output pipeline that fails is reported and replaced: the stream goes live again on resume.

Issue 13, fault 4: a TRACK the media stack could not take killed the pipeline thread, and the
stream never went live again, because the pipeline made on resume was never told the tracks
(a resumed sender repeats its TRACKs unchanged). Here a real `StreamRuntime` is fed a real
H.264 encode through a real `UplinkReceiver`, the pipeline's decoder raises once inside the
thread, and the same session resumes on a new connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.events import EventLog, read_events
from monitor.metrics import RelayMetrics
from monitor.redact import REDACTOR
from relay.output import transcode
from relay.settings import OutputProfile, RelaySettings, StreamSettings
from relay.stream import StreamRuntime
from tests.unit.test_recording_backfill import as_media, encode_units
from uplink import Hello, UplinkReceiver, encode

SESSION = b"P" * 16
SECRET_TOKEN = "pipeline-test-token-9131"


def wait_for(what: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.05)
    return what()


def test_a_failed_pipeline_is_reported_and_the_stream_goes_live_again_on_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tracks, units = encode_units(90, audio=False)  # a keyframe every 30 frames
    media = as_media(units)
    assert media[30].keyframe
    settings = StreamSettings(name="farm1", token=SECRET_TOKEN, buffer_ms=300, record=False)
    relay = RelaySettings(output=OutputProfile(width=320, height=180, fps=30, video_kbps=300,
                                               x264_preset="ultrafast"), streams=(settings,))
    metrics = RelayMetrics()
    events_path = tmp_path / "events.jsonl"
    runtime = StreamRuntime(settings, relay, metrics, EventLog(events_path))

    real_decode = transcode.IngestDecoder.decode_video
    calls = {"n": 0}

    def decode_failing_once(self: transcode.IngestDecoder, unit: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError(f"decoder blew up (token {SECRET_TOKEN})")
        return real_decode(self, unit)  # type: ignore[arg-type]

    monkeypatch.setattr(transcode.IngestDecoder, "decode_video", decode_failing_once)
    REDACTOR.add(SECRET_TOKEN)

    receiver = runtime.receiver = UplinkReceiver(buffer_ms=settings.buffer_ms)

    def connection(messages: list[bytes]) -> None:
        receiver.connection_made(time.monotonic())
        for data in messages:
            for ev in receiver.receive(data, time.monotonic()):
                runtime._on_event(ev)
        receiver.connection_lost(time.monotonic())

    try:
        connection([encode(Hello(SESSION)), *(encode(t) for t in tracks),
                    *(encode(m) for m in media[:30])])
        first = runtime.pipeline
        assert first is not None
        assert first.finished.wait(20), "the pipeline did not fail"
        status = runtime.status()
        assert status["output_source"] == "offline"
        assert "RuntimeError: decoder blew up" in status["pipeline_error"]
        assert SECRET_TOKEN not in str(status)
        assert metrics.pipeline_failures.labels("farm1")._value.get() == 1
        failed = [e for e in read_events(events_path) if e["event"] == "pipeline_failed"]
        assert len(failed) == 1 and SECRET_TOKEN not in str(failed)

        # the same session resumes: TRACKs repeated unchanged, then the rest of the media
        connection([encode(Hello(SESSION, acked_seq=30)), *(encode(t) for t in tracks),
                    *(encode(m) for m in media[30:])])
        assert runtime.pipeline is not first
        assert wait_for(lambda: runtime.status()["output_source"] == "live"), runtime.status()
        assert runtime.status()["pipeline_error"] is None
    finally:
        if runtime.pipeline is not None:
            runtime.pipeline.stop()
