"""What the encoder, the relay and the connection check assume about the media, defined once.

- AAC: frames of ``AAC_FRAME_SAMPLES`` samples per channel; ``AacFramer`` cuts planar float32
  samples into them and numbers them (pts in samples from 0).
- H.264 through libx264 (PyAV's option dict, ``x264_options``): a keyframe exactly every
  ``keyframe_interval_frames`` frames and no scene-cut keyframes, as the platforms ask; a VBV
  cap (``maxrate``, ``bufsize``); ``tune=zerolatency`` (no B-frames, no lookahead) for what
  goes live, left out for an archive copy. ``X264_PRESETS`` are x264's preset names.
- Sizes are written ``WIDTHxHEIGHT``, 2 to 4 digits each, both even (H.264 4:2:0):
  ``parse_resolution``.
- The frame-rate floor: below ``FLOOR_BITS_PER_PIXEL`` bits per pixel per frame the encoder's
  governor drops frames instead of starving each one (``encoder.frame_rate``), and the
  connection check picks the largest size whose floor fits (``probe.recommend``).
- ``AUDIO_KBPS``: the encoder's AAC bitrate; the connection check subtracts it from the link.
- ``BUFFER_MS_DEFAULT``: the relay's playout delay for a stream without ``buffer_ms`` (sent to
  the sender in WELCOME); the connection check rates a site by whether it is enough.

No I/O and no codec library here: callers build their codec contexts from these values.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

AAC_FRAME_SAMPLES = 1024  # samples per channel in one AAC-LC frame
AUDIO_KBPS = 64  # the encoder's AAC bitrate
FLOOR_BITS_PER_PIXEL = 0.03  # below this many bits per pixel per frame, drop frames instead
BUFFER_MS_DEFAULT = 5000  # the relay's playout delay unless a stream sets buffer_ms
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
RESOLUTION_RE = re.compile(r"(\d{2,4})x(\d{2,4})")  # matched whole (fullmatch)


class AacFramer:
    """Planar float32 samples in, whole AAC frames out.

    ``push(samples)`` (shape (channels, n)) returns ``(pts, frame)`` for every complete frame
    of ``AAC_FRAME_SAMPLES`` now available, oldest first, each frame C-contiguous float32;
    pts counts samples from 0 and grows by ``AAC_FRAME_SAMPLES`` a frame. What does not fill
    a frame waits for the next push.
    """

    def __init__(self, channels: int) -> None:
        self._pending: npt.NDArray[np.floating] = np.zeros((channels, 0), dtype=np.float32)
        self.samples_out = 0  # pts of the next frame

    def push(self, samples: npt.NDArray[np.floating]
             ) -> list[tuple[int, npt.NDArray[np.float32]]]:
        buf = np.concatenate([self._pending, samples], axis=1)
        frames: list[tuple[int, npt.NDArray[np.float32]]] = []
        while buf.shape[1] >= AAC_FRAME_SAMPLES:
            frame = np.ascontiguousarray(buf[:, :AAC_FRAME_SAMPLES], dtype=np.float32)
            frames.append((self.samples_out, frame))
            buf = buf[:, AAC_FRAME_SAMPLES:]
            self.samples_out += AAC_FRAME_SAMPLES
        self._pending = buf
        return frames


def keyframe_interval_frames(fps: float, keyframe_s: float) -> int:
    """Frames from one keyframe to the next: ``fps * keyframe_s`` rounded, at least 1."""
    return max(1, round(fps * keyframe_s))


def x264_options(preset: str, keyframe_interval: int, maxrate_kbps: int, bufsize_kbps: int,
                 *, zerolatency: bool) -> dict[str, str]:
    """libx264's options: ``preset``; ``tune=zerolatency`` when asked; a keyframe every
    ``keyframe_interval`` frames, exactly (``g`` = ``keyint_min``, ``sc_threshold=0``); VBV
    with ``maxrate_kbps`` and a ``bufsize_kbps`` buffer."""
    options = {"preset": preset}
    if zerolatency:
        options["tune"] = "zerolatency"
    options.update({
        "g": str(keyframe_interval),
        "keyint_min": str(keyframe_interval),
        "sc_threshold": "0",
        "maxrate": f"{maxrate_kbps}k",
        "bufsize": f"{bufsize_kbps}k",
    })
    return options


def parse_resolution(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)``; ValueError unless the whole text is WIDTHxHEIGHT
    with 2 to 4 digits each and both even."""
    m = RESOLUTION_RE.fullmatch(text)
    if not m or int(m.group(1)) % 2 or int(m.group(2)) % 2:
        raise ValueError(f"resolution {text!r} must be WIDTHxHEIGHT with even numbers")
    return int(m.group(1)), int(m.group(2))


def default_floor_kbps(width: int, height: int, fps: int) -> int:
    """The frame-rate floor of a size and frame rate: ``FLOOR_BITS_PER_PIXEL`` bits per pixel
    per frame, in whole kbit/s, at least 1 (1280x720 at 30 fps: 829)."""
    return max(1, round(FLOOR_BITS_PER_PIXEL * width * height * fps / 1000))
