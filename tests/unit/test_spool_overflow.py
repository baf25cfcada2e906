"""`OverflowGate`: while the spool is full only new units are dropped, media resumes at a
video keyframe, and each episode is reported once. Driven against a real `Spool` with tiny
limits, the way the uplink client drives it."""

from __future__ import annotations

from pathlib import Path

from encoder.spool_overflow import OverflowEnded, OverflowEvent, OverflowGate, OverflowStarted
from uplink.spool import Spool, SpoolFull

VIDEO, AUDIO = 0, 1
UNIT_BYTES = 100


class Pusher:
    """The client's push loop over a real Spool: gate, put, report."""

    def __init__(self, tmp_path: Path, limit_units: int) -> None:
        self.spool = Spool(memory_limit_bytes=0, disk_limit_bytes=limit_units * UNIT_BYTES,
                           directory=tmp_path)
        self.gate = OverflowGate(VIDEO)
        self.stored: list[tuple[int, bool, int]] = []  # (track, keyframe, unit id), in order
        self.events: list[OverflowEvent] = []
        self._key = 0

    def push(self, track: int, keyframe: bool, unit: int, now: float) -> None:
        if not self.gate.admit(track, keyframe):
            return
        try:
            self.spool.put(self._key, bytes(UNIT_BYTES))
        except SpoolFull:
            self.events += self.gate.on_full(track, now, self.spool.disk_bytes, len(self.spool))
            return
        self._key += 1
        self.stored.append((track, keyframe, unit))
        self.events += self.gate.on_stored(track, keyframe, now)

    def ack_oldest(self, n: int) -> None:
        held = sorted(k for k in range(self._key) if k in self.spool)
        for key in held[:n]:
            self.spool.discard(key)


def _frame(p: Pusher, n: int, now: float, gop: int = 5) -> None:
    p.push(VIDEO, n % gop == 0, n, now)
    p.push(AUDIO, False, n, now)


def test_units_flow_untouched_while_the_spool_has_room(tmp_path: Path) -> None:
    p = Pusher(tmp_path, limit_units=100)
    for n in range(20):
        _frame(p, n, float(n))
    assert len(p.stored) == 40 and p.events == [] and not p.gate.dropping
    assert p.gate.dropped_units_total == 0


def test_full_spool_keeps_what_it_holds_and_drops_only_new_units(tmp_path: Path) -> None:
    p = Pusher(tmp_path, limit_units=10)
    for n in range(12):  # 24 units offered, 10 fit
        _frame(p, n, float(n))
    assert len(p.spool) == 10 and [u for _, _, u in p.stored] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert p.gate.dropping
    assert p.events == [OverflowStarted(5.0, 10 * UNIT_BYTES, 10)]  # reported once
    assert p.gate.dropped_units_total == 14 and p.gate.dropped_video_frames_total == 7


def test_media_resumes_at_a_video_keyframe_once_acks_free_room(tmp_path: Path) -> None:
    p = Pusher(tmp_path, limit_units=10)
    for n in range(8):
        _frame(p, n, float(n))
    p.ack_oldest(6)  # room again, but frames 6 and 7 are P-frames: still dropped
    for n in range(8, 13):  # keyframes at 0, 5, 10; exactly the room freed
        _frame(p, n, float(n))
    after = [(t, k, u) for t, k, u in p.stored if u >= 5]
    assert after[0] == (VIDEO, True, 10), after  # the first unit back is a keyframe
    assert [u for _, _, u in after] == [10, 10, 11, 11, 12, 12]
    assert not p.gate.dropping
    ended = [e for e in p.events if isinstance(e, OverflowEnded)]
    # units of frames 5..9 (10 units) were dropped between the start and frame 10
    assert ended == [OverflowEnded(5.0, 10.0, 10, 5)], p.events
    assert ended[0].duration_s == 5.0


def test_a_keyframe_that_still_does_not_fit_keeps_the_episode_open(tmp_path: Path) -> None:
    p = Pusher(tmp_path, limit_units=4)
    for n in range(30):  # no ACK ever: every keyframe is tried and refused
        _frame(p, n, float(n))
    assert [type(e) for e in p.events] == [OverflowStarted]
    assert p.gate.episodes == 1 and p.gate.dropping
    assert p.gate.dropped_units_total == 60 - 4


def test_each_episode_is_reported_once(tmp_path: Path) -> None:
    p = Pusher(tmp_path, limit_units=6)
    now = 0.0
    for _ in range(3):
        for n in range(10):
            _frame(p, n, now)
            now += 1
        p.ack_oldest(6)
    kinds = [type(e).__name__ for e in p.events]
    assert kinds == ["OverflowStarted", "OverflowEnded"] * 2 + ["OverflowStarted"], kinds
    assert p.gate.episodes == 3
