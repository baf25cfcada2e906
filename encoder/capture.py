"""The capture loop: a thread that paces the source at the session's frame rate and encodes.

Frame n is captured at ``t0 + n / fps`` on the monotonic clock; its capture time (wall
clock) is drawn into test-pattern frames and carried in every uplink media message. If the
machine falls behind, frames are still produced one by one (none skipped), so the frame
numbers stay contiguous.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from encoder.av_encoder import EncodedUnit, MediaEncoder
from encoder.settings import AUDIO_KBPS, AUDIO_SAMPLE_RATE, KEYFRAME_INTERVAL_S, EncoderSettings
from encoder.sources import Source, SourceError, open_source
from uplink import TrackConfig

log = logging.getLogger(__name__)


class CaptureLoop:
    def __init__(self, settings: EncoderSettings,
                 on_units: Callable[[list[EncodedUnit]], None],
                 on_error: Callable[[str], None]) -> None:
        self.settings = settings
        self._on_units = on_units
        self._on_error = on_error
        self._stop = threading.Event()
        self.frames_captured = 0
        self.done = threading.Event()
        self.epoch_us = int(time.time() * 1_000_000)
        s = settings
        self.source: Source = open_source(s.source, s.width, s.height, s.fps, AUDIO_SAMPLE_RATE,
                                          s.title)
        self.encoder = MediaEncoder(s.width, s.height, s.fps, s.kbps, KEYFRAME_INTERVAL_S,
                                    AUDIO_SAMPLE_RATE, AUDIO_KBPS, s.x264_preset,
                                    epoch_us=self.epoch_us)
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def tracks(self) -> list[TrackConfig]:
        return self.encoder.tracks()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            self._loop()
        except SourceError as exc:
            self._on_error(str(exc))
        except Exception as exc:  # reported, not swallowed: the CLI exits non-zero
            log.exception("capture failed")
            self._on_error(f"capture failed: {exc}")
        finally:
            self.source.close()
            self.done.set()

    def _loop(self) -> None:
        s = self.settings
        t0 = time.monotonic()
        n = 0
        audio_sent = 0
        while not self._stop.is_set():
            if s.duration_s is not None and n >= round(s.duration_s * s.fps):
                break
            due = t0 + n / s.fps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            capture_us = self.epoch_us + round(n * 1_000_000 / s.fps)
            picture = self.source.video(n, capture_us // 1000)
            units = self.encoder.encode_video(picture, n, capture_us)
            audio_due = round((n + 1) * AUDIO_SAMPLE_RATE / s.fps)
            units += self.encoder.encode_audio(self.source.audio(audio_due - audio_sent))
            audio_sent = audio_due
            n += 1
            self.frames_captured = n
            if units:
                self._on_units(units)
        tail = self.encoder.flush()
        if tail:
            self._on_units(tail)
