"""Frame-rate governor: below a bitrate floor, send fewer frames instead of worse ones.

At a fixed resolution, an H.264 picture falls apart (blocks, smearing) when the bits per
frame fall too low. Below the floor of the session's resolution and frame rate, the
governor keeps every k-th frame (30 fps -> 15 -> 10), so each frame sent keeps about the
floor's bits. The resolution never changes within a session (platforms and the relay's
decoder expect one size).

The default floor is ``uplink.media.FLOOR_BITS_PER_PIXEL`` bits per pixel per frame
(``default_floor_kbps``; the connection check picks sizes by it too): 1280x720 at 30 fps
-> 829 kbit/s, 854x480 -> 369, 640x360 -> 207. Sans-I/O: ``now`` comes in as an argument.
"""

from __future__ import annotations

import math

from uplink.media import default_floor_kbps as default_floor_kbps  # callers import it here

MIN_FPS = 10  # never fewer frames per second than this (or the session fps, if lower)
RAISE_MARGIN = 1.15  # fps goes back up only with this much margin above the floor (hysteresis)
DWELL_S = 2.0  # at least this long between frame-rate changes


class FrameRateGovernor:
    """Decides which captured frames to encode: every ``step``-th one."""

    def __init__(self, fps: int, floor_kbps: int, min_fps: int = MIN_FPS) -> None:
        if fps <= 0 or floor_kbps <= 0:
            raise ValueError("fps and floor_kbps must be positive")
        self.fps = fps
        self.floor_kbps = floor_kbps
        self.max_step = max(1, fps // max(1, min(min_fps, fps)))
        self.step = 1
        self._changed_at: float | None = None

    @property
    def effective_fps(self) -> float:
        return self.fps / self.step

    def update(self, target_kbps: int, now: float) -> int:
        """Apply a new target bitrate; returns the step (1 = every frame)."""
        want = min(self.max_step, max(1, math.ceil(self.floor_kbps / max(1, target_kbps))))
        if want < self.step and target_kbps < RAISE_MARGIN * self.floor_kbps / want:
            # raise the frame rate only with a margin, so a target hovering at the floor
            # does not flip the frame rate back and forth
            want = self.step
        if want != self.step and (self._changed_at is None or now - self._changed_at >= DWELL_S):
            self.step = want
            self._changed_at = now
        return self.step

    def keep(self, frame_number: int) -> bool:
        """Encode this captured frame?"""
        return frame_number % self.step == 0
