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
   ``PROBE_STEP_GROWTH`` with each probe in a row the link carried. Near the link estimate
   measured at the last back-off (the ceiling) it is careful: for ``CEILING_FORGET_S`` it
   probes in ``PROBE_STEP_NEAR`` steps and only up to ``CEILING_PROBE_SHARE`` of it, so it
   settles just under a known ceiling instead of overshooting it again and again (no
   saw-tooth); after that, or as soon as a queued measurement shows the link carrying
   ``CEILING_STALE_SHARE`` of the old ceiling (after an outage, say), it probes past it.
   Samples taken while the sender is not queueing only raise the estimate (an app-limited
   sender cannot measure the link's limit, and never above what was sent: ACK timing noise
   must not creep the estimate above the link). A probe step that makes a queue grow (above
   ``QUEUED_MS``) is undone at once and its level remembered as the ceiling.

Rate samples are the relay's ACKed payload bytes (audio and video; the uplink's framing is
not counted, so the estimate is already net of it) over the last ``RATE_WINDOW_S``. The
bitrate returned is the video bitrate: ``HEADROOM`` of the estimate minus the audio rate
(``AbrLimits.audio_kbps``).
"""

from __future__ import annotations

from collections import deque

from encoder.abr import register
from encoder.abr.base import AbrController, AbrLimits, Observation

HEADROOM = 0.9  # audio + video as a share of the link estimate (variation, framing)
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
RAISE_GAIN_PER_S = 1.0  # ... and of an unqueued sample above the estimate (it only raises)
RISE_GAIN_PER_S = 0.5  # bitrate moves this share of the way up to its goal per second
PROBE_HOLDOFF_S = 6.0  # no probing this long after congestion (or the start)
PROBE_INTERVAL_S = 2.0
PROBE_INTERVAL_START_S = 1.0  # at the start, before any congestion: probe more often
PROBE_STEP_START = 0.25  # and in bigger steps (the link is unknown)
PROBE_STEP_FAR = 0.08  # probe step with no recent back-off
PROBE_CARRIED_SHARE = 0.99  # probe again only once the link carries what we send (the last
                            # step arrived in full) and no queue is building
PROBE_STEP_GROWTH = 1.5  # ... times this per probe in a row the link carried
PROBE_STEP_MAX = 0.25
PROBE_STEP_NEAR = 0.03  # probe step while a back-off is recent
CEILING_PROBE_SHARE = 0.95  # while a back-off is recent, probe up to this share of the link
                            # estimate it measured, and no further (no saw-tooth)
CEILING_FORGET_S = 30.0  # after this long, probe past the last back-off again
CEILING_STALE_SHARE = 1.1  # an estimate this far above the back-off level: the link has grown


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
        self._before_probe = self._target  # the bitrate before the last probe step
        self._ceiling: tuple[float, float] | None = None  # (kbps, when) of the last back-off
        self._state = "start"
        self._streak = 0  # probes in a row since the last congestion
        self._congested_once = False  # until the first back-off, probe faster (start-up)

    @property
    def estimate_kbps(self) -> float | None:
        return self._estimate_kbps

    def describe(self) -> str:
        return self._state

    def update(self, obs: Observation, *, now: float) -> int:
        if self._prev_now is None:  # the first update
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
                if self._ceiling is not None and rate > CEILING_STALE_SHARE * self._ceiling[0]:
                    self._ceiling = None  # queued, the link carried well above it: it grew
            else:
                # not queued: the link carried all we sent, which proves no more than that
                # (and ACK timing noise must not creep the estimate above the link)
                carried = min(rate, self._target + self.limits.audio_kbps)
                if carried > self._estimate_kbps:
                    w = min(1.0, RAISE_GAIN_PER_S * dt)
                    self._estimate_kbps += w * (carried - self._estimate_kbps)
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
            self._target = share * self._video(HEADROOM, estimate)
            self._ceiling = (estimate, now)
            self._probe_level = None
            self._hold_until = max(self._hold_until, now + PROBE_HOLDOFF_S)
            self._congested_once = True
            self._streak = 0
        elif queue_ms > BACKOFF_QUEUE_MS and growing:
            self._state = "backoff"
            if fresh and rate is not None and (estimate is None or rate < estimate):
                self._estimate_kbps = estimate = rate  # (ACKs pausing: maybe an outage
            if estimate is None:  # starting, which must not erase the estimate)
                estimate = self._target + self.limits.audio_kbps
            if self._target > self._video(HEADROOM, estimate):
                self._ceiling = (estimate, now)
                self._target = self._video(HEADROOM, estimate)
            self._probe_level = None
            self._hold_until = now + PROBE_HOLDOFF_S
            self._congested_once = True
            self._streak = 0
        elif self._probe_level is not None and queue_ms > QUEUED_MS and growing:
            # the last probe step put a queue behind the link: undo it, and remember the level
            self._state = "backoff"
            if estimate is not None:
                self._ceiling = (estimate, now)
            self._target = min(self._target, self._before_probe)
            self._probe_level = None
            self._congested_once = True
            self._streak = 0
            self._hold_until = now + PROBE_HOLDOFF_S
        else:
            carried = rate is not None and rate >= PROBE_CARRIED_SHARE * (
                self._target + self.limits.audio_kbps)
            self._steady(estimate, dt, now, may_probe=carried and queue_ms < QUEUED_MS / 2)
        self._target = min(float(self.limits.max_kbps), max(float(self.limits.min_kbps),
                                                             self._target))
        return self.limits.clamp(self._target)

    def _steady(self, estimate: float | None, dt: float, now: float, may_probe: bool) -> None:
        goal = (self._video(HEADROOM, estimate) if estimate is not None
                else float(self.limits.start_kbps))
        if self._probe_level is not None:
            goal = max(goal, self._probe_level)
        if now >= self._hold_until and now >= self._next_probe and may_probe:
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
                    step, limit = PROBE_STEP_NEAR, self._video(CEILING_PROBE_SHARE, level)
            if self._target >= goal * 0.98 and self._target < limit:
                self._before_probe = self._target
                self._probe_level = min(limit, self._target * (1.0 + step))
                self._target = max(self._target, self._probe_level)  # a step, not a ramp
                if self._ceiling is None:
                    self._streak += 1  # (near a ceiling, steps stay small)
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

    def _video(self, share: float, link_kbps: float) -> float:
        """The video bitrate that makes audio + video `share` of a link of `link_kbps`."""
        return share * link_kbps - self.limits.audio_kbps

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
