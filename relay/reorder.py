"""`SeqReorder`: media in arrival order in, media in seq order out. No I/O of its own.

After a live jump the relay receives the live edge first (seqs from the newest keyframe on)
and the older media later, flagged backfill. The archive wants seq order, so units that arrive
above a gap are held back until the gap is filled. The held payloads go to a `Spool` (memory,
then a spill file), so a gap of minutes costs bounded memory; the held metadata (a few dozen
bytes a unit) stays in memory.

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

from dataclasses import replace

from uplink import Media, Spool, SpoolFull


class SeqReorder:
    def __init__(self, spool: Spool | None = None) -> None:
        self._spool = spool if spool is not None else Spool()
        self._held: dict[int, Media] = {}  # seq -> the unit without its payload (in the spool)
        self._next: int | None = None  # the seq to release next; None before the first unit
        self._gaps: list[tuple[int, int]] = []  # [start, end) given up, not yet taken

    @property
    def next_seq(self) -> int | None:
        """The seq released next; None before the first unit (or after a flush)."""
        return self._next

    @property
    def held(self) -> int:
        """Units held back above a gap."""
        return len(self._held)

    @property
    def spool(self) -> Spool:
        return self._spool

    def take_gaps(self) -> list[tuple[int, int]]:
        """The half-open seq ranges given up since the last call, oldest first."""
        gaps, self._gaps = self._gaps, []
        return gaps

    def missing(self) -> list[tuple[int, int]]:
        """Half-open ranges of seqs not yet arrived below the highest held seq."""
        if self._next is None or not self._held:
            return []
        out: list[tuple[int, int]] = []
        cursor = self._next
        for seq in sorted(self._held):
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
        if seq in self._held:
            raise ValueError(f"seq {seq} arrived twice")
        out: list[Media] = []
        if received_below is not None and received_below > self._next:
            out += self._skip_to(min(seq, received_below))  # the receiver will not get them
        while seq != self._next:
            try:
                self._spool.put(seq, media.payload)
                self._held[seq] = replace(media, payload=b"")
                return out
            except SpoolFull:
                # no room to wait any longer: give up the lowest gap
                out += self._skip_to(min(seq, min(self._held)) if self._held else seq)
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
        for seq in sorted(self._held):
            out.append(self._take(seq))
        self._next = None
        return out

    def close(self) -> None:
        """Drop what is held and close the spool (its spill file is deleted)."""
        self._held.clear()
        self._spool.close()

    # -- internals -----------------------------------------------------------------------------

    def _take(self, seq: int) -> Media:
        media = self._held.pop(seq)
        payload = self._spool.get(seq)
        self._spool.discard(seq)
        return replace(media, payload=payload)

    def _release_run(self) -> list[Media]:
        out: list[Media] = []
        assert self._next is not None
        while self._next in self._held:
            out.append(self._take(self._next))
            self._next += 1
        return out

    def _skip_to(self, seq: int) -> list[Media]:
        """Give up every missing seq below `seq`: release what is held below it, in order,
        then whatever follows without a gap."""
        assert self._next is not None
        out: list[Media] = []
        for held_seq in sorted(s for s in self._held if s < seq):
            if held_seq > self._next:
                self._gaps.append((self._next, held_seq))
            out.append(self._take(held_seq))
            self._next = held_seq + 1
        if seq > self._next:
            self._gaps.append((self._next, seq))
            self._next = seq
        out += self._release_run()
        return out
