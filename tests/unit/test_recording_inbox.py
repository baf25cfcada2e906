"""The recorder's inbox is counted, so the ingest can stop reading a sender that outruns the
archive (issue 13, fault 5): `backlogged()` past INBOX_MAX_UNITS units or INBOX_MAX_BYTES
bytes, and back to empty once the recorder's thread has taken them.

The real `Recorder`; its thread is held at the session's first message (its handler waits on
an event) so that the inbox fills as it would behind a slow disk.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from relay.archive.recording import INBOX_MAX_BYTES, INBOX_MAX_UNITS, Recorder
from uplink import Media

DRAIN_WAIT_S = 60.0  # generous: the machine is shared


def unit(seq: int, size: int = 1) -> Media:
    return Media(seq, 0, True, seq * 3000, seq * 3000, 0, b"\x00" * size)


@pytest.fixture
def held_recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    gate = threading.Event()
    handle = Recorder._handle

    def held(self: Recorder, kind: str, arg: Any) -> None:
        gate.wait()
        handle(self, kind, arg)

    monkeypatch.setattr(Recorder, "_handle", held)
    rec = Recorder("farm1", tmp_path / "rec")
    rec.new_session(b"S" * 16)
    yield rec, gate
    gate.set()
    rec.close()


def _drained(rec: Recorder) -> bool:
    deadline = time.monotonic() + DRAIN_WAIT_S
    while rec.inbox_units and time.monotonic() < deadline:
        time.sleep(0.05)
    return rec.inbox_units == 0


def test_inbox_is_backlogged_past_its_unit_bound_and_drains(held_recorder: Any) -> None:
    rec, gate = held_recorder
    for seq in range(INBOX_MAX_UNITS):
        rec.media(unit(seq))
    assert rec.inbox_units == INBOX_MAX_UNITS
    assert not rec.backlogged() and rec.backlogged(0.5)
    rec.media(unit(INBOX_MAX_UNITS))
    assert rec.backlogged()
    assert rec.status()["inbox_units"] == INBOX_MAX_UNITS + 1
    gate.set()
    assert _drained(rec)
    assert not rec.backlogged(0.5)


def test_inbox_is_backlogged_past_its_byte_bound(held_recorder: Any) -> None:
    rec, gate = held_recorder
    size = 1024 * 1024
    for seq in range(INBOX_MAX_BYTES // size):
        rec.media(unit(seq, size))
    assert not rec.backlogged()  # at the bound, a few units: not yet
    rec.media(unit(INBOX_MAX_BYTES // size, size))
    assert rec.backlogged() and rec.inbox_units < INBOX_MAX_UNITS
    gate.set()
    assert _drained(rec)
    assert not rec.backlogged(0.5)
