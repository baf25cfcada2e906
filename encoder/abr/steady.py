"""``steady``: our controller, built for links that come and go.

A weak rural uplink differs from the links the classic controllers were tuned on in one way
above all: it disappears, for a fraction of a second or for minutes, and comes back at about
the rate it had. So ``steady`` keeps an estimate of what the link delivers that survives an
outage, and treats "no ACKs" as an outage to ride out, not as evidence that the link is slow.

The rules, in order of precedence at each update:

1. **Outage** - the transport is down, or ACKs stopped for ``STALL_S`` (or 4 RTTs) while media
   is outstanding: the bitrate drops at once to ``OUTAGE_SHARE`` of the link estimate (at least
   the floor), so the media spooled during the outage is small and is caught up quickly when
   the link returns. The link estimate is left as it was.
2. **Drain** - media queues behind the link (queueing delay, the unacknowledged media span
   minus one RTT, above ``DRAIN_QUEUE_MS``; after an outage this is the spooled media): the
   bitrate is set so the queue empties in about ``DRAIN_HORIZON_S``: the link estimate times
   ``1 - queue / horizon``, at least ``DRAIN_MIN_SHARE`` of it. Each update in this state that
   still finds the queue growing lowers the estimate towards the measured delivery rate.
3. **Back off** - the queue is above ``BACKOFF_QUEUE_MS`` and growing: the link delivers less
   than we send. The estimate becomes the rate measured while we were queueing, the bitrate
   ``HEADROOM`` of it, and probing waits ``PROBE_HOLDOFF_S``; the level where this happened
   is remembered (``_ceiling``) to probe carefully up to it later.
4. **Steady / probe** - no queue: the bitrate moves towards ``HEADROOM`` × estimate (half the
   gap per second upwards, at once downwards). After ``PROBE_HOLDOFF_S`` without congestion the
   controller probes: ``PROBE_STEP_FAR`` per ``PROBE_INTERVAL_S``, growing by
   ``PROBE_STEP_GROWTH`` with each probe in a row the link carried, or while a back-off is
   less than ``CEILING_FORGET_S`` old, ``PROBE_STEP_NEAR`` and only up to
   ``CEILING_PROBE_SHARE`` of the link estimate measured at that back-off, so it settles just
   under a known ceiling instead of overshooting it again and again (no saw-tooth); a
   re-probe past it every ``CEILING_FORGET_S`` finds capacity that has grown. Samples taken
   while the sender is not queueing only raise the estimate (an app-limited sender cannot
   measure the link's limit).

Rate samples are the relay's ACKed payload bytes over the last ``RATE_WINDOW_S``. The bitrate
returned is the video bitrate; ``HEADROOM`` leaves room for audio and framing.
"""

from __future__ import annotations

from collections import deque

from encoder.abr import register
from encoder.abr.base import AbrController, AbrLimits, Observation

HEADROOM = 0.85  # video bitrate as a share of the link estimate (audio, framing, variation)
RATE_WINDOW_S = 1.5  # delivery rate over this window of ACKs
STALL_S = 1.0  # no ACK for this long with media outstanding: the link is out
STALL_RTTS = 4.0  # ... or for this many smoothed RTTs, whichever is longer
OUTAGE_SHARE = 0.3  # bitrate during an outage, as a share of the link estimate
BACKOFF_QUEUE_MS = 350  # queueing delay that, while growing, means we send too much
DRAIN_QUEUE_MS = 1200  # queueing delay that must be drained on purpose
DRAIN_HORIZON_S = 4.0  # empty a queue in about this long
DRAIN_MIN_SHARE = 0.4  # never drain below this share of the link estimate
FRESH_ACK_S = 0.3  # a rate sample counts only if the last ACK is this recent (or 2 RTTs):
                   # ACKs pausing may be the start of an outage, not a slow link
QUEUED_MS = 150  # queueing delay above which a rate sample measures the link, not us
ESTIMATE_GAIN_PER_S = 0.5  # weight per second of a queued rate sample in the estimate
RISE_GAIN_PER_S = 0.5  # bitrate moves this share of the way up to its goal per second
PROBE_HOLDOFF_S = 6.0  # no probing this long after congestion (or the start)
PROBE_INTERVAL_S = 2.0
PROBE_HOLDOFF_START_S = 2.0  # at the start, before any congestion: probe sooner,
PROBE_INTERVAL_START_S = 1.0  # more often,
PROBE_STEP_START = 0.25  # and in bigger steps (the link is unknown)
PROBE_STEP_FAR = 0.08  # probe step with no recent back-off
PROBE_STEP_GROWTH = 1.5  # ... times this per probe in a row the link carried
PROBE_STEP_MAX = 0.25
PROBE_STEP_NEAR = 0.03  # probe step while a back-off is recent
CEILING_PROBE_SHARE = 0.92  # while a back-off is recent, probe up to this share of the link
                            # estimate it measured, and no further (no saw-tooth)
CEILING_FORGET_S = 30.0  # after this long, probe past the last back-off again


@register
class SteadyController(AbrController):
    name = "steady"

    def __init__(self, limits: AbrLimits) -> None:
        super().__init__(limits)
        self._target = float(limits.start_kbps)
        self._estimate_kbps: float | None = None  # what the link delivers; survives outages
        self._acks: deque[tuple[float, int]] = deque()  # (acked_at, bytes) in the window
        self._acked_in_window = 0
        self._window_start: float | None = None
        self._prev_queue_ms = 0.0
        self._prev_now: float | None = None
        self._hold_until = 0.0  # no probing before this
        self._next_probe = 0.0
        self._probe_level: float | None = None  # bitrate reached by probing
        self._ceiling: tuple[float, float] | None = None  # (kbps, when) of the last back-off
        self._state = "start"
        self._streak = 0  # probes in a row since the last congestion
        self._congested_once = False  # until the first back-off, probe faster (start-up)
        self._started = False

    @property
    def estimate_kbps(self) -> float | None:
        return self._estimate_kbps

    def describe(self) -> str:
        return self._state

    def update(self, obs: Observation, *, now: float) -> int:
        if not self._started:
            self._started = True
            self._hold_until = now + PROBE_HOLDOFF_S
        dt = 0.0 if self._prev_now is None else max(0.0, now - self._prev_now)
        self._prev_now = now
        rate = self._delivery_kbps(obs, now)
        srtt_ms = 1000.0 * (obs.srtt_s or 0.0)
        queue_ms = max(0.0, obs.backlog_ms - srtt_ms)
        growing = queue_ms > self._prev_queue_ms
        self._prev_queue_ms = queue_ms
        queued = queue_ms > QUEUED_MS or obs.unsent_ms > QUEUED_MS

        stalled = self._stalled(obs, now)
        fresh = obs.last_ack_time is not None and now - obs.last_ack_time <= max(
            FRESH_ACK_S, 2 * (obs.srtt_s or 0.0))
        if rate is not None and fresh and not stalled:
            if self._estimate_kbps is None:
                if queued:
                    self._estimate_kbps = rate
            elif queued:
                w = min(1.0, ESTIMATE_GAIN_PER_S * dt)
                self._estimate_kbps += w * (rate - self._estimate_kbps)
            elif rate > self._estimate_kbps:
                self._estimate_kbps = rate
        estimate = self._estimate_kbps

        if stalled:
            self._state = "outage"
            base = estimate if estimate is not None else self._target
            self._target = min(self._target, max(self.limits.min_kbps, OUTAGE_SHARE * base))
            self._probe_level = None
            self._streak = 0
            self._hold_until = max(self._hold_until, now + PROBE_HOLDOFF_S / 2)
        elif queue_ms > DRAIN_QUEUE_MS and estimate is not None:
            self._state = "drain"
            share = max(DRAIN_MIN_SHARE, 1.0 - queue_ms / 1000.0 / DRAIN_HORIZON_S)
            self._target = share * HEADROOM * estimate
            self._probe_level = None
            self._hold_until = max(self._hold_until, now + PROBE_HOLDOFF_S)
            self._congested_once = True
            self._streak = 0
        elif queue_ms > BACKOFF_QUEUE_MS and growing:
            self._state = "backoff"
            measured = rate if rate is not None else self._target
            if estimate is None or measured < estimate:
                self._estimate_kbps = estimate = measured
            if self._target > HEADROOM * estimate:
                self._ceiling = (estimate, now)
                self._target = HEADROOM * estimate
            self._probe_level = None
            self._hold_until = now + PROBE_HOLDOFF_S
            self._congested_once = True
            self._streak = 0
        else:
            self._steady(estimate, dt, now)
        self._target = min(float(self.limits.max_kbps), max(float(self.limits.min_kbps),
                                                             self._target))
        return self.limits.clamp(self._target)

    def _steady(self, estimate: float | None, dt: float, now: float) -> None:
        goal = HEADROOM * estimate if estimate is not None else float(self.limits.start_kbps)
        if self._probe_level is not None:
            goal = max(goal, self._probe_level)
        if now >= self._hold_until and now >= self._next_probe:
            step, limit = PROBE_STEP_FAR, float(self.limits.max_kbps)
            if not self._congested_once:
                step = PROBE_STEP_START
            else:  # each probe that the link carried earns a bigger next step
                step = min(PROBE_STEP_MAX, PROBE_STEP_FAR * PROBE_STEP_GROWTH ** self._streak)
            if self._ceiling is not None:
                level, when = self._ceiling
                if now - when > CEILING_FORGET_S:
                    self._ceiling = None
                else:
                    step, limit = PROBE_STEP_NEAR, CEILING_PROBE_SHARE * level
            if self._target >= goal * 0.98 and self._target < limit:
                self._probe_level = min(limit, self._target * (1.0 + step))
                if self._ceiling is None:
                    self._streak += 1
                goal = max(goal, self._probe_level)
                self._state = "probe"
            else:
                self._state = "steady"
            self._next_probe = now + (PROBE_INTERVAL_S if self._congested_once
                                      else PROBE_INTERVAL_START_S)
        elif self._state not in ("probe",):
            self._state = "steady"
        if goal < self._target:
            self._target = goal
        else:
            self._target += min(1.0, RISE_GAIN_PER_S * dt) * (goal - self._target)

    def _stalled(self, obs: Observation, now: float) -> bool:
        if not obs.connected:
            return True
        if obs.backlog_bytes == 0 or obs.last_ack_time is None:
            return False
        limit = max(STALL_S, STALL_RTTS * (obs.srtt_s or 0.0))
        return now - obs.last_ack_time > limit

    def _delivery_kbps(self, obs: Observation, now: float) -> float | None:
        """ACKed payload rate over the last RATE_WINDOW_S of a continuous ACK stream; None
        until half a window of it exists (a gap of STALL_S between ACKs restarts it)."""
        for a in obs.acks:
            if self._acks and a.acked_at - self._acks[-1][0] > STALL_S:
                self._acks.clear()
                self._acked_in_window = 0
                self._window_start = a.acked_at  # this ACK opens the window; its bytes
                self._acks.append((a.acked_at, 0))  # were delivered during the gap
                continue
            if self._window_start is None:
                self._window_start = a.acked_at
                self._acks.append((a.acked_at, 0))
                continue
            self._acks.append((a.acked_at, a.acked_bytes))
            self._acked_in_window += a.acked_bytes
        while self._acks and self._acks[0][0] < now - RATE_WINDOW_S:
            self._acked_in_window -= self._acks.popleft()[1]
        if self._window_start is None or not obs.connected:
            return None
        span = min(RATE_WINDOW_S, now - self._window_start)
        if span < RATE_WINDOW_S / 2:
            return None
        return self._acked_in_window * 8 / 1000.0 / span
