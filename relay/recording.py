"""The full archive of a stream: every ingest access unit, remuxed (no re-encode) to MPEG-TS.

MPEG-TS survives a crash mid-file (no index to finalise). One file per sender session;
a changed track configuration starts a new part. Runs on its own thread so disk I/O never
touches the ingest loop.
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

from uplink import Codec, Media, TrackConfig, TrackKind

log = logging.getLogger(__name__)

MUXER_CODEC_NAMES = {Codec.H264: "h264", Codec.AAC: "aac"}


class Recorder:
    def __init__(self, stream: str, record_dir: Path) -> None:
        self.stream = stream
        self.dir = record_dir / stream
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._tracks: dict[int, TrackConfig] = {}
        self._container: Any = None
        self._streams: dict[int, Any] = {}
        self._last_dts: dict[int, int] = {}
        self._session_tag = ""
        self._part = 0
        self.files: list[Path] = []
        self.units_written = 0
        self.write_errors = 0
        self._thread = threading.Thread(target=self._run, name=f"rec-{stream}", daemon=True)
        self._thread.start()

    # --- called from the ingest side (any thread) ----------------------------------------
    def new_session(self, session_id: bytes) -> None:
        self._inbox.put(("session", session_id))

    def track(self, track: TrackConfig, changed: bool) -> None:
        self._inbox.put(("track", (track, changed)))

    def media(self, media: Media) -> None:
        self._inbox.put(("media", media))

    def close(self, wait: bool = True) -> None:
        self._inbox.put(("close", None))
        if wait:
            self._thread.join(30)

    @property
    def current_file(self) -> Path | None:
        return self.files[-1] if self.files and self._container is not None else None

    # --- the recorder's thread -----------------------------------------------------------
    def _run(self) -> None:
        while True:
            kind, arg = self._inbox.get()
            try:
                if kind == "session":
                    self._close_file()
                    self._tracks.clear()
                    self._session_tag = arg.hex()[:8]
                    self._part = 0
                elif kind == "track":
                    track, changed = arg
                    if changed and self._container is not None and track.track_id in self._tracks:
                        self._close_file()
                    self._tracks[track.track_id] = track
                elif kind == "media":
                    self._write(arg)
                elif kind == "close":
                    self._close_file()
                    return
            except (av.FFmpegError, OSError, ValueError) as exc:
                self.write_errors += 1
                log.error("recording %s: %s", self.stream, exc)

    def _open_file(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._part += 1
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        suffix = f"-part{self._part}" if self._part > 1 else ""
        path = self.dir / f"{self.stream}-{stamp}-{self._session_tag or 'nosession'}{suffix}.ts"
        container = av.open(str(path), "w", format="mpegts")
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

    def _write(self, m: Media) -> None:
        track = self._tracks.get(m.track_id)
        if track is None:
            return
        if self._container is None:
            self._open_file()
        stream = self._streams.get(m.track_id)
        if stream is None:
            return
        last = self._last_dts.get(m.track_id)
        if last is not None and m.dts <= last:
            # out of order (backfill after the live edge moved on); MPEG-TS needs increasing dts
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
