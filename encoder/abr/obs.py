"""``obs``: OBS Studio's dynamic bitrate, as a baseline on our uplink.

OBS Studio's "Dynamically change bitrate when dropping frames while streaming" (OBS 27 release
notes; "Dynamically change bitrate to manage congestion (Beta)" since obsproject/obs-studio PR
#12097), re-implemented from its published rules, not from OBS's (GPL) code. Sources: the rules
our issue gives for OBS 27; the 200 ms trigger and the step of 10 % of the original bitrate
also in stream-labs/obs-studio PR #175 (which raises that step to 20 %); the first interval,
30 s, in obsproject/obs-studio PR #6173; the climb back to the starting bitrate in
obsproject/obs-studio issue #12235. docs/encoder.md ("The baselines on our uplink") gives the
reasons for the readings and the mapping below.

Rules, at each update:

1. **Congestion**: at least ``CONGESTION_UNSENT_MS`` of encoded media waits unsent.
2. **Drop**: on congestion, the bitrate drops to the measured send rate minus ``audio_kbps``,
   if that is lower than the bitrate now (never a raise).
3. **Recover**: while not congested and below the ceiling, the bitrate rises by
   ``RECOVER_STEP_SHARE`` of the *original* bitrate (a fixed additive step) once
   ``RECOVER_INTERVAL_S`` have passed since the last change; every drop and every rise
   restarts that wait.
4. **Bounds**: never above the original bitrate (``limits.start_kbps``, ``ceiling_kbps``),
   never below ``limits.min_kbps``.
5. **Disconnected**: the bitrate is held and the send-rate window is cleared.

Mapping onto our uplink (a reliable WebSocket/TCP link with our own ACKs, not OBS's RTMP
socket):

- OBS's queue of packets waiting for the socket -> ``obs.unsent_ms`` (the capture-time span
  of the media not yet handed to the transport).
- Measured send rate -> growth of ``obs.sent_bytes_total`` (payload handed to the transport,
  audio and retransmissions included) over the last ``SEND_RATE_WINDOW_S``; no rate until
  the samples span ``SEND_RATE_MIN_SPAN_S``. Both lengths are ours (the sources give none).
- ``audio_kbps`` defaults to ``limits.audio_kbps``, since ``update`` returns the video bitrate.
- Not modelled: OBS also drops frames when its queue grows too old; our uplink drops nothing.
"""

from __future__ import annotations

from collections import deque

from encoder.abr.base import AbrController, AbrLimits, Observation
from encoder.abr.registry import register

CONGESTION_UNSENT_MS = 200  # this much media waiting unsent is congestion
RECOVER_INTERVAL_S = 4.0  # a rise at most this often, counted from the last change
RECOVER_STEP_SHARE = 0.10  # each rise: this share of the original (start) bitrate
SEND_RATE_WINDOW_S = 1.0  # the send rate is measured over this recent window (guess)
SEND_RATE_MIN_SPAN_S = 0.5  # ... and only once the samples span this long (guess)
TIME_EPS_S = 1e-6  # a wait that ends within this of `now` has ended (float ticks)


@register
class ObsController(AbrController):
    """OBS Studio's dynamic bitrate rules (see the module docstring)."""

    name = "obs"

    def __init__(self, limits: AbrLimits, *, audio_kbps: float | None = None) -> None:
        super().__init__(limits)
        if audio_kbps is None:
            audio_kbps = limits.audio_kbps
        if audio_kbps < 0:
            raise ValueError(f"audio_kbps must not be negative, not {audio_kbps}")
        self.audio_kbps = float(audio_kbps)
        self._bitrate = limits.start_kbps
        self._samples: deque[tuple[float, int]] = deque()  # (now, sent_bytes_total)
        self._next_rise = float("-inf")
        self._state = "steady"

    @property
    def ceiling_kbps(self) -> int:
        """The original bitrate: recovery never goes above it."""
        return self.limits.start_kbps

    def send_rate_kbps(self) -> float | None:
        """Payload send rate over the recent window (kbit/s), None until it spans enough."""
        if len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        if t1 - t0 < SEND_RATE_MIN_SPAN_S - TIME_EPS_S:
            return None
        return max(0, b1 - b0) * 8 / 1000 / (t1 - t0)

    def describe(self) -> str:
        return self._state

    def update(self, obs: Observation, *, now: float) -> int:
        if not obs.connected:
            self._samples.clear()
            self._state = "hold"
            return self._bitrate
        self._samples.append((now, obs.sent_bytes_total))
        while self._samples and now - self._samples[0][0] > SEND_RATE_WINDOW_S + TIME_EPS_S:
            self._samples.popleft()
        if obs.unsent_ms >= CONGESTION_UNSENT_MS:
            self._state = "congested"
            rate = self.send_rate_kbps()
            if rate is not None:
                target = self.limits.clamp(min(rate - self.audio_kbps, self.ceiling_kbps))
                if target < self._bitrate:
                    self._bitrate = target
                    self._next_rise = now + RECOVER_INTERVAL_S
        elif self._bitrate < self.ceiling_kbps:
            self._state = "recover"
            if now + TIME_EPS_S >= self._next_rise:
                step = RECOVER_STEP_SHARE * self.limits.start_kbps
                self._bitrate = min(self.ceiling_kbps, self.limits.clamp(self._bitrate + step))
                self._next_rise = now + RECOVER_INTERVAL_S
        else:
            self._state = "steady"
        return self._bitrate
