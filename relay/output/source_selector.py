"""Output source selector: per output frame tick, decides what the platforms see.

A sans-I/O state machine: the caller passes ``now`` (monotonic seconds) and whether a new
decoded live frame arrived since the previous tick.

* LIVE: a new live frame arrived this tick, or the last one is at most ``LIVE_FRAME_GAP_S``
  (or half of ``freeze_s``, if less) old: a sender at a lower frame rate than the output's
  leaves ticks without a new frame, and repeating its frame is its live video, not a freeze.
* FREEZE: no new frame, but the last live frame is at most ``freeze_s`` old: repeat it.
* SLATE: otherwise, including before the first live frame.

The hold window: once the stream has been live, a continuous stretch of slate lasting
``hold_s`` means the sender is not coming back soon and the relay should end the platform
sessions on purpose (``hold_expired``). Slate before the first live frame, or after
``reset_hold`` until the next live frame, does not count towards it.
"""

from __future__ import annotations

from enum import StrEnum

from relay.settings import FREEZE_MS_DEFAULT, HOLD_S_DEFAULT

FREEZE_S_DEFAULT = FREEZE_MS_DEFAULT / 1000.0
LIVE_FRAME_GAP_S = 0.25  # a frame this recent is still live video: input down to 4 fps


class OutputSource(StrEnum):
    LIVE = "live"
    FREEZE = "freeze"
    SLATE = "slate"


class SourceSelector:
    """Chooses LIVE, FREEZE or SLATE for each output frame tick."""

    def __init__(self, freeze_s: float = FREEZE_S_DEFAULT, hold_s: float = HOLD_S_DEFAULT) -> None:
        if freeze_s < 0:
            raise ValueError(f"freeze_s must be >= 0, got {freeze_s!r}")
        if hold_s <= 0:
            raise ValueError(f"hold_s must be > 0, got {hold_s!r}")
        self._freeze_s = freeze_s
        self._hold_s = hold_s
        self._current = OutputSource.SLATE
        self._changed = False
        self._last_live_s: float | None = None
        self._slate_since_s: float | None = None  # start of the current slate stretch
        self._hold_armed = False  # live at least once since construction or reset_hold

    @property
    def current(self) -> OutputSource:
        return self._current

    @property
    def changed(self) -> bool:
        """True when the last tick switched the source."""
        return self._changed

    @property
    def last_live_s(self) -> float | None:
        """When the last live frame arrived, or None before the first one."""
        return self._last_live_s

    def tick(self, now: float, new_live_frame: bool) -> OutputSource:
        if new_live_frame:
            self._last_live_s = now
            self._hold_armed = True
            source = OutputSource.LIVE
        elif self._last_live_s is not None and now - self._last_live_s <= min(
                LIVE_FRAME_GAP_S, self._freeze_s / 2):
            source = OutputSource.LIVE
        elif self._last_live_s is not None and now - self._last_live_s <= self._freeze_s:
            source = OutputSource.FREEZE
        else:
            source = OutputSource.SLATE

        if source is OutputSource.SLATE:
            if self._slate_since_s is None or self._current is not OutputSource.SLATE:
                self._slate_since_s = now
        else:
            self._slate_since_s = None

        self._changed = source is not self._current
        self._current = source
        return source

    def slate_for_s(self, now: float) -> float:
        """Seconds of continuous slate so far (0 when not on slate)."""
        if self._current is not OutputSource.SLATE or self._slate_since_s is None:
            return 0.0
        return max(0.0, now - self._slate_since_s)

    def hold_expired(self, now: float) -> bool:
        """True when slate after live has lasted ``hold_s``: end the platform sessions."""
        return self._hold_armed and self.slate_for_s(now) >= self._hold_s

    def reset_hold(self) -> None:
        """Stop counting the hold window until the next live frame (sessions were ended)."""
        self._hold_armed = False
