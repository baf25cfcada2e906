"""`Spool`: a byte store keyed by sequence number, in memory first, then in a spill file.

The sender keeps every unacknowledged payload in one, and the relay's recorder keeps the
media it holds back for reordering in another, so an outage of minutes loses nothing and
memory stays bounded. It is a plain data structure: file I/O, but no clock and no sockets.

- Memory: up to `memory_limit_bytes` of payload. When a `put` would go over, the oldest
  entries in memory (the ones put first) move to the spill file; the newest stay in memory.
  For a sender those are the lowest seqs: the newest media is sent first after a live jump,
  the oldest is sent last or acknowledged by a WELCOME without ever being read back.
- Disk: one append-only spill file, created on the first spill in `directory` (the system's
  temporary directory by default) with `tempfile.TemporaryFile`, which unlinks it at once
  where the OS allows (so a crash leaves nothing behind); `close()` deletes it.
- Reclaiming disk space: a discarded entry on disk becomes dead space. When no live entry is
  left on disk the file is truncated to zero. Otherwise, once dead space is at least the live
  space (and at least `COMPACT_MIN_DEAD_BYTES`), the live entries are moved down to the start
  of the file, in order, and the file is truncated behind them. Every byte moved is paid for
  by at least one byte discarded, so compaction costs amortized O(1) per byte spilled, and
  the file never holds much more than twice its live bytes. Keys are expected to be discarded
  roughly oldest first (acknowledgements arrive in seq order), which keeps compactions rare.
- The disk cap: the spill file never grows beyond `disk_limit_bytes`. A `put` that would need
  more (after compacting away any dead space) raises `SpoolFull` and stores nothing; what was
  already stored stays readable. The caller decides what to drop.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

MEMORY_LIMIT_BYTES_DEFAULT = 32 * 1024 * 1024  # 32 MiB
DISK_LIMIT_BYTES_DEFAULT = 2 * 1024 * 1024 * 1024  # 2 GiB
COMPACT_MIN_DEAD_BYTES = 1024 * 1024  # never compact for less dead space than this (1 MiB)
COPY_CHUNK_BYTES = 1024 * 1024  # compaction moves data in chunks of at most this size


class SpoolFull(Exception):
    """The spill file would grow beyond the spool's disk limit."""


class Spool:
    """Seq-keyed bytes: memory first (newest), then an append-only spill file (oldest)."""

    def __init__(
        self,
        memory_limit_bytes: int = MEMORY_LIMIT_BYTES_DEFAULT,
        disk_limit_bytes: int = DISK_LIMIT_BYTES_DEFAULT,
        directory: Path | None = None,
    ) -> None:
        if memory_limit_bytes < 0:
            raise ValueError(f"memory_limit_bytes must be >= 0, not {memory_limit_bytes}")
        if disk_limit_bytes < 0:
            raise ValueError(f"disk_limit_bytes must be >= 0, not {disk_limit_bytes}")
        self._memory_limit_bytes = memory_limit_bytes
        self._disk_limit_bytes = disk_limit_bytes
        self._directory = directory
        self._memory: OrderedDict[int, bytes] = OrderedDict()  # oldest put first
        self._memory_bytes = 0
        # key -> (offset, length) in the spill file; insertion order is offset order
        self._disk: dict[int, tuple[int, int]] = {}
        self._disk_bytes = 0  # live bytes in the spill file
        self._file: BinaryIO | None = None
        self._file_end = 0  # bytes used in the spill file, live and dead
        self._spilled_total = 0
        self._closed = False

    # -- the store -----------------------------------------------------------------------------

    def put(self, key: int, data: bytes) -> None:
        """Store `data` under a new `key`. Raises SpoolFull (nothing stored) when the bytes
        that must leave memory do not fit under the disk limit, ValueError for a key already
        held."""
        self._check_open()
        if key in self._memory or key in self._disk:
            raise ValueError(f"spool: key {key} is already held (discard it first)")
        data = bytes(data)
        self._memory[key] = data
        self._memory_bytes += len(data)
        try:
            while self._memory_bytes > self._memory_limit_bytes:
                old_key, old_data = self._memory.popitem(last=False)
                self._memory_bytes -= len(old_data)
                try:
                    self._spill(old_key, old_data)
                except BaseException:
                    self._memory[old_key] = old_data  # keep it, still the oldest in memory
                    self._memory.move_to_end(old_key, last=False)
                    self._memory_bytes += len(old_data)
                    raise
        except BaseException:
            self.discard(key)  # undo the new entry; memory is back under its limit
            raise

    def get(self, key: int) -> bytes:
        """The bytes stored under `key`. KeyError if it is not held."""
        self._check_open()
        data = self._memory.get(key)
        if data is not None:
            return data
        where = self._disk.get(key)
        if where is None:
            raise KeyError(key)
        offset, length = where
        assert self._file is not None
        self._file.seek(offset)
        data = self._file.read(length)
        if len(data) != length:
            raise OSError(
                f"spool: spill file short read for key {key}: {len(data)} of {length} bytes "
                f"at offset {offset}"
            )
        return data

    def discard(self, key: int) -> None:
        """Forget `key` and free its space; a key not held is ignored."""
        data = self._memory.pop(key, None)
        if data is not None:
            self._memory_bytes -= len(data)
            return
        where = self._disk.pop(key, None)
        if where is None:
            return
        self._disk_bytes -= where[1]
        self._reclaim()

    def close(self) -> None:
        """Drop everything and delete the spill file. The spool cannot be used afterwards."""
        self._memory.clear()
        self._memory_bytes = 0
        self._disk.clear()
        self._disk_bytes = 0
        self._file_end = 0
        if self._file is not None:
            self._file.close()
            self._file = None
        self._closed = True

    def __contains__(self, key: object) -> bool:
        return key in self._memory or key in self._disk

    def __len__(self) -> int:
        return len(self._memory) + len(self._disk)

    def __iter__(self) -> Iterator[int]:
        """Every key held (memory, then disk; in no promised order). A snapshot: the spool
        may change while it is iterated."""
        return iter([*self._memory, *self._disk])

    # -- observable state ----------------------------------------------------------------------

    @property
    def memory_limit_bytes(self) -> int:
        return self._memory_limit_bytes

    @property
    def disk_limit_bytes(self) -> int:
        return self._disk_limit_bytes

    @property
    def memory_bytes(self) -> int:
        """Bytes held in memory."""
        return self._memory_bytes

    @property
    def disk_bytes(self) -> int:
        """Live bytes in the spill file (dead space not counted)."""
        return self._disk_bytes

    @property
    def disk_file_bytes(self) -> int:
        """The spill file's size: live bytes plus dead space not yet reclaimed."""
        return self._file_end

    @property
    def spilled_total(self) -> int:
        """Bytes ever moved from memory to the spill file."""
        return self._spilled_total

    @property
    def closed(self) -> bool:
        return self._closed

    # -- internals -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("spool is closed")

    def _spill(self, key: int, data: bytes) -> None:
        size = len(data)
        if self._file_end + size > self._disk_limit_bytes and self._file_end > self._disk_bytes:
            self._compact()
        if self._file_end + size > self._disk_limit_bytes:
            raise SpoolFull(
                f"spool disk limit reached: {size} more bytes would need "
                f"{self._file_end + size} bytes on disk, the limit is {self._disk_limit_bytes} "
                f"(memory holds {self._memory_bytes} of {self._memory_limit_bytes} bytes)"
            )
        if self._file is None:
            self._file = tempfile.TemporaryFile(  # noqa: SIM115 (held open until close())
                prefix="steadycast-spool-", dir=self._directory
            )
        self._file.seek(self._file_end)
        self._file.write(data)
        self._disk[key] = (self._file_end, size)
        self._file_end += size
        self._disk_bytes += size
        self._spilled_total += size

    def _reclaim(self) -> None:
        if self._file is None:
            return
        if not self._disk:
            self._file.truncate(0)
            self._file_end = 0
            return
        dead = self._file_end - self._disk_bytes
        if dead >= COMPACT_MIN_DEAD_BYTES and dead >= self._disk_bytes:
            self._compact()

    def _compact(self) -> None:
        """Move every live entry down to the start of the file, in offset order."""
        assert self._file is not None
        f = self._file
        write_at = 0
        for key, (offset, length) in self._disk.items():
            if offset != write_at:
                moved = 0
                while moved < length:  # destination below source: ascending chunks are safe
                    n = min(COPY_CHUNK_BYTES, length - moved)
                    f.seek(offset + moved)
                    chunk = f.read(n)
                    if len(chunk) != n:
                        raise OSError(f"spool: spill file short read while compacting key {key}")
                    f.seek(write_at + moved)
                    f.write(chunk)
                    moved += n
                self._disk[key] = (write_at, length)  # same key: its place in the order stays
            write_at += length
        f.truncate(write_at)
        f.flush()
        self._file_end = write_at
