"""The full archive of a stream: every ingest access unit, remuxed (no re-encode) to MPEG-TS.

MPEG-TS survives a crash mid-file (no index to finalise). One file per sender session;
a changed track configuration starts a new part. Runs on its own thread so disk I/O never
touches the ingest loop.

Units are written in seq order, not arrival order: after a live jump the live edge arrives
first and the media it skipped follows as backfill. A `SeqReorder` (on this thread) holds
what arrives above a gap, in memory and then in a spill file next to the recordings, until
the gap is filled; seqs that never come (the sender gave them up, the session ended) are
logged and skipped. Each unit is written with the track config that applied to it when it
arrived, so a config change lands in the archive at the right seq even when reordered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from relay.reorder import SeqReorder
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


class Recorder:
    def __init__(
        self,
        stream: str,
        record_dir: Path,
        reorder_memory_limit_bytes: int = REORDER_MEMORY_LIMIT_BYTES,
        reorder_disk_limit_bytes: int = REORDER_DISK_LIMIT_BYTES,
    ) -> None:
        self.stream = stream
        self.dir = record_dir / stream
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        # the spill file is created lazily, on this recorder's thread, in self.dir
        self._reorder = SeqReorder(
            Spool(reorder_memory_limit_bytes, reorder_disk_limit_bytes, directory=self.dir)
        )
        self._arrival_tracks: dict[int, TrackConfig] = {}  # latest config, in arrival order
        self._unit_tracks: dict[int, TrackConfig] = {}  # seq -> config it arrived under
        self._tracks: dict[int, TrackConfig] = {}  # config of the file being written
        self._container: Any = None
        self._streams: dict[int, Any] = {}
        self._last_dts: dict[int, int] = {}
        self._session_tag = ""
        self._part = 0
        self.files: list[Path] = []
        self.units_written = 0
        self.write_errors = 0
        self.seqs_skipped = 0  # seqs that never arrived before the recording had to move on
        self._thread = threading.Thread(target=self._run, name=f"rec-{stream}", daemon=True)
        self._thread.start()

    # --- called from the ingest side (any thread) ----------------------------------------
    def new_session(self, session_id: bytes) -> None:
        self._inbox.put(("session", session_id))

    def track(self, track: TrackConfig, changed: bool) -> None:
        self._inbox.put(("track", (track, changed)))

    def media(self, media: Media, received_below: int | None = None) -> None:
        """Record one unit. `received_below`: the receiver's next_seq right after this unit
        arrived (every seq below it has arrived or never will), so gaps the receiver gave up
        are skipped at once instead of at the end of the session."""
        self._inbox.put(("media", (media, received_below)))

    def close(self, wait: bool = True) -> None:
        self._inbox.put(("close", None))
        if wait:
            self._thread.join(30)

    @property
    def current_file(self) -> Path | None:
        return self.files[-1] if self.files and self._container is not None else None

    # --- the recorder's thread -----------------------------------------------------------
    def _run(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)  # for the reorder's spill file
        except OSError as exc:
            log.error("recording %s: cannot create %s: %s", self.stream, self.dir, exc)
        while True:
            kind, arg = self._inbox.get()
            try:
                if kind == "session":
                    self._end_session()
                    self._session_tag = arg.hex()[:8]
                    self._part = 0
                elif kind == "track":
                    track, _changed = arg
                    self._arrival_tracks[track.track_id] = track
                elif kind == "media":
                    media, received_below = arg
                    track = self._arrival_tracks.get(media.track_id)
                    if track is None:
                        continue  # no TRACK yet: the receiver never lets this happen
                    if media.seq in self._unit_tracks:
                        raise ValueError(f"seq {media.seq} arrived twice")
                    self._unit_tracks[media.seq] = track
                    try:
                        ready = self._reorder.push(media, received_below)
                    except ValueError:
                        del self._unit_tracks[media.seq]
                        raise
                    self._write_all(ready)
                elif kind == "close":
                    try:
                        self._end_session()
                    finally:
                        self._reorder.close()
                    return
            except (av.FFmpegError, OSError, ValueError) as exc:
                self.write_errors += 1
                log.error("recording %s: %s", self.stream, exc)

    def _end_session(self) -> None:
        """Write what the reorder still holds (gaps or not), close the file, forget tracks."""
        try:
            self._write_all(self._reorder.flush())
        finally:
            self._close_file()
            self._tracks.clear()
            self._arrival_tracks.clear()
            self._unit_tracks.clear()

    def _write_all(self, units: list[Media]) -> None:
        for start, end in self._reorder.take_gaps():
            self.seqs_skipped += end - start
            log.warning("recording %s: seqs %d..%d never arrived; the archive skips them",
                        self.stream, start, end - 1)
        for m in units:
            track = self._unit_tracks.pop(m.seq)
            try:
                self._write(m, track)
            except (av.FFmpegError, OSError, ValueError) as exc:
                self.write_errors += 1
                log.error("recording %s: seq %d: %s", self.stream, m.seq, exc)

    def _open_file(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._part += 1
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        suffix = f"-part{self._part}" if self._part > 1 else ""
        path = self.dir / f"{self.stream}-{stamp}-{self._session_tag or 'nosession'}{suffix}.ts"
        container = av.open(str(path), "w", format="mpegts")
        for tid, t in self._arrival_tracks.items():  # tracks no unit has been written for yet
            self._tracks.setdefault(tid, t)
        streams: dict[int, Any] = {}
        s: Any
        for tid, t in sorted(self._tracks.items()):
            name = MUXER_CODEC_NAMES.get(t.codec)
            if name is None:
                continue
            if t.kind == TrackKind.VIDEO:
                fps = max(1, round(t.time_base_den / t.time_base_num))
                s = container.add_stream(name, rate=fps)
                s.width, s.height, s.pix_fmt = t.width, t.height, "yuv420p"
            else:
                s = container.add_stream(name, rate=t.sample_rate)
                s.layout = "mono" if t.channels == 1 else "stereo"
            streams[tid] = s
        self._container, self._streams = container, streams
        self._last_dts = {}
        self.files.append(path)
        log.info("recording %s to %s", self.stream, path)

    def _close_file(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None
                self._streams = {}

    def _write(self, m: Media, track: TrackConfig) -> None:
        current = self._tracks.get(m.track_id)
        if current != track:
            if current is not None and self._container is not None:
                self._close_file()  # a changed config starts a new part
            self._tracks[m.track_id] = track
        if self._container is None:
            self._open_file()
        stream = self._streams.get(m.track_id)
        if stream is None:
            return
        last = self._last_dts.get(m.track_id)
        if last is not None and m.dts <= last:
            # MPEG-TS needs increasing dts; seq order gives that unless the sender broke it
            self.write_errors += 1
            log.warning("recording %s: seq %d dts %d not after %d; not written", self.stream,
                        m.seq, m.dts, last)
            return
        p = av.Packet(m.payload)
        p.pts, p.dts = m.pts, m.dts
        p.time_base = Fraction(track.time_base_num, track.time_base_den)
        p.is_keyframe = m.keyframe
        p.stream = stream
        self._container.mux(p)
        self._last_dts[m.track_id] = m.dts
        self.units_written += 1
