"""What every capture source is: the ``VideoSource`` protocol and the ``SourceError`` it raises.

The sources (``encoder.sources``, ``encoder.camera``) and the audio sources that pick up a
video source's track (``encoder.audio_sources``) share these; this module imports none of them.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt


class SourceError(Exception):
    """A source that cannot be opened or read, in plain words."""


class VideoSource(Protocol):
    """Asked once per output frame for a picture; ``video()`` must not block."""

    def video(self, frame_number: int, capture_time_ms: int) -> npt.NDArray[np.uint8]:
        """A BGR uint8 (height, width, 3) picture at the session's size; never blocks long."""
        ...

    def describe(self) -> str:
        """One plain line: what this source is and what it really gives."""
        ...

    def close(self) -> None: ...
