"""``belacoder``: BELABOX's RTT + send-buffer bitrate control, as a baseline on our uplink.

belacoder (github.com/BELABOX/belacoder, GPL) is the encoder of the BELABOX bonded-4G IRL kit.
This module re-implements the *published rules* of its control loop; no belacoder source was
read or copied. Source: the documentation of the maintained fork CERALIVE/ceracoder (a fork of
irlserver/belacoder, itself a fork of BELABOX/belacoder), ``docs/bitrate-control.md``, sections
"Adaptive Algorithm Details", "Smoothing Constants", "Thresholds", "Decision Logic" and
"Constants Summary", which describe the default ``adaptive`` balancer (moved out of
belacoder.c with "no functional changes", the fork's PR #7). docs/encoder.md ("The baselines
on our uplink") gives the reasons for the mapping and the adaptations below.

Published rules (belacoder polls SRT every 20 ms; ``bs`` = send-buffer size in packets, ``rtt``
in ms, ``latency`` = the SRT latency):

- smoothing, per 20 ms sample: ``bs_avg`` and ``rtt_avg`` are EMAs with weight 0.99 (old) /
  0.01 (new); ``bs_jitter`` and ``rtt_jitter`` are the largest recent sample-to-sample increase,
  decaying by 0.99 per sample; ``rtt_min`` follows the smallest RTT and drifts up by 0.1 % per
  sample (starts at 200 ms); ``rtt_avg_delta`` is an EMA (0.8 old) of the RTT change per sample
  (the previous RTT starts at 300 ms); the send rate is an EMA with weight 0.97.
- thresholds: ``bs_th3 = 4 (bs_avg + bs_jitter)``; ``bs_th2 = max(50, bs_avg + max(3 bs_jitter,
  bs_avg))``, capped at the packets the measured send rate fills in ``latency / 2``; ``bs_th1 =
  max(50, bs_avg + 2.5 bs_jitter)``; ``rtt_th_max = rtt_avg + max(4 rtt_jitter, 15 % rtt_avg)``;
  ``rtt_th_min = rtt_min + max(1, 2 rtt_jitter)``.
- decisions, first match wins:
  1. above the minimum and ``rtt >= latency / 3`` or ``bs > bs_th3``: straight to the minimum
     (and no further decrease for 200 ms);
  2. decrease allowed and ``rtt > latency / 5`` or ``bs > bs_th2``: minus 100 kbit/s + 10 % of
     the bitrate, next decrease in 250 ms;
  3. decrease allowed and ``rtt > rtt_th_max`` or ``bs > bs_th1``: minus 100 kbit/s, next
     decrease in 200 ms;
  4. increase allowed, ``rtt < rtt_th_min`` and ``rtt_avg_delta < 0.01``: plus 30 kbit/s + 1/30
     of the bitrate, next increase in 500 ms.
  The bitrate is clamped to min..max and handed to the encoder rounded down to 100 kbit/s; the
  unrounded value is kept for the next step.

Mapping onto our uplink (a reliable WebSocket/TCP link with our own ACKs, not SRT):

- SRT send buffer (``SRTO_SNDDATA``: packets held until the receiver ACKs them) ->
  ``obs.backlog_bytes`` (unsent + in flight) in units of ``SRT_PAYLOAD_BYTES`` (SRT's
  live-mode payload), so the packet thresholds keep their size.
- SRT RTT (``msRTT``, smoothed with gain 1/8) -> ``obs.srtt_s`` (the same gain over our ACK
  samples; it includes up to 0.1 s of the relay's ACK delay). Before the first sample there
  is no RTT: the RTT rules neither decrease nor allow an increase.
- SRT send rate (``mbpsSendRate``) -> growth of ``obs.sent_bytes_total`` per second (both
  count retransmissions).
- SRT latency -> ``latency_ms`` (constructor argument, default ``DEFAULT_LATENCY_MS``,
  belacoder's default SRT latency); its analogue is the relay's playout buffer.
- Disconnected: belacoder has no such state; the rules keep running on the growing backlog
  and the last RTT measured.

Adaptations (where the description is silent or our loop differs):

- Called every ``UPDATE_INTERVAL_S``, not every ``TICK_S``: every per-sample factor is
  applied per ``TICK_S`` of elapsed time (``0.99 ** (dt / 20 ms)``) and the RTT change rate
  is divided by the ticks elapsed; the jitters are not divided. Waits are compared with a
  1 us tolerance, so at our period the 250 ms wait after a fast decrease is 0.3 s (200 and
  500 ms are exact).
- ``rtt_avg`` and the send-rate average start at their first measurement; until a send rate
  is known ``bs_th2`` is not capped; the bitrate starts at ``limits.start_kbps``.
- Thresholds are floats (the description computes them as integers: < 1 unit apart).
"""

from __future__ import annotations

from encoder.abr.base import UPDATE_INTERVAL_S, AbrController, AbrLimits, Observation
from encoder.abr.registry import register

TICK_S = 0.020  # belacoder's polling period (BITRATE_UPDATE_INT): the per-sample factors' unit
SRT_PAYLOAD_BYTES = 1316  # one SRT live-mode packet of payload: the unit of the buffer thresholds
DEFAULT_LATENCY_MS = 2000  # belacoder's default SRT latency (DEF_SRT_LATENCY)

# smoothing, per TICK_S
EMA_SLOW = 0.99  # weight of the old value: bs_avg, rtt_avg; decay of both jitters
EMA_RTT_DELTA = 0.8  # weight of the old value of rtt_avg_delta
EMA_THROUGHPUT = 0.97  # weight of the old value of the send-rate average
RTT_MIN_DRIFT = 1.001  # rtt_min grows by this factor per tick unless a lower RTT is seen
RTT_INITIAL_MS = 300.0  # the "previous RTT" before the first sample
RTT_MIN_INITIAL_MS = 200.0  # rtt_min before the first sample

# thresholds
BS_TH3_MULT = 4.0  # emergency: bs > 4 (bs_avg + bs_jitter)
BS_TH2_JITTER_MULT = 3.0  # heavy congestion: bs > bs_avg + max(3 bs_jitter, bs_avg)
BS_TH1_JITTER_MULT = 2.5  # light congestion: bs > bs_avg + 2.5 bs_jitter
BS_TH_MIN_PKTS = 50.0  # bs_th1 and bs_th2 are at least this many packets
BS_TH2_CAP_LATENCY_SHARE = 0.5  # bs_th2 at most the packets sent in latency / 2
RTT_JITTER_MULT = 4.0  # rtt_th_max = rtt_avg + max(4 rtt_jitter, 15 % rtt_avg)
RTT_AVG_SHARE = 0.15
RTT_MIN_JITTER_MULT = 2.0  # rtt_th_min = rtt_min + max(1 ms, 2 rtt_jitter)
RTT_MIN_MARGIN_MS = 1.0
RTT_STABLE_DELTA_MS_PER_TICK = 0.01  # increase only while rtt_avg_delta is below this
RTT_EMERGENCY_LATENCY_SHARE = 1 / 3  # rtt >= latency / 3: straight to the minimum
RTT_HEAVY_LATENCY_SHARE = 1 / 5  # rtt > latency / 5: fast decrease

# steps and waits
INCR_STEP_KBPS = 30.0  # BITRATE_INCR_MIN
INCR_SCALE = 30.0  # ... plus bitrate / 30 (BITRATE_INCR_SCALE)
INCR_INTERVAL_S = 0.5  # BITRATE_INCR_INT
DECR_STEP_KBPS = 100.0  # BITRATE_DECR_MIN
DECR_SCALE = 10.0  # fast decrease: ... plus bitrate / 10 (BITRATE_DECR_SCALE)
DECR_INTERVAL_S = 0.2  # BITRATE_DECR_INT: after a light decrease and after a drop to the minimum
DECR_FAST_INTERVAL_S = 0.25  # BITRATE_DECR_FAST_INT: after a fast decrease
OUTPUT_ROUND_KBPS = 100  # the encoder gets the bitrate rounded down to this
TIME_EPS_S = 1e-6  # a wait that ends within this of `now` has ended (float ticks)


@register
class BelacoderController(AbrController):
    """BELABOX belacoder's RTT + send-buffer rules (see the module docstring)."""

    name = "belacoder"

    def __init__(self, limits: AbrLimits, *, latency_ms: float = DEFAULT_LATENCY_MS) -> None:
        super().__init__(limits)
        if latency_ms <= 0:
            raise ValueError(f"latency_ms must be positive, not {latency_ms}")
        self.latency_ms = float(latency_ms)
        self._bitrate = float(limits.start_kbps)  # unrounded, as belacoder's cur_bitrate
        self._last_now: float | None = None
        # send buffer, in packets
        self._bs_avg = 0.0
        self._bs_jitter = 0.0
        self._prev_bs = 0.0
        # RTT, in ms
        self._rtt_avg: float | None = None
        self._rtt_min = RTT_MIN_INITIAL_MS
        self._rtt_jitter = 0.0
        self._rtt_avg_delta = 0.0
        self._prev_rtt = RTT_INITIAL_MS
        # send rate, bytes/s
        self._throughput: float | None = None
        self._prev_sent: tuple[float, int] | None = None
        # earliest times of the next increase / decrease
        self._next_incr = float("-inf")
        self._next_decr = float("-inf")
        self._state = "start"

    # -- read-outs (status line, tests) ------------------------------------------------------

    @property
    def bitrate_kbps(self) -> float:
        """The unrounded bitrate the rules work on (the output is this rounded down)."""
        return self._bitrate

    def thresholds(self) -> dict[str, float | None]:
        """The current thresholds, as belacoder's overlay shows them (bs in packets, rtt ms)."""
        bs_th3, bs_th2, bs_th1 = self._bs_thresholds()
        rtt_th = self._rtt_thresholds()
        return {"bs_th1": bs_th1, "bs_th2": bs_th2, "bs_th3": bs_th3,
                "rtt_th_min": None if rtt_th is None else rtt_th[0],
                "rtt_th_max": None if rtt_th is None else rtt_th[1]}

    def describe(self) -> str:
        return self._state

    # -- the loop ----------------------------------------------------------------------------

    def update(self, obs: Observation, *, now: float) -> int:
        dt = UPDATE_INTERVAL_S if self._last_now is None else max(0.0, now - self._last_now)
        self._last_now = now
        ticks = dt / TICK_S
        self._track_throughput(obs.sent_bytes_total, now, ticks)
        bs = obs.backlog_bytes / SRT_PAYLOAD_BYTES
        self._track_bs(bs, ticks)
        rtt = None if obs.srtt_s is None else obs.srtt_s * 1000.0
        if rtt is not None:
            self._track_rtt(rtt, ticks)
        self._decide(bs, rtt, now)
        return self._output()

    def _track_throughput(self, sent_total: int, now: float, ticks: float) -> None:
        if self._prev_sent is not None:
            then, sent_then = self._prev_sent
            if now > then:
                rate = max(0, sent_total - sent_then) / (now - then)
                if self._throughput is None:
                    self._throughput = rate
                else:
                    keep = EMA_THROUGHPUT ** ticks
                    self._throughput = keep * self._throughput + (1 - keep) * rate
        self._prev_sent = (now, sent_total)

    def _track_bs(self, bs: float, ticks: float) -> None:
        keep = EMA_SLOW ** ticks
        self._bs_avg = keep * self._bs_avg + (1 - keep) * bs
        self._bs_jitter = max(keep * self._bs_jitter, bs - self._prev_bs)
        self._prev_bs = bs

    def _track_rtt(self, rtt: float, ticks: float) -> None:
        keep = EMA_SLOW ** ticks
        if self._rtt_avg is None:
            self._rtt_avg = rtt
        else:
            self._rtt_avg = keep * self._rtt_avg + (1 - keep) * rtt
        self._rtt_min = min(rtt, self._rtt_min * RTT_MIN_DRIFT ** ticks)
        self._rtt_jitter = max(keep * self._rtt_jitter, rtt - self._prev_rtt)
        if ticks > 0:
            keep_delta = EMA_RTT_DELTA ** ticks
            per_tick = (rtt - self._prev_rtt) / ticks
            self._rtt_avg_delta = keep_delta * self._rtt_avg_delta + (1 - keep_delta) * per_tick
        self._prev_rtt = rtt

    def _bs_thresholds(self) -> tuple[float, float, float]:
        bs_th3 = (self._bs_avg + self._bs_jitter) * BS_TH3_MULT
        bs_th2 = max(BS_TH_MIN_PKTS,
                     self._bs_avg + max(self._bs_jitter * BS_TH2_JITTER_MULT, self._bs_avg))
        if self._throughput is not None:
            latency_s = self.latency_ms * BS_TH2_CAP_LATENCY_SHARE / 1000.0
            bs_th2 = min(bs_th2, self._throughput * latency_s / SRT_PAYLOAD_BYTES)
        bs_th1 = max(BS_TH_MIN_PKTS, self._bs_avg + self._bs_jitter * BS_TH1_JITTER_MULT)
        return bs_th3, bs_th2, bs_th1

    def _rtt_thresholds(self) -> tuple[float, float] | None:
        """(rtt_th_min, rtt_th_max), or None before the first RTT sample."""
        if self._rtt_avg is None:
            return None
        rtt_th_max = self._rtt_avg + max(self._rtt_jitter * RTT_JITTER_MULT,
                                         self._rtt_avg * RTT_AVG_SHARE)
        rtt_th_min = self._rtt_min + max(RTT_MIN_MARGIN_MS,
                                         self._rtt_jitter * RTT_MIN_JITTER_MULT)
        return rtt_th_min, rtt_th_max

    def _decide(self, bs: float, rtt: float | None, now: float) -> None:
        bs_th3, bs_th2, bs_th1 = self._bs_thresholds()
        rtt_th = self._rtt_thresholds()
        have_rtt = rtt is not None and rtt_th is not None
        rtt_ms = rtt if rtt is not None else 0.0
        rtt_th_min, rtt_th_max = rtt_th if rtt_th is not None else (0.0, 0.0)
        may_decr = now + TIME_EPS_S >= self._next_decr
        may_incr = now + TIME_EPS_S >= self._next_incr
        lim = self.limits
        if self._bitrate > lim.min_kbps and (
                (have_rtt and rtt_ms >= self.latency_ms * RTT_EMERGENCY_LATENCY_SHARE)
                or bs > bs_th3):
            self._bitrate = float(lim.min_kbps)
            self._next_decr = now + DECR_INTERVAL_S
            self._state = "min"
        elif may_decr and ((have_rtt and rtt_ms > self.latency_ms * RTT_HEAVY_LATENCY_SHARE)
                           or bs > bs_th2):
            self._bitrate -= DECR_STEP_KBPS + self._bitrate / DECR_SCALE
            self._next_decr = now + DECR_FAST_INTERVAL_S
            self._state = "drop"
        elif may_decr and ((have_rtt and rtt_ms > rtt_th_max) or bs > bs_th1):
            self._bitrate -= DECR_STEP_KBPS
            self._next_decr = now + DECR_INTERVAL_S
            self._state = "ease"
        elif (may_incr and have_rtt and rtt_ms < rtt_th_min
              and self._rtt_avg_delta < RTT_STABLE_DELTA_MS_PER_TICK):
            self._bitrate += INCR_STEP_KBPS + self._bitrate / INCR_SCALE
            self._next_incr = now + INCR_INTERVAL_S
            self._state = "rise"
        else:
            self._state = "hold"
        before = self._bitrate
        self._bitrate = float(min(lim.max_kbps, max(lim.min_kbps, self._bitrate)))
        if self._bitrate != before:  # pinned at a limit: say so rather than the step
            self._state = "max" if self._bitrate == lim.max_kbps else "min"

    def _output(self) -> int:
        rounded = int(self._bitrate // OUTPUT_ROUND_KBPS) * OUTPUT_ROUND_KBPS
        return self.limits.clamp(rounded)
