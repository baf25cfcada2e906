"""Capture sources: what the encoder turns into a stream.

A video source is asked, once per output frame, for a BGR picture at the session's resolution
(``video(frame_number, capture_time_ms)``); it must not block.
- ``testpattern``: a moving picture with the machine-readable frame code (and a beep tone).
- ``file:PATH``: any file PyAV reads, looped (its audio, resampled, is silence if it has
  none). The frame code is drawn over it only when asked (``framecode``, the encoder's
  ``--framecode``): it is the user's own picture.
- ``camera:N`` / ``camera:/dev/videoX``: a camera through OpenCV (``encoder.camera``).

Audio is picked separately (``encoder.audio_sources.open_audio``); ``FileSource.audio(n)``
gives the file's own track (planar float32, mono) to ``--audio file``.
"""

from __future__ import annotations

import logging
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
from av.audio.resampler import AudioResampler

from encoder.camera import CameraSource, parse_camera_device
from encoder.framecode import FrameCode, draw_frame_code
from encoder.testpattern import TestPattern
from encoder.video_source import SourceError, VideoSource

log = logging.getLogger(__name__)


SOURCE_SPECS_HELP = (
    "testpattern, file:PATH (a media file, looped) or camera:N (N a camera number like 0, or "
    "a device path like /dev/video0)")


class TestPatternSource:
    __test__ = False  # not a pytest test class despite the name

    def __init__(self, width: int, height: int, fps: int, title: str) -> None:
        self._pattern = TestPattern(width, height, fps, title)

    def describe(self) -> str:
        p = self._pattern
        return f"test pattern: {p.width}x{p.height} at {p.fps:g} fps"

    def video(self, frame_number: int, capture_time_ms: int) -> npt.NDArray[np.uint8]:
        return self._pattern.video_frame(frame_number, capture_time_ms)

    def close(self) -> None:
        pass


class FileSource:
    """A media file, looped, paced by the caller's frame clock (frames are repeated or dropped
    to match the session fps). `framecode`: draw the frame code band over every picture (for
    measuring; off by default, the picture is the user's)."""

    def __init__(self, path: Path, width: int, height: int, fps: int, sample_rate: int,
                 framecode: bool = False) -> None:
        if not path.is_file():
            raise SourceError(f"source file {str(path)!r} does not exist or is not a file")
        self.path = path
        self._framecode = framecode
        self._size = (width, height)
        self._fps = fps
        self._sample_rate = sample_rate
        try:
            self._container: Any = av.open(str(path))
        except av.FFmpegError as exc:
            raise SourceError(f"cannot read source file {str(path)!r}: {exc}") from exc
        if not self._container.streams.video:
            raise SourceError(f"source file {str(path)!r} has no video stream")
        self._has_audio = bool(self._container.streams.audio)
        self._resampler = AudioResampler(format="fltp", layout="mono", rate=sample_rate)
        self._frames: deque[tuple[float, npt.NDArray[np.uint8]]] = deque()
        self._audio = np.zeros((1, 0), dtype=np.float32)
        self._current = np.zeros((height, width, 3), dtype=np.uint8)
        self._loop_offset_s = 0.0
        self._last_pts_s = 0.0
        self._decoder = self._decode()
        self._eof_in_a_row = 0
        stream = self._container.streams.video[0]
        self._file_size = (stream.codec_context.width, stream.codec_context.height)
        self._file_fps = float(stream.average_rate or stream.guessed_rate or 0)

    @property
    def has_audio(self) -> bool:
        """Whether the file has an audio track (without one, ``audio()`` is silence)."""
        return self._has_audio

    def describe(self) -> str:
        w, h = self._file_size
        rate = f"{self._file_fps:g} fps" if self._file_fps > 0 else "an unknown frame rate"
        sound = "with audio" if self._has_audio else "no audio"
        code = ", frame code drawn" if self._framecode else ""
        return (f"file {str(self.path)!r}: {w}x{h} at {rate}, {sound}, looped "
                f"(sent as {self._size[0]}x{self._size[1]} at {self._fps}{code})")

    def _decode(self) -> Any:
        streams = [self._container.streams.video[0]]
        if self._has_audio:
            streams.append(self._container.streams.audio[0])
        return self._container.decode(*streams)

    def _pull(self) -> bool:
        try:
            frame = next(self._decoder)
        except StopIteration:
            self._eof_in_a_row += 1
            if self._eof_in_a_row > 2:
                raise SourceError(
                    f"source file {str(self.path)!r} has no decodable frames") from None
            self._loop_offset_s = self._last_pts_s + 1 / self._fps
            self._container.seek(0)
            self._decoder = self._decode()
            return True
        except av.FFmpegError as exc:
            raise SourceError(f"source file {str(self.path)!r} became unreadable: {exc}") from exc
        self._eof_in_a_row = 0
        t = self._loop_offset_s + float((frame.pts or 0) * (frame.time_base or Fraction(0)))
        if isinstance(frame, av.VideoFrame):
            self._last_pts_s = max(self._last_pts_s, t)
            img: npt.NDArray[np.uint8] = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
            if (img.shape[1], img.shape[0]) != self._size:
                img = np.asarray(cv2.resize(img, self._size, interpolation=cv2.INTER_AREA),
                                 np.uint8)
            self._frames.append((t, img))
        else:
            for r in self._resampler.resample(frame):
                self._audio = np.concatenate([self._audio, r.to_ndarray().reshape(1, -1)], axis=1)
        return True

    def video(self, frame_number: int, capture_time_ms: int) -> npt.NDArray[np.uint8]:
        t = frame_number / self._fps
        while not self._frames or self._frames[-1][0] < t:
            self._pull()
        while self._frames and self._frames[0][0] <= t:
            self._current = self._frames.popleft()[1]
        out = self._current.copy()
        if self._framecode:
            draw_frame_code(out, FrameCode(frame_number, capture_time_ms))
        return out

    def audio(self, n: int) -> npt.NDArray[np.float32]:
        if not self._has_audio:
            return np.zeros((1, n), dtype=np.float32)
        guard = 0
        while self._audio.shape[1] < n and guard < 1000:
            self._pull()
            guard += 1
        out = self._audio[:, :n]
        self._audio = self._audio[:, out.shape[1]:]
        if out.shape[1] < n:
            out = np.concatenate([out, np.zeros((1, n - out.shape[1]), np.float32)], axis=1)
        return out.astype(np.float32)

    def close(self) -> None:
        self._container.close()


def open_source(spec: str, width: int, height: int, fps: int, sample_rate: int,
                title: str = "steadycast", framecode: bool = False) -> VideoSource:
    """Open the video source named by ``spec``; a bad spec or device raises SourceError.
    `framecode`: draw the frame code over a file source too (the test pattern always has
    it)."""
    if spec == "testpattern":
        return TestPatternSource(width, height, fps, title)
    if spec.startswith("file:"):
        path = spec[len("file:"):].strip()
        if not path:
            raise SourceError("file: needs a path after the colon, e.g. file:/home/me/clip.mp4")
        return FileSource(Path(path).expanduser(), width, height, fps, sample_rate,
                          framecode=framecode)
    if spec.startswith("camera:"):
        return CameraSource(parse_camera_device(spec[len("camera:"):]), width, height, fps)
    raise SourceError(f"unknown source {spec!r}: use {SOURCE_SPECS_HELP}")
