"""``steady``: our controller, built for links that come and go behind a buffering relay.

The relay holds ``buffer_ms`` of media, so a short queue behind the link costs the viewer
nothing while an idle link wastes capacity that never comes back: ``steady`` keeps a small,
deliberate standing queue (``QUEUE_TARGET_MS``) behind the link, and a link estimate that
survives outages. Bitrates are kbit/s; the link estimate counts audio + video, the decision
is the video bitrate. docs/encoder.md ("Why steady is built as it is") gives the reasons
and the measurements behind the rules.

At each update, in order:

1. **Outage**: once a connection has been up, the transport is down, or no ACK came for
   max(``STALL_S``, ``STALL_RTTS`` x smoothed RTT) while media is outstanding. The bitrate
   drops at once so that audio + video is at most ``OUTAGE_SHARE`` of the link estimate (of
   the bitrate + audio before there is one); the estimate is not touched. Before the first
   connection there is no outage, only a start.
2. **Start**: until the first queued rate sample sets the estimate, the bitrate rises to
   ``GAIN_MAX`` x the delivered rate - audio whenever that is higher.
3. **Queue control**: video = gain x estimate - audio, with ``gain = 1 + QUEUE_GAIN x
   (QUEUE_TARGET_MS - queue) / QUEUE_TARGET_MS`` within [``GAIN_MIN``, ``GAIN_MAX``]; then
   gain <= ``BACKFILL_GAIN`` while backfill waits (the archive gets a share of the link),
   gain <= 1 while the link carries less than ``FILLED_SHARE`` of the target + audio (an
   encoder under its target cannot probe), and gain = ``GAIN_MIN`` during a refresh (below).
4. **Switch**: the result is clamped to the limits; the encoder is told only of a change of
   more than ``SWITCH_SHARE``, or of any cut during an outage.

Measurements:

- **Queue**: the minimum over ``QUEUE_WINDOW_S`` of the live backlog minus the base RTT (a
  keyframe's burst is not congestion), except that a queue above ``QUEUE_CONGESTED_MS``
  counts at once. The live backlog is the longer of the unacknowledged live media's capture
  span (``obs.backlog_ms``) and the drain time of its bytes at the link estimate.
- **Base RTT**: the minimum ACK round trip over ``BASE_RTT_WINDOW_S`` (LEDBAT's base delay,
  RFC 6817 section 2.4.1, with one window instead of its per-minute history). When no sample
  comes within ``BASE_RTT_NEAR_MS`` of it for ``BASE_RTT_REFRESH_S``, the controller drains
  at ``GAIN_MIN`` for ``REFRESH_S`` to see the empty-queue RTT again (BBR's ProbeRTT: Cardwell
  et al., "BBR: Congestion-Based Congestion Control", ACM Queue 2016).
- **Link estimate**: the ACKed payload rate over ``RATE_WINDOW_S`` of a continuous ACK
  stream (a gap of ``STALL_S`` restarts the window; no samples during an outage). A sample
  taken while the standing queue exceeds ``QUEUED_MS`` measures the link and moves the
  estimate towards it, down or up, with weight ``ESTIMATE_GAIN_PER_S`` per second. A sample
  without a queue only raises the estimate, at once, and never above the bitrate being sent
  plus audio.
- **Target compared with the link** (the ``FILLED_SHARE`` rule): the lowest target of the
  last ``RATE_WINDOW_S + ENCODER_RISE_S``, since the encoder follows a higher target with a
  lag (the simulator models libx264's rise as a first-order lag of
  ``benchmarks.sim.VBV_TAU_UP_S``), so the bytes in the rate window were made under older,
  lower targets.
"""

from __future__ import annotations

from collections import deque

from encoder.abr.base import AbrController, AbrLimits, Observation
from encoder.abr.registry import register
from uplink.window import WindowedExtreme

QUEUE_TARGET_MS = 250  # standing queue kept behind the link (well inside the relay's buffer)
QUEUE_GAIN = 0.2  # gain change per QUEUE_TARGET_MS of queue error
GAIN_MIN = 0.5  # send at least half the link estimate (the drain after an outage)
GAIN_MAX = 1.25  # and at most a quarter above it (probing, start-up)
QUEUE_WINDOW_S = 1.0  # the standing queue is the minimum over this window
QUEUE_CONGESTED_MS = 500  # ... unless the queue now exceeds this: congestion, acted on at once
QUEUED_MS = 60  # a standing queue above this: rate samples measure the link
RATE_WINDOW_S = 1.0  # delivery rate over this window of ACKs
ESTIMATE_GAIN_PER_S = 1.0  # weight per second of a rate sample in the link estimate
BASE_RTT_WINDOW_S = 120.0  # base RTT: minimum ACK round trip over this window
BASE_RTT_NEAR_MS = 40  # an RTT sample this close to the base shows the queue empty
BASE_RTT_REFRESH_S = 40.0  # no such sample for this long: drain once to see the base again
REFRESH_S = 2.0  # ... at GAIN_MIN for this long
STALL_S = 1.0  # no ACK for this long with media outstanding: the link is out
STALL_RTTS = 4.0  # ... or for this many smoothed RTTs, whichever is longer
OUTAGE_SHARE = 0.3  # audio + video during an outage, as a share of the link estimate
BACKFILL_GAIN = 0.85  # while backfill waits, leave this much of the link to it
FILLED_SHARE = 0.8  # probe above the estimate only while the link carries this share of
                    # the target (an encoder under its target cannot probe, only float)
ENCODER_RISE_S = 1.5  # ... the target of this long before the rate window (the encoder's rise)
SWITCH_SHARE = 0.05  # tell the encoder only of changes larger than this share


@register
class SteadyController(AbrController):
    name = "steady"

    def __init__(self, limits: AbrLimits) -> None:
        super().__init__(limits)
        self._goal = float(limits.start_kbps)  # what the rules want now
        self._out = float(limits.start_kbps)  # what the encoder was last told
        self._estimate_kbps: float | None = None  # what the link delivers; survives outages
        self._acks: deque[tuple[float, int]] = deque()  # (acked_at, bytes) in the window
        self._acked_in_window = 0
        self._window_start: float | None = None  # first ACK of the continuous ACK stream
        self._base_rtt = WindowedExtreme[float](BASE_RTT_WINDOW_S)  # by acked_at, rtt_s
        self._queue = WindowedExtreme[float](QUEUE_WINDOW_S)  # standing queue ms
        self._prev_now: float | None = None
        self._ever_connected = False  # a connection was up: from then on, down is an outage
        self._base_seen_at = 0.0  # when an RTT sample last came near the base RTT
        self._refresh_until = 0.0
        self._state = "start"
        self._asked = WindowedExtreme[float](RATE_WINDOW_S + ENCODER_RISE_S)  # _out

    @property
    def estimate_kbps(self) -> float | None:
        """The link estimate (audio + video kbit/s), None before the first queued sample."""
        return self._estimate_kbps

    def describe(self) -> str:
        return self._state

    def update(self, obs: Observation, *, now: float) -> int:
        dt = 0.0 if self._prev_now is None else max(0.0, now - self._prev_now)
        self._prev_now = now
        self._ever_connected = self._ever_connected or obs.connected
        audio = self.limits.audio_kbps
        rate = self._delivery_kbps(obs, now)
        queue_ms = self._standing_queue_ms(obs, now)
        stalled = self._stalled(obs, now)
        asked = self._lowest_target(now)

        if rate is not None and not stalled:
            self._learn(rate, queue_ms > QUEUED_MS, min(1.0, ESTIMATE_GAIN_PER_S * dt))
        estimate = self._estimate_kbps

        if stalled:
            self._state = "outage"
            link = estimate if estimate is not None else self._out + audio
            self._goal = min(self._goal, OUTAGE_SHARE * link - audio)
        elif estimate is None:
            self._state = "start"
            if rate is not None:
                self._goal = max(self._goal, GAIN_MAX * rate - audio)
        else:
            gain = 1.0 + QUEUE_GAIN * (QUEUE_TARGET_MS - queue_ms) / QUEUE_TARGET_MS
            gain = min(GAIN_MAX, max(GAIN_MIN, gain))
            self._state = "drain" if gain < 0.9 else "probe" if gain > 1.1 else "steady"
            if obs.backfill_bytes > 0:
                gain = min(gain, BACKFILL_GAIN)

            if rate is not None and rate < FILLED_SHARE * (asked + audio):
                gain = min(gain, 1.0)  # the encoder makes less than asked: no probing
            if now - self._base_seen_at > BASE_RTT_REFRESH_S:
                self._base_seen_at = now
                self._refresh_until = now + REFRESH_S
            if now < self._refresh_until:
                gain, self._state = GAIN_MIN, "refresh"
            self._goal = gain * estimate - audio
        self._goal = min(float(self.limits.max_kbps), max(float(self.limits.min_kbps),
                                                         self._goal))
        if abs(self._goal - self._out) > SWITCH_SHARE * self._out or (
                stalled and self._goal < self._out):
            self._out = self._goal
        return self.limits.clamp(self._out)

    def _learn(self, rate: float, queued: bool, weight: float) -> None:
        if self._estimate_kbps is None:
            if queued:
                self._estimate_kbps = rate
            return
        if not queued:
            # the link carried all we sent, which proves no more than that
            rate = min(rate, self._out + self.limits.audio_kbps)
            self._estimate_kbps = max(self._estimate_kbps, rate)  # proven: taken at once
            return
        self._estimate_kbps += weight * (rate - self._estimate_kbps)

    def _lowest_target(self, now: float) -> float:
        """The lowest target of the last RATE_WINDOW_S + ENCODER_RISE_S (what the bytes
        in the rate window were made under, at the least)."""
        return self._asked.update(now, self._out)

    def _standing_queue_ms(self, obs: Observation, now: float) -> float:
        for a in obs.acks:
            rtt = a.rtt_s
            if rtt is None:
                continue
            self._base_rtt.add(a.acked_at, rtt)
        self._base_rtt.expire(now)
        base_rtt_s = self._base_rtt.value
        base_ms = 1000.0 * (base_rtt_s if base_rtt_s is not None else (obs.srtt_s or 0.0))
        if any(a.rtt_s is not None and 1000.0 * a.rtt_s <= base_ms + BASE_RTT_NEAR_MS
               for a in obs.acks):
            self._base_seen_at = now
        backlog_ms = float(obs.backlog_ms)
        if self._estimate_kbps:  # the live backlog's drain time at the link's rate
            live_bytes = max(0, obs.backlog_bytes - obs.backfill_bytes)
            backlog_ms = max(backlog_ms, live_bytes * 8 / self._estimate_kbps)
        queue_ms = max(0.0, backlog_ms - base_ms)
        if queue_ms > QUEUE_CONGESTED_MS:
            self._queue.clear()  # congestion, not a burst: act on it now
        return self._queue.update(now, queue_ms)

    def _stalled(self, obs: Observation, now: float) -> bool:
        if not obs.connected:
            return self._ever_connected
        if obs.backlog_bytes == 0 or obs.last_ack_time is None:
            return False
        return now - obs.last_ack_time > max(STALL_S, STALL_RTTS * (obs.srtt_s or 0.0))

    def _delivery_kbps(self, obs: Observation, now: float) -> float | None:
        """ACKed payload rate over the last RATE_WINDOW_S of a continuous ACK stream; None
        until half a window of it exists (a gap of STALL_S between ACKs restarts it)."""
        for a in obs.acks:
            if self._acks and a.acked_at - self._acks[-1][0] > STALL_S:
                self._acks.clear()
                self._acked_in_window = 0
                self._window_start = None
            if self._window_start is None:  # this ACK opens the window; its bytes were
                self._window_start = a.acked_at  # delivered before the window began
                self._acks.append((a.acked_at, 0))
                continue
            self._acks.append((a.acked_at, a.acked_bytes))
            self._acked_in_window += a.acked_bytes
        while len(self._acks) > 1 and self._acks[0][0] < now - RATE_WINDOW_S:
            self._acked_in_window -= self._acks.popleft()[1]
        if self._window_start is None or not obs.connected:
            return None
        if now - self._window_start < RATE_WINDOW_S / 2:
            return None
        span = max(RATE_WINDOW_S / 2, min(RATE_WINDOW_S, now - self._acks[0][0]))
        return self._acked_in_window * 8 / 1000.0 / span
