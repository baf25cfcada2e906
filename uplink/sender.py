"""The encoder side of the uplink, without I/O: `UplinkSender`.

The caller owns the WebSocket. It tells the sender when a connection comes up or goes away,
feeds it every binary message from the relay (`receive`) and writes what `data_to_send`
returns. Media pushed with `push_media` is held until the relay acknowledges it, across any
number of reconnects, and resent after each WELCOME from where the relay says it is.

The payloads live in a `Spool` (memory up to a limit, then a spill file on disk), so a long
outage loses nothing while memory stays bounded; only a few dozen bytes of metadata per held
message stay in memory. A payload leaves the spool when the relay's cumulative ACK passes its
seq. A selectively acknowledged payload stays until then: a relay that loses its state
(WELCOME with resumed = 0) must get it again (docs/uplink-protocol.md, section 7.2).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace

from .errors import CloseCode, ProtocolError, truncate_utf8
from .spool import Spool
from .window import WindowedExtreme
from .wire import (
    MAX_BYE_REASON_BYTES,
    MEDIA_HEADER_BYTES,
    SESSION_ID_BYTES,
    Ack,
    Bye,
    Hello,
    Media,
    Message,
    SenderStats,
    TrackConfig,
    Welcome,
    decode,
    encode,
    media_header,
    message_name,
)

RTT_GAIN = 0.125  # weight of a new RTT sample in srtt (RFC 6298 alpha)
MIN_RTT_WINDOW_S = 60.0  # min_rtt: the lowest RTT sample over this window
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Welcomed:
    """The relay accepted this connection; media flows from `next_seq` on."""

    resumed: bool
    next_seq: int
    buffer_ms: int


@dataclass(frozen=True, slots=True)
class Acked:
    """An ACK arrived. `newly_acked_bytes`: payload bytes it released (cumulative + SACK);
    `newest_seq`: the highest seq the relay has (cumulative or selective), None if none."""

    next_seq: int
    newly_acked_bytes: int
    rtt_s: float | None
    newest_seq: int | None = None


@dataclass(frozen=True, slots=True)
class RemoteBye:
    """The relay ended the session; close the connection."""

    reason: str


SenderEvent = Welcomed | Acked | RemoteBye


class _Entry:
    """One held media message (its payload is in the spool) and its delivery state."""

    __slots__ = (
        "media",
        "size",
        "send_count",
        "sent_time",
        "in_flight",
        "sacked",
        "backfill",
    )

    def __init__(self, media: Media, size: int) -> None:
        self.media = media  # every field but the payload (b""): that is in the spool
        self.size = size  # payload bytes
        self.send_count = 0
        self.sent_time: float | None = None  # `now` of the latest send
        self.in_flight = False  # sent on the current connection, not yet acked
        self.sacked = False  # inside a SACK range of the relay
        self.backfill = False  # behind the live edge: send after live media, flagged backfill


class UplinkSender:
    """Sans-I/O uplink sender: sequence numbering, retransmission, resume, backlog stats.

    Held media is exactly the seqs in [acked_seq, next_seq_to_assign); each is unsent,
    in flight on the current connection, or selectively acked (SACK). Per message, every
    operation is amortized O(1); a reconnect costs O(held messages).

    `spool` holds the payloads (default: `Spool()`, 32 MiB of memory, then up to 2 GiB in a
    temporary file). The sender owns it from here on: `close()` closes it.
    """

    def __init__(self, session_id: bytes | None = None, spool: Spool | None = None) -> None:
        if session_id is None:
            session_id = os.urandom(SESSION_ID_BYTES)
        if len(session_id) != SESSION_ID_BYTES:
            raise ValueError(f"session_id must be {SESSION_ID_BYTES} bytes, not {len(session_id)}")
        self._session_id = bytes(session_id)
        # track_id -> [(first seq it applies to, config)], oldest first
        self._tracks: dict[int, list[tuple[int, TrackConfig]]] = {}
        self._entries: dict[int, _Entry] = {}
        self._spool = spool if spool is not None else Spool()
        self._newest_keyframe: dict[int, int] = {}  # track_id -> seq of its newest keyframe
        self._low = 0  # every seq below was acked and dropped
        self._next_seq = 0
        self._live: deque[int] = deque()  # unsent live seqs, ascending (may hold stale seqs)
        self._backfill: deque[int] = deque()  # unsent backfill seqs, ascending (idem)
        self._backfill_mark = 0  # seqs below are marked backfill (or gone)
        self._live_cursor = 0  # no live seq below it is unacknowledged (see live_lag_ms)
        self._known_sack: list[tuple[int, int]] = []  # SACK ranges already applied
        # the current connection
        self._transport_up = False
        self._welcomed = False
        self._closing = False  # a BYE was sent or received: send nothing more
        self._bye_received = False  # a BYE was received: accept nothing more
        self._control: deque[Message] = deque()
        self._sent_tracks: dict[int, TrackConfig] = {}
        # statistics
        self._backlog_bytes = 0
        self._backfill_bytes = 0
        self._unsent_bytes = 0
        self._newest_capture_us: int | None = None
        self._sent_bytes_total = 0
        self._acked_bytes_total = 0
        self._retransmitted_bytes_total = 0
        self._srtt_s: float | None = None
        self._min_rtt = WindowedExtreme[float](MIN_RTT_WINDOW_S)
        self._last_ack_time: float | None = None
        self._relay_buffer_ms: int | None = None
        self._relay_delay_ms: int | None = None
        self._relay_arrival_kbps: int | None = None

    # -- inputs from the encoder -------------------------------------------------------------

    def add_track(self, track: TrackConfig) -> None:
        """Declare or change a track. It applies to media pushed from now on. The relay gets
        every track after each WELCOME, a new track at once, and a changed config just before
        the first media it applies to."""
        encode(track)  # validates; ValueError names the field
        history = self._tracks.setdefault(track.track_id, [])
        if history and history[-1][1] == track:
            return
        if history and history[-1][0] == self._next_seq:
            history[-1] = (self._next_seq, track)
        else:
            history.append((self._next_seq, track))
        if self.connected and track.track_id not in self._sent_tracks:
            self._control.append(track)  # announce a new track at once; a change goes out lazily

    def push_media(
        self,
        track_id: int,
        keyframe: bool,
        pts: int,
        dts: int,
        capture_time_us: int,
        payload: bytes,
    ) -> int:
        """Queue one access unit; returns its seq (0, 1, 2, ... per session).

        Raises SpoolFull when the spool has no room left for it (nothing is queued then: the
        caller drops the unit or stops), ValueError for a bad field."""
        if track_id not in self._tracks:
            raise ValueError(f"push_media: track {track_id} was never added (call add_track)")
        payload = bytes(payload)
        media = Media(
            seq=self._next_seq,
            track_id=track_id,
            keyframe=bool(keyframe),
            pts=pts,
            dts=dts,
            capture_time_us=capture_time_us,
            payload=payload,
        )
        media_header(media)  # validates; ValueError names the field
        seq = self._next_seq
        self._spool.put(seq, payload)  # SpoolFull: nothing changed
        self._entries[seq] = _Entry(replace(media, payload=b""), len(payload))
        self._live.append(seq)
        self._next_seq += 1
        if media.keyframe:
            self._newest_keyframe[track_id] = seq
        size = len(payload)
        self._backlog_bytes += size
        self._unsent_bytes += size
        self._newest_capture_us = capture_time_us
        return seq

    def jump_to_live(self, from_seq: int) -> None:
        """Send media from `from_seq` (the newest keyframe, say) before anything older that is
        still unsent; the older media follows when the live edge has nothing waiting, flagged
        backfill. Use after an outage longer than the relay's buffer."""
        if not 0 <= from_seq <= self._next_seq:
            raise ValueError(f"jump_to_live: seq {from_seq} not in 0..{self._next_seq}")
        for seq in range(max(self._low, self._backfill_mark), from_seq):
            entry = self._entries[seq]
            entry.backfill = True
            if not entry.sacked:
                self._backfill_bytes += entry.size
            if not entry.in_flight and not entry.sacked:
                self._backfill.append(seq)
        self._backfill_mark = max(self._backfill_mark, from_seq)

    # -- connection events -------------------------------------------------------------------

    def connection_made(self) -> None:
        """A new transport is up: HELLO is queued; media waits for WELCOME."""
        if self._transport_up:
            self.connection_lost()
        self._transport_up = True
        self._welcomed = False
        self._closing = False
        self._bye_received = False
        self._control = deque([Hello(session_id=self._session_id, acked_seq=self._low)])
        self._sent_tracks = {}

    def connection_lost(self) -> None:
        """The transport is gone: whatever was in flight is unsent again."""
        self._transport_up = False
        self._welcomed = False
        self._control.clear()
        self._sent_tracks = {}
        self._requeue_all()

    def receive(self, data: bytes, now: float) -> list[SenderEvent]:
        """Handle one binary message from the relay. Raises ProtocolError on bad data."""
        if not self._transport_up:
            raise RuntimeError("receive() called with no connection (call connection_made)")
        msg = decode(data)
        if self._bye_received:
            raise ProtocolError(CloseCode.PROTOCOL_ORDER, f"{message_name(msg)} after BYE")
        if isinstance(msg, Ack):
            if not self._welcomed:
                raise ProtocolError(CloseCode.PROTOCOL_ORDER, "ACK before WELCOME")
            return [self._on_ack(msg, now)]
        if isinstance(msg, Welcome):
            if self._welcomed:
                raise ProtocolError(CloseCode.PROTOCOL_ORDER, "second WELCOME on one connection")
            return [self._on_welcome(msg, now)]
        if isinstance(msg, Bye):
            self._bye_received = True
            self._closing = True
            return [RemoteBye(msg.reason)]
        raise ProtocolError(
            CloseCode.PROTOCOL_ORDER, f"{message_name(msg)} is never sent by a relay"
        )

    # -- outputs -------------------------------------------------------------------------------

    def data_to_send(self, now: float, max_bytes: int | None = None) -> list[bytes]:
        """Encoded messages to write now, in order. `max_bytes` caps their total size, but one
        message is always allowed (a frame larger than the cap goes out alone)."""
        out: list[bytes] = []
        if not self._transport_up or self._closing:
            return out
        total = 0

        def fits(size: int) -> bool:
            return max_bytes is None or not out or total + size <= max_bytes

        while self._control:
            data = encode(self._control[0])
            if not fits(len(data)):
                return out
            msg = self._control.popleft()
            if isinstance(msg, TrackConfig):
                self._sent_tracks[msg.track_id] = msg
            out.append(data)
            total += len(data)
        if not self._welcomed:
            return out

        for queue in (self._live, self._backfill):
            for seq in _drain(queue, self._entries, queue is self._backfill):
                entry = self._entries[seq]
                media = entry.media
                config = self._config_for(media.track_id, seq)
                if self._sent_tracks.get(media.track_id) != config:
                    data = encode(config)
                    if not fits(len(data)):
                        return out
                    self._sent_tracks[media.track_id] = config
                    out.append(data)
                    total += len(data)
                size = MEDIA_HEADER_BYTES + entry.size
                if not fits(size):
                    return out
                payload = self._spool.get(seq)
                queue.popleft()
                out.append(encode(replace(media, payload=payload, backfill=entry.backfill)))
                total += size
                entry.in_flight = True
                entry.send_count += 1
                entry.sent_time = now
                self._unsent_bytes -= entry.size
                self._sent_bytes_total += entry.size
                if entry.send_count > 1:
                    self._retransmitted_bytes_total += entry.size
        return out

    def stats_message(self, target_kbps: int) -> bytes:
        """An encoded STATS with the current backlog and the encoder's target bitrate."""
        return encode(
            SenderStats(
                backlog_bytes=min(self._backlog_bytes, _U64_MAX),
                backlog_ms=min(self.backlog_ms, _U32_MAX),
                target_kbps=target_kbps,
            )
        )

    def bye(self, reason: str = "") -> bytes:
        """An encoded BYE (reason cut to 123 UTF-8 bytes). Nothing more is sent after it; ACKs
        still in flight from the relay are accepted."""
        self._closing = True
        return encode(Bye(truncate_utf8(reason, MAX_BYE_REASON_BYTES)))

    # -- observable state ----------------------------------------------------------------------

    @property
    def session_id(self) -> bytes:
        return self._session_id

    @property
    def connected(self) -> bool:
        """True between WELCOME and the end of that connection (or a BYE)."""
        return self._transport_up and self._welcomed and not self._closing

    @property
    def tracks(self) -> dict[int, TrackConfig]:
        """The latest config of every track."""
        return {track_id: history[-1][1] for track_id, history in self._tracks.items()}

    @property
    def next_seq_to_assign(self) -> int:
        return self._next_seq

    @property
    def acked_seq(self) -> int:
        """The relay's next_seq: every seq below it has been delivered."""
        return self._low

    @property
    def backlog_bytes(self) -> int:
        """Payload bytes of media the relay has not acknowledged (cumulatively or by SACK)."""
        return self._backlog_bytes

    @property
    def backlog_ms(self) -> int:
        """Capture-time span from the oldest unacknowledged media to the newest pushed."""
        if self._low == self._next_seq or self._newest_capture_us is None:
            return 0
        oldest_us = self._entries[self._low].media.capture_time_us
        return max(0, (self._newest_capture_us - oldest_us) // 1000)

    @property
    def unsent_ms(self) -> int:
        """Capture-time span of the media waiting unsent (live or backfill): from the oldest
        unsent media to the newest pushed; 0 when nothing waits."""
        if self._newest_capture_us is None:
            return 0
        oldest_us: int | None = None
        for queue in (self._live, self._backfill):
            seq = _head(queue, self._entries, queue is self._backfill)
            if seq is not None:
                capture_us = self._entries[seq].media.capture_time_us
                if oldest_us is None or capture_us < oldest_us:
                    oldest_us = capture_us
        if oldest_us is None:
            return 0
        return max(0, (self._newest_capture_us - oldest_us) // 1000)

    @property
    def live_from_seq(self) -> int:
        """Where the live edge last jumped to (`jump_to_live`; 0 before any jump): held media
        below it is backfill, media from it on is live."""
        return self._backfill_mark

    @property
    def live_lag_ms(self) -> int:
        """Capture-time span from the oldest unacknowledged live media (seq >= live_from_seq,
        neither cumulatively nor selectively acked) to the newest pushed; 0 when none. How far
        the relay's live edge is behind the encoder; backfill does not count."""
        if self._newest_capture_us is None:
            return 0
        seq = max(self._live_cursor, self._low, self._backfill_mark)
        while seq < self._next_seq and self._entries[seq].sacked:
            seq += 1  # SACKs are never withdrawn unless the relay lost state (cursor reset)
        self._live_cursor = seq
        if seq == self._next_seq:
            return 0
        oldest_us = self._entries[seq].media.capture_time_us
        return max(0, (self._newest_capture_us - oldest_us) // 1000)

    @property
    def backfill_bytes(self) -> int:
        """Payload bytes of backfill media the relay has not acknowledged."""
        return self._backfill_bytes

    def newest_keyframe_seq(self, track_id: int) -> int | None:
        """The seq of the newest keyframe pushed on `track_id` (None if none yet): where
        `jump_to_live` should start after a long outage."""
        return self._newest_keyframe.get(track_id)

    @property
    def spool(self) -> Spool:
        """Where the held payloads are: its memory_bytes and disk_bytes show the cost."""
        return self._spool

    @property
    def unsent_bytes(self) -> int:
        """Payload bytes of media neither in flight on this connection nor acknowledged."""
        return self._unsent_bytes

    @property
    def sent_bytes_total(self) -> int:
        """Media payload bytes handed out by data_to_send, retransmissions included."""
        return self._sent_bytes_total

    @property
    def acked_bytes_total(self) -> int:
        return self._acked_bytes_total

    @property
    def retransmitted_bytes_total(self) -> int:
        return self._retransmitted_bytes_total

    @property
    def srtt_s(self) -> float | None:
        """Smoothed RTT from ACKs of never-retransmitted media (Karn); None before a sample."""
        return self._srtt_s

    @property
    def min_rtt_s(self) -> float | None:
        """The lowest RTT sample of the last MIN_RTT_WINDOW_S (at the last ACK): the path's
        RTT without a queue, as near as the sender can tell; None before a sample."""
        return self._min_rtt.value

    @property
    def last_ack_time(self) -> float | None:
        """`now` of the last ACK or WELCOME."""
        return self._last_ack_time

    @property
    def relay_buffer_ms(self) -> int | None:
        """The relay's playout buffer level at its last ACK (None before WELCOME)."""
        return self._relay_buffer_ms

    @property
    def sack_ranges(self) -> int:
        """How many gaps the relay reported at its last ACK (SACK ranges above its cumulative
        ACK); a live-edge jump adds one, and the relay refuses more than MAX_SACK_RANGES."""
        return len(self._known_sack)

    @property
    def relay_delay_ms(self) -> int | None:
        """The relay's configured playout delay, from WELCOME (None before it): media older
        than this can no longer be shown live."""
        return self._relay_delay_ms

    @property
    def relay_arrival_kbps(self) -> int | None:
        return self._relay_arrival_kbps

    @property
    def all_acked(self) -> bool:
        return self._low == self._next_seq

    def close(self) -> None:
        """Release the spool (its spill file is deleted). Held media is gone afterwards."""
        self._spool.close()

    # -- internals -----------------------------------------------------------------------------

    def _on_welcome(self, msg: Welcome, now: float) -> Welcomed:
        if msg.next_seq > self._next_seq:
            raise ProtocolError(
                CloseCode.BAD_VALUE,
                f"WELCOME next_seq {msg.next_seq} is beyond the next seq to assign "
                f"{self._next_seq}",
            )
        relay_lost_state = not msg.resumed or msg.next_seq < self._low
        newly, _ = self._advance_low(msg.next_seq)  # no RTT sample: WELCOME is not timely
        self._acked_bytes_total += newly
        if relay_lost_state:
            # The relay lost (some of) the session: its earlier SACKs mean nothing now.
            for entry in self._entries.values():
                if entry.sacked:
                    entry.sacked = False
                    self._backlog_bytes += entry.size
                    if entry.backfill:
                        self._backfill_bytes += entry.size
            self._known_sack = []
            self._live_cursor = 0
        self._requeue_all()
        self._welcomed = True
        self._last_ack_time = now
        self._relay_delay_ms = msg.buffer_ms
        if self._relay_buffer_ms is None:
            self._relay_buffer_ms = msg.buffer_ms  # full until an ACK says otherwise
        first = self._live[0] if self._live else self._backfill[0] if self._backfill else None
        for track_id in sorted(self._tracks):
            seq = self._next_seq if first is None else first
            self._control.append(self._config_for(track_id, seq))
        return Welcomed(resumed=msg.resumed, next_seq=msg.next_seq, buffer_ms=msg.buffer_ms)

    def _on_ack(self, msg: Ack, now: float) -> Acked:
        if msg.next_seq > self._next_seq:
            raise ProtocolError(
                CloseCode.BAD_VALUE,
                f"ACK next_seq {msg.next_seq} is beyond the next seq to assign {self._next_seq}",
            )
        for i, (_, end) in enumerate(msg.sack_ranges):
            if end > self._next_seq:
                raise ProtocolError(
                    CloseCode.BAD_VALUE,
                    f"ACK range {i} end {end} is beyond the next seq to assign {self._next_seq}",
                )
        newly, newest_sent = self._advance_low(msg.next_seq)
        ranges = [(max(start, self._low), end) for start, end in msg.sack_ranges if end > self._low]
        for start, end in _subtract(ranges, self._known_sack):
            for seq in range(start, end):
                entry = self._entries[seq]
                if entry.sacked:
                    continue
                entry.sacked = True
                newly += entry.size
                self._backlog_bytes -= entry.size
                if entry.backfill:
                    self._backfill_bytes -= entry.size
                if not entry.in_flight:
                    self._unsent_bytes -= entry.size
                newest_sent = _newest_sample(entry, newest_sent)
        self._known_sack = ranges
        self._acked_bytes_total += newly
        rtt_s: float | None = None
        if newest_sent is not None:
            rtt_s = max(0.0, now - newest_sent)
            if self._srtt_s is None:
                self._srtt_s = rtt_s
            else:
                self._srtt_s += RTT_GAIN * (rtt_s - self._srtt_s)
            self._min_rtt.update(now, rtt_s)
        self._last_ack_time = now
        self._relay_buffer_ms = msg.buffer_ms
        self._relay_arrival_kbps = msg.arrival_kbps
        newest = max([msg.next_seq - 1] + [end - 1 for _, end in msg.sack_ranges])
        return Acked(next_seq=msg.next_seq, newly_acked_bytes=newly, rtt_s=rtt_s,
                     newest_seq=newest if newest >= 0 else None)

    def _advance_low(self, to: int) -> tuple[int, float | None]:
        """Drop every held seq below `to`; returns (bytes newly acked, newest RTT send time)."""
        newly = 0
        newest_sent: float | None = None
        if to <= self._low:
            return newly, newest_sent
        for seq in range(self._low, to):
            entry = self._entries.pop(seq)
            self._spool.discard(seq)
            if entry.sacked:
                continue
            newly += entry.size
            self._backlog_bytes -= entry.size
            if entry.backfill:
                self._backfill_bytes -= entry.size
            if not entry.in_flight:
                self._unsent_bytes -= entry.size
            newest_sent = _newest_sample(entry, newest_sent)
        self._low = to
        self._known_sack = [(max(s, to), e) for s, e in self._known_sack if e > to]
        for history in self._tracks.values():
            while len(history) > 1 and history[1][0] <= to:
                history.pop(0)
        return newly, newest_sent

    def _requeue_all(self) -> None:
        """Every held, not selectively acked seq becomes unsent, in seq order."""
        self._live = deque()
        self._backfill = deque()
        self._unsent_bytes = 0
        for seq in range(self._low, self._next_seq):
            entry = self._entries[seq]
            entry.in_flight = False
            if entry.sacked:
                continue
            self._unsent_bytes += entry.size
            (self._backfill if entry.backfill else self._live).append(seq)

    def _config_for(self, track_id: int, seq: int) -> TrackConfig:
        history = self._tracks[track_id]
        for first_seq, config in reversed(history):
            if first_seq <= seq:
                return config
        return history[0][1]


def _head(queue: deque[int], entries: dict[int, _Entry], backfill: bool) -> int | None:
    """The first sendable seq of `queue`, after dropping stale heads; None if none."""
    while queue:
        entry = entries.get(queue[0])
        if entry is None or entry.in_flight or entry.sacked or entry.backfill != backfill:
            queue.popleft()
            continue
        return queue[0]
    return None


def _drain(queue: deque[int], entries: dict[int, _Entry], backfill: bool) -> Iterator[int]:
    """Yield the head of `queue` while it is a sendable seq, dropping stale heads. The caller
    pops a yielded seq once it is sent (or stops iterating)."""
    while (seq := _head(queue, entries, backfill)) is not None:
        before = len(queue)
        yield seq
        if len(queue) == before:  # not sent: the caller stopped
            return


def _newest_sample(entry: _Entry, newest_sent: float | None) -> float | None:
    """Karn's rule: only media sent exactly once, on this connection, gives an RTT sample."""
    if entry.send_count != 1 or not entry.in_flight or entry.sent_time is None:
        return newest_sent
    if newest_sent is None or entry.sent_time > newest_sent:
        return entry.sent_time
    return newest_sent


def _subtract(
    ranges: list[tuple[int, int]], known: list[tuple[int, int]]
) -> Iterator[tuple[int, int]]:
    """Parts of sorted disjoint half-open `ranges` not covered by sorted disjoint `known`."""
    for start, end in ranges:
        cursor = start
        for known_start, known_end in known:
            if known_end <= cursor:
                continue
            if known_start >= end:
                break
            if known_start > cursor:
                yield cursor, known_start
            cursor = max(cursor, known_end)
            if cursor >= end:
                break
        if cursor < end:
            yield cursor, end
