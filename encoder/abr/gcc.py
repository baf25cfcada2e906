"""``gcc``: Google Congestion Control's delay-based controller with AIMD, on our ACKs.

A re-implementation from the published descriptions, not from libwebrtc's code:

* [GCC] S. Holmer, H. Lundin, G. Carlucci, L. De Cicco, S. Mascolo, "A Google Congestion
  Control Algorithm for Real-Time Communication", draft-ietf-rmcat-gcc-02 (July 2016).
* [MMSys16] G. Carlucci, L. De Cicco, S. Holmer, S. Mascolo, "Analysis and Design of the
  Google Congestion Control for Web Real-time Communication (WebRTC)", ACM MMSys 2016: the
  adaptive threshold and why it is needed.
* The trendline filter of send-side BWE, which replaces the Kalman filter of [GCC] section
  5.3 when the sender estimates from transport feedback.

The pipeline, one stage per section, run on every ACK sample with an RTT:

1. **Packet groups** ([GCC] 5.2, ``InterGroupDelay``): samples whose send times lie within
   ``BURST_TIME_S`` of the group's first form one group; so does a sample that arrives less
   than ``BURST_TIME_S`` after the group's last with a negative delay variation (a burst
   released after a stall). The inter-group delay variation ([GCC] 5.1) is
   d(i) = (t(i) - t(i-1)) - (T(i) - T(i-1)), T and t the send and arrival times of the
   groups' last samples.
2. **Trendline filter** (``TrendlineFilter``): the accumulated delay sum d(i) is smoothed
   (coefficient ``TRENDLINE_SMOOTHING``); over the last ``TRENDLINE_WINDOW_SAMPLES`` points
   (arrival time, smoothed delay) a least-squares slope is fitted; the modified trend is
   slope x min(num_deltas, ``TRENDLINE_MAX_DELTAS``) x ``TRENDLINE_THRESHOLD_GAIN``, in ms,
   compared with the threshold like m(i) in [GCC] 5.4.
3. **Over-use detector** ([GCC] 5.4, [MMSys16]; ``OveruseDetector``): over-use when the
   trend has been above the adaptive threshold gamma for at least
   ``OVERUSE_TIME_THRESHOLD_MS`` and is not falling (m(i) >= m(i-1)); once signalled it
   stands while the trend stays above gamma; under-use below -gamma; normal otherwise.
   gamma follows |m| with gain ``THRESHOLD_K_UP_PER_MS`` (|m| above gamma) or
   ``THRESHOLD_K_DOWN_PER_MS`` (below), times the time since the last update in ms; it
   starts at ``THRESHOLD_INITIAL_MS`` and is clamped to [``THRESHOLD_MIN_MS``,
   ``THRESHOLD_MAX_MS``]; an outlier (|m| more than ``THRESHOLD_OUTLIER_MS`` above gamma)
   does not move it.
4. **Rate control** ([GCC] 5.5; ``GccController``): the Hold / Increase / Decrease state
   machine of the draft's table (``next_state``), starting in Increase, one step per update
   (10 Hz). Increase is multiplicative, A *= ``INCREASE_FACTOR_PER_S`` ** min(dt, 1 s), far
   from convergence, and additive near it: A += max(``ADDITIVE_MIN_INCREASE_BITS``,
   alpha x expected packet size), alpha = ``ADDITIVE_PACKETS_PER_RESPONSE_TIME`` x
   min(dt / response time, 1), response time = RTT + ``RESPONSE_TIME_EXTRA_S``, the packet
   size being a frame's bits (at ``EXPECTED_FRAME_RATE_FPS``) split into packets of at most
   ``PACKET_SIZE_BYTES``. "Near convergence" means an average max bitrate (the incoming
   rate at the decreases, with its variance) is known and A is at most one decrease below
   it (A >= beta x (average - 3 std devs)); an incoming rate more than
   ``CONVERGENCE_STD_DEVS`` standard deviations above it resets it (back to multiplicative
   increase). Decrease sets A = ``DECREASE_FACTOR`` (beta) x R_hat, the incoming rate over
   the last ``RATE_WINDOW_S``; the state stays Decrease while over-use lasts, and each update
   there applies it again (never raising A), which follows R_hat down as the window sheds
   what was acknowledged before the congestion. An increase never takes A above
   ``MAX_RATE_OVER_INCOMING`` x R_hat.

**Mapping to our observations.** [GCC] measures one-way delay variation from the receiver's
arrival timestamps; our relay sends none. Each ACK sample gives the send time ``sent_at`` of
the newest media the ACK covered and the time ``acked_at`` the ACK came back: T(i) =
``sent_at`` and t(i) = ``acked_at``, so d(i) is the change in round-trip time between groups
(forward queueing, plus return-path queueing: a congested downlink looks like over-use, plus
the relay's ACK delay).

One addition for TCP (ours, not in [GCC]): with ``count_sender_queue`` (default) the
departure time of a sample is the time its media entered the sender's queue, T(i) =
``sent_at`` - (the unsent wait ``unsent_ms`` seen at ``sent_at``), so a growing sender queue
reads as growing delay like a growing network queue. With no sender queue this is exactly
``sent_at``.

R_hat ([GCC] 5.5, "incoming bitrate") is the relay-acknowledged payload per second over the
ACKs of the last ``RATE_WINDOW_S`` (the receiver's incoming rate seen one return trip late),
measured between ACK arrivals: the bytes of all but the oldest ACK in the window over the time
from the oldest to the newest. It is unknown until the ACKs span ``RATE_WINDOW_MIN_S``.

**Loss-based control** ([GCC] section 6) is not implemented: over TCP the sender never sees a
loss (it shows up as delay, which the delay-based part reads).

**No feedback.** With the transport down (``connected`` False) or no ACK for
``FEEDBACK_HOLD_S``, the rate controller holds ("hold"). Our choice: when ACKs have been
missing for ``STARVED_OVERUSE_S`` while the backlog (unACKed bytes) keeps growing, that is
over-use ("starved"): the estimate (not R_hat, which falls towards zero without ACKs) is cut
by beta once per ``STARVED_OVERUSE_S`` of silence. A backlog that is not growing just holds.
On reconnect the delay pipeline and the rate window start afresh; the estimate and the
average max bitrate are kept.

Guessed (not given by the sources): the smoothing of the average max bitrate and its
variance (``CONVERGENCE_EWMA_GAIN``), a floor on its standard deviation
(``CONVERGENCE_STD_FLOOR``; our R_hat is noisier than one measured on every packet), which
R_hat is noted for a decrease episode (the one at its end), resetting the average also when
a decrease happens far below it, treating an estimate more than a decrease below the
average as far from convergence (multiplicative), the 100 ms cap on the threshold's time
step (``THRESHOLD_MAX_STEP_MS``), the frame rate and packet size of the additive step, the
RTT before any sample (``DEFAULT_RTT_S``), and, with no R_hat yet, a beta cut of the
estimate itself at most once per response time.

docs/encoder.md ("The baselines on our uplink") gives the reasons for the mapping and the
behaviour to expect on our ACKs (tests/unit/test_abr_gcc.py).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from encoder.abr.base import AbrController, AbrLimits, Observation
from encoder.abr.registry import register

# -- packet groups and delay variation ([GCC] 5.1, 5.2) -----------------------------------------
BURST_TIME_S = 0.005  # burst_time: samples sent within this of a group's first join it

# -- trendline filter (send-side BWE) -----------------------------------------------------------
TRENDLINE_SMOOTHING = 0.9  # weight of the previous smoothed accumulated delay
TRENDLINE_WINDOW_SAMPLES = 20  # points in the linear regression
TRENDLINE_MAX_DELTAS = 60  # the trend is scaled by min(num_deltas, this)
TRENDLINE_THRESHOLD_GAIN = 4.0  # ... and by this gain

# -- over-use detector ([GCC] 5.4, [MMSys16]) ---------------------------------------------------
THRESHOLD_INITIAL_MS = 12.5  # del_var_th(0)
THRESHOLD_MIN_MS = 6.0
THRESHOLD_MAX_MS = 600.0
THRESHOLD_K_UP_PER_MS = 0.01  # K_u: gain when |m| is above the threshold
THRESHOLD_K_DOWN_PER_MS = 0.00018  # K_d: gain when |m| is below it
THRESHOLD_OUTLIER_MS = 15.0  # |m| this far above the threshold does not update it
THRESHOLD_MAX_STEP_MS = 100.0  # time step of one threshold update at most (guessed)
OVERUSE_TIME_THRESHOLD_MS = 10.0  # overuse_time_th: trend above threshold this long

# -- rate control ([GCC] 5.5) -------------------------------------------------------------------
INCREASE_FACTOR_PER_S = 1.08  # eta: multiplicative increase, 8 % per second at most
ADDITIVE_PACKETS_PER_RESPONSE_TIME = 0.5  # additive increase: half a packet per response time
ADDITIVE_MIN_INCREASE_BITS = 1000.0  # ... but at least this many bit/s per update
RESPONSE_TIME_EXTRA_S = 0.1  # response_time = RTT + 100 ms
EXPECTED_FRAME_RATE_FPS = 30.0  # for the expected packet size (the draft's 30 fps)
PACKET_SIZE_BYTES = 1200  # largest packet: bits per frame are split into packets of this
DECREASE_FACTOR = 0.85  # beta (alpha in the draft): decrease to beta x R_hat
MAX_RATE_OVER_INCOMING = 1.5  # the estimate is not increased above this x R_hat
RATE_WINDOW_S = 1.0  # R_hat: incoming rate over this window (the draft: 0.5 to 1 s)
RATE_WINDOW_MIN_S = 0.5  # R_hat is unknown until this much ACK history exists
CONVERGENCE_STD_DEVS = 3.0  # R_hat this many std devs above the average max: reset it
CONVERGENCE_EWMA_GAIN = 0.05  # weight of a new decrease in the average max bitrate (guessed)
CONVERGENCE_STD_FLOOR = 0.05  # std dev of the average max at least this share of it (guessed)
DEFAULT_RTT_S = 0.2  # RTT for the response time before any sample (guessed)

# -- no feedback (ours) -------------------------------------------------------------------------
FEEDBACK_HOLD_S = 0.5  # no ACK for this long: no feedback, hold
STARVED_OVERUSE_S = 1.0  # no ACK this long with a growing backlog: over-use, one cut per period
SENDER_QUEUE_HISTORY_S = 30.0  # unsent waits remembered to date the samples' departure


class Signal(StrEnum):
    """The over-use detector's output ([GCC] 5.4)."""

    NORMAL = "normal"
    OVERUSE = "overuse"
    UNDERUSE = "underuse"


class RateState(StrEnum):
    """The rate controller's state ([GCC] 5.5)."""

    HOLD = "hold"
    INCREASE = "increase"
    DECREASE = "decrease"


# [GCC] 5.5, the state transition table: (state, signal) -> new state. Over-use always leads
# to Decrease, under-use to Hold; normal leads Hold to Increase and Decrease to Hold, and
# leaves Increase as it is.
_TRANSITIONS: dict[tuple[RateState, Signal], RateState] = {
    (RateState.HOLD, Signal.OVERUSE): RateState.DECREASE,
    (RateState.HOLD, Signal.NORMAL): RateState.INCREASE,
    (RateState.HOLD, Signal.UNDERUSE): RateState.HOLD,
    (RateState.INCREASE, Signal.OVERUSE): RateState.DECREASE,
    (RateState.INCREASE, Signal.NORMAL): RateState.INCREASE,
    (RateState.INCREASE, Signal.UNDERUSE): RateState.HOLD,
    (RateState.DECREASE, Signal.OVERUSE): RateState.DECREASE,
    (RateState.DECREASE, Signal.NORMAL): RateState.HOLD,
    (RateState.DECREASE, Signal.UNDERUSE): RateState.HOLD,
}


def next_state(state: RateState, signal: Signal) -> RateState:
    """The rate controller's next state for the detector's signal ([GCC] 5.5, the table)."""
    return _TRANSITIONS[(state, signal)]


@dataclass(slots=True)
class _Group:
    first_sent_s: float
    last_sent_s: float
    last_arrival_s: float


@dataclass(frozen=True, slots=True)
class GroupDelta:
    """Two consecutive packet groups compared: d(i) of [GCC] 5.1, in ms, and the arrival time
    of the newer group's last sample."""

    arrival_s: float
    delay_variation_ms: float


class InterGroupDelay:
    """Packet groups and the inter-group delay variation ([GCC] 5.1, 5.2)."""

    def __init__(self) -> None:
        self._current: _Group | None = None
        self._previous: _Group | None = None

    def add(self, sent_s: float, arrival_s: float) -> GroupDelta | None:
        """Add one sample (departure, arrival); returns the delta when it closes a group that
        has a predecessor, else None."""
        cur = self._current
        if cur is None:
            self._current = _Group(sent_s, sent_s, arrival_s)
            return None
        if sent_s < cur.first_sent_s:
            return None  # older than the group being built (reordered): no information
        if self._belongs(cur, sent_s, arrival_s):
            cur.last_sent_s = max(cur.last_sent_s, sent_s)
            cur.last_arrival_s = max(cur.last_arrival_s, arrival_s)
            return None
        delta: GroupDelta | None = None
        prev = self._previous
        if prev is not None:
            send_delta_s = cur.last_sent_s - prev.last_sent_s
            arrival_delta_s = cur.last_arrival_s - prev.last_arrival_s
            delta = GroupDelta(cur.last_arrival_s, (arrival_delta_s - send_delta_s) * 1000.0)
        self._previous = cur
        self._current = _Group(sent_s, sent_s, arrival_s)
        return delta

    @staticmethod
    def _belongs(group: _Group, sent_s: float, arrival_s: float) -> bool:
        if sent_s - group.first_sent_s <= BURST_TIME_S:
            return True
        # [GCC] 5.2: arriving within burst_time of the group with a negative delay variation
        # (the sample was held and released in a burst): part of the current group.
        arrival_delta_s = arrival_s - group.last_arrival_s
        send_delta_s = sent_s - group.last_sent_s
        return arrival_delta_s < BURST_TIME_S and arrival_delta_s - send_delta_s < 0


class TrendlineFilter:
    """Smoothed accumulated delay and the slope of its linear regression over a window."""

    def __init__(self) -> None:
        self.num_deltas = 0
        self.modified_trend_ms = 0.0
        self._accumulated_ms = 0.0
        self._smoothed_ms = 0.0
        self._first_arrival_s: float | None = None
        self._points: deque[tuple[float, float]] = deque(maxlen=TRENDLINE_WINDOW_SAMPLES)

    def update(self, delta: GroupDelta) -> float:
        """Take one d(i); returns the modified trend (ms), 0 until the window is full."""
        self.num_deltas = min(self.num_deltas + 1, TRENDLINE_MAX_DELTAS)
        if self._first_arrival_s is None:
            self._first_arrival_s = delta.arrival_s
        self._accumulated_ms += delta.delay_variation_ms
        self._smoothed_ms = (TRENDLINE_SMOOTHING * self._smoothed_ms
                             + (1.0 - TRENDLINE_SMOOTHING) * self._accumulated_ms)
        x_ms = (delta.arrival_s - self._first_arrival_s) * 1000.0
        self._points.append((x_ms, self._smoothed_ms))
        if len(self._points) == TRENDLINE_WINDOW_SAMPLES:
            slope = _regression_slope(self._points)
            if slope is not None:
                self.modified_trend_ms = (slope * self.num_deltas * TRENDLINE_THRESHOLD_GAIN)
        return self.modified_trend_ms


def _regression_slope(points: deque[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None when all x are equal."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in points)
    den = sum((x - mean_x) ** 2 for x, _ in points)
    return None if den == 0.0 else num / den


class OveruseDetector:
    """Compares the modified trend with an adaptive threshold ([GCC] 5.4, [MMSys16])."""

    def __init__(self) -> None:
        self.threshold_ms = THRESHOLD_INITIAL_MS
        self.signal = Signal.NORMAL
        self._over_since_s: float | None = None
        self._prev_trend_ms = 0.0
        self._last_update_s: float | None = None

    def update(self, trend_ms: float, arrival_s: float) -> Signal:
        if trend_ms > self.threshold_ms:
            if self._over_since_s is None:
                self._over_since_s = arrival_s
            over_ms = (arrival_s - self._over_since_s) * 1000.0
            if over_ms >= OVERUSE_TIME_THRESHOLD_MS and trend_ms >= self._prev_trend_ms:
                self.signal = Signal.OVERUSE
            elif self.signal is not Signal.OVERUSE:
                # above the threshold, not (yet) long enough or not rising: no over-use
                # yet; an over-use already signalled stands until the trend falls back
                self.signal = Signal.NORMAL
        elif trend_ms < -self.threshold_ms:
            self._over_since_s = None
            self.signal = Signal.UNDERUSE
        else:
            self._over_since_s = None
            self.signal = Signal.NORMAL
        self._prev_trend_ms = trend_ms
        self._adapt_threshold(trend_ms, arrival_s)
        return self.signal

    def _adapt_threshold(self, trend_ms: float, arrival_s: float) -> None:
        """del_var_th(i) = del_var_th(i-1) + dt x K x (|m(i)| - del_var_th(i-1))."""
        last = self._last_update_s
        self._last_update_s = arrival_s
        if last is None:
            return
        excess_ms = abs(trend_ms) - self.threshold_ms
        if excess_ms > THRESHOLD_OUTLIER_MS:
            return  # an outlier: it would pull the threshold up too fast
        gain = THRESHOLD_K_DOWN_PER_MS if excess_ms < 0 else THRESHOLD_K_UP_PER_MS
        step_ms = min(max(0.0, (arrival_s - last) * 1000.0), THRESHOLD_MAX_STEP_MS)
        self.threshold_ms += gain * step_ms * excess_ms
        self.threshold_ms = min(THRESHOLD_MAX_MS, max(THRESHOLD_MIN_MS, self.threshold_ms))


@register
class GccController(AbrController):
    """GCC's delay-based bandwidth estimate with AIMD; see the module docstring."""

    name = "gcc"
    count_sender_queue = True  # date departures from when media entered the sender's queue

    def __init__(self, limits: AbrLimits) -> None:
        super().__init__(limits)
        self.estimate_kbps = float(limits.start_kbps)  # A_hat
        self.state = RateState.INCREASE  # [GCC] 5.5: the controller starts in Increase
        self.avg_max_kbps: float | None = None  # incoming rate at the decreases, averaged
        self.var_max_kbps2 = 0.0
        self.incoming_kbps: float | None = None  # R_hat at the last update
        self.feedback = False  # ACKs fresh at the last update
        self.starved = False  # over-use assumed from silence at the last update
        self.groups = InterGroupDelay()
        self.trendline = TrendlineFilter()
        self.detector = OveruseDetector()
        self._acked: deque[tuple[float, int]] = deque()  # (ACK arrival, bytes it acked)
        self._acked_prev = 0
        self._backlog_at_feedback = 0
        self._unsent: list[tuple[float, float]] = []  # (now, unsent wait s), ascending
        self._last_now: float | None = None
        self._last_decrease_s: float | None = None
        self._last_starved_cut_s: float | None = None
        self._cut = False  # the estimate was cut at this update
        self._episode_rate_kbps: float | None = None  # R_hat in this Decrease episode
        self._rtt_s: float | None = None
        self._was_connected = False

    # -- inspection (status line and tests) ----------------------------------------------------

    @property
    def signal(self) -> Signal:
        return self.detector.signal

    @property
    def threshold_ms(self) -> float:
        return self.detector.threshold_ms

    @property
    def modified_trend_ms(self) -> float:
        return self.trendline.modified_trend_ms

    @property
    def near_convergence(self) -> bool:
        """The estimate is near the congestion level of the last decreases ([GCC] 5.5): an
        average max bitrate is known and the estimate is no further below it than one
        decrease from its lower edge, beta x (average - 3 std devs). Far below (after an
        outage cut it to the floor, say) the increase is multiplicative again, the average
        kept (our reading: the draft defines "close" only on the upper side)."""
        avg = self.avg_max_kbps
        if avg is None:
            return False
        low = DECREASE_FACTOR * (avg - CONVERGENCE_STD_DEVS * self._std_max_kbps())
        return self.estimate_kbps >= low - 1e-9

    @property
    def increase_mode(self) -> str:
        """"multiplicative" far from convergence, "additive" near it ([GCC] 5.5)."""
        return "additive" if self.near_convergence else "multiplicative"

    def describe(self) -> str:
        """"starved" (silence read as over-use), "hold" (no feedback, or holding),
        "decrease" (cut at this update), "overuse" (in Decrease, waiting for the cut to
        show), "underuse", "increase" (multiplicative) or "additive"."""
        if self.starved:
            return "starved"
        if not self.feedback:
            return "hold"
        if self.state is RateState.DECREASE:
            return "decrease" if self._cut else "overuse"
        if self.detector.signal is Signal.UNDERUSE:
            return "underuse"
        if self.state is RateState.INCREASE and self.near_convergence:
            return "additive"
        return self.state.value

    # -- the decision --------------------------------------------------------------------------

    def update(self, obs: Observation, *, now: float) -> int:
        dt_s = 0.0 if self._last_now is None else max(0.0, now - self._last_now)
        self._last_now = now
        self.starved = False
        self._cut = False
        if not obs.connected:
            # no transport, no feedback: hold; the next connection starts its own pipeline
            self.feedback = False
            self._was_connected = False
            self._enter(RateState.HOLD)
            return self.limits.clamp(self.estimate_kbps)
        if not self._was_connected:
            self._was_connected = True
            self._reset_path(obs, now)
        self._note_sender_queue(obs, now)
        self._measure_incoming(obs, now)
        self._feed_delay(obs)

        silence_s = math.inf if obs.last_ack_time is None else now - obs.last_ack_time
        if obs.acks or silence_s < FEEDBACK_HOLD_S:
            self._backlog_at_feedback = obs.backlog_bytes
            self._last_starved_cut_s = None
        if silence_s >= FEEDBACK_HOLD_S and not obs.acks:
            self.feedback = False
            if (silence_s >= STARVED_OVERUSE_S
                    and obs.backlog_bytes > self._backlog_at_feedback):
                self._starved_cut(now)
            else:
                self._enter(RateState.HOLD)
            return self.limits.clamp(self.estimate_kbps)
        self.feedback = True

        previous = self.state
        self._enter(next_state(self.state, self.detector.signal))
        if self.state is RateState.INCREASE:
            self._increase(dt_s)
        elif self.state is RateState.DECREASE:
            self._decrease(now, entering=previous is not RateState.DECREASE)
        return self.limits.clamp(self.estimate_kbps)

    def _enter(self, state: RateState) -> None:
        if self.state is RateState.DECREASE and state is not RateState.DECREASE:
            self._end_decrease_episode()
        self.state = state

    # -- measurement ---------------------------------------------------------------------------

    def _reset_path(self, obs: Observation, now: float) -> None:
        """A fresh delay pipeline and rate window (at start and on each reconnect). The
        threshold is kept: the same path likely has the same noise."""
        threshold_ms = self.detector.threshold_ms
        self.groups = InterGroupDelay()
        self.trendline = TrendlineFilter()
        self.detector = OveruseDetector()
        self.detector.threshold_ms = threshold_ms
        self._acked.clear()
        self._acked_prev = obs.acked_bytes_total
        self._backlog_at_feedback = obs.backlog_bytes
        self._unsent.clear()

    def _note_sender_queue(self, obs: Observation, now: float) -> None:
        if not self.count_sender_queue:
            return
        self._unsent.append((now, obs.unsent_ms / 1000.0))
        stale = bisect_right(self._unsent, (now - SENDER_QUEUE_HISTORY_S, -math.inf))
        del self._unsent[:stale]

    def _sender_wait_s(self, sent_s: float) -> float:
        """The unsent wait observed at or before `sent_s` (0 with no record)."""
        if not self._unsent:
            return 0.0
        i = bisect_right(self._unsent, (sent_s, math.inf))
        return self._unsent[max(0, i - 1)][1]

    def _measure_incoming(self, obs: Observation, now: float) -> None:
        """R_hat: payload the relay acknowledged per second over the ACKs of the last
        RATE_WINDOW_S, measured between ACK arrivals (the window ends at the newest ACK, and
        the oldest ACK in it only marks the start: its bytes arrived before), so that the
        ~100 ms granularity of the ACKs does not show as +-10 % noise."""
        newly = max(0, obs.acked_bytes_total - self._acked_prev)
        self._acked_prev = obs.acked_bytes_total
        for ack in obs.acks:
            if ack.acked_bytes > 0:
                self._acked.append((ack.acked_at, ack.acked_bytes))
                newly -= ack.acked_bytes
        if newly > 0:  # acknowledged without a listed sample (e.g. by a WELCOME)
            self._acked.append((now, newly))
        if not self._acked:
            self.incoming_kbps = None
            return
        newest_s = self._acked[-1][0]
        while self._acked[0][0] < newest_s - RATE_WINDOW_S - 1e-6:
            self._acked.popleft()
        span_s = newest_s - self._acked[0][0]
        if span_s < RATE_WINDOW_MIN_S - 1e-6:
            self.incoming_kbps = None
            return
        acked_bytes = sum(b for _, b in self._acked) - self._acked[0][1]
        self.incoming_kbps = acked_bytes * 8 / 1000.0 / span_s

    def _feed_delay(self, obs: Observation) -> None:
        for ack in obs.acks:
            if ack.sent_at is None:
                continue
            self._rtt_s = ack.rtt_s
            departure_s = ack.sent_at
            if self.count_sender_queue:
                departure_s -= self._sender_wait_s(ack.sent_at)
            delta = self.groups.add(departure_s, ack.acked_at)
            if delta is None:
                continue
            trend_ms = self.trendline.update(delta)
            self.detector.update(trend_ms, delta.arrival_s)

    def _response_time_s(self) -> float:
        rtt_s = self._rtt_s if self._rtt_s is not None else DEFAULT_RTT_S
        return rtt_s + RESPONSE_TIME_EXTRA_S

    # -- rate control --------------------------------------------------------------------------

    def _increase(self, dt_s: float) -> None:
        rate = self.incoming_kbps
        if (self.avg_max_kbps is not None and rate is not None
                and rate > self.avg_max_kbps + CONVERGENCE_STD_DEVS * self._std_max_kbps()):
            # the incoming rate left the old congestion level: forget it, probe multiplicatively
            self.avg_max_kbps = None
            self.var_max_kbps2 = 0.0
        old = self.estimate_kbps
        if self.near_convergence:
            new = old + self._additive_step_bits(old, dt_s) / 1000.0
        else:
            new = old * INCREASE_FACTOR_PER_S ** min(dt_s, 1.0)
        if rate is not None:
            new = max(old, min(new, MAX_RATE_OVER_INCOMING * rate))
        self.estimate_kbps = self._bounded(new)

    def _additive_step_bits(self, kbps: float, dt_s: float) -> float:
        """max(1000, alpha x expected packet size), alpha = 0.5 x min(dt / response time, 1)."""
        bits_per_frame = kbps * 1000.0 / EXPECTED_FRAME_RATE_FPS
        packets_per_frame = max(1, math.ceil(bits_per_frame / (PACKET_SIZE_BYTES * 8)))
        packet_bits = bits_per_frame / packets_per_frame
        alpha = ADDITIVE_PACKETS_PER_RESPONSE_TIME * min(dt_s / self._response_time_s(), 1.0)
        return max(ADDITIVE_MIN_INCREASE_BITS, alpha * packet_bits)

    def _decrease(self, now: float, *, entering: bool) -> None:
        """A_hat = beta x R_hat at each update in Decrease ([GCC] 5.5), never raising the
        estimate: while the queue lasts R_hat is the link's rate, so repeating the cut only
        follows R_hat down as the window sheds what was acked before the congestion. Without
        an R_hat (start, reconnect) the estimate itself is cut by beta, once on entering
        Decrease and then at most once per response time (a cut cannot show sooner)."""
        rate = self.incoming_kbps
        if rate is not None:
            self._episode_rate_kbps = rate
            new = min(self.estimate_kbps, DECREASE_FACTOR * rate)
        elif (entering or self._last_decrease_s is None
              or now - self._last_decrease_s >= self._response_time_s()):
            new = DECREASE_FACTOR * self.estimate_kbps
        else:
            return
        self._last_decrease_s = now
        new = self._bounded(new)
        self._cut = new < self.estimate_kbps
        self.estimate_kbps = new

    def _starved_cut(self, now: float) -> None:
        """Over-use read from silence: one beta cut of the estimate per STARVED_OVERUSE_S."""
        self.starved = True
        self._enter(RateState.DECREASE)
        last = self._last_starved_cut_s
        if last is None or now - last >= STARVED_OVERUSE_S - 1e-9:
            self._last_starved_cut_s = now
            self._last_decrease_s = now
            self._cut = True
            self.estimate_kbps = self._bounded(DECREASE_FACTOR * self.estimate_kbps)

    def _end_decrease_episode(self) -> None:
        """Note the incoming rate of the decrease just over: R_hat at its last update (the
        first updates of an episode may still count rate acked before the congestion, and
        the lowest R_hat of the episode would be biased low by the measurement noise)."""
        if self._episode_rate_kbps is not None:
            self._note_max_rate(self._episode_rate_kbps)
        self._episode_rate_kbps = None

    def _note_max_rate(self, rate_kbps: float) -> None:
        """The average and variance of the incoming rate at the decreases ([GCC] 5.5)."""
        avg = self.avg_max_kbps
        if avg is not None and rate_kbps < avg - CONVERGENCE_STD_DEVS * self._std_max_kbps():
            avg = None  # far below the old level: the congestion level changed (guessed)
        if avg is None:
            self.avg_max_kbps = rate_kbps
            self.var_max_kbps2 = 0.0
            return
        g = CONVERGENCE_EWMA_GAIN
        self.avg_max_kbps = (1.0 - g) * avg + g * rate_kbps
        self.var_max_kbps2 = (1.0 - g) * self.var_max_kbps2 + g * (rate_kbps - avg) ** 2

    def _std_max_kbps(self) -> float:
        avg = self.avg_max_kbps or 0.0
        return max(math.sqrt(self.var_max_kbps2), CONVERGENCE_STD_FLOOR * avg)

    def _bounded(self, kbps: float) -> float:
        return float(min(self.limits.max_kbps, max(self.limits.min_kbps, kbps)))
