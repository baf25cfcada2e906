"""Camera source (``camera:N`` or ``camera:/dev/videoX``) read through OpenCV.

A camera blocks in ``read()``, so a small reader thread reads it and keeps only the latest
frame; ``video()`` hands out a copy of that frame and never waits on the camera. The session's
size and rate are asked for; what the camera really gives is logged and kept in
``actual_width``, ``actual_height`` and ``actual_fps``, and frames of another size are scaled
to fit the session's picture (aspect ratio kept, black bars where it differs).

Nothing is drawn on camera frames, except while the camera is lost: then ``video()`` returns
the last good frame darkened, with the caption "Mất camera — đang kết nối lại" / "Camera lost
— reconnecting" (black with the caption if there never was a frame). A camera is lost when
``read()`` fails LOST_AFTER_FAILED_READS times in a row, or no frame came for
STALLED_AFTER_S; it is then released and reopened with a backoff (0.5 s doubling to 5 s) until
it gives frames again, without restarting the stream. ``state`` is "ok" or "lost" and
``lost_episodes`` counts the losses; each loss and each recovery is logged once.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from encoder.video_source import SourceError

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5  # first reopen attempt this long after a loss
BACKOFF_MAX_S = 5.0  # reopen attempts never further apart than this
LOST_AFTER_FAILED_READS = 5  # this many failed read() in a row: the camera is lost
FAILED_READ_RETRY_S = 0.1  # pause between failed reads before declaring the camera lost
STALLED_AFTER_S = 3.0  # opened and "ok" but no new frame for this long: the camera is lost
READ_RATE_MAX_FACTOR = 1.25  # never read faster than this x the camera's fps (no busy loop)
CLOSE_JOIN_S = 3.0  # close() waits this long for the reader thread
LOST_DARKEN_FACTOR = 0.35  # brightness of the last good frame while the camera is lost

MJPG_FOURCC = cv2.VideoWriter.fourcc(*"MJPG")

CAPTION_VI = "Mất camera — đang kết nối lại"
CAPTION_EN = "Camera lost — reconnecting"
CAPTION_ASCII = ("mat camera - dang ket noi lai", "camera lost - reconnecting")

CameraState = Literal["ok", "lost"]


class CaptureLike(Protocol):
    """What the camera source needs of a ``cv2.VideoCapture``."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)

    def read(self) -> tuple[bool, Any]: ...

    def set(self, prop_id: int, value: float) -> bool: ...

    def get(self, prop_id: int) -> float: ...

    def release(self) -> None: ...


def parse_camera_device(text: str) -> int | str:
    """The device of a ``camera:`` spec: a camera number (0, 1, ...), a device path, or a
    URL OpenCV opens (``rtsp://...``, kept as written)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if "://" in text:
        return text
    if "/" in text or "\\" in text or text.startswith("~"):
        return str(Path(text).expanduser())
    shown = f"{text!r}" if text else "nothing"
    raise SourceError(
        f"camera:{text} names {shown}, which is neither a camera number nor a device path: "
        "use camera:0 for the first camera (camera:1 for the second, ...) or a device path "
        "like camera:/dev/video0")


def open_camera_device(device: int | str) -> cv2.VideoCapture:
    """Open a camera with OpenCV; ask for MJPG (USB webcams give 720p30 only in MJPG)."""
    if sys.platform.startswith("linux") and (isinstance(device, int)
                                             or device.startswith("/dev/")):
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
    else:
        cap = cv2.VideoCapture(device)
    if cap.isOpened():
        cap.set(cv2.CAP_PROP_FOURCC, MJPG_FOURCC)
    return cap


def fit_to_size(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """A BGR (height, width, 3) picture of ``image`` scaled to fit, aspect ratio kept."""
    if image.ndim == 2:
        image = np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), np.uint8)
    elif image.shape[2] == 4:
        image = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), np.uint8)
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = min(width / w, height / h)
    new_w = min(width, max(1, round(w * scale)))
    new_h = min(height, max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = np.asarray(cv2.resize(image, (new_w, new_h), interpolation=interpolation), np.uint8)
    if (new_w, new_h) == (width, height):
        return scaled
    out = np.zeros((height, width, 3), np.uint8)
    x0, y0 = (width - new_w) // 2, (height - new_h) // 2
    out[y0:y0 + new_h, x0:x0 + new_w] = scaled
    return out


@functools.lru_cache(maxsize=4)
def _caption_overlay(width: int, height: int) -> tuple[npt.NDArray[np.uint8],
                                                       npt.NDArray[np.float32]]:
    """The "camera lost" caption as a BGR picture and its alpha (height, width, 1) in [0, 1].

    Drawn with Pillow and matplotlib's DejaVu Sans (it has the Vietnamese glyphs OpenCV's
    Hershey fonts lack); plain ASCII with cv2.putText if that font cannot be loaded.
    """
    try:
        from PIL import Image, ImageDraw, ImageFont

        font_path = importlib.resources.files("matplotlib") / "mpl-data/fonts/ttf/DejaVuSans.ttf"
        big = ImageFont.truetype(str(font_path), max(10, height // 16))
        small = ImageFont.truetype(str(font_path), max(8, height // 26))
    except (ImportError, OSError) as exc:
        log.info("camera caption: no Vietnamese font (%s); using ASCII", exc)
        return _ascii_caption_overlay(width, height)
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    lines = [(CAPTION_VI, big, (255, 255, 255, 255)), (CAPTION_EN, small, (200, 205, 215, 255))]
    boxes = [draw.textbbox((0, 0), text, font=font) for text, font, _ in lines]
    gap = max(2, height // 40)
    total = sum(b[3] for b in boxes) + gap
    y = (height - total) // 2
    pad = max(4, height // 30)
    band = (0, y - pad, width, y + total + pad)
    draw.rectangle(band, fill=(0, 0, 0, 150))
    for (text, font, colour), box in zip(lines, boxes, strict=True):
        draw.text(((width - box[2]) // 2, y), text, font=font, fill=colour)
        y += box[3] + gap
    rgba = np.asarray(canvas, np.uint8)
    bgr = np.ascontiguousarray(rgba[:, :, 2::-1])
    alpha = (rgba[:, :, 3:4].astype(np.float32) / 255.0)
    return bgr, alpha


def _ascii_caption_overlay(width: int, height: int) -> tuple[npt.NDArray[np.uint8],
                                                             npt.NDArray[np.float32]]:
    bgr = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), np.uint8)
    scale = max(0.3, height / 720)
    thickness = max(1, round(height / 360))
    y = height // 2
    for i, text in enumerate(CAPTION_ASCII):
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        org = ((width - w) // 2, y + i * int(h * 1.8))
        for target, colour in ((bgr, (255, 255, 255)), (mask, 255)):
            cv2.putText(target, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness,
                        cv2.LINE_AA)
    return bgr, (mask[:, :, None].astype(np.float32) / 255.0)


def lost_picture(last_good: npt.NDArray[np.uint8] | None, width: int,
                 height: int) -> npt.NDArray[np.uint8]:
    """The last good frame darkened (black if none) with the "camera lost" caption."""
    base = np.zeros((height, width, 3), np.float32)
    if last_good is not None:
        base = last_good.astype(np.float32) * LOST_DARKEN_FACTOR
    overlay, alpha = _caption_overlay(width, height)
    out = base * (1.0 - alpha) + overlay.astype(np.float32) * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


class CameraSource:
    """A camera, read on its own thread; see the module docstring for the behaviour."""

    def __init__(self, device: int | str, width: int, height: int, fps: int, *,
                 opener: Callable[[], CaptureLike] | None = None,
                 backoff_first_s: float = BACKOFF_FIRST_S,
                 backoff_max_s: float = BACKOFF_MAX_S) -> None:
        self.device = device
        self.label = f"camera {device}"
        self.width = width
        self.height = height
        self.fps = fps
        self._opener: Callable[[], CaptureLike] = opener or (lambda: open_camera_device(device))
        self._backoff_first_s = backoff_first_s
        self._backoff_max_s = backoff_max_s
        self.actual_width = 0
        self.actual_height = 0
        self.actual_fps = 0.0
        self.lost_episodes = 0
        self.frames_read = 0
        self._state: CameraState = "ok"
        self._lost_since = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._latest: npt.NDArray[np.uint8] | None = None
        self._latest_at = time.monotonic()
        self._lost_frame: npt.NDArray[np.uint8] | None = None
        self._lost_frame_episode = -1
        cap = self._try_open()
        if cap is None:
            raise SourceError(f"{self.label} could not be opened: is it plugged in and not used "
                              "by another program?")
        self._configure(cap)
        log.info("%s", self.describe())
        self._thread = threading.Thread(target=self._read_loop, args=(cap,),
                                        name=f"camera-{device}", daemon=True)
        self._thread.start()

    # --- what the capture loop calls --------------------------------------------------------
    @property
    def state(self) -> CameraState:
        with self._lock:
            self._check_stalled_locked()
            return self._state

    def video(self, frame_number: int, capture_time_ms: int) -> npt.NDArray[np.uint8]:
        """The latest camera frame (a copy), or the "camera lost" picture; never blocks."""
        with self._lock:
            self._check_stalled_locked()
            if self._state == "ok":
                if self._latest is None:  # opened, first frame not there yet
                    return np.zeros((self.height, self.width, 3), np.uint8)
                return self._latest.copy()
            if self._lost_frame_episode != self.lost_episodes:
                self._lost_frame = lost_picture(self._latest, self.width, self.height)
                self._lost_frame_episode = self.lost_episodes
            assert self._lost_frame is not None
            return self._lost_frame.copy()

    def audio(self, n: int) -> npt.NDArray[np.float32]:
        """Silence: a camera has no audio (see ``encoder.audio_sources`` for a microphone)."""
        return np.zeros((1, n), np.float32)

    def describe(self) -> str:
        fps = f"{self.actual_fps:g} fps" if self.actual_fps > 0 else "an unknown frame rate"
        size = (f"{self.actual_width}x{self.actual_height}" if self.actual_width > 0
                else "size not known yet")
        return (f"{self.label}: {size} at {fps} "
                f"(asked {self.width}x{self.height} at {self.fps})")

    def close(self) -> None:
        """Stop the reader thread and release the camera."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(CLOSE_JOIN_S)
            if self._thread.is_alive():
                log.warning("%s: the reader thread is still blocked in read() after %.0f s; "
                            "it will release the camera when read() returns",
                            self.label, CLOSE_JOIN_S)

    @property
    def reader_alive(self) -> bool:
        return self._thread.is_alive()

    # --- reader thread ----------------------------------------------------------------------
    def _try_open(self) -> CaptureLike | None:
        try:
            cap = self._opener()
        except Exception as exc:  # cv2.error and friends: a camera that cannot be opened
            log.debug("%s: open failed: %s", self.label, exc)
            return None
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _configure(self, cap: CaptureLike) -> None:
        """Ask for the session's size and rate; note what the camera really gives."""
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        self.actual_width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.actual_height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        self.actual_fps = fps if 0 < fps < 1000 else 0.0

    def _read_loop(self, cap: CaptureLike | None) -> None:
        backoff_s = self._backoff_first_s
        failures = 0
        try:
            while not self._stop.is_set():
                if cap is None:  # lost: reopen with backoff
                    if self._stop.wait(backoff_s):
                        break
                    backoff_s = min(backoff_s * 2, self._backoff_max_s)
                    cap = self._try_open()
                    if cap is None:
                        log.debug("%s: still not there; next try in %.1f s", self.label,
                                  backoff_s)
                        continue
                    self._configure(cap)
                    failures = 0
                started = time.monotonic()
                ok, frame = self._read(cap)
                if ok:
                    failures = 0
                    backoff_s = self._backoff_first_s
                    self._store(frame)
                    min_interval_s = 1.0 / (max(self.actual_fps, self.fps) * READ_RATE_MAX_FACTOR)
                    self._stop.wait(max(0.0, started + min_interval_s - time.monotonic()))
                    continue
                failures += 1
                if failures < LOST_AFTER_FAILED_READS:
                    self._stop.wait(FAILED_READ_RETRY_S)
                    continue
                self._mark_lost(f"read() failed {failures} times in a row")
                cap.release()
                cap = None
        finally:
            if cap is not None:
                cap.release()

    def _read(self, cap: CaptureLike) -> tuple[bool, npt.NDArray[np.uint8] | None]:
        try:
            ok, frame = cap.read()
        except cv2.error as exc:
            log.debug("%s: read() raised %s", self.label, exc)
            return False, None
        if not ok or frame is None or getattr(frame, "size", 0) == 0:
            return False, None
        return True, np.asarray(frame, np.uint8)

    def _store(self, frame: npt.NDArray[np.uint8] | None) -> None:
        assert frame is not None
        h, w = frame.shape[:2]
        if (w, h) != (self.actual_width, self.actual_height):
            self.actual_width, self.actual_height = w, h
            log.info("%s", self.describe())
        picture = fit_to_size(frame, self.width, self.height)
        with self._lock:
            self._latest = picture
            self._latest_at = time.monotonic()
            self.frames_read += 1
            if self._state == "lost":
                self._state = "ok"
                log.info("%s is back after %.1f s (loss %d); %s", self.label,
                         time.monotonic() - self._lost_since, self.lost_episodes,
                         self.describe())

    def _mark_lost(self, why: str) -> None:
        with self._lock:
            self._mark_lost_locked(why)

    def _mark_lost_locked(self, why: str) -> None:
        if self._state == "lost":
            return
        self._state = "lost"
        self._lost_since = time.monotonic()
        self.lost_episodes += 1
        log.warning("%s lost (%s): showing the last picture darkened and reconnecting every "
                    "%.1f-%.0f s; is it still plugged in?", self.label, why,
                    self._backoff_first_s, self._backoff_max_s)

    def _check_stalled_locked(self) -> None:
        if self._state == "ok" and time.monotonic() - self._latest_at > STALLED_AFTER_S:
            self._mark_lost_locked(f"no frame for {STALLED_AFTER_S:g} s")
