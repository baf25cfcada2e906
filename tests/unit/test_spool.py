"""Spool: seq-keyed bytes in memory, then in a spill file under a disk cap."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from uplink import Spool, SpoolFull
from uplink.spool import COMPACT_MIN_DEAD_BYTES


def blob(key: int, size: int = 100) -> bytes:
    """Bytes that differ per key (and within the blob)."""
    return (key.to_bytes(4, "big") + b"spool" + bytes(range(7))) * (size // 16) + b"#" * (
        size % 16
    )


def test_small_spool_stays_in_memory_and_creates_no_file(tmp_path: Path) -> None:
    spool = Spool(memory_limit_bytes=10_000, directory=tmp_path)
    for key in range(10):
        spool.put(key, blob(key))
    assert len(spool) == 10 and 3 in spool and 10 not in spool
    assert spool.memory_bytes == 1000 and spool.disk_bytes == 0 and spool.spilled_total == 0
    assert spool.get(3) == blob(3)
    assert list(tmp_path.iterdir()) == []
    spool.close()


def test_oldest_keys_spill_to_disk_and_newest_stay_in_memory(tmp_path: Path) -> None:
    spool = Spool(memory_limit_bytes=350, directory=tmp_path)
    for key in range(10):
        spool.put(key, blob(key))
    assert spool.memory_bytes == 300 and spool.disk_bytes == 700
    assert spool.spilled_total == 700
    assert spool.memory_bytes <= spool.memory_limit_bytes
    for key in range(10):
        assert spool.get(key) == blob(key)
    # the newest three are the ones in memory
    assert set(spool._memory) == {7, 8, 9}
    spool.close()


def test_spill_file_is_unlinked_at_once_where_the_os_allows(tmp_path: Path) -> None:
    spool = Spool(memory_limit_bytes=0, directory=tmp_path)
    spool.put(1, b"x" * 10)
    assert spool.disk_bytes == 10
    if os.name == "posix":
        assert list(tmp_path.iterdir()) == []  # a crash leaves nothing behind
    spool.close()
    assert list(tmp_path.iterdir()) == []


def test_discarding_everything_on_disk_truncates_the_file(tmp_path: Path) -> None:
    spool = Spool(memory_limit_bytes=0, directory=tmp_path)
    for key in range(5):
        spool.put(key, blob(key))
    assert spool.disk_file_bytes == 500
    for key in range(4):
        spool.discard(key)
    assert spool.disk_bytes == 100 and spool.disk_file_bytes == 500  # below the compact floor
    spool.discard(4)
    assert spool.disk_bytes == 0 and spool.disk_file_bytes == 0 and len(spool) == 0
    spool.put(9, blob(9))
    assert spool.disk_file_bytes == 100 and spool.get(9) == blob(9)
    spool.close()


def test_file_stays_bounded_when_disk_never_empties(tmp_path: Path) -> None:
    """A steady backlog: always something on disk, discarded oldest first."""
    size = 64 * 1024
    spool = Spool(memory_limit_bytes=0, disk_limit_bytes=8 * 1024 * 1024, directory=tmp_path)
    window = 20
    for key in range(2000):  # 125 MiB through a 8 MiB cap
        spool.put(key, blob(key, size))
        if key >= window:
            spool.discard(key - window)
        assert spool.disk_bytes <= (window + 1) * size
        assert spool.disk_file_bytes <= 2 * spool.disk_bytes + COMPACT_MIN_DEAD_BYTES + size
    for key in range(2000 - window, 2000):
        assert spool.get(key) == blob(key, size)
    spool.close()


def test_compaction_keeps_every_live_entry_readable(tmp_path: Path) -> None:
    rng = random.Random(7)
    spool = Spool(memory_limit_bytes=50_000, disk_limit_bytes=3_000_000, directory=tmp_path)
    live: dict[int, bytes] = {}
    for key in range(3000):
        data = rng.randbytes(rng.randint(1, 4000))
        spool.put(key, data)
        live[key] = data
        if rng.random() < 0.6:  # discard roughly oldest first, with some disorder
            old = min(live) if rng.random() < 0.8 else rng.choice(list(live))
            spool.discard(old)
            del live[old]
        assert spool.memory_bytes <= 50_000
    assert len(spool) == len(live)
    assert spool.disk_file_bytes < spool.spilled_total  # space was reclaimed on the way
    assert spool.memory_bytes + spool.disk_bytes == sum(map(len, live.values()))
    for key, data in live.items():
        assert spool.get(key) == data
    spool.close()


def test_full_disk_raises_spool_full_and_stores_nothing(tmp_path: Path) -> None:
    spool = Spool(memory_limit_bytes=200, disk_limit_bytes=500, directory=tmp_path)
    for key in range(7):
        spool.put(key, blob(key))
    assert spool.memory_bytes == 200 and spool.disk_bytes == 500
    with pytest.raises(SpoolFull, match=r"disk limit reached.*limit is 500"):
        spool.put(7, blob(7))
    assert 7 not in spool and len(spool) == 7
    assert spool.memory_bytes <= 200
    for key in range(7):
        assert spool.get(key) == blob(key)
    spool.discard(0)  # room again
    spool.put(7, blob(7))
    assert spool.get(7) == blob(7)
    spool.close()


def test_full_disk_compacts_dead_space_before_giving_up(tmp_path: Path) -> None:
    spool = Spool(memory_limit_bytes=0, disk_limit_bytes=1000, directory=tmp_path)
    for key in range(10):
        spool.put(key, blob(key))
    for key in range(1, 10, 2):  # dead space in the middle, less than the compaction floor
        spool.discard(key)
    assert spool.disk_file_bytes == 1000 and spool.disk_bytes == 500
    spool.put(10, blob(10))  # fits once the dead space is reclaimed
    assert spool.disk_file_bytes == 600
    for key in (*range(0, 10, 2), 10):
        assert spool.get(key) == blob(key)
    spool.close()


def test_memory_only_spool_refuses_beyond_its_memory(tmp_path: Path) -> None:
    spool = Spool(memory_limit_bytes=100, disk_limit_bytes=0, directory=tmp_path)
    spool.put(0, b"a" * 100)
    with pytest.raises(SpoolFull):
        spool.put(1, b"b")
    assert spool.get(0) == b"a" * 100 and 1 not in spool


def test_entry_larger_than_memory_goes_straight_to_disk(tmp_path: Path) -> None:
    spool = Spool(memory_limit_bytes=10, directory=tmp_path)
    spool.put(0, b"z" * 50)
    assert spool.memory_bytes == 0 and spool.disk_bytes == 50
    assert spool.get(0) == b"z" * 50
    spool.close()


def test_errors_name_what_was_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="memory_limit_bytes"):
        Spool(memory_limit_bytes=-1)
    with pytest.raises(ValueError, match="disk_limit_bytes"):
        Spool(disk_limit_bytes=-1)
    spool = Spool(directory=tmp_path)
    spool.put(1, b"a")
    with pytest.raises(ValueError, match="key 1 is already held"):
        spool.put(1, b"b")
    with pytest.raises(KeyError):
        spool.get(2)
    spool.discard(2)  # not held: ignored
    spool.close()
    with pytest.raises(ValueError, match="closed"):
        spool.put(3, b"c")
