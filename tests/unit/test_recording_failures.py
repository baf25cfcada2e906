"""The recorder reports what it cannot keep and never lets it be acknowledged (issue 13,
faults 11 and 4): a full disk (ENOSPC injected at the muxer, the file layer PyAV writes
through) and a TRACK whose values PyAV refuses. Real encodes, real MPEG-TS files.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import pytest

from relay.archive import recording
from relay.archive.checkpoint import (
    CheckpointError,
    decode_checkpoint,
    encode_checkpoint,
    load_checkpoint,
)
from relay.archive.recording import Recorder
from tests.relay_harness import frame_numbers
from tests.unit.test_recording_backfill import SESSION, as_media, encode_units
from uplink import TrackKind

WAIT_S = 20.0  # generous: the machine is shared


def wait_for(cond: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kept(rec: Recorder) -> int | None:
    return rec.kept[1] if rec.kept else None


def joined_frames(rec: Recorder, tmp_path: Path) -> list[int | None]:
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p in rec.files if p.exists()))
    return frame_numbers(joined)


class FullDisk:
    """Makes every mux fail with ENOSPC while set, as a full record_dir does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = threading.Event()
        real_open = av.open
        outer = self

        class Container:
            def __init__(self, inner: Any) -> None:
                self._inner = inner

            def mux(self, packet: Any) -> None:
                if outer.full.is_set():
                    raise OSError(errno.ENOSPC, "No space left on device")
                self._inner.mux(packet)

            def __getattr__(self, name: str) -> Any:
                return getattr(self._inner, name)

        def fake_open(*args: Any, **kwargs: Any) -> Any:
            c = real_open(*args, **kwargs)
            return Container(c) if kwargs.get("options") == recording.MUX_OPTIONS else c

        monkeypatch.setattr(recording.av, "open", fake_open)
        monkeypatch.setattr(recording, "probe_writable", lambda d: not self.full.is_set())
        monkeypatch.setattr(recording, "RETRY_S", 0.3)


def test_full_disk_is_reported_once_and_nothing_unwritten_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    disk = FullDisk(monkeypatch)
    tracks, units = encode_units(150, audio=False)
    media = as_media(units)
    rec = Recorder("farm1", tmp_path / "rec", checkpoint_file=tmp_path / "state" / "farm1.json")
    rec.new_session(SESSION)
    for t in tracks:
        rec.track(t, changed=True)
    with caplog.at_level(logging.WARNING, logger="relay.archive.recording"):
        for m in media[:50]:
            rec.media(m)
        wait_for(lambda: kept(rec) == 50, "the first 50 units kept")
        disk.full.set()
        for m in media[50:100]:
            rec.media(m)
        wait_for(lambda: rec.state == "failed", "the failure reported")
        time.sleep(1.5)  # several retries
        assert kept(rec) == 50  # nothing the disk refused may be acknowledged
        assert "No space left" in (rec.error or "")
        assert rec.status()["state"] == "failed"
        cp = load_checkpoint(tmp_path / "state" / "farm1.json")
        assert cp is not None and cp.kept_seq == 50
        disk.full.clear()
        for m in media[100:]:
            rec.media(m)
        wait_for(lambda: kept(rec) == 150, "all 150 kept after the disk recovered")
    assert rec.state == "ok" and rec.error is None
    assert [n.kind for n in rec.take_notices()] == ["failed", "recovered"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # once, not per unit
    rec.end_session()
    rec.close()
    assert joined_frames(rec, tmp_path) == list(range(150))  # every unit once


def test_held_media_is_bounded_while_failing_and_the_sender_is_asked_to_resend(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = FullDisk(monkeypatch)
    tracks, units = encode_units(120, audio=False)
    media = as_media(units)
    rec = Recorder("farm1", tmp_path / "rec", hold_limit_bytes=5_000)
    rec.new_session(SESSION)
    for t in tracks:
        rec.track(t, changed=True)
    for m in media[:30]:
        rec.media(m)
    wait_for(lambda: kept(rec) == 30, "30 kept")
    disk.full.set()
    for m in media[30:90]:
        rec.media(m)
    wait_for(lambda: rec.state == "failed", "the failure")
    time.sleep(0.5)
    assert rec._retained_bytes <= 5_000 + max(len(m.payload) for m in media)
    disk.full.clear()
    wait_for(lambda: any(n.kind == "resend" for n in rec.take_notices()), "a resend notice")
    assert kept(rec) == 30
    for m in media[30:]:  # the sender resends from the watermark
        rec.media(m)
    wait_for(lambda: kept(rec) == 120, "all kept after the resend")
    rec.end_session()
    rec.close()
    assert joined_frames(rec, tmp_path) == list(range(120))


def test_held_media_is_bounded_when_the_disk_is_full_before_anything_was_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record_dir full from the session's first unit: no checkpoint yet, and still the hold
    is bounded and the sender is asked to resend from the session's first seq."""
    disk = FullDisk(monkeypatch)
    tracks, units = encode_units(120, audio=False)
    media = as_media(units)
    rec = Recorder("farm1", tmp_path / "rec", hold_limit_bytes=5_000)
    rec.new_session(SESSION)
    for t in tracks:
        rec.track(t, changed=True)
    disk.full.set()
    for m in media:
        rec.media(m)
    wait_for(lambda: rec.state == "failed", "the failure")
    time.sleep(0.5)
    assert rec._retained_bytes <= 5_000 + max(len(m.payload) for m in media)
    assert kept(rec) is None
    disk.full.clear()
    deadline = time.monotonic() + WAIT_S
    resend: list[int | None] = []
    while not resend and time.monotonic() < deadline:
        resend = [n.seq for n in rec.take_notices() if n.kind == "resend"]
        time.sleep(0.05)
    assert resend == [0]
    for m in media:  # the sender resends everything: nothing was acknowledged
        rec.media(m)
    wait_for(lambda: kept(rec) == 120, "all kept after the resend")
    rec.end_session()
    rec.close()
    assert joined_frames(rec, tmp_path) == list(range(120))


def test_a_track_pyav_refuses_is_reported_and_the_next_session_is_recorded(
        tmp_path: Path) -> None:
    tracks, units = encode_units(60, audio=True)
    media = as_media(units)
    audio = next(t for t in tracks if t.kind == TrackKind.AUDIO)
    bad_audio = replace(audio, sample_rate=2**31 + 5)  # the wire allows it, PyAV does not
    rec = Recorder("farm1", tmp_path / "rec")
    rec.new_session(b"B" * 16)
    for t in tracks:
        rec.track(bad_audio if t.track_id == audio.track_id else t, changed=True)
    for m in media:
        rec.media(m)
    wait_for(lambda: rec.state == "failed", "the bad track reported")
    assert f"track {audio.track_id}" in (rec.error or "")
    assert rec.alive  # the recorder thread survived
    rec.new_session(SESSION)  # the next, legitimate session
    for t in tracks:
        rec.track(t, changed=True)
    for m in media:
        rec.media(m)
    wait_for(lambda: rec.kept == (SESSION, len(media)), "the good session kept")
    assert rec.state == "ok"
    rec.end_session()
    rec.close()
    assert frame_numbers(rec.files[-1]) == list(range(60))


def test_checkpoint_parser_refuses_mutations_with_checkpoint_error() -> None:
    import random

    from relay.archive.checkpoint import RecordingCheckpoint
    tracks, _ = encode_units(2, audio=True)
    good = encode_checkpoint(RecordingCheckpoint(SESSION, 1234, tuple(tracks), "a-b-part2.ts",
                                                 99_000, 2, {0: 10, 1: 20}))
    assert decode_checkpoint(good).kept_seq == 1234
    rng = random.Random(13)
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            i = rng.randrange(len(data))
            if op < 0.5:
                data[i] = rng.randrange(256)
            elif op < 0.75:
                del data[i:i + rng.randint(1, 8)]
            else:
                data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        with contextlib.suppress(CheckpointError):
            decode_checkpoint(bytes(data))
    for bad in (b"", b"[]", b"{}", b'{"version": 1}', good.replace(b"a-b-part2.ts", b"../x.ts")):
        with pytest.raises(CheckpointError):
            decode_checkpoint(bad)
