"""The output clock: what a stream's output does on each tick of 1/fps.

A sans-I/O core: the caller passes ``now`` (monotonic seconds), whether a new live frame was
decoded since the previous tick, and how many units the playout buffer still holds;
``OutputClock.tick`` returns an ``OutputTick`` saying what to do. It owns no clock, thread,
encoder or destination. ``relay.output.pipeline.StreamPipeline`` (production) and
``benchmarks.sim`` (the simulator) drive the same class.

The rules, in the order a tick applies them:

1. The source is what ``SourceSelector`` picks: LIVE, FREEZE (the last live frame, briefly),
   else SLATE. A LIVE or FREEZE tick shows the last live frame, which always exists then:
   the selector answers SLATE until a live frame has been reported.
2. Platform sessions that are open end on purpose once slate after live has lasted ``hold_s``
   (``end_sessions`` is ``EndReason.HOLD_EXPIRED``).
3. Sessions that are not open open at a live tick, or at once (on the slate) on the first
   tick after ``go_on_air()``. An air request made while they are open waits until they next
   close. Opening restarts the hold window: slate counts towards it only after live again.
4. While sessions are open, every tick encodes one video frame and exactly one frame's worth
   of audio: frame ``i`` carries ``audio_samples_for_frame(i, ...)`` samples, so ``k`` frames
   carry ``round(k * sample_rate / fps)`` samples and both tracks advance together. Frame
   numbers run on across sessions. While none is open nothing is encoded (and the live
   audio that arrives is dropped: ``LiveAudio.clear``).
5. After ``end()`` (the sender ended the stream), the first tick at which the playout buffer
   is empty is ``finished``: flush the encoder, close the sessions with a drain, stop ticking.
   ``new_timeline()`` (a new sender session) cancels a pending end.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from relay.output.source_selector import OutputSource, SourceSelector

MAX_LIVE_AUDIO_S = 0.5  # live audio queued beyond this is dropped to keep lip sync


class EndReason(StrEnum):
    """Why the output clock ends the platform sessions."""

    HOLD_EXPIRED = "hold_expired"  # hold_s of continuous slate after live


@dataclass(frozen=True, slots=True)
class OutputTick:
    """What one tick of the output clock does, in this order: end the sessions
    (``end_sessions``), open new ones (``open_sessions``; both may happen in one tick), encode
    frame ``frame_index`` with ``audio_samples`` of audio (None: nothing is encoded), then,
    when ``finished``, flush and close with a drain."""

    source: OutputSource
    on_air: bool  # platform sessions are open after this tick
    open_sessions: bool
    end_sessions: EndReason | None
    slate_s: float  # seconds of continuous slate so far (0 when not on slate)
    frame_index: int | None  # the output frame to encode now, None when off air
    audio_samples: int  # samples of audio encoded with that frame (0 when off air)
    finished: bool

    @property
    def encode(self) -> bool:
        """A frame is encoded this tick (sessions are open)."""
        return self.frame_index is not None

    @property
    def shows_slate(self) -> bool:
        """The frame encoded is the slate (else the last live frame)."""
        return self.source is OutputSource.SLATE

    @property
    def status_source(self) -> str:
        """What the platforms see, for the status API: the source, or "offline" off air."""
        return self.source.value if self.on_air else "offline"


def audio_samples_for_frame(index: int, sample_rate: int, fps: float) -> int:
    """Audio samples output frame ``index`` carries: ``round((i + 1) * rate / fps) -
    round(i * rate / fps)``, so any ``k`` first frames carry ``round(k * rate / fps)``."""
    return round((index + 1) * sample_rate / fps) - round(index * sample_rate / fps)


class OutputClock:
    """Decides, per output tick, the source, the platform sessions and what is encoded
    (the rules are in the module docstring)."""

    def __init__(self, fps: float, audio_sample_rate: int, freeze_s: float,
                 hold_s: float) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        if audio_sample_rate <= 0:
            raise ValueError(f"audio_sample_rate must be > 0, got {audio_sample_rate!r}")
        self.fps = fps
        self.audio_sample_rate = audio_sample_rate
        self.hold_s = hold_s
        self._selector = SourceSelector(freeze_s=freeze_s, hold_s=hold_s)
        self._on_air = False
        self._air_requested = False
        self._ending = False
        self._frames_out = 0
        self._frames_by_source = {src.value: 0 for src in OutputSource}

    # -- commands ---------------------------------------------------------------------------
    def go_on_air(self) -> None:
        """Open the platform sessions at the next tick, on the slate if nothing is live (a
        session restored after a relay restart)."""
        self._air_requested = True

    def new_timeline(self) -> None:
        """A new sender session: a pending ``end()`` no longer applies."""
        self._ending = False

    def end(self) -> None:
        """The sender ended the stream: finish once the playout buffer is empty."""
        self._ending = True

    # -- state ------------------------------------------------------------------------------
    @property
    def on_air(self) -> bool:
        return self._on_air

    @property
    def ending(self) -> bool:
        return self._ending

    @property
    def frames_out(self) -> int:
        """Frames encoded so far (the next frame's index)."""
        return self._frames_out

    @property
    def frames_by_source(self) -> dict[str, int]:
        """Frames encoded so far per source value (a copy)."""
        return dict(self._frames_by_source)

    # -- the tick ---------------------------------------------------------------------------
    def tick(self, now: float, new_frame: bool, units_buffered: int) -> OutputTick:
        """One tick at ``now``: ``new_frame`` says a live frame was decoded since the last
        tick, ``units_buffered`` what the playout buffer holds after this tick's pops."""
        selector = self._selector
        source = selector.tick(now, new_frame)
        slate_s = selector.slate_for_s(now)
        end_sessions: EndReason | None = None
        if self._on_air and selector.hold_expired(now):
            end_sessions = EndReason.HOLD_EXPIRED
            self._on_air = False
        open_sessions = False
        if not self._on_air and (source is OutputSource.LIVE or self._air_requested):
            self._air_requested = False
            selector.reset_hold()
            self._on_air = True
            open_sessions = True
        frame_index: int | None = None
        audio_samples = 0
        if self._on_air:
            frame_index = self._frames_out
            audio_samples = audio_samples_for_frame(frame_index, self.audio_sample_rate,
                                                    self.fps)
            self._frames_out += 1
            self._frames_by_source[source.value] += 1
        return OutputTick(source=source, on_air=self._on_air, open_sessions=open_sessions,
                          end_sessions=end_sessions, slate_s=slate_s, frame_index=frame_index,
                          audio_samples=audio_samples,
                          finished=self._ending and units_buffered == 0)


class LiveAudio:
    """Decoded live audio waiting to go out with the output frames (numpy in, numpy out).

    ``add`` appends samples (``channels`` rows); ``take(n)`` returns exactly ``n`` samples:
    the oldest queued, padded with silence when fewer are queued. Before taking, audio queued
    beyond ``max_live_s`` plus the ``n`` taken is dropped from the oldest end, so live audio
    never lags the video by more than ``max_live_s``."""

    def __init__(self, channels: int, sample_rate: int,
                 max_live_s: float = MAX_LIVE_AUDIO_S) -> None:
        self.channels = channels
        self.sample_rate = sample_rate
        self.max_live_s = max_live_s
        self._samples = np.zeros((channels, 0), dtype=np.float32)

    @property
    def samples_queued(self) -> int:
        return int(self._samples.shape[1])

    def add(self, samples: np.ndarray) -> None:
        """Queue decoded samples, shape (channels, n)."""
        self._samples = np.concatenate([self._samples, samples], axis=1)

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` samples, shape (channels, n), after clipping (see the class)."""
        max_live = int(self.max_live_s * self.sample_rate) + n
        if self._samples.shape[1] > max_live:
            self._samples = self._samples[:, -max_live:]
        take = self._samples[:, :n]
        self._samples = self._samples[:, take.shape[1]:]
        if take.shape[1] < n:
            pad = np.zeros((self.channels, n - take.shape[1]), dtype=np.float32)
            take = np.concatenate([take, pad], axis=1)
        return take

    def clear(self) -> None:
        """Drop what is queued (nothing is on air to carry it)."""
        self._samples = self._samples[:, :0]
