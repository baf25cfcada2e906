"""The sender's send-side decisions, without I/O: `SendPolicy`.

Composed by ``encoder.sender_session.SenderSession``, the one core the uplink client
(``encoder.client``, asyncio glue) and the benchmark's simulator (``benchmarks.sim``, a
discrete-event loop) both drive, so both decide the same way. Nothing here reads a
clock or touches a socket: ``now`` comes in as an argument, decisions come out as values, and
the caller logs them.

The decisions:

- **In-flight window** (``window_room``): at most max(``MIN_INFLIGHT_BYTES``, the relay's
  arrival rate x max(``INFLIGHT_MIN_S``, ``INFLIGHT_RTTS`` base RTTs)) unacknowledged in the
  transport, so the kernel's socket buffers never hold seconds of media the sender could
  still reorder. The base RTT is ``UplinkSender.min_rtt_s`` (the lowest sample of the last
  minute), not the smoothed RTT, which a queue in the network would widen.
- **The ABR's view** (``observe``): the ``Observation`` built from the sender's counters and
  the ACK samples collected since the previous call (``on_ack``).
- **Live edge first** (``live_edge_jump``): when the oldest unacknowledged live media is older
  than the relay's delay minus ``LIVE_ALLOWANCE_MS`` (the time left for the trip), it can no
  longer be shown live; the live edge moves (``UplinkSender.jump_to_live``) to the oldest
  video keyframe that can still arrive in time, so the viewer misses as little as the outage
  forces. What it skipped follows as backfill.
- **The relay's delay as the media sees it** (``effective_delay_ms``): the relay schedules
  media ``D`` after the *arrival* of the session's first unit (it cannot read the sender's
  clock), so capture to output is ``D`` plus the start-up latency (docs/encoder.md, "The
  delay the media gets"). Measured from every ACK as the relay's buffer level plus the age of
  the newest media it holds when the ACK left (each error makes the sample smaller, never
  larger); the largest of the last ``DELAY_WINDOW_S`` of samples, within ``[D, D +
  DELAY_EXTRA_MAX_MS]``. The live-edge jump is judged against it.
- **Dense keyframes during an outage** (``dense_keyframes``): while the uplink is out (the
  dropout detector saw no ACK progress for 0.5 s, or the connection dropped) the encoder
  forces a keyframe every ``encoder.capture.OUTAGE_KEYFRAME_S``, so such a keyframe is never
  far from the oldest media the relay can still show.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from encoder.abr import AckSample, Observation
from monitor.dropout import DropoutDetector, DropoutEvent
from uplink import MAX_SACK_RANGES, Acked, UplinkSender
from uplink.window import WindowedExtreme

SEND_BATCH_BYTES = 256 * 1024  # the writer hands at most this much to the transport at once
STATS_INTERVAL_S = 1.0  # a STATS message (backlog, target bitrate) this often while connected
MIN_INFLIGHT_BYTES = 16 * 1024  # the in-flight window never closes below this (0.2 s at 600 kbit/s)
INFLIGHT_MIN_S = 0.3  # ... and holds at least this long of the measured delivery rate
INFLIGHT_RTTS = 2.0  # ... or this many base RTTs of it, whichever is longer (the base,
                     # min_rtt: with srtt a queue in the network would widen the window
                     # that lets it grow)
KEYFRAMES_KEPT = 4096  # recent video keyframes remembered as live-edge candidates
JUMP_MAX_GAPS = MAX_SACK_RANGES // 2  # no new live-edge jump while the relay has this many
                                     # gaps (it closes the connection past MAX_SACK_RANGES)
LIVE_ALLOWANCE_MS = 450  # time left for the trip (the stale in-flight window, then the
                         # keyframe): media older than the relay's delay minus this can no
                         # longer be shown live
UNITS_KEPT = 16384  # (seq, capture time) of recent units, to date what an ACK acknowledges
DELAY_WINDOW_S = 10.0  # effective delay: the largest sample of this long (ACK time) ...
DELAY_EXTRA_MAX_MS = 5000  # ... at most this much above the configured delay


@dataclass(frozen=True, slots=True)
class LiveEdgeJump:
    """The live edge moved to `seq`; `lag_ms` is the live lag that made it move (before the
    jump), `buffer_ms` the relay's buffer it was measured against."""

    seq: int
    lag_ms: int
    buffer_ms: int


class SendPolicy:
    """The decisions of one uplink session's sender, on top of its `UplinkSender`.

    Feed it every pushed unit (``note_unit``), every ACK (``on_ack``) and connection loss
    (``on_connection_lost``), and call ``poll`` on the control tick; ask it ``window_room``
    before writing, ``observe`` for the ABR and ``live_edge_jump`` after a keyframe, a
    WELCOME and on the control tick.
    """

    def __init__(self, sender: UplinkSender, video_track_id: int,
                 detector: DropoutDetector | None = None) -> None:
        self.sender = sender
        self.video_track_id = video_track_id
        self.detector = detector if detector is not None else DropoutDetector()
        self._acks: list[AckSample] = []
        self._keyframes: deque[tuple[int, int]] = deque(maxlen=KEYFRAMES_KEPT)  # video
                                                        # (seq, capture_us), oldest first
        self._newest_capture_us = 0
        self._captures: deque[int] = deque(maxlen=UNITS_KEPT)  # capture_us of seqs
        self._captures_end = 0  # the seq after the newest in _captures
        self._delay_samples = WindowedExtreme[int](DELAY_WINDOW_S, largest=True)  # ACK time

    # --- inputs ---------------------------------------------------------------------------
    def note_unit(self, seq: int, track_id: int, keyframe: bool, capture_time_us: int) -> None:
        """A unit was pushed to the sender as `seq`."""
        self._newest_capture_us = max(self._newest_capture_us, capture_time_us)
        if seq != self._captures_end:
            self._captures.clear()  # not the next seq (a new session): start again
        self._captures.append(capture_time_us)
        self._captures_end = seq + 1
        if track_id == self.video_track_id and keyframe:
            self._keyframes.append((seq, capture_time_us))

    def on_ack(self, event: Acked, now: float, wall: float) -> list[DropoutEvent]:
        """An ACK arrived at `now` (the sender's clock; `wall`: the detector's clock). One
        that released media is an ACK sample for the ABR and ends a dropout."""
        self._sample_delay(event, wall)
        if event.newly_acked_bytes <= 0:
            return []
        sent_at = None if event.rtt_s is None else now - event.rtt_s
        self._acks.append(AckSample(now, event.newly_acked_bytes, sent_at))
        return self.detector.on_media(wall)

    def on_connection_lost(self, wall: float) -> list[DropoutEvent]:
        return self.detector.on_connection_lost(wall)

    def on_clean_end(self, wall: float) -> list[DropoutEvent]:
        """The session ended cleanly (BYE sent, everything acknowledged): no outage, not even
        when the connection goes right after; closes a dropout still open."""
        return self.detector.stop(wall)

    def poll(self, wall: float) -> list[DropoutEvent]:
        """The control tick: nothing outstanding on a live connection counts as media (nothing
        is late), then the detector checks for a dropout."""
        events: list[DropoutEvent] = []
        if self.sender.backlog_bytes == 0 and self.sender.connected:
            events += self.detector.on_media(wall)
        events += self.detector.poll(wall)
        return events

    def _sample_delay(self, event: Acked, wall: float) -> None:
        """One sample of the effective delay: the relay's level (its newest media's due time
        less the time it sent the ACK) plus the age of that media then. The ACK left the relay
        no earlier than the newest media it acknowledges was sent (``wall - rtt_s``); taking
        that instant leaves out the trip up (tens of ms), so a queue on the way up, an ACK
        held up on the way down or an asymmetric link only make the sample smaller."""
        level_ms = self.sender.relay_buffer_ms
        seq = event.newest_seq
        if level_ms is None or seq is None or level_ms <= 0 or event.rtt_s is None:
            return  # an empty buffer says nothing about the schedule
        index = seq - (self._captures_end - len(self._captures))
        if not 0 <= index < len(self._captures):
            return
        relay_time_s = wall - event.rtt_s  # at the earliest
        sample_ms = round(level_ms + relay_time_s * 1000 - self._captures[index] / 1000)
        self._delay_samples.update(wall, sample_ms)

    # --- decisions --------------------------------------------------------------------------
    @property
    def effective_delay_ms(self) -> int | None:
        """Capture to the relay's output as the relay schedules this session's media (see the
        module docstring); the configured delay until ACKs say more; None before WELCOME."""
        configured = self.sender.relay_delay_ms
        if configured is None:
            return None
        measured = self._delay_samples.value
        if measured is None:
            return configured
        return max(configured, min(measured, configured + DELAY_EXTRA_MAX_MS))

    @property
    def dense_keyframes(self) -> bool:
        """Whether the encoder should force a keyframe every OUTAGE_KEYFRAME_S (in an outage)."""
        return self.detector.current_start is not None

    def window_room(self, target_kbps: int) -> int:
        """Bytes the in-flight window still admits (<= 0: wait for ACKs)."""
        s = self.sender
        rate_bps = (s.relay_arrival_kbps or target_kbps) * 1000 / 8
        hold_s = max(INFLIGHT_MIN_S, INFLIGHT_RTTS * (s.min_rtt_s or 0.0))
        window = max(MIN_INFLIGHT_BYTES, int(rate_bps * hold_s))
        return window - (s.backlog_bytes - s.unsent_bytes)

    def observe(self, target_kbps: int) -> Observation:
        """What the ABR sees now; hands over the ACK samples collected since the last call."""
        s = self.sender
        acks, self._acks = tuple(self._acks), []
        return Observation(
            connected=s.connected, sent_bytes_total=s.sent_bytes_total,
            acked_bytes_total=s.acked_bytes_total, backlog_bytes=s.backlog_bytes,
            backlog_ms=s.live_lag_ms, unsent_bytes=s.unsent_bytes, unsent_ms=s.unsent_ms,
            srtt_s=s.srtt_s, last_ack_time=s.last_ack_time, relay_buffer_ms=s.relay_buffer_ms,
            relay_arrival_kbps=s.relay_arrival_kbps, target_kbps=target_kbps, acks=acks,
            backfill_bytes=s.backfill_bytes)

    def live_edge_jump(self) -> LiveEdgeJump | None:
        """Move the live edge when older media can no longer be live: to the oldest keyframe
        whose media can still reach the relay in time. Returns the jump made, or None."""
        sender = self.sender
        buffer_ms = self.effective_delay_ms  # the delay, not the level now: an outage
        if buffer_ms is None or not self._keyframes:  # draws the level down
            return None
        in_time_ms = max(0, buffer_ms - LIVE_ALLOWANCE_MS)
        oldest_us = self._newest_capture_us - in_time_ms * 1000
        while len(self._keyframes) > 1 and self._keyframes[0][1] < oldest_us:
            self._keyframes.popleft()  # too old for the live edge, now or later
        lag_ms = sender.live_lag_ms
        if lag_ms <= in_time_ms:
            return None
        kf = self._keyframes[0][0]
        if kf <= sender.acked_seq or kf <= sender.live_from_seq:
            return None
        if sender.sack_ranges >= JUMP_MAX_GAPS:
            return None  # backfill must close some gaps first (the relay refuses too many)
        sender.jump_to_live(kf)
        return LiveEdgeJump(seq=kf, lag_ms=lag_ms, buffer_ms=buffer_ms)
