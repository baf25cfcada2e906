"""The relay side of the uplink, without I/O: `UplinkReceiver`, one per stream session.

The caller owns the WebSocket(s). One receiver outlives any number of connections of the same
session: it remembers which seqs arrived (next_seq plus SACK ranges) and the track configs, so
a reconnecting sender resumes where it left off and resent media is dropped as a duplicate.

Kept versus received (docs/uplink-protocol.md, sections 4.5 and 7.2). A receiver built with
``kept_ack=True`` (the relay records the stream) acknowledges cumulatively only what the caller
says is kept (``set_kept``: written to the archive and checkpointed); what arrived but is not
kept yet goes in the ACK's first SACK range, ``[kept, next_seq)``, so the sender still sees it
arrive (RTT, in-flight window, live lag) but holds it until the cumulative ACK passes it.
Rules: the ACK's ``next_seq`` is min(received contiguously, kept) and never falls within a
session; ``forget_unkept`` drops what is received but not kept (the relay lost its copies) and
the next HELLO is answered ``resumed = 0`` ("SACK state lost") so the sender resends it;
``restore`` recreates a session from the relay's saved state after a restart, answered
``resumed = 0`` too, but reported as ``continued`` so the relay goes on with its archive.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from .errors import CloseCode, ProtocolError, truncate_utf8
from .window import WindowedSum
from .wire import (
    MAX_BYE_REASON_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_SACK_RANGES,
    SESSION_ID_BYTES,
    Ack,
    Bye,
    Hello,
    Media,
    SenderStats,
    TrackConfig,
    Welcome,
    decode,
    encode,
    message_name,
)

ACK_INTERVAL_S_DEFAULT = 0.1
ACK_EVERY_MEDIA = 32  # ACK at once after this many media messages, whatever the interval
ARRIVAL_WINDOW_S = 2.0  # arrival_kbps averages media payload over this window
MAX_SEQ_AHEAD = 2**20  # a seq further than this above next_seq is refused
# Seqs received above a gap (in SACK ranges) that a session holds at most. The relay keeps
# each such unit until the gap is filled (the archive is written in seq order), so their count
# bounds what one sender can make it hold. 65 536 is ~14 min of 30 fps video with 48 kHz AAC
# (~77 units/s) arriving live while the backfill has not started; beyond it the lowest gap is
# given up (spec 7.2): next_seq moves past it, and its backfill is then a duplicate.
MAX_UNITS_ABOVE_GAP = 2**16
_U32_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """A HELLO was accepted. `resumed`: same session as before, state kept. `continued`: not
    resumed on the wire (the SACK state was lost: a relay restart or `forget_unkept`), but the
    same session as before for the relay's archive."""

    session_id: bytes
    resumed: bool
    next_seq: int
    continued: bool = False


@dataclass(frozen=True, slots=True)
class TrackConfigured:
    """A TRACK arrived; `changed` is False when it repeats the config already in force."""

    track: TrackConfig
    changed: bool


@dataclass(frozen=True, slots=True)
class MediaReceived:
    """A media seq arrived for the first time (duplicates produce no event)."""

    media: Media


@dataclass(frozen=True, slots=True)
class StatsReceived:
    stats: SenderStats


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The sender sent BYE: the session is over (a later HELLO starts a new one)."""

    reason: str


ReceiverEvent = SessionStarted | TrackConfigured | MediaReceived | StatsReceived | SessionEnded


class UplinkReceiver:
    """Sans-I/O uplink receiver: dedup, SACK bookkeeping, ACK scheduling, session resume."""

    def __init__(
        self,
        buffer_ms: int,
        ack_interval_s: float = ACK_INTERVAL_S_DEFAULT,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        kept_ack: bool = False,
    ) -> None:
        if not ack_interval_s > 0:
            raise ValueError(f"ack_interval_s must be > 0, not {ack_interval_s}")
        if not 1 <= max_message_bytes <= MAX_MESSAGE_BYTES:
            raise ValueError(f"max_message_bytes {max_message_bytes} not in 1..{MAX_MESSAGE_BYTES}")
        self._buffer_ms = 0
        self.set_buffer_ms(buffer_ms)
        self._delay_ms = buffer_ms  # the configured playout delay, told in WELCOME
        self._ack_interval_s = ack_interval_s
        self._max_message_bytes = max_message_bytes
        # the session
        self._session_id: bytes | None = None
        self._ended = False
        self._resumed = False
        self._next_seq = 0
        self._ranges: list[tuple[int, int]] = []  # [start, end) above next_seq, sorted, gapped
        self._kept_ack = kept_ack
        self._kept = 0  # kept_ack: every seq below it is kept (see set_kept)
        self._acked = 0  # the cumulative next_seq last told to the sender
        self._sack_lost = False  # answer the next HELLO of this session resumed = 0
        self._above_gap = 0  # seqs inside self._ranges
        self._seqs_given_up = 0  # seqs of gaps given up (MAX_UNITS_ABOVE_GAP), all sessions
        self._tracks: dict[int, TrackConfig] = {}
        # the current connection
        self._conn_up = False
        self._hello = False
        self._closing = False  # a BYE was sent or received: send nothing more
        self._bye_received = False  # a BYE was received: accept nothing more
        self._welcome_due = False
        self._ack_with_welcome = False
        self._media_since_ack = 0
        self._last_ack_time: float | None = None
        # statistics
        self._arrivals = WindowedSum(ARRIVAL_WINDOW_S)  # media payload bytes, bounded buckets
        self._last_now: float | None = None
        self._messages_received = 0
        self._bytes_received = 0
        self._duplicates = 0
        self._media_received = 0

    # -- connection events -------------------------------------------------------------------

    def connection_made(self, now: float) -> None:
        """A new connection for this session (it replaces any current one); HELLO comes first."""
        if self._conn_up:
            self.connection_lost(now)
        self._conn_up = True
        self._hello = False
        self._closing = False
        self._bye_received = False
        self._welcome_due = False
        self._ack_with_welcome = False
        self._media_since_ack = 0
        self._last_ack_time = None
        self._last_now = now

    def restore(self, session_id: bytes, next_seq: int) -> None:
        """Recreate a session from the relay's saved state (after a restart): every seq below
        `next_seq` is kept. The next HELLO with this session id continues it (answered
        resumed = 0: the SACK state is lost, the sender resends all it holds from next_seq)."""
        if len(session_id) != SESSION_ID_BYTES:
            raise ValueError(f"session_id must be {SESSION_ID_BYTES} bytes, not {len(session_id)}")
        self._session_id = bytes(session_id)
        self._ended = False
        self._next_seq = self._kept = self._acked = next_seq
        self._ranges = []
        self._above_gap = 0
        self._tracks = {}
        self._sack_lost = True

    def set_kept(self, seq: int, session_id: bytes) -> None:
        """Every seq below `seq` of session `session_id` is kept (a watermark for another
        session is ignored; it never moves back). Only with kept_ack=True."""
        if session_id != self._session_id or seq <= self._kept:
            return
        self._kept = seq

    def forget_unkept(self) -> None:
        """Forget every seq received but not kept (the caller dropped its copies): next_seq
        falls back to the kept watermark, SACK ranges are dropped, and the next HELLO of this
        session is answered resumed = 0 so the sender resends them. Close the connection."""
        if not self._kept_ack:
            return
        self._next_seq = min(self._next_seq, self._kept)
        self._ranges = []
        self._above_gap = 0
        self._sack_lost = True

    def connection_lost(self, now: float) -> None:
        self._conn_up = False
        self._hello = False
        self._welcome_due = False
        self._last_now = now

    def receive(self, data: bytes, now: float) -> list[ReceiverEvent]:
        """Handle one binary message. Raises ProtocolError: close that connection with
        err.code and err.close_reason(); the session survives for the next connection."""
        if not self._conn_up:
            raise RuntimeError("receive() called with no connection (call connection_made)")
        self._last_now = now
        self._bytes_received += len(data)
        msg = decode(data, self._max_message_bytes)
        self._messages_received += 1
        if self._bye_received:
            raise ProtocolError(CloseCode.PROTOCOL_ORDER, f"{message_name(msg)} after BYE")
        if not self._hello and not isinstance(msg, Hello):
            raise _order(f"first message on a connection must be HELLO, got {message_name(msg)}")
        if isinstance(msg, Media):
            return self._on_media(msg, now)
        if isinstance(msg, Hello):
            if self._hello:
                raise _order("second HELLO on one connection")
            return [self._on_hello(msg)]
        if isinstance(msg, TrackConfig):
            changed = self._tracks.get(msg.track_id) != msg
            self._tracks[msg.track_id] = msg
            return [TrackConfigured(track=msg, changed=changed)]
        if isinstance(msg, SenderStats):
            return [StatsReceived(msg)]
        if isinstance(msg, Bye):
            self._bye_received = True
            self._closing = True
            self._ended = True
            return [SessionEnded(msg.reason)]
        raise _order(f"{message_name(msg)} is never sent by a sender")

    # -- outputs -------------------------------------------------------------------------------

    def data_to_send(self, now: float) -> list[bytes]:
        """WELCOME after HELLO (with an ACK if SACK ranges exist); an ACK when one is due:
        ack_interval_s after the last one once media arrived, or after ACK_EVERY_MEDIA media."""
        self._last_now = now
        out: list[bytes] = []
        if not self._conn_up or not self._hello or self._closing:
            return out
        if self._welcome_due:
            self._welcome_due = False
            out.append(
                encode(
                    Welcome(
                        resumed=self._resumed,
                        next_seq=self._ack_next_seq(),
                        buffer_ms=self._delay_ms,
                    )
                )
            )
            self._last_ack_time = now
            self._acked = self._ack_next_seq()
            if self._ack_with_welcome:
                out.append(self._ack(now))
            return out
        if self._ack_due(now):
            out.append(self._ack(now))
        return out

    def get_timer(self) -> float | None:
        """When data_to_send should next be called for a timely ACK; None if nothing pending."""
        if not self._conn_up or not self._hello or self._closing:
            return None
        if self._welcome_due or self._last_ack_time is None:
            return self._last_now
        if self._media_since_ack == 0:
            if self._ack_next_seq() > self._acked:  # the kept watermark moved
                return self._last_ack_time + self._ack_interval_s
            return None
        if self._media_since_ack >= ACK_EVERY_MEDIA:
            return self._last_now
        return self._last_ack_time + self._ack_interval_s

    def bye(self, reason: str = "") -> bytes:
        """An encoded BYE (reason cut to 123 UTF-8 bytes) ending the session from the relay.
        Nothing more is sent; what the sender had in flight is still accepted."""
        self._closing = True
        self._ended = True
        return encode(Bye(truncate_utf8(reason, MAX_BYE_REASON_BYTES)))

    def set_buffer_ms(self, ms: int) -> None:
        """The playout buffer level now, reported in ACKs (WELCOME tells the configured
        playout delay given at construction: the sender judges what can still be live by
        that, not by a level that an outage has drawn down)."""
        if not 0 <= ms <= _U32_MAX:
            raise ValueError(f"buffer_ms {ms} out of range 0..{_U32_MAX}")
        self._buffer_ms = ms

    # -- observable state ----------------------------------------------------------------------

    @property
    def session_id(self) -> bytes | None:
        return self._session_id

    @property
    def next_seq(self) -> int:
        """Every seq below it has been received."""
        return self._next_seq

    @property
    def kept_seq(self) -> int:
        """The cumulative ACK: every seq below it is kept (received, and with kept_ack in the
        archive)."""
        return self._ack_next_seq()

    @property
    def sack_ranges(self) -> tuple[tuple[int, int], ...]:
        """Half-open ranges of seqs received above next_seq."""
        return tuple(self._ranges)

    @property
    def tracks(self) -> dict[int, TrackConfig]:
        return dict(self._tracks)

    @property
    def buffer_ms(self) -> int:
        return self._buffer_ms

    @property
    def arrival_kbps(self) -> int:
        """Media payload (duplicates included) over the last ARRIVAL_WINDOW_S, in kbit/s."""
        if self._last_now is None:
            return 0
        arrived = self._arrivals.total(self._last_now)
        return min(_U32_MAX, round(arrived * 8 / 1000 / ARRIVAL_WINDOW_S))

    @property
    def messages_received(self) -> int:
        """Decoded messages, over the receiver's lifetime (all sessions)."""
        return self._messages_received

    @property
    def bytes_received(self) -> int:
        """Bytes of every message passed to receive(), valid or not."""
        return self._bytes_received

    @property
    def seqs_given_up(self) -> int:
        """Seqs skipped because more than MAX_UNITS_ABOVE_GAP waited above their gap."""
        return self._seqs_given_up

    @property
    def duplicates(self) -> int:
        return self._duplicates

    @property
    def media_received(self) -> int:
        """New (non-duplicate) media messages."""
        return self._media_received

    # -- internals -----------------------------------------------------------------------------

    def _on_hello(self, msg: Hello) -> SessionStarted:
        same = msg.session_id == self._session_id and not self._ended
        continued = same and self._sack_lost
        if same:
            if msg.acked_seq > self._next_seq:
                # The sender no longer holds those seqs (another relay acked them): skip them.
                self._advance_to(msg.acked_seq)
            self._kept = max(self._kept, msg.acked_seq)
        else:
            self._session_id = msg.session_id
            self._ended = False
            self._next_seq = self._kept = self._acked = msg.acked_seq
            self._ranges = []
            self._above_gap = 0
            self._tracks = {}
        self._sack_lost = False
        resumed = same and not continued
        self._resumed = resumed
        self._hello = True
        self._welcome_due = True
        self._ack_with_welcome = bool(self._ack_ranges())
        return SessionStarted(session_id=msg.session_id, resumed=resumed,
                              next_seq=self._ack_next_seq(), continued=continued)

    def _on_media(self, msg: Media, now: float) -> list[ReceiverEvent]:
        if msg.track_id not in self._tracks:
            raise _order(f"MEDIA seq {msg.seq} on track {msg.track_id} before its TRACK")
        seq = msg.seq
        ranges = self._ranges
        i = bisect_right(ranges, (seq, 2**64))  # ranges[i - 1] is the last starting <= seq
        duplicate = seq < self._next_seq or (i > 0 and seq < ranges[i - 1][1])
        if not duplicate:
            if seq > self._next_seq + MAX_SEQ_AHEAD:
                raise ProtocolError(
                    CloseCode.BAD_VALUE,
                    f"MEDIA seq {seq} is more than {MAX_SEQ_AHEAD} ahead of next_seq "
                    f"{self._next_seq}",
                )
            self._insert(seq, i)
            if self._above_gap > MAX_UNITS_ABOVE_GAP:
                self._give_up_lowest_gap()
        self._media_since_ack += 1
        self._arrivals.add(now, len(msg.payload))
        if duplicate:
            self._duplicates += 1
            return []
        self._media_received += 1
        return [MediaReceived(msg)]

    def _give_up_lowest_gap(self) -> None:
        """Too much is held above a gap: treat the lowest gap as never coming."""
        start = self._ranges[0][0]
        self._seqs_given_up += start - self._next_seq
        self._advance_to(start)

    def _insert(self, seq: int, i: int) -> None:
        """Record a new seq; `i` is the index of the first range starting above it."""
        ranges = self._ranges
        if seq == self._next_seq:
            self._next_seq += 1
            if ranges and ranges[0][0] == self._next_seq:
                start, end = ranges.pop(0)
                self._next_seq = end
                self._above_gap -= end - start
            return
        joins_prev = i > 0 and ranges[i - 1][1] == seq
        joins_next = i < len(ranges) and ranges[i][0] == seq + 1
        if joins_prev and joins_next:
            ranges[i - 1] = (ranges[i - 1][0], ranges[i][1])
            del ranges[i]
        elif joins_prev:
            ranges[i - 1] = (ranges[i - 1][0], seq + 1)
        elif joins_next:
            ranges[i] = (seq, ranges[i][1])
        else:
            if len(ranges) >= MAX_SACK_RANGES:
                raise ProtocolError(
                    CloseCode.BAD_VALUE,
                    f"MEDIA seq {seq} would need SACK range {len(ranges) + 1} "
                    f"(max {MAX_SACK_RANGES})",
                )
            ranges.insert(i, (seq, seq + 1))
        self._above_gap += 1

    def _advance_to(self, seq: int) -> None:
        """Treat every seq below `seq` as received (the sender will never send them)."""
        self._next_seq = seq
        ranges = [(max(s, seq), e) for s, e in self._ranges if e > seq]
        if ranges and ranges[0][0] == seq:
            self._next_seq = ranges.pop(0)[1]
        self._ranges = ranges
        self._above_gap = sum(e - s for s, e in ranges)

    def _ack_next_seq(self) -> int:
        return min(self._next_seq, self._kept) if self._kept_ack else self._next_seq

    def _ack_ranges(self) -> list[tuple[int, int]]:
        """The SACK ranges of an ACK: [kept, next_seq) first when not all received is kept,
        then the received ranges; at most MAX_SACK_RANGES (the oldest gaps are left out
        then: the sender keeps what it already knows, and learns them later)."""
        ranges = self._ranges
        kept = self._ack_next_seq()
        if kept < self._next_seq:
            ranges = [(kept, self._next_seq), *ranges]
            if len(ranges) > MAX_SACK_RANGES:
                ranges = ranges[:1] + ranges[len(ranges) - MAX_SACK_RANGES + 1 :]
        return ranges

    def _ack_due(self, now: float) -> bool:
        if self._media_since_ack == 0:
            if self._ack_next_seq() <= self._acked or self._last_ack_time is None:
                return False
            return now - self._last_ack_time >= self._ack_interval_s
        if self._media_since_ack >= ACK_EVERY_MEDIA or self._last_ack_time is None:
            return True
        return now - self._last_ack_time >= self._ack_interval_s

    def _ack(self, now: float) -> bytes:
        self._media_since_ack = 0
        self._last_ack_time = now
        self._acked = self._ack_next_seq()
        return encode(
            Ack(
                next_seq=self._acked,
                buffer_ms=self._buffer_ms,
                arrival_kbps=self.arrival_kbps,
                sack_ranges=tuple(self._ack_ranges()),
            )
        )


def _order(detail: str) -> ProtocolError:
    return ProtocolError(CloseCode.PROTOCOL_ORDER, detail)
