"""The capture loop: a thread that paces the source at the session's frame rate and encodes.

Frame n is captured at ``t0 + n / fps`` on the monotonic clock; its capture time (wall
clock) is drawn into test-pattern frames and carried in every uplink media message. If the
machine falls behind, frames are still produced one by one (none skipped), so the frame
numbers stay contiguous. Below the bitrate floor of the resolution, the frame-rate governor
keeps only every k-th frame for the uplink (the local recording keeps them all).

The ABR's decision comes in through ``set_target_kbps`` (any thread) and is applied to the
encoder between two frames.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from encoder.audio_sources import AudioSource, open_audio
from encoder.av_encoder import AUDIO_TRACK_ID, EncodedUnit, MediaEncoder
from encoder.frame_rate import FrameRateGovernor, default_floor_kbps
from encoder.local_record import LocalRecorder, RecordSummary
from encoder.settings import AUDIO_KBPS, AUDIO_SAMPLE_RATE, KEYFRAME_INTERVAL_S, EncoderSettings
from encoder.sources import SourceError, VideoSource, open_source
from uplink import TrackConfig

log = logging.getLogger(__name__)

RECORD_QUEUE_S = 1.0  # raw frames queued for the local recorder (85 MB at 720p30)
OUTAGE_KEYFRAME_S = 0.25  # during an uplink outage, a keyframe at least this often


class CaptureLoop:
    def __init__(self, settings: EncoderSettings,
                 on_units: Callable[[list[EncodedUnit]], None],
                 on_error: Callable[[str], None]) -> None:
        self.settings = settings
        self._on_units = on_units
        self._on_error = on_error
        self._stop = threading.Event()
        self.frames_captured = 0
        self.frames_encoded = 0
        self.done = threading.Event()
        self.epoch_us = int(time.time() * 1_000_000)
        s = settings
        self.source: VideoSource = open_source(s.source, s.width, s.height, s.fps,
                                               AUDIO_SAMPLE_RATE, s.title, s.framecode)
        try:
            self.audio: AudioSource = open_audio(s.audio, self.source, AUDIO_SAMPLE_RATE)
        except SourceError:
            self.source.close()
            raise
        self.encoder = MediaEncoder(s.width, s.height, s.fps, s.start_kbps, KEYFRAME_INTERVAL_S,
                                    AUDIO_SAMPLE_RATE, AUDIO_KBPS, s.x264_preset,
                                    max_kbps=s.max_kbps, epoch_us=self.epoch_us)
        floor = s.fps_floor_kbps or default_floor_kbps(s.width, s.height, s.fps)
        self.governor = FrameRateGovernor(s.fps, floor)
        self._target_kbps = s.start_kbps
        self._dense_keyframes = False
        self._applied: tuple[int, int] = (s.start_kbps, 1)
        self.recorder: LocalRecorder | None = None
        self.record_summary: RecordSummary | None = None
        if s.record_path is not None:
            audio_track = self.encoder.tracks()[AUDIO_TRACK_ID]
            try:
                self.recorder = LocalRecorder(s.record_path, s.width, s.height, s.fps,
                                              s.record_kbps, s.x264_preset,
                                              audio_track.extradata, AUDIO_SAMPLE_RATE,
                                              queue_s=RECORD_QUEUE_S)
            except (ValueError, OSError):
                self.source.close()
                self.audio.close()
                raise
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def tracks(self) -> list[TrackConfig]:
        return self.encoder.tracks()

    def describe(self) -> str:
        return f"{self.source.describe()}; audio: {self.audio.describe()}"

    def set_target_kbps(self, kbps: int) -> None:
        """The ABR's video bitrate; applied before the next frame (thread-safe)."""
        self._target_kbps = kbps

    def set_dense_keyframes(self, dense: bool) -> None:
        """During an uplink outage: a keyframe every OUTAGE_KEYFRAME_S instead of every
        KEYFRAME_INTERVAL_S, so that when the link returns the live edge can restart close to
        the oldest media the relay can still show in time (thread-safe)."""
        self._dense_keyframes = dense

    @property
    def effective_fps(self) -> float:
        return self.governor.effective_fps

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
            self.audio.close()
            if self.recorder is not None:
                self.record_summary = self.recorder.close()
            self.done.set()

    def _apply_target(self, now: float) -> None:
        kbps = self._target_kbps
        step = self.governor.update(kbps, now)
        if (kbps, step) != self._applied:
            if step != self._applied[1]:
                log.info("frame rate %s to %.0f fps (video %d kbit/s, floor %d kbit/s)",
                         "lowered" if step > self._applied[1] else "raised",
                         self.governor.effective_fps, kbps, self.governor.floor_kbps)
            self.encoder.set_kbps(kbps, step)
            self._applied = (kbps, step)

    def _loop(self) -> None:
        s = self.settings
        t0 = time.monotonic()
        n = 0
        audio_sent = 0
        dense_gop = max(1, round(OUTAGE_KEYFRAME_S * s.fps))
        last_key = -dense_gop  # frame index of the last forced keyframe
        while not self._stop.is_set():
            if s.duration_s is not None and n >= round(s.duration_s * s.fps):
                break
            due = t0 + n / s.fps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._apply_target(time.monotonic())
            capture_us = self.epoch_us + round(n * 1_000_000 / s.fps)
            picture = self.source.video(n, capture_us // 1000)
            if self.recorder is not None:
                self.recorder.video(picture, n)
            units: list[EncodedUnit] = []
            if self.governor.keep(n):
                force = self._dense_keyframes and n - last_key >= dense_gop
                if force:
                    last_key = n
                units = self.encoder.encode_video(picture, n, capture_us, keyframe=force)
                self.frames_encoded += 1
            audio_due = round((n + 1) * AUDIO_SAMPLE_RATE / s.fps)
            audio_units = self.encoder.encode_audio(self.audio.audio(audio_due - audio_sent))
            if self.recorder is not None:
                for u in audio_units:
                    self.recorder.audio(u)
            units += audio_units
            audio_sent = audio_due
            n += 1
            self.frames_captured = n
            if units:
                self._on_units(units)
        tail = self.encoder.flush()
        if tail:
            self._on_units(tail)
