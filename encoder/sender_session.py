"""The uplink client's decisions in one sans-I/O core: `SenderSession`.

One object per encoder run, driven by the uplink client (``encoder.client``, asyncio glue)
and by the benchmark's simulator (``benchmarks.sim``, a discrete-event loop), so both decide
the same way. It composes the other cores and copies none of them: ``uplink.UplinkSender``
(framing, acks, resume), ``encoder.send_policy.SendPolicy`` (in-flight window, the ABR's
Observation, live edge first, dense keyframes; it owns the ``monitor.dropout`` detector),
the ABR controller (``encoder.abr.create``) and ``encoder.spool_overflow.OverflowGate``.

No clock, no socket, no thread: every input carries its time, every decision comes back as a
value. Two clocks come in: ``now``, the sender's clock (monotonic seconds: the
``UplinkSender``, the ABR, the window, STATS and the ACK timeout run on it), and ``wall``,
the clock events are reported in (Unix seconds: the dropout detector and the spool-overflow
episodes). A simulation passes its one clock as both.

Inputs and what they return (events in the order they happened; see ``SenderEvent``):

- ``push(units, now, wall)``: units the encoder produced, in order. Each goes through the
  ``OverflowGate`` into the sender's spool; a stored video keyframe may move the live edge.
- ``connection_made(now)`` / ``connection_lost(now, wall)``: the transport came up / went.
- ``receive(data, now, wall)``: one binary message from the relay (raises
  ``uplink.ProtocolError`` on a bad one). A WELCOME may move the live edge; an ACK feeds the
  policy and may end a dropout; after a BYE the rest of the message's events are not looked
  at and the connection should end.
- ``control(now, wall)``: the control tick, every ``UPDATE_INTERVAL_S``. The ABR is asked for
  a bitrate (``BitrateChanged`` when it differs from the current target), the dropout
  detector is polled, the encoder is told whether to force dense keyframes
  (``DenseKeyframes``, every tick: in an outage or while the spool is full) and the live
  edge may move.

The writer's step, on a connection: ``transmit(now)`` gives what the in-flight window admits
(at most ``SEND_BATCH_BYTES`` at a time, always one message while not yet welcomed), then
``stats(now)`` a STATS message every ``STATS_INTERVAL_S`` of a welcomed connection (the first
right after WELCOME); ``writer_idle`` says the writer should wait for a push or a message
from the relay; ``ack_stalled(now)`` says the connection is dead (unacknowledged media and
no ACK progress for ``ACK_TIMEOUT_S``); once the capture ended, ``bye()`` gives BYE when
everything is acknowledged, then ``clean_end(wall)`` disarms the detector (a clean end is no
outage).

Between connections: ``reconnect_wait_s(retry_after_s)`` is the wait before the next attempt
(``RECONNECT_FIRST_S`` doubling to ``RECONNECT_MAX_S``, or longer if the relay asked),
``reset_backoff()`` after a connection that ended without an error. ``finished(now)``, asked
once the capture ended: whether the session is over (everything acknowledged, or
``FINAL_ACK_WAIT_S`` since it was first asked). ``stop(wall)`` at the very end closes a
dropout still open.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from encoder.abr import AbrController
from encoder.send_policy import SEND_BATCH_BYTES, STATS_INTERVAL_S, LiveEdgeJump, SendPolicy
from encoder.settings import ACK_TIMEOUT_S, FINAL_ACK_WAIT_S, RECONNECT_FIRST_S, RECONNECT_MAX_S
from encoder.spool_overflow import OverflowEvent, OverflowGate, OverflowStarted
from monitor.dropout import DropoutEvent
from uplink import Acked, RemoteBye, UplinkSender, Welcomed
from uplink.backoff import next_backoff_s
from uplink.spool import SpoolFull

__all__ = ["BitrateChanged", "DenseKeyframes", "MediaUnit",
           "SenderEvent", "SenderSession"]


class MediaUnit(Protocol):
    """One encoded access unit as the encoder hands it over (``encoder.av_encoder.EncodedUnit``
    and the simulator's ``SimUnit`` both are one)."""

    @property
    def track_id(self) -> int: ...
    @property
    def keyframe(self) -> bool: ...
    @property
    def pts(self) -> int: ...
    @property
    def dts(self) -> int: ...
    @property
    def capture_time_us(self) -> int: ...
    @property
    def payload(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class BitrateChanged:
    """The ABR chose a new video bitrate: the encoder should produce `kbps` from now on."""

    previous_kbps: int
    kbps: int


@dataclass(frozen=True, slots=True)
class DenseKeyframes:
    """Whether the encoder should force a keyframe every ``OUTAGE_KEYFRAME_S`` (`on`: the
    uplink is out or the spool is full) or follow its normal keyframe interval."""

    on: bool


SenderEvent = (BitrateChanged | DenseKeyframes | LiveEdgeJump | DropoutEvent | OverflowEvent
               | Welcomed | RemoteBye)


class SenderSession:
    """The sender's decisions over one encoder run, across any number of connections (see the
    module docstring). The composed cores are public (``sender``, ``policy``, ``overflow``,
    ``abr``) for status and reports; only this class drives them."""

    def __init__(self, sender: UplinkSender, abr: AbrController, video_track_id: int) -> None:
        self.sender = sender
        self.abr = abr
        self.policy = SendPolicy(sender, video_track_id)
        self.overflow = OverflowGate(video_track_id)
        self.target_kbps = abr.limits.start_kbps  # the video bitrate the encoder is asked for
        self.live_jumps = 0
        self._video_track_id = video_track_id
        self._last_stats: float | None = None  # STATS last sent (this connection)
        self._progress_at = 0.0  # ACK progress last seen (this connection) ...
        self._progress_bytes = 0  # ... at this acked_bytes_total
        self._backoff_s: float | None = None
        self._final_deadline: float | None = None

    # --- inputs ----------------------------------------------------------------------------
    def push(self, units: Iterable[MediaUnit], now: float, wall: float) -> list[SenderEvent]:
        """New units from the encoder, in order. While the spool is full new units are dropped
        (held ones never are) and the encoder is asked for dense keyframes at once."""
        events: list[SenderEvent] = []
        sender, gate = self.sender, self.overflow
        for u in units:
            if not gate.admit(u.track_id, u.keyframe):
                continue
            try:
                seq = sender.push_media(u.track_id, u.keyframe, u.pts, u.dts, u.capture_time_us,
                                        u.payload)
            except SpoolFull:
                spool = sender.spool
                for ev in gate.on_full(u.track_id, wall, spool.memory_bytes + spool.disk_bytes,
                                       len(spool)):
                    events.append(ev)
                    if isinstance(ev, OverflowStarted):  # resume soon after room comes back
                        events.append(DenseKeyframes(True))
                continue
            events += gate.on_stored(u.track_id, u.keyframe, wall)
            self.policy.note_unit(seq, u.track_id, u.keyframe, u.capture_time_us)
            if u.track_id == self._video_track_id and u.keyframe:
                events += self._jump()
        return events

    def connection_made(self, now: float) -> None:
        """A transport is up: HELLO goes first; the STATS and ACK-timeout clocks restart."""
        self.sender.connection_made()
        self._last_stats = None
        self._progress_at, self._progress_bytes = now, self.sender.acked_bytes_total

    def connection_lost(self, now: float, wall: float) -> list[SenderEvent]:
        """The transport went (for any reason): what was in flight is unsent again."""
        self.sender.connection_lost()
        return list(self.policy.on_connection_lost(wall))

    def receive(self, data: bytes, now: float, wall: float) -> list[SenderEvent]:
        """One binary message from the relay. Raises ``uplink.ProtocolError`` on a bad one."""
        events: list[SenderEvent] = []
        for ev in self.sender.receive(data, now):
            if isinstance(ev, Welcomed):
                events.append(ev)
                events += self._jump()
            elif isinstance(ev, RemoteBye):
                events.append(ev)
                break  # the relay ended the session: nothing after it counts
            elif isinstance(ev, Acked):
                events += self.policy.on_ack(ev, now, wall)
        return events

    def control(self, now: float, wall: float) -> list[SenderEvent]:
        """The control tick (every ``UPDATE_INTERVAL_S``): ABR, dropout detector, dense
        keyframes, live edge."""
        events: list[SenderEvent] = []
        kbps = self.abr.update(self.policy.observe(self.target_kbps), now=now)
        if kbps != self.target_kbps:
            events.append(BitrateChanged(self.target_kbps, kbps))
            self.target_kbps = kbps
        events += self.policy.poll(wall)
        events.append(DenseKeyframes(self.policy.dense_keyframes or self.overflow.dropping))
        events += self._jump()
        return events

    def _jump(self) -> list[SenderEvent]:
        jump = self.policy.live_edge_jump()
        if jump is None:
            return []
        self.live_jumps += 1
        return [jump]

    # --- the writer ------------------------------------------------------------------------
    def transmit(self, now: float) -> list[bytes]:
        """The sender's messages to write now, in order: what the in-flight window admits, at
        most ``SEND_BATCH_BYTES`` (one message always: HELLO and track configs go out before
        WELCOME whatever the window)."""
        room = self.policy.window_room(self.target_kbps)
        if room > 0 or not self.sender.connected:
            return self.sender.data_to_send(now, max_bytes=min(SEND_BATCH_BYTES, max(1, room)))
        return []

    def stats(self, now: float) -> bytes | None:
        """STATS (backlog, target bitrate) when due: on a welcomed connection, at once after
        WELCOME, then every ``STATS_INTERVAL_S``; else None."""
        if not self.sender.connected or (self._last_stats is not None
                                         and now - self._last_stats < STATS_INTERVAL_S):
            return None
        self._last_stats = now
        return self.sender.stats_message(self.target_kbps)

    @property
    def writer_idle(self) -> bool:
        """Nothing more to write until a push or a message from the relay (nothing unsent,
        the window full, or no welcomed connection)."""
        return (self.sender.unsent_bytes == 0 or self.policy.window_room(self.target_kbps) <= 0
                or not self.sender.connected)

    def ack_stalled(self, now: float) -> str | None:
        """Why the connection is dead (media unacknowledged and no ACK progress for
        ``ACK_TIMEOUT_S``), or None while it is alive."""
        sender = self.sender
        if sender.acked_bytes_total != self._progress_bytes or sender.all_acked:
            self._progress_at, self._progress_bytes = now, sender.acked_bytes_total
        elif now - self._progress_at > ACK_TIMEOUT_S:
            return f"no acknowledgement from the relay for {ACK_TIMEOUT_S:g} s"
        return None

    def bye(self) -> bytes | None:
        """Asked once the capture ended: BYE when the relay acknowledged everything on a
        welcomed connection (write it, then ``clean_end``), else None."""
        if self.sender.all_acked and self.sender.connected:
            return self.sender.bye("encoder finished")
        return None

    def clean_end(self, wall: float) -> list[SenderEvent]:
        """BYE went out: the connection's end is no outage (closes a dropout still open)."""
        return list(self.policy.on_clean_end(wall))

    # --- between connections, and the end --------------------------------------------------
    def reconnect_wait_s(self, retry_after_s: float | None = None) -> float:
        """A connection failed: seconds to wait before the next attempt (``RECONNECT_FIRST_S``,
        doubling up to ``RECONNECT_MAX_S``; at least `retry_after_s`, the relay's own ask)."""
        self._backoff_s = next_backoff_s(self._backoff_s, RECONNECT_FIRST_S, RECONNECT_MAX_S)
        return max(self._backoff_s, retry_after_s or 0.0)

    def reset_backoff(self) -> None:
        """A connection ended without an error: the next failure waits RECONNECT_FIRST_S."""
        self._backoff_s = None

    def finished(self, now: float) -> bool:
        """Asked once the capture ended: the session is over when everything is acknowledged,
        or ``FINAL_ACK_WAIT_S`` after the first ask."""
        if self._final_deadline is None:
            self._final_deadline = now + FINAL_ACK_WAIT_S
        return self.sender.all_acked or now > self._final_deadline

    def stop(self, wall: float) -> list[SenderEvent]:
        """The run is over: closes a dropout still open; the detector is disarmed."""
        return list(self.policy.detector.stop(wall))
