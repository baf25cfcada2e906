"""What to stream with on this link: start bitrate, resolution, relay buffer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from uplink.media import AUDIO_KBPS, default_floor_kbps

START_SHARE_OF_P10 = 0.70
MAX_SHARE_OF_P50 = 0.90
RECOMMEND_MAX_KBPS = 2500  # the relay's default output bitrate: more would be re-encoded away
MIN_VIDEO_KBPS = 100  # below this start bitrate no resolution gets a watchable picture
KBPS_STEP = 10  # recommended bitrates are rounded down to this
FPS = 30
RESOLUTIONS = ((1280, 720), (854, 480), (640, 360), (426, 240))  # largest first
BUFFER_MARGIN_S = 2.0
BUFFER_FLOOR_S = 3.0
BUFFER_CAP_S = 30.0
GOOD_MAX_DROPOUT_SHARE = 0.05
THROUGHPUT_WINDOW_S = 1.0


def buffer_ms_for(longest_dropout_s: float) -> int:
    """The relay buffer that hides a dropout this long: +2 s, whole seconds, within 3..30 s."""
    seconds = math.ceil(longest_dropout_s + BUFFER_MARGIN_S - 1e-9)
    return int(min(BUFFER_CAP_S, max(BUFFER_FLOOR_S, seconds)) * 1000)


@dataclass(frozen=True)
class Recommendation:
    streamable: bool
    start_kbps: int | None
    max_kbps: int | None
    resolution: str | None  # "WxH"
    audio_kbps: int
    buffer_ms: int
    buffer_capped: bool  # the longest dropout is longer than the capped buffer can hide

    def as_dict(self) -> dict[str, Any]:
        return {"streamable": self.streamable, "start_kbps": self.start_kbps,
                "max_kbps": self.max_kbps, "resolution": self.resolution,
                "audio_kbps": self.audio_kbps, "buffer_ms": self.buffer_ms}


def recommend(p10_kbps: float | None, p50_kbps: float | None,
              longest_dropout_s: float) -> Recommendation:
    """The rule in the module docstring."""
    buffer_ms = buffer_ms_for(longest_dropout_s)
    capped = longest_dropout_s + BUFFER_MARGIN_S > BUFFER_CAP_S
    if p10_kbps is None or p50_kbps is None:
        return Recommendation(False, None, None, None, AUDIO_KBPS, buffer_ms, capped)
    max_kbps = _round_down(min(RECOMMEND_MAX_KBPS, MAX_SHARE_OF_P50 * p50_kbps - AUDIO_KBPS))
    start_kbps = min(max_kbps, _round_down(START_SHARE_OF_P10 * p10_kbps - AUDIO_KBPS))
    if start_kbps < MIN_VIDEO_KBPS:
        return Recommendation(False, None, None, None, AUDIO_KBPS, buffer_ms, capped)
    resolution = next(f"{w}x{h}" for w, h in RESOLUTIONS
                      if default_floor_kbps(w, h, FPS) <= start_kbps or (w, h) == RESOLUTIONS[-1])
    return Recommendation(True, start_kbps, max_kbps, resolution, AUDIO_KBPS, buffer_ms, capped)


def _round_down(kbps: float) -> int:
    return int(math.floor(kbps / KBPS_STEP) * KBPS_STEP)


def min_streamable_p10_kbps() -> int:
    """The lowest throughput p10 that gives a start bitrate of MIN_VIDEO_KBPS."""
    return math.ceil((MIN_VIDEO_KBPS + AUDIO_KBPS) / START_SHARE_OF_P10)
