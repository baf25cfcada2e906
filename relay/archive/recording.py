"""The full archive of a stream: every ingest access unit, remuxed (no re-encode) to MPEG-TS.

MPEG-TS survives a crash mid-file (no index to finalise). One file per sender session;
a changed track configuration, a storage failure or a relay restart starts a new part. Runs on
its own thread so disk I/O never touches the ingest loop.

Units are written in seq order, not arrival order: after a live jump the live edge arrives
first and the media it skipped follows as backfill. A `SeqReorder` (on this thread) holds
what arrives above a gap, in memory and then in a spill file next to the recordings, until
the gap is filled; seqs that never come (the sender gave them up, the session ended) are
logged and skipped. Each unit is written with the track config that applied to it when it
arrived, so a config change lands in the archive at the right seq even when reordered.

Durability (the relay's ACK is a promise, docs/relay.md "What survives a crash"):
- The muxer writes each packet to the kernel at once (``flush_packets`` 1; the MPEG-TS
  muxer's audio PES buffering off, ``pes_payload_size`` 0). libavformat's interleaving still
  holds packets back until every stream of the file has a later one (FFmpeg's
  ``av_interleaved_write_frame`` releases packets in dts order only while each stream has one
  queued), so a unit counts as written once its dts is below the newest dts of every stream.
- The **kept watermark** is the lowest seq not yet written. After a batch of units (at most
  every ``CHECKPOINT_INTERVAL_S``) the recorder saves a `RecordingCheckpoint` in state_dir,
  then publishes the watermark (`kept`) for the ingest to acknowledge. So nothing is
  acknowledged before it is in the kernel and the checkpoint says so: a killed relay
  (kill -9) loses nothing acknowledged. ``fsync`` of the part and the checkpoint every
  ``FSYNC_INTERVAL_S`` bounds what a power loss can take.
- Units at or above the watermark stay in memory (`_retained`) until a checkpoint passes
  them: a storage failure (full disk) or a restart truncates the part to the checkpoint's size
  and continues in a new part from the watermark, skipping the units the old part already
  holds beyond it (counted from its packets), so the archive has every unit exactly once.

Failures are reported, not hidden: `state` "failed" with `error`, one log line when it starts
and one when it ends, and notices (`take_notices`) for the relay's events and metrics. A failing
disk is retried every ``RETRY_S``; meanwhile at most ``HOLD_LIMIT_BYTES`` of media is held;
past that the recorder drops its copies and, once writing works again, asks the ingest to
make the sender resend from the watermark (`Notice` "resend"). A track the muxer cannot take
(values PyAV refuses) is reported and left out of the archive; the rest is recorded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from relay.archive.checkpoint import RecordingCheckpoint, remove_checkpoint, save_checkpoint
from relay.archive.reorder import SeqReorder
from uplink import (
    DISK_LIMIT_BYTES_DEFAULT,
    MEMORY_LIMIT_BYTES_DEFAULT,
    Codec,
    Media,
    Spool,
    TrackConfig,
    TrackKind,
)

log = logging.getLogger(__name__)

MUXER_CODEC_NAMES = {Codec.H264: "h264", Codec.AAC: "aac"}
REORDER_MEMORY_LIMIT_BYTES = MEMORY_LIMIT_BYTES_DEFAULT  # held-back media in memory, per stream
REORDER_DISK_LIMIT_BYTES = DISK_LIMIT_BYTES_DEFAULT  # then in a spill file, per stream
# each packet to the kernel now; a muxer restarted inside a file marks its first packets as a
# discontinuity, so a demuxer takes the restart's continuity-counter jump as intended
MUX_OPTIONS = {"flush_packets": "1", "pes_payload_size": "0",
               "mpegts_flags": "+initial_discontinuity"}
CHECKPOINT_INTERVAL_S = 0.05  # at most this long between writing a unit and acknowledging it
FSYNC_INTERVAL_S = 1.0  # the part and the checkpoint reach the disk this often
RETRY_S = 3.0  # a failed archive is retried this often
HOLD_LIMIT_BYTES = 64 * 1024 * 1024  # unwritten media held while the archive fails, per stream
IDLE_FLUSH_S = 0.15  # no media this long: restart the muxer so it writes what it holds (well
                     # inside the ingest's 0.5 s dropout threshold: a clean end's final ACK
                     # waits for it)
PROBE_BYTES = 1024 * 1024  # a failed disk counts as writable again once this much fits
# Media waiting in the inbox for the recorder's thread, per stream: past either bound the
# inbox is `backlogged` and the ingest stops reading that connection until it is half
# drained (TCP pushes back on the sender). A sender that ignores the ACKs (the cumulative
# ACK waits for the archive) cannot make the relay hold more than this in the queue.
INBOX_MAX_UNITS = 8192
INBOX_MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the relay reports: "failed" (error), "recovered", "resend" (seq: the sender
    must resend from there: the recorder dropped its copies)."""

    kind: str
    error: str | None = None
    seq: int | None = None


@dataclass(slots=True)
class _Unit:
    media: Media
    track: TrackConfig
    muxed: bool = False  # handed to the muxer
    dts_s: float = float("-inf")  # its dts in seconds, once muxed
    written: bool = False  # certainly in the kernel (see the module docstring)
    part: int = 0  # the part it was muxed into


@dataclass
class _Part:
    path: Path
    number: int
    container: Any
    streams: dict[int, Any]  # track_id -> muxer stream
    order: list[int]  # track ids in stream index order
    raw: Any  # the unbuffered file the muxer writes to
    tracks: dict[int, TrackConfig]  # the configs it was opened with
    muxed: dict[int, int] = field(default_factory=dict)  # track_id -> units muxed
    newest_dts_s: dict[int, float] = field(default_factory=dict)  # track_id -> newest muxed


class Recorder:
    def __init__(
        self,
        stream: str,
        record_dir: Path,
        reorder_memory_limit_bytes: int = REORDER_MEMORY_LIMIT_BYTES,
        reorder_disk_limit_bytes: int = REORDER_DISK_LIMIT_BYTES,
        checkpoint_file: Path | None = None,
        resume: RecordingCheckpoint | None = None,
        hold_limit_bytes: int = HOLD_LIMIT_BYTES,
    ) -> None:
        self.stream = stream
        self.dir = record_dir / stream
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._inbox_lock = threading.Lock()  # guards the two counts below (two threads)
        self._inbox_units = 0  # media queued in the inbox, not yet taken by the thread
        self._inbox_bytes = 0  # their payload bytes
        self._reorder_limits = (reorder_memory_limit_bytes, reorder_disk_limit_bytes)
        self._reorder = self._new_reorder()
        self._checkpoint_file = checkpoint_file
        self._hold_limit_bytes = hold_limit_bytes
        self._arrival_tracks: dict[int, TrackConfig] = {}  # latest config, in arrival order
        self._unit_tracks: dict[int, TrackConfig] = {}  # seq -> config it arrived under
        self._tracks: dict[int, TrackConfig] = {}  # config of the file being written
        self._part: _Part | None = None
        self._reopen: _Part | None = None  # closed only to flush: the next muxer appends to it
        self._part_number = 0
        self._session_first_file = 0  # self.files index of the session's first part
        self._files_at_checkpoint = 0  # len(self.files) at the newest checkpoint
        self._last_media_at = 0.0
        self._session_id: bytes | None = None
        self._session_tag = ""
        self._retained: deque[_Unit] = deque()  # released by the reorder, not yet checkpointed
        self._retained_bytes = 0
        self._next_release: int | None = None  # the seq after the newest released
        self._skip: dict[int, int] = {}  # track_id -> units already in the archive (resend)
        self._last: RecordingCheckpoint | None = None  # the newest checkpoint saved
        self._last_checkpoint_at = 0.0
        self._last_fsync_at = time.monotonic()
        self._failing = False  # storage failure: retry every RETRY_S
        self._dropped = False  # copies dropped while failing: resend needed once it works
        self._retry_at = 0.0
        self._track_errors: dict[int, str] = {}  # track_id -> why the muxer cannot take it
        self._notices: queue.SimpleQueue[Notice] = queue.SimpleQueue()
        self.files: list[Path] = []
        self.units_written = 0
        self.write_errors = 0
        self.seqs_skipped = 0  # seqs that never arrived before the recording had to move on
        self.kept: tuple[bytes, int] | None = None  # (session, watermark) once checkpointed
        self.state = "ok"
        self.error: str | None = None
        if resume is not None:
            self._inbox.put(("resume", resume))
        self._thread = threading.Thread(target=self._run_guarded, name=f"rec-{stream}",
                                        daemon=True)
        self._thread.start()

    # --- called from the ingest side (any thread) ----------------------------------------
    def new_session(self, session_id: bytes) -> None:
        self._inbox.put(("session", session_id))

    def track(self, track: TrackConfig, changed: bool) -> None:
        self._inbox.put(("track", (track, changed)))

    def media(self, media: Media, received_below: int | None = None) -> None:
        """Record one unit. `received_below`: the receiver's next_seq right after this unit
        arrived (every seq below it has arrived or never will), so gaps the receiver gave up
        are skipped at once instead of at the end of the session. Never blocks: the caller
        waits while `backlogged` (INBOX_MAX_UNITS, INBOX_MAX_BYTES)."""
        with self._inbox_lock:
            self._inbox_units += 1
            self._inbox_bytes += len(media.payload)
        self._inbox.put(("media", (media, received_below)))

    @property
    def inbox_units(self) -> int:
        """Media units queued for the recorder's thread, not yet taken."""
        return self._inbox_units

    def backlogged(self, share: float = 1.0) -> bool:
        """Whether the inbox holds more than `share` of INBOX_MAX_UNITS or INBOX_MAX_BYTES."""
        return (self._inbox_units > INBOX_MAX_UNITS * share
                or self._inbox_bytes > INBOX_MAX_BYTES * share)

    def end_session(self) -> None:
        """The sender ended the session (BYE): write what is held, forget the checkpoint."""
        self._inbox.put(("end", None))

    def close(self, wait: bool = True) -> None:
        self._inbox.put(("close", None))
        if wait:
            self._thread.join(30)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def take_notices(self) -> list[Notice]:
        out: list[Notice] = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self._notices.get_nowait())
        return out

    def status(self) -> dict[str, Any]:
        """For the status API: state ("ok" or "failed"), error, current file, kept seq."""
        return {"state": self.state, "error": self.error,
                "file": self.files[-1].name if self.files else None,
                "kept_seq": self.kept[1] if self.kept else None,
                "units_written": self.units_written, "write_errors": self.write_errors,
                "inbox_units": self._inbox_units}

    # --- the recorder's thread -----------------------------------------------------------
    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:  # never silently: the relay sees alive False and replaces it
            log.exception("recording %s: recorder stopped", self.stream)
            self._set_failed(f"recorder stopped: {exc!r}")

    def _run(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)  # for the reorder's spill file
        except OSError as exc:
            self._storage_failed(exc)
        while True:
            timeout = max(0.0, self._retry_at - time.monotonic()) if self._failing else (
                CHECKPOINT_INTERVAL_S if self._retained else None)
            try:
                kind, arg = self._inbox.get(timeout=timeout)
                if kind == "media":
                    with self._inbox_lock:
                        self._inbox_units -= 1
                        self._inbox_bytes -= len(arg[0].payload)
            except queue.Empty:
                kind, arg = "idle", None
                if (not self._failing and self._part is not None
                        and time.monotonic() - self._last_media_at >= IDLE_FLUSH_S
                        and any(u.muxed and not u.written for u in self._retained)):
                    # the muxer holds the newest units: flush them, go on in the same file
                    self._close_part(reopen=True)
            try:
                if kind == "close":
                    self._finish(end=False)
                    return
                self._handle(kind, arg)
            except Exception as exc:  # one bad unit must not stop the archive
                self.write_errors += 1
                log.error("recording %s: %s: %r", self.stream, kind, exc)
            if self._failing and time.monotonic() >= self._retry_at:
                self._retry()
            if not self._failing:
                busy = not self._inbox.empty()
                if not busy or time.monotonic() - self._last_checkpoint_at >= \
                        CHECKPOINT_INTERVAL_S:
                    self._checkpoint()

    def _handle(self, kind: str, arg: Any) -> None:
        if kind == "session":
            self._finish(end=True)
            self._session_id = arg
            self._session_tag = arg.hex()[:8]
            self._part_number = 0
            self._last = None
            self._session_first_file = self._files_at_checkpoint = len(self.files)
            self._next_release = None
            self._track_errors.clear()
            self._refresh_state()
        elif kind == "resume":
            self._resume(arg)
        elif kind == "end":
            self._finish(end=True)
        elif kind == "track":
            track, _changed = arg
            if self._arrival_tracks.get(track.track_id) != track:
                self._track_errors.pop(track.track_id, None)
            self._arrival_tracks[track.track_id] = track
        elif kind == "media":
            media, received_below = arg
            self._last_media_at = time.monotonic()
            track = self._arrival_tracks.get(media.track_id)
            if track is None:
                return  # no TRACK yet: the receiver never lets this happen
            nxt = self._reorder.next_seq
            if media.seq in self._unit_tracks or (nxt is not None and media.seq < nxt):
                return  # already held or written (resent after the relay dropped its copies)
            if self._dropped:
                return  # the sender resends it once the archive works again
            self._unit_tracks[media.seq] = track
            try:
                ready = self._reorder.push(media, received_below)
            except ValueError:
                del self._unit_tracks[media.seq]
                raise
            self._release(ready)

    # --- writing -------------------------------------------------------------------------
    def _release(self, units: list[Media]) -> None:
        for start, end in self._reorder.take_gaps():
            self.seqs_skipped += end - start
            log.warning("recording %s: seqs %d..%d never arrived; the archive skips them",
                        self.stream, start, end - 1)
        for m in units:
            self._retained.append(_Unit(m, self._unit_tracks.pop(m.seq)))
            self._retained_bytes += len(m.payload)
            self._next_release = m.seq + 1
        if self._failing:
            if self._retained_bytes > self._hold_limit_bytes:
                self._drop_copies()
            return
        self._write_retained()

    def _write_retained(self) -> None:
        for u in self._retained:
            if u.muxed:
                continue
            try:
                self._write(u)
            except OSError as exc:
                self._storage_failed(exc)
                return
            except (av.FFmpegError, ValueError, OverflowError) as exc:
                self._track_failed(u, exc)
                u.muxed = u.written = True
        self._mark_written()

    def _write(self, u: _Unit) -> None:
        m, track = u.media, u.track
        if m.track_id in self._track_errors:
            u.muxed = u.written = True  # reported: the muxer cannot take this track
            return
        skip = self._skip.get(m.track_id, 0)
        if skip:
            self._skip[m.track_id] = skip - 1  # already in the archive's previous part
            u.muxed = u.written = True
            return
        current = self._tracks.get(m.track_id)
        if current != track:
            if current is not None and self._part is not None:
                self._close_part()  # a changed config starts a new part
            self._tracks[m.track_id] = track
        if self._part is None:
            self._open_part()
        part = self._part
        assert part is not None
        stream = part.streams.get(m.track_id)
        if stream is None:
            u.muxed = u.written = True  # a codec the archive does not take (OPUS)
            return
        p = av.Packet(m.payload)
        p.pts, p.dts = m.pts, m.dts
        tb = Fraction(track.time_base_num, track.time_base_den)
        p.time_base = tb
        p.is_keyframe = m.keyframe
        p.stream = stream
        dts_s = float(m.dts * tb)
        newest = part.newest_dts_s.get(m.track_id)
        if newest is not None and dts_s <= newest:
            # MPEG-TS needs increasing dts; seq order gives that unless the sender broke it
            self.write_errors += 1
            log.warning("recording %s: seq %d dts %d not after the last; not written",
                        self.stream, m.seq, m.dts)
            u.muxed = u.written = True
            return
        part.container.mux(p)
        u.muxed, u.dts_s, u.part = True, dts_s, part.number
        part.muxed[m.track_id] = part.muxed.get(m.track_id, 0) + 1
        part.newest_dts_s[m.track_id] = dts_s
        self.units_written += 1

    def _mark_written(self) -> None:
        """A muxed unit is in the kernel once every stream of the part has muxed a later
        dts (libavformat's interleaving holds the rest)."""
        part = self._part
        frontier = float("-inf")
        if part is not None and part.streams:
            newest = [part.newest_dts_s.get(t) for t in part.streams]
            frontier = float("-inf") if None in newest else min(n for n in newest if n is not None)
        for u in self._retained:
            if u.muxed and not u.written and u.dts_s < frontier:
                u.written = True

    def _watermark(self) -> int | None:
        for u in self._retained:
            if not u.written:
                return u.media.seq
        return self._next_release

    def _checkpoint(self, fsync: bool = False) -> None:
        """Save where the archive stands, then publish the watermark for the ACK."""
        self._last_checkpoint_at = time.monotonic()
        kept = self._watermark()
        if kept is None or self._session_id is None:
            return
        if self._last is not None and self._last.kept_seq == kept \
                and self._last.session_id == self._session_id and not fsync:
            self._maybe_fsync()
            return
        part = self._part
        below: dict[int, int] = {}
        file_bytes = 0
        name = ""
        if part is not None:
            below = dict(part.muxed)
            for u in self._retained:
                if u.part == part.number and u.media.seq >= kept and u.media.track_id in below:
                    below[u.media.track_id] -= 1
            try:
                file_bytes = part.path.stat().st_size
            except OSError as exc:
                self._storage_failed(exc)
                return
            name = part.path.name
        tracks = tuple(self._tracks[t] for t in part.order) if part is not None else ()
        cp = RecordingCheckpoint(self._session_id, kept, tracks, name, file_bytes,
                                 max(1, self._part_number), below)
        if self._checkpoint_file is not None:
            try:
                save_checkpoint(self._checkpoint_file, cp)
            except OSError as exc:
                self._storage_failed(exc)
                return
        self._last = cp
        self._files_at_checkpoint = len(self.files)
        while self._retained and self._retained[0].media.seq < kept:
            self._retained_bytes -= len(self._retained.popleft().media.payload)
        self.kept = (self._session_id, kept)
        self._maybe_fsync(force=fsync)

    def _maybe_fsync(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_fsync_at < FSYNC_INTERVAL_S:
            return
        self._last_fsync_at = now
        part = self._part.path if self._part is not None else None
        paths = [p for p in (part, self._checkpoint_file) if p is not None]
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            except OSError as exc:
                log.warning("recording %s: fsync %s: %s", self.stream, path.name, exc)
            finally:
                os.close(fd)

    # --- parts ---------------------------------------------------------------------------
    def _open_part(self) -> None:
        """Open a muxer: a new part file, or, after a flush (``_close_part(reopen=True)``)
        with the same tracks, a new muxer appending to the same file (an MPEG-TS that
        restarts its muxer is still one stream, as concatenated parts are)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        reopen, self._reopen = self._reopen, None
        for tid, t in self._arrival_tracks.items():  # tracks no unit has been written for yet
            self._tracks.setdefault(tid, t)
        if reopen is not None and reopen.tracks != self._tracks:
            reopen = None
        if reopen is not None:
            path = reopen.path
            raw = open(path, "ab", buffering=0)  # noqa: SIM115 (closed by _close_part)
        else:
            self._part_number += 1
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            suffix = f"-part{self._part_number}" if self._part_number > 1 else ""
            path = self.dir / (f"{self.stream}-{stamp}-{self._session_tag or 'nosession'}"
                               f"{suffix}.ts")
            raw = open(path, "wb", buffering=0)  # noqa: SIM115 (closed by _close_part)
        # unbuffered: each packet the muxer flushes reaches the kernel at once
        try:
            container = av.open(raw, "w", format="mpegts", options=MUX_OPTIONS)
        except BaseException:
            raw.close()
            raise
        streams: dict[int, Any] = {}
        order: list[int] = []
        for tid, t in sorted(self._tracks.items()):
            name = MUXER_CODEC_NAMES.get(t.codec)
            if name is None or tid in self._track_errors:
                continue
            try:
                s = self._add_stream(container, name, t)
            except (av.FFmpegError, ValueError, OverflowError) as exc:
                self._track_errors[tid] = f"track {tid} cannot be recorded: {exc}"
                self._report_track(tid)
                continue
            streams[tid] = s
            order.append(tid)
        part = _Part(path, self._part_number, container, streams, order, raw,
                     dict(self._tracks))
        if reopen is not None:  # the file's packet counts go on (checkpoints count the file)
            part.muxed = dict(reopen.muxed)
        else:
            self.files.append(path)
            log.info("recording %s to %s", self.stream, path)
        self._part = part

    @staticmethod
    def _add_stream(container: Any, name: str, t: TrackConfig) -> Any:
        s: Any
        if t.kind == TrackKind.VIDEO:
            fps = max(1, round(t.time_base_den / t.time_base_num))
            s = container.add_stream(name, rate=fps)
            s.width, s.height, s.pix_fmt = t.width, t.height, "yuv420p"
        else:
            s = container.add_stream(name, rate=t.sample_rate)
            s.layout = "mono" if t.channels == 1 else "stereo"
        s.time_base = Fraction(t.time_base_num, t.time_base_den)
        return s

    def _close_part(self, reopen: bool = False) -> None:
        """Close the muxer (flushes it: every muxed unit is then written). With ``reopen``
        the next muxer appends to the same file, if the tracks are still the same."""
        part, self._part = self._part, None
        self._reopen = None
        if part is None:
            return
        try:
            part.container.close()
        except OSError as exc:
            self._storage_failed(exc)
            return
        finally:
            part.raw.close()
        if reopen:
            self._reopen = part
        for u in self._retained:
            if u.muxed:
                u.written = True

    def _finish(self, end: bool) -> None:
        """Write what the reorder still holds (gaps or not), close the part, checkpoint (and
        forget the checkpoint when the session ended cleanly)."""
        if not self._failing:
            if end:  # the session is over: what is held above a gap goes out now
                self._release(self._reorder.flush())
            self._close_part()
            self._checkpoint(fsync=True)
        if end and not self._failing and self._checkpoint_file is not None:
            remove_checkpoint(self._checkpoint_file)
        if not end:
            self._reorder.close()
        self._tracks.clear()
        self._arrival_tracks.clear()
        self._unit_tracks.clear()
        self._skip.clear()

    # --- failure and recovery ------------------------------------------------------------
    def _storage_failed(self, exc: OSError) -> None:
        self.write_errors += 1
        if not self._failing:
            self._set_failed(f"cannot write the archive: {exc}")
        self._failing = True
        self._retry_at = time.monotonic() + RETRY_S
        part, self._part = self._part, None
        self._reopen = None
        if part is not None:
            with contextlib.suppress(Exception):
                part.container.close()
            with contextlib.suppress(Exception):
                part.raw.close()
        # nothing beyond the checkpoint counts as written: parts opened after it go
        cp = self._last
        keep = self._files_at_checkpoint if cp is not None else self._session_first_file
        for path in self.files[keep:]:
            with contextlib.suppress(OSError):
                path.unlink()
        del self.files[keep:]
        if cp is not None and cp.file and self.files and self.files[-1].name == cp.file:
            self._truncate(self.files[-1], cp.file_bytes)
        for u in self._retained:
            u.muxed = u.written = False
            u.part = 0
        self._skip = self._count_beyond_checkpoint()

    def _count_beyond_checkpoint(self) -> dict[int, int]:
        """Per track, the units the checkpointed part holds beyond its watermark (skip them
        when they come again)."""
        cp = self._last
        if cp is None or not cp.file:
            return {}
        counts = count_packets(self.dir / cp.file, [t.track_id for t in cp.tracks])
        return {tid: n - cp.muxed_below_kept.get(tid, 0) for tid, n in counts.items()
                if n > cp.muxed_below_kept.get(tid, 0)}

    def _retry(self) -> None:
        self._retry_at = time.monotonic() + RETRY_S
        if not probe_writable(self.dir):
            return  # still failing; said once already
        self._failing = False
        self._tracks.clear()  # the next part is opened with the configs in force
        self._write_retained()
        if self._failing:
            return
        self._checkpoint()
        if self._failing:
            return
        self._refresh_state()
        log.warning("recording %s: the archive is written again (%s)", self.stream,
                    self.files[-1].name if self.files else "no file yet")
        self._notices.put(Notice("recovered"))
        if self._dropped:
            self._dropped = False
            seq = self._watermark()
            self._notices.put(Notice("resend", seq=seq))

    def _drop_copies(self) -> None:
        """Held media passed HOLD_LIMIT_BYTES while failing: drop it; the sender still holds
        it (nothing was acknowledged) and resends it once the archive works."""
        if self._last is not None:
            resend_from: int | None = self._last.kept_seq
        else:  # nothing kept yet in this session: from the first unit it has
            resend_from = (self._retained[0].media.seq if self._retained
                           else self._reorder.next_seq)
        if resend_from is None:
            return  # nothing held
        log.warning("recording %s: %d MB held for the failing archive; dropping the relay's "
                    "copies, the sender resends from seq %d once it works", self.stream,
                    self._retained_bytes // 1_000_000, resend_from)
        self._retained.clear()
        self._retained_bytes = 0
        self._unit_tracks.clear()
        self._reorder.close()
        self._reorder = self._new_reorder()
        self._next_release = resend_from
        self._dropped = True

    def _resume(self, cp: RecordingCheckpoint) -> None:
        """Continue a session's archive after a restart, from its checkpoint."""
        self._session_id = cp.session_id
        self._session_tag = cp.session_id.hex()[:8]
        self._part_number = cp.part
        self._next_release = cp.kept_seq
        self._last = cp
        self._session_first_file = len(self.files)
        path = self.dir / cp.file
        if cp.file and path.exists():
            self._truncate(path, cp.file_bytes)
            self.files.append(path)
        self._files_at_checkpoint = len(self.files)
        self._skip = self._count_beyond_checkpoint()
        for t in cp.tracks:
            self._arrival_tracks[t.track_id] = t
        self.kept = (cp.session_id, cp.kept_seq)
        log.info("recording %s: continuing session %s at seq %d (new part after %s)",
                 self.stream, self._session_tag, cp.kept_seq, cp.file)

    def _truncate(self, path: Path, size: int) -> None:
        try:
            with path.open("rb+") as f:
                if f.seek(0, os.SEEK_END) > size:
                    f.truncate(size)
        except OSError as exc:
            log.warning("recording %s: cannot truncate %s: %s", self.stream, path.name, exc)

    def _track_failed(self, u: _Unit, exc: Exception) -> None:
        self.write_errors += 1
        tid = u.media.track_id
        if tid not in self._track_errors:
            self._track_errors[tid] = f"track {tid} cannot be recorded: {exc}"
            self._report_track(tid)

    def _report_track(self, tid: int) -> None:
        msg = self._track_errors[tid]
        log.error("recording %s: %s; the archive goes on without it", self.stream, msg)
        self._set_failed(msg)

    def _set_failed(self, error: str) -> None:
        if self.state != "failed" or self.error != error:
            if self.state != "failed":
                log.error("recording %s: %s", self.stream, error)
            self.state, self.error = "failed", error
            self._notices.put(Notice("failed", error=error))

    def _refresh_state(self) -> None:
        if self._failing:
            return
        if self._track_errors:
            self.error = next(iter(self._track_errors.values()))
            self.state = "failed"
        elif self.state != "ok":
            self.state, self.error = "ok", None

    def _new_reorder(self) -> SeqReorder:
        # the spill file is created lazily, on this recorder's thread, in self.dir
        memory, disk = self._reorder_limits
        return SeqReorder(Spool(memory, disk, directory=self.dir))


def probe_writable(directory: Path) -> bool:
    """Whether PROBE_BYTES can be written (and synced) in `directory` now."""
    probe = directory / ".write-probe"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def count_packets(path: Path, track_ids: list[int]) -> dict[int, int]:
    """Packets per track in an MPEG-TS part (stream index i is track_ids[i]); {} when it
    cannot be read."""
    counts: dict[int, int] = {}
    try:
        with av.open(str(path), format="mpegts") as container:
            for p in container.demux():
                if p.size and p.stream.index < len(track_ids):
                    tid = track_ids[p.stream.index]
                    counts[tid] = counts.get(tid, 0) + 1
    except (OSError, av.FFmpegError) as exc:
        log.warning("recording: cannot count the packets of %s: %s", path.name, exc)
    return counts
