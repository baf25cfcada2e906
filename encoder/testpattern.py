"""Test-pattern source: synthetic video with a frame code, and a beeping tone.

Video (``TestPattern``): a hue gradient scrolling left to right (global motion, so the encoder
has real work), a vertical bar sweeping across, a circle orbiting the centre, a box of
human-readable text (title, frame number, capture time HH:MM:SS.mmm UTC, size and rate), a
white "beep" square in the bottom-right corner during the first 200 ms of every media second,
and the machine-readable frame code (``encoder.framecode``) in the top band. Everything
depends only on the frame number and capture time, so frame n always looks the same.

Audio (``ToneGenerator``): a tone with a 1 s period, 200 ms at twice the base frequency (a
beep, 880 Hz by default) then 800 ms at the base frequency (440 Hz). The beep starts at
sample 0 and every ``sample_rate`` samples after, so it lines up with the beep square of
video frames whose media time (frame_number / fps) is a whole second when both start at 0.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from encoder.framecode import FrameCode, code_band_height, draw_frame_code

SCROLL_PERIOD_S = 8.0  # the background gradient moves one frame width in this time
BAR_SWEEP_PERIOD_S = 4.0  # the bar crosses the frame once in this time
ORBIT_PERIOD_S = 3.0  # the circle goes round once in this time
BAR_WIDTH_FRACTION = 1 / 40
CIRCLE_RADIUS_FRACTION = 0.09  # of the frame height
ORBIT_RADIUS_FRACTION = 0.25  # of the frame height

BEEP_PERIOD_MS = 1000
BEEP_DURATION_MS = 200
BEEP_FREQUENCY_RATIO = 2.0  # beep frequency / base frequency

_TEXT_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT_SCALE_PER_PX_HEIGHT = 0.9 / 360  # font scale at 360 rows is 0.9
_MS_PER_DAY = 86_400_000


def format_time_of_day_ms(time_ms: int) -> str:
    """HH:MM:SS.mmm (UTC) of a time in ms since the Unix epoch."""
    ms_of_day = time_ms % _MS_PER_DAY
    hours, rest = divmod(ms_of_day, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


class TestPattern:
    """Generates BGR frames of a moving test picture with a frame code at the top."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, width: int, height: int, fps: float, title: str = "steadycast") -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not title.isascii():
            raise ValueError(f"title must be ASCII (cv2.putText), got {title!r}")
        self.width = width
        self.height = height
        self.fps = fps
        self.title = title
        self.band_height = code_band_height(width, height)
        # a hue gradient that repeats every `width` columns, twice as wide as the frame, so
        # every scroll offset is one contiguous slice
        hue = (np.arange(2 * width) * 180 // width % 180).astype(np.uint8)
        value = np.linspace(230, 90, height).astype(np.uint8)
        hsv = np.empty((height, 2 * width, 3), dtype=np.uint8)
        hsv[:, :, 0] = hue[None, :]
        hsv[:, :, 1] = 170
        hsv[:, :, 2] = value[:, None]
        self._background: npt.NDArray[np.uint8] = np.asarray(
            cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR), dtype=np.uint8
        )
        self._font_scale = max(0.25, height * _TEXT_SCALE_PER_PX_HEIGHT)
        self._thickness = max(1, round(height / 360))
        (_, text_height), baseline = cv2.getTextSize("0", _TEXT_FONT, self._font_scale, 1)
        self._line_px = int(text_height * 1.6) + 1
        self._text_x = max(2, width // 40)
        self._text_top = self.band_height + max(2, height // 60)
        self._size_line = f"{width}x{height} @ {fps:g} fps"
        self._bar_width = max(2, round(width * BAR_WIDTH_FRACTION))
        self._circle_radius = max(2, round(height * CIRCLE_RADIUS_FRACTION))
        self._orbit_radius = height * ORBIT_RADIUS_FRACTION
        self._beep_size = max(4, height // 12)

    def video_frame(self, frame_number: int, capture_time_ms: int) -> npt.NDArray[np.uint8]:
        """A new BGR (height, width, 3) uint8 frame for this frame number and capture time."""
        code = FrameCode(frame_number, capture_time_ms)
        w, h = self.width, self.height
        media_time_s = frame_number / self.fps
        offset = int((media_time_s / SCROLL_PERIOD_S % 1.0) * w)
        image = self._background[:, w - offset : 2 * w - offset].copy()

        bar_x = int((media_time_s / BAR_SWEEP_PERIOD_S % 1.0) * w)
        image[self.band_height :, bar_x : bar_x + self._bar_width] = 255

        angle = 2 * math.pi * (media_time_s / ORBIT_PERIOD_S % 1.0)
        centre = (
            round(w / 2 + self._orbit_radius * math.cos(angle)),
            round(h / 2 + self.band_height / 2 + self._orbit_radius * math.sin(angle)),
        )
        cv2.circle(image, centre, self._circle_radius, (40, 40, 200), -1, cv2.LINE_AA)

        if (media_time_s * 1000) % BEEP_PERIOD_MS < BEEP_DURATION_MS:
            size = self._beep_size
            image[h - 2 * size : h - size, w - 2 * size : w - size] = 255

        self._draw_text(
            image,
            [
                self.title,
                f"frame {frame_number}",
                f"{format_time_of_day_ms(capture_time_ms)} UTC",
                self._size_line,
            ],
        )
        draw_frame_code(image, code)
        return image

    def _draw_text(self, image: npt.NDArray[np.uint8], lines: list[str]) -> None:
        widths = [
            cv2.getTextSize(line, _TEXT_FONT, self._font_scale, self._thickness)[0][0]
            for line in lines
        ]
        pad = max(1, self._line_px // 4)
        x0, y0 = self._text_x, self._text_top
        cv2.rectangle(
            image,
            (x0 - pad, y0),
            (x0 + max(widths) + pad, y0 + self._line_px * len(lines) + pad),
            (0, 0, 0),
            -1,
        )
        for i, line in enumerate(lines):
            cv2.putText(
                image,
                line,
                (x0, y0 + self._line_px * (i + 1)),
                _TEXT_FONT,
                self._font_scale,
                (255, 255, 255),
                self._thickness,
                cv2.LINE_AA,
            )


class ToneGenerator:
    """Planar float32 audio: a 1 s beep pattern with continuous phase across calls.

    Each period of BEEP_PERIOD_MS starts with BEEP_DURATION_MS at BEEP_FREQUENCY_RATIO x
    frequency_hz (880 Hz by default), then the rest at frequency_hz (440 Hz). The frequency
    changes without a phase jump, so there is no click. level_dbfs is the peak amplitude:
    samples reach 10 ** (level_dbfs / 20) (0.1 at the default -20 dBFS). Every channel
    carries the same signal.
    """

    def __init__(
        self,
        sample_rate: int = 48000,
        channels: int = 1,
        frequency_hz: float = 440.0,
        level_dbfs: float = -20.0,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if channels <= 0:
            raise ValueError(f"channels must be positive, got {channels}")
        if not 0 < frequency_hz * BEEP_FREQUENCY_RATIO < sample_rate / 2:
            raise ValueError(
                f"frequency_hz={frequency_hz}: the beep at {BEEP_FREQUENCY_RATIO:g}x must lie "
                f"between 0 and the Nyquist frequency {sample_rate / 2:g} Hz"
            )
        if level_dbfs > 0:
            raise ValueError(f"level_dbfs must be <= 0, got {level_dbfs}")
        self.sample_rate = sample_rate
        self.channels = channels
        self.frequency_hz = frequency_hz
        self.level_dbfs = level_dbfs
        self.amplitude = 10.0 ** (level_dbfs / 20.0)
        self._period_samples = sample_rate * BEEP_PERIOD_MS // 1000
        self._beep_samples = sample_rate * BEEP_DURATION_MS // 1000
        self._base_step_rad = 2 * math.pi * frequency_hz / sample_rate
        self._beep_step_rad = self._base_step_rad * BEEP_FREQUENCY_RATIO
        self._next_sample = 0  # index of the next sample to produce
        self._phase_rad = 0.0  # phase of the next sample, in [0, 2 pi)

    @property
    def samples_produced(self) -> int:
        return self._next_sample

    def samples(self, n: int) -> npt.NDArray[np.float32]:
        """The next n samples, shape (channels, n), float32 in [-1, 1]."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        index = np.arange(self._next_sample, self._next_sample + n, dtype=np.int64)
        in_beep = index % self._period_samples < self._beep_samples
        steps = np.where(in_beep, self._beep_step_rad, self._base_step_rad)
        # phase of sample k = phase of the first sample + steps of all samples before k
        phases = self._phase_rad + np.cumsum(steps) - steps
        mono = (self.amplitude * np.sin(phases)).astype(np.float32)
        if n:
            self._phase_rad = float((phases[-1] + steps[-1]) % (2 * math.pi))
        self._next_sample += n
        return np.ascontiguousarray(np.broadcast_to(mono, (self.channels, n)))
