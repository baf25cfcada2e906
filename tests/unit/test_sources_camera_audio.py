"""The camera source keeps giving frames through an unplug and a reconnect; audio sources give
(1, n) float32 and fail in plain words; the device reader + resampler work on a real input."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from encoder.audio_sources import (
    DeviceAudio,
    FileAudio,
    SampleBuffer,
    SilentAudio,
    ToneAudio,
    default_audio_spec,
    open_audio,
)
from encoder.camera import CameraSource, fit_to_size, lost_picture
from encoder.sources import FileSource, SourceError, TestPatternSource, open_source
from encoder.testpattern import ToneGenerator

DEADLINE_S = 5.0
CAMERA_LEVEL = 200  # grey level of the frames of the fake camera


def _poll(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _write_camera_clip(path: Path, frames: int, size: tuple[int, int] = (64, 48),
                       fps: int = 20) -> None:
    """An MJPG .avi that OpenCV reads back as a stand-in camera."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        img = np.full((size[1], size[0], 3), CAMERA_LEVEL, np.uint8)
        img[:4, : (i * 3) % size[0] + 1] = 255  # a little motion
        writer.write(img)
    writer.release()


def _write_clip_with_tone(path: Path, seconds: float = 0.5) -> None:
    with av.open(str(path), "w") as out:
        v = out.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"
        for i in range(round(seconds * 10)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 90, np.uint8), format="bgr24")
            frame.pts = i
            out.mux(v.encode(frame))
        t = np.arange(round(seconds * 48000)) / 48000
        tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, tone.size - 1024 + 1, 1024):
            af = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp",
                                            layout="mono")
            af.sample_rate, af.pts, af.time_base = 48000, start, Fraction(1, 48000)
            out.mux(a.encode(af))
        out.mux(v.encode(None))
        out.mux(a.encode(None))


# --- camera ---------------------------------------------------------------------------------
def test_unplugged_camera_goes_lost_then_comes_back_without_restarting(tmp_path: Path) -> None:
    short, long = tmp_path / "short.avi", tmp_path / "long.avi"
    _write_camera_clip(short, frames=30)  # runs out after ~1.2 s: read() fails, as unplugged
    _write_camera_clip(long, frames=200)
    opened: list[str] = []
    plan = {"next": "short"}

    def opener() -> cv2.VideoCapture:
        which = plan["next"]
        opened.append(which)
        if which == "short":
            plan["next"] = "unplugged"
            return cv2.VideoCapture(str(short))
        if which == "unplugged":
            return cv2.VideoCapture(str(tmp_path / "no-such-camera.avi"))  # isOpened() False
        return cv2.VideoCapture(str(long))

    cam = CameraSource("test", 160, 120, 20, opener=opener, backoff_first_s=0.05,
                       backoff_max_s=0.2)
    try:
        assert (cam.actual_width, cam.actual_height, cam.actual_fps) == (64, 48, 20.0)
        assert cam.describe() == "camera test: 64x48 at 20 fps (asked 160x120 at 20)"
        _poll(lambda: cam.frames_read > 0, "the first camera frame")
        assert cam.state == "ok"
        good = cam.video(0, 0)
        assert good.shape == (120, 160, 3) and good.dtype == np.uint8
        assert abs(float(np.median(good)) - CAMERA_LEVEL) < 10

        def lost_while_frames_keep_coming() -> bool:
            assert cam.video(1, 0).shape == (120, 160, 3)
            return cam.state == "lost"

        _poll(lost_while_frames_keep_coming, "the camera to be reported lost")
        assert cam.lost_episodes == 1
        lost = cam.video(2, 0)
        assert lost.shape == (120, 160, 3)
        assert float(lost.mean()) < 0.6 * float(good.mean())  # darkened ...
        assert int((lost > 230).sum()) > 50  # ... with a caption in white

        _poll(lambda: opened.count("unplugged") >= 2, "reopen attempts while unplugged")
        assert cam.state == "lost"
        assert cam.video(3, 0).shape == (120, 160, 3)
        plan["next"] = "plugged back"
        _poll(lambda: cam.state == "ok", "the camera to come back")
        read_before = cam.frames_read
        _poll(lambda: cam.frames_read >= read_before + 3, "frames after the reconnect")
        again = cam.video(4, 0)
        assert again.shape == (120, 160, 3)
        assert abs(float(np.median(again)) - CAMERA_LEVEL) < 10
        assert cam.lost_episodes == 1
    finally:
        cam.close()
    assert not cam.reader_alive


def test_camera_that_cannot_be_opened_at_start_is_reported_in_plain_words(
        tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.avi")
    with pytest.raises(SourceError, match="camera 0 could not be opened: is it plugged in and "
                                          "not used by another program"):
        CameraSource(0, 160, 120, 20, opener=lambda: cv2.VideoCapture(missing))
    with pytest.raises(SourceError, match="could not be opened"):
        open_source("camera:/nonexistent/video9", 160, 120, 20, 48000)


def test_camera_frames_of_another_shape_are_fitted_with_bars_not_stretched() -> None:
    frame = np.full((48, 64, 3), CAMERA_LEVEL, np.uint8)  # 4:3
    fitted = fit_to_size(frame, 160, 90)  # into 16:9
    assert fitted.shape == (90, 160, 3)
    assert fitted[:, :20].max() == 0 and fitted[:, -20:].max() == 0  # pillarbox
    assert abs(int(fitted[45, 80, 0]) - CAMERA_LEVEL) <= 2
    grey = np.full((90, 160), 50, np.uint8)
    assert fit_to_size(grey, 160, 90).shape == (90, 160, 3)


def test_lost_picture_without_any_frame_is_black_with_a_caption() -> None:
    picture = lost_picture(None, 320, 180)
    assert picture.shape == (180, 320, 3)
    assert np.median(picture) < 10
    assert int((picture > 230).sum()) > 100


@pytest.mark.parametrize(("spec", "message"), [
    ("camera:abc", "neither a camera number nor a device path: use camera:0"),
    ("camera:", "neither a camera number nor a device path"),
    ("camera:-1", "neither a camera number nor a device path"),
    ("file:", "file: needs a path after the colon"),
    ("webcam", "unknown source 'webcam': use testpattern, file:PATH .* or camera:N"),
])
def test_bad_source_specs_name_what_is_valid(spec: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        open_source(spec, 160, 120, 20, 48000)


def test_sources_describe_themselves(tmp_path: Path) -> None:
    pattern = TestPatternSource(320, 180, 30, "t")
    assert pattern.describe() == "test pattern: 320x180 at 30 fps"
    clip = tmp_path / "c.avi"
    _write_camera_clip(clip, frames=5)
    source = FileSource(clip, 160, 120, 30, 48000)
    try:
        line = source.describe()
        assert "64x48 at 20 fps" in line and "no audio" in line and "160x120 at 30" in line
    finally:
        source.close()


# --- audio ----------------------------------------------------------------------------------
class _OtherVideo:
    """A video source that is neither the test pattern nor a file (like a camera)."""

    def video(self, frame_number: int, capture_time_ms: int) -> npt.NDArray[np.uint8]:
        return np.zeros((2, 2, 3), np.uint8)

    def describe(self) -> str:
        return "camera 0: 2x2"

    def close(self) -> None:
        pass


def test_none_and_tone_give_mono_float32_and_auto_follows_the_video_source() -> None:
    pattern = TestPatternSource(64, 48, 10, "t")
    silent = open_audio("none", pattern, 48000)
    assert isinstance(silent, SilentAudio) and "silent AAC track" in silent.describe()
    assert silent.audio(1600).shape == (1, 1600) and not silent.audio(10).any()
    tone = open_audio("tone", pattern, 48000)
    reference = ToneGenerator(sample_rate=48000, channels=1)
    for n in (1600, 1601, 7):
        out = tone.audio(n)
        assert out.dtype == np.float32 and out.shape == (1, n)
        np.testing.assert_array_equal(out, reference.samples(n))
    assert isinstance(open_audio("auto", pattern, 48000), ToneAudio)
    assert isinstance(open_audio("auto", _OtherVideo(), 48000), SilentAudio)
    assert [default_audio_spec(s) for s in ("testpattern", "file:a.mp4", "camera:0")] == [
        "tone", "file", "none"]


def test_file_audio_comes_from_the_file_source(tmp_path: Path) -> None:
    clip = tmp_path / "tone.mp4"
    _write_clip_with_tone(clip)
    video = FileSource(clip, 160, 120, 10, 48000)
    try:
        audio = open_audio("file", video, 48000)
        assert isinstance(audio, FileAudio)
        assert isinstance(open_audio("auto", video, 48000), FileAudio)
        chunks = [audio.audio(4800) for _ in range(4)]
        assert all(c.shape == (1, 4800) and c.dtype == np.float32 for c in chunks)
        assert max(float(np.abs(c).max()) for c in chunks) > 0.3
        audio.close()  # leaves the file to the video source
        assert video.video(0, 0).shape == (120, 160, 3)
    finally:
        video.close()


def test_audio_spec_errors_say_what_to_do_instead(tmp_path: Path) -> None:
    pattern = TestPatternSource(64, 48, 10, "t")
    with pytest.raises(SourceError, match="takes the audio of a file:PATH video source"):
        open_audio("file", pattern, 48000)
    silent_clip = tmp_path / "silent.avi"
    _write_camera_clip(silent_clip, frames=5)
    video = FileSource(silent_clip, 64, 48, 10, 48000)
    try:
        with pytest.raises(SourceError, match="has no audio track; use --audio tone or "
                                              "--audio none"):
            open_audio("file", video, 48000)
        assert isinstance(open_audio("auto", video, 48000), SilentAudio)
    finally:
        video.close()
    with pytest.raises(SourceError, match="unknown audio 'mic': use none, tone, file or "
                                          "device:NAME"):
        open_audio("mic", pattern, 48000)
    with pytest.raises(SourceError, match="device: needs a device name"):
        open_audio("device:", pattern, 48000)


def test_audio_device_that_cannot_be_opened_lists_what_was_tried() -> None:
    with pytest.raises(SourceError) as caught:
        open_audio("device:nonexistent", TestPatternSource(64, 48, 10, "t"), 48000)
    message = str(caught.value)
    assert "audio device 'nonexistent' could not be opened; tried" in message
    assert "--audio tone|none" in message
    if sys.platform.startswith("linux"):
        assert "pulse 'nonexistent'" in message and "alsa 'nonexistent'" in message


def test_device_reader_resamples_a_real_input_to_mono_48k() -> None:
    if "lavfi" not in av.formats_available:
        pytest.skip("this PyAV build has no lavfi input")
    device = DeviceAudio("sine=frequency=440:sample_rate=44100,arealtime", 48000,
                         input_formats=[("lavfi", "{name}")])
    try:
        assert device.device_rate == 44100
        assert "via lavfi: 44100 Hz mono, sent as 48000 Hz mono" in device.describe()
        assert not device.audio(480).any()  # nothing buffered yet: silence, no waiting
        buffer = device.buffer
        _poll(lambda: buffer.buffered >= buffer.target_samples, "device audio")
        chunk = device.audio(buffer.target_samples)
        assert chunk.shape == (1, 4800) and chunk.dtype == np.float32
        assert 0.1 < float(np.abs(chunk).max()) < 0.15  # lavfi sine: amplitude 1/8
        spectrum = np.abs(np.fft.rfft(chunk[0] * np.hanning(chunk.shape[1])))
        peak_hz = float(np.argmax(spectrum)) * 48000 / chunk.shape[1]
        assert abs(peak_hz - 440) <= 10
    finally:
        device.close()
    assert not device.reader_alive


def test_sample_buffer_primes_pads_with_silence_and_bounds_the_delay() -> None:
    buffer = SampleBuffer(sample_rate=1000, target_ms=100, max_ms=400)  # 100 / 400 samples
    assert not buffer.pull(50).any() and buffer.underruns == 0  # priming: silence
    buffer.push(np.arange(1, 151, dtype=np.float32))
    first = buffer.pull(60)  # primed: starts from the newest 100 samples
    np.testing.assert_array_equal(first[0], np.arange(51, 111))
    second = buffer.pull(60)  # only 40 left: padded with silence
    np.testing.assert_array_equal(second[0, :40], np.arange(111, 151))
    assert not second[0, 40:].any() and buffer.underruns == 1
    buffer.push(np.ones(60, np.float32))
    assert not buffer.pull(10).any()  # below the target again: silence while re-priming
    buffer.push(np.ones(1000, np.float32))
    assert buffer.buffered == 400  # the oldest were dropped
    assert buffer.samples_dropped == 50 + 660
