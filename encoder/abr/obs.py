"""``obs``: OBS Studio's dynamic bitrate, as a baseline on our uplink.

OBS Studio (GPL) has an option under Settings -> Advanced -> Network, "Dynamically change
bitrate when dropping frames while streaming" (OBS 27 release notes; since renamed "Dynamically
change bitrate to manage congestion (Beta)", per obsproject/obs-studio PR #12097). It acts on
OBS's RTMP output: when encoded packets queue up waiting for the socket it lowers the video
bitrate to what the connection is measured to carry, then raises it again step by step. This
module re-implements the *published rules*, written from descriptions, not from OBS's code
(nothing was copied; the only code seen, in search results, was a few constant definitions -
a 4 s increase timer in newer versions, 30 s in older ones, a 200 ms trigger - which agree with
these rules). The rules are those given in our issue for the OBS 27 behaviour, with the public
descriptions below:

1. **Congestion**: at least ``CONGESTION_UNSENT_MS`` (200 ms) of encoded media waits unsent. (The
   200 ms trigger on "the time of the buffered encoder packets waiting to be sent" is also
   described in the Streamlabs fork's PR stream-labs/obs-studio #175, which starts from it.)
2. **Drop**: on congestion, the bitrate drops to the measured send rate - the rate at which
   bytes actually left - if that is lower than the bitrate now (it is a drop, never a raise).
3. **Recover**: while not congested, every ``RECOVER_INTERVAL_S`` (4 s) after the last change
   the bitrate rises by ``RECOVER_STEP_SHARE`` (10 %) of the *original* bitrate. (The interval
   has changed between OBS versions: obsproject/obs-studio PR #6173 describes the first one as
   30 s; 4 s is the value our issue gives.)
4. **Ceiling**: never above the original bitrate, the one the user configured (OBS returns to
   it; obsproject/obs-studio issue #12235 describes the recovery climbing back to the bitrate
   the stream started with). Ours is ``limits.start_kbps``; ``limits.min_kbps`` is the floor.
5. **Disconnected**: the bitrate is held (OBS's reconnect keeps the encoder running).

Readings (where the rules leave a choice):

- "10 %": of the original bitrate, not of the current one: a fixed additive step. That is what
  the Streamlabs PR above describes when it "changes the bitrate increase rate to 20% of
  original bitrate" (so OBS's step was 10 % of the original); recovery from the floor to the
  start bitrate therefore takes at most 10 steps, 40 s.
- The 4 s timer restarts at every drop and every rise; a rise happens at the first uncongested
  update once it has run out.

Mapping to our uplink (a reliable WebSocket/TCP link with our own ACKs, not OBS's RTMP socket):

- OBS's queue of packets waiting for the socket -> ``obs.unsent_ms``: the capture-time span of
  the media the sender has not yet handed to the transport, which happens when the WebSocket's
  send buffer (and the kernel's under it) is full - the same state in which OBS's queue grows.
- Measured send rate -> growth of ``obs.sent_bytes_total`` (payload handed to the transport)
  over the last ``SEND_RATE_WINDOW_S``. This is the quantity OBS measures (bytes written into
  its TCP socket): once the socket buffer is full, writes go at the rate the link drains, which
  is exactly the state in which congestion is declared. ``acked_bytes_total`` was not used: it
  lags by an RTT, moves in ACK batches (0.1 s / 32 media), and jumps after a resume when one
  ACK covers what arrived before the connection broke, which would overstate the rate.
  Retransmitted bytes count: they used the link too. The rate needs at least
  ``SEND_RATE_MIN_SPAN_S`` of samples; the window is cleared when disconnected, so the first
  decision after a reconnect uses only what left on the new connection.
- Audio: ``sent_bytes_total`` carries audio too, while ``update`` returns the video bitrate, so
  the drop target is the measured rate minus ``audio_kbps`` (default: the limits'
  ``audio_kbps``, the encoder's AAC rate). Without that the stream would settle exactly on
  the link rate plus audio and its queue could never drain.
- The window length (1 s) and the minimum span are our guesses; the issue does not give them.
- Not modelled: OBS also drops frames when its queue grows too old (the "dropping frames" of
  the option's name), which empties the queue. Our uplink is reliable and drops nothing, so a
  drop to exactly the link rate can leave a standing queue (still "congested", no recovery)
  until the link gets faster; that is how these rules behave on our transport.
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
