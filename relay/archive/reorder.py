"""`SeqReorder`: media in arrival order in, media in seq order out. No I/O of its own.

After a live jump the relay receives the live edge first (seqs from the newest keyframe on)
and the older media later, flagged backfill. The archive wants seq order, so units that arrive
above a gap are held back until the gap is filled. A held unit goes to a `Spool` (memory,
then a spill file) whole: its fields packed in front of its payload (`HELD_HEADER`), so a gap
of minutes costs bounded memory and a held unit costs the spool's entry alone (no `Media`
object and no separate index: the spool's keys are the held seqs), so a gap does not leave
tens of thousands of small objects behind (docs/relay.md, "Memory under hostile input").

Rules:
- The first unit of a session starts the expected seq at its own seq, or lower when the
  caller says (`received_below`) that the receiver is still waiting for seqs below it.
- A unit at the expected seq is released at once, with every held unit that follows it
  without a gap. A unit above it is held. A unit below it (already released or given up) or
  one already held is refused with ValueError.
- `received_below` (the receiver's next_seq right after this unit arrived) says every seq
  below it has arrived or never will. Missing seqs below it are given up at once.
- When the spool is full, the lowest gap is given up so that held units can go out.
- `flush()` (end of session) releases everything held, in seq order, gaps or not.
Gaps given up are collected; `take_gaps()` hands them to the caller to log.
"""

from __future__ import annotations

import struct

from uplink import Media, Spool, SpoolFull

# A held unit in the spool: track_id (u8), flags (u8: 1 keyframe, 2 backfill), pts, dts and
# capture_time_us (i64, i64, u64, as on the wire), then the payload.
HELD_HEADER = struct.Struct("<BBqqQ")
_KEYFRAME = 1
_BACKFILL = 2


def pack_held(media: Media) -> bytes:
    """One unit as the spool holds it: `HELD_HEADER` then the payload (seq is the key)."""
    flags = (_KEYFRAME if media.keyframe else 0) | (_BACKFILL if media.backfill else 0)
    return HELD_HEADER.pack(media.track_id, flags, media.pts, media.dts,
                            media.capture_time_us) + media.payload


def unpack_held(seq: int, data: bytes) -> Media:
    """The unit `pack_held` packed under `seq`."""
    track_id, flags, pts, dts, capture_us = HELD_HEADER.unpack_from(data)
    return Media(seq, track_id, bool(flags & _KEYFRAME), pts, dts, capture_us,
                 data[HELD_HEADER.size:], bool(flags & _BACKFILL))


class SeqReorder:
    def __init__(self, spool: Spool | None = None) -> None:
        self._spool = spool if spool is not None else Spool()
        self._next: int | None = None  # the seq to release next; None before the first unit
        self._gaps: list[tuple[int, int]] = []  # [start, end) given up, not yet taken

    @property
    def next_seq(self) -> int | None:
        """The seq released next; None before the first unit (or after a flush)."""
        return self._next

    @property
    def held(self) -> int:
        """Units held back above a gap."""
        return len(self._spool)

    @property
    def spool(self) -> Spool:
        return self._spool

    def take_gaps(self) -> list[tuple[int, int]]:
        """The half-open seq ranges given up since the last call, oldest first."""
        gaps, self._gaps = self._gaps, []
        return gaps

    def missing(self) -> list[tuple[int, int]]:
        """Half-open ranges of seqs not yet arrived below the highest held seq."""
        if self._next is None or not len(self._spool):
            return []
        out: list[tuple[int, int]] = []
        cursor = self._next
        for seq in sorted(self._spool):
            if seq > cursor:
                out.append((cursor, seq))
            cursor = seq + 1
        return out

    def push(self, media: Media, received_below: int | None = None) -> list[Media]:
        """Take one unit; returns the units now ready, in seq order."""
        seq = media.seq
        if self._next is None:
            self._next = seq if received_below is None else min(seq, received_below)
        if seq < self._next:
            raise ValueError(
                f"seq {seq} arrived after the recording moved past it (next is {self._next})"
            )
        if seq in self._spool:
            raise ValueError(f"seq {seq} arrived twice")
        out: list[Media] = []
        if received_below is not None and received_below > self._next:
            out += self._skip_to(min(seq, received_below))  # the receiver will not get them
        while seq != self._next:
            try:
                self._spool.put(seq, pack_held(media))
                return out
            except SpoolFull:
                # no room to wait any longer: give up the lowest gap
                lowest = min(self._spool, default=seq)
                out += self._skip_to(min(seq, lowest))
        self._next = seq + 1
        out.append(media)
        out += self._release_run()
        if received_below is not None and received_below > self._next:
            out += self._skip_to(received_below)
        return out

    def flush(self) -> list[Media]:
        """Everything held, in seq order; the gaps left go to `take_gaps()`. The next unit
        starts a new sequence (as for a new session)."""
        out: list[Media] = []
        self._gaps += self.missing()
        for seq in sorted(self._spool):
            out.append(self._take(seq))
        self._next = None
        return out

    def close(self) -> None:
        """Drop what is held and close the spool (its spill file is deleted)."""
        self._spool.close()

    # -- internals -----------------------------------------------------------------------------

    def _take(self, seq: int) -> Media:
        media = unpack_held(seq, self._spool.get(seq))
        self._spool.discard(seq)
        return media

    def _release_run(self) -> list[Media]:
        out: list[Media] = []
        assert self._next is not None
        while self._next in self._spool:
            out.append(self._take(self._next))
            self._next += 1
        return out

    def _skip_to(self, seq: int) -> list[Media]:
        """Give up every missing seq below `seq`: release what is held below it, in order,
        then whatever follows without a gap."""
        assert self._next is not None
        out: list[Media] = []
        for held_seq in sorted(s for s in self._spool if s < seq):
            if held_seq > self._next:
                self._gaps.append((self._next, held_seq))
            out.append(self._take(held_seq))
            self._next = held_seq + 1
        if seq > self._next:
            self._gaps.append((self._next, seq))
            self._next = seq
        out += self._release_run()
        return out
