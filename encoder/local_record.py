"""A full-quality local MP4 copy of the session (``--record PATH``), next to the uplink.

The uplink's bitrate adapts down to a few hundred kbit/s on a weak link; this recorder keeps
its own libx264 encoder at a fixed, full-quality bitrate so the farmer can upload a good copy
later. It runs on its own thread, fed through a bounded queue: :meth:`LocalRecorder.video`
never blocks the capture loop; when the recorder falls behind, frames are dropped and
counted. Audio is not encoded twice: the uplink's AAC packets are muxed as they are.

File format: fragmented MP4, written straight to PATH (no ``PATH.partial`` + rename).
``movflags=frag_keyframe+delay_moov+default_base_moof`` cuts a fragment (moof + mdat) at
every keyframe, i.e. every ``RECORD_KEYFRAME_INTERVAL_S``; ``flush_packets`` hands each
finished fragment to the OS at once and the file is fsynced every ``FSYNC_INTERVAL_S``. So a
crash of the encoder or a power cut keeps everything up to the last complete fragment: the
file stays playable, losing at most about one keyframe interval plus what was still queued.
A plain MP4 written to ``PATH.partial`` would lose the whole recording in a crash (its moov
index is only written at the end). ``delay_moov`` (rather than ``empty_moov``) writes the
moov with the first fragment, once the first timestamps are known, so its edit lists keep
audio and video in sync despite the AAC priming packet and x264's B-frame delay
(``empty_moov`` shifts each track to start at zero on its own: video ends up two frames late).
Before the first fragment is cut (the first ``RECORD_KEYFRAME_INTERVAL_S``) the file is
empty. ffmpeg, ffprobe, VLC and browsers play fragmented MP4; to get a classic MP4 with the
index at the front, ``ffmpeg -i rec.mp4 -c copy -movflags +faststart out.mp4``.

Timestamps: video pts in 1/fps units is the session frame number, so a dropped frame (or a
stream whose frame rate was lowered) shows as a gap, not a time shift. Audio pts are the
uplink encoder's, in 1/sample_rate units of the same session clock.

All container access happens on the recorder thread (opening included), so libavformat and
libx264 are never used from two threads. The thread runs at a lower CPU priority
(``RECORDER_NICE_INCREMENT``, Linux) and x264's worker threads inherit it, so on a weak
machine the recorder, not the uplink, falls behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from encoder.av_encoder import AUDIO_TRACK_ID, EncodedUnit
from uplink.media import AAC_FRAME_SAMPLES, X264_PRESETS, keyframe_interval_frames, x264_options

log = logging.getLogger(__name__)

RECORD_KEYFRAME_INTERVAL_S = 2.0  # one MP4 fragment per keyframe interval
FSYNC_INTERVAL_S = 2.0  # fsync the file at most this often (power-cut safety)
RECORDER_NICE_INCREMENT = 10  # the recorder thread (and x264's threads) yield to the uplink
STARTUP_TIMEOUT_S = 15.0  # opening the file and the encoder on the recorder thread
CLOSE_TIMEOUT_S = 60.0  # flushing the encoder and writing the last fragment
# Audio is tiny (64 kbit/s: ~170 B a packet) and a gap in it is heard, so its queue is not
# tied to queue_s: it holds at least this much, enough while a slow recorder works through
# queue_s of frames and keeps dropping frames (whose audio still arrives).
MIN_AUDIO_QUEUE_S = 30.0
MOVFLAGS = "frag_keyframe+delay_moov+default_base_moof"
# AudioSpecificConfig (ISO 14496-3 1.6.2.1): sampling frequency index -> Hz
AAC_SAMPLE_RATES_HZ = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000,
                       11025, 8000, 7350)
AAC_LAYOUTS = {1: "mono", 2: "stereo"}  # channel configuration -> layout name


@dataclass(frozen=True)
class RecordSummary:
    frames_written: int  # video packets in the file
    frames_dropped: int  # frames handed to video() that are not in the file
    audio_packets: int  # AAC packets in the file
    path: Path
    bytes: int  # size of the file at close
    audio_dropped: int = 0  # AAC packets handed to audio() that are not in the file
    error: str | None = None  # why recording stopped early (disk full, ...), None if it did not


@dataclass(frozen=True)
class _VideoItem:
    bgr: npt.NDArray[np.uint8]
    index: int


_STOP = object()  # queued by close(): the thread flushes and ends


class LocalRecorder:
    """Records raw frames (own x264 encoder) and the uplink's AAC packets to a fragmented MP4.

    ``video()`` and ``audio()`` may be called from any thread and never block; ``close()``
    flushes and returns a :class:`RecordSummary`. Raises ``ValueError`` (bad arguments) or
    ``OSError`` (PATH cannot be written) from the constructor, in plain words. An existing
    file at PATH is overwritten (with a warning).

    The queue holds raw BGR frames: ``queue_s`` = 2 s at 1280x720, 30 fps is about 170 MB,
    at 1920x1080 about 370 MB. A failure while recording (disk full) is logged once, stops
    the recording (the file keeps what was written) and shows in ``error`` and the summary.
    """

    def __init__(self, path: Path, width: int, height: int, fps: int, kbps: int, preset: str,
                 audio_extradata: bytes, sample_rate: int, queue_s: float = 2.0) -> None:
        self.path = Path(path)
        _check_arguments(self.path, width, height, fps, kbps, preset, audio_extradata,
                         sample_rate, queue_s)
        self.width, self.height, self.fps, self.kbps = width, height, fps, kbps
        self.preset = preset
        self.sample_rate = sample_rate
        self._audio_extradata = bytes(audio_extradata)
        self._audio_layout = AAC_LAYOUTS[_asc_channels(self._audio_extradata, sample_rate)]
        self.max_queued_frames = max(1, round(queue_s * fps))
        self.max_queued_audio = math.ceil(max(queue_s, MIN_AUDIO_QUEUE_S) * sample_rate
                                          / AAC_FRAME_SAMPLES)
        self._frame_shape = (height, width, 3)
        if self.path.exists():
            log.warning("local recording: %s exists and will be overwritten", self.path)

        self._cond = threading.Condition()
        self._queue: deque[object] = deque()  # _VideoItem | EncodedUnit | _STOP
        self._queued_frames = 0
        self._queued_audio = 0
        self._closing = False
        self._last_index = -1  # last frame index accepted into the queue
        self._frames_accepted = 0
        self._audio_accepted = 0
        self._dropping = False  # inside an episode of dropped frames
        self._episode_drops = 0
        self._index_warned = False
        self._audio_warned = False
        # counters: the *_dropped ones are written under the lock, the rest by the thread
        self.frames_dropped = 0
        self.audio_dropped = 0
        self.frames_written = 0
        self.audio_packets = 0
        self._error: str | None = None
        self._summary: RecordSummary | None = None

        self._container: av.container.OutputContainer | None = None
        self._vstream: av.VideoStream | None = None
        self._astream: av.AudioStream | None = None
        self._last_audio_dts: int | None = None
        self._late_audio = 0  # packets the thread dropped: dts did not increase
        self._sync_fd: int | None = None
        self._last_sync = 0.0
        self._start_error: Exception | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-record", daemon=True)
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT_S):
            self._abandon()
            raise OSError(f"local recording {str(self.path)!r}: opening the file and the "
                          f"encoder took longer than {STARTUP_TIMEOUT_S:.0f} s")
        if self._start_error is not None:
            self._thread.join(STARTUP_TIMEOUT_S)
            raise self._start_error

    # --- caller side (any thread, never blocks) ----------------------------------------

    @property
    def error(self) -> str | None:
        """Why recording stopped early (the file keeps what was written before), or None."""
        return self._error

    def video(self, bgr: npt.NDArray[np.uint8], index: int) -> None:
        """Queue one BGR frame (height, width, 3) with session frame number ``index``.

        The array is kept as it is, not copied: the caller must not modify it afterwards
        (the capture sources return a new array per frame). Drops (and counts) the frame
        when the queue already holds ``queue_s`` seconds of frames, or when ``index`` does
        not increase. Logs one warning when dropping starts and one info line when the
        recorder has emptied its queue again.
        """
        if bgr.shape != self._frame_shape:
            raise ValueError(f"local recording: frame shape {bgr.shape} does not match the "
                             f"recording's {self._frame_shape} (height, width, 3)")
        with self._cond:
            if self._closing:
                return
            if index <= self._last_index:
                self.frames_dropped += 1
                if not self._index_warned:
                    self._index_warned = True
                    log.warning("local recording: frame index %d after %d does not increase; "
                                "dropped (logged once)", index, self._last_index)
                return
            if self._error is not None or self._queued_frames >= self.max_queued_frames:
                self.frames_dropped += 1
                self._episode_drops += 1
                if not self._dropping and self._error is None:
                    log.warning("local recording falling behind: %d frames (%.1f s) queued; "
                                "dropping frames until it catches up", self._queued_frames,
                                self._queued_frames / self.fps)
                self._dropping = True
                return
            if self._dropping and self._queued_frames == 0:
                # the episode ends when the recorder has emptied its queue, not at the first
                # free slot: a recorder slightly slower than capture is one long episode
                log.info("local recording caught up after dropping %d frames",
                         self._episode_drops)
                self._dropping = False
                self._episode_drops = 0
            self._last_index = index
            self._frames_accepted += 1
            self._queued_frames += 1
            self._queue.append(_VideoItem(bgr, index))
            self._cond.notify()

    def audio(self, unit: EncodedUnit) -> None:
        """Queue one AAC packet from the uplink encoder (pts and dts in 1/sample_rate)."""
        if unit.track_id != AUDIO_TRACK_ID:
            raise ValueError(f"local recording: audio() takes audio units (track_id "
                             f"{AUDIO_TRACK_ID}), got track_id {unit.track_id}")
        with self._cond:
            if self._closing:
                return
            if self._error is not None or self._queued_audio >= self.max_queued_audio:
                self.audio_dropped += 1
                if not self._audio_warned and self._error is None:
                    self._audio_warned = True
                    log.warning("local recording: audio queue full (%d packets); dropping "
                                "audio packets (logged once)", self._queued_audio)
                return
            self._audio_accepted += 1
            self._queued_audio += 1
            self._queue.append(unit)
            self._cond.notify()

    def close(self) -> RecordSummary:
        """Flush the encoder, write the last fragment, join the thread. Safe to call twice."""
        with self._cond:
            if self._summary is not None:
                return self._summary
            if not self._closing:
                self._closing = True
                self._queue.append(_STOP)
                self._cond.notify()
        self._thread.join(CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            self._fail(f"the recorder did not finish within {CLOSE_TIMEOUT_S:.0f} s")
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        with self._cond:
            if self._summary is None:
                # accepted but not written: lost in a failure (or still in a stuck thread)
                lost_frames = max(0, self._frames_accepted - self.frames_written)
                lost_audio = max(0, self._audio_accepted - self.audio_packets - self._late_audio)
                self._summary = RecordSummary(
                    frames_written=self.frames_written,
                    frames_dropped=self.frames_dropped + lost_frames,
                    audio_packets=self.audio_packets, path=self.path, bytes=size,
                    audio_dropped=self.audio_dropped + self._late_audio + lost_audio,
                    error=self._error)
            summary = self._summary
        log.info("local recording closed: path=%s frames_written=%d frames_dropped=%d "
                 "audio_packets=%d bytes=%d%s", summary.path, summary.frames_written,
                 summary.frames_dropped, summary.audio_packets, summary.bytes,
                 f" error={summary.error!r}" if summary.error else "")
        return summary

    # --- recorder thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            _lower_thread_priority()
            self._open()
        except Exception as exc:
            self._start_error = exc
            self._close_container()
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop()
            self._flush()
        except Exception as exc:
            log.exception("local recording failed")
            self._fail(_describe(exc))
        finally:
            self._close_container()

    def _open(self) -> None:
        path = str(self.path)
        try:
            container = av.open(path, "w", format="mp4",
                                container_options={"movflags": MOVFLAGS, "flush_packets": "1"})
        except OSError as exc:
            raise OSError(f"cannot create the local recording {path!r}: {_describe(exc)}") from exc
        self._container = container
        try:
            v = container.add_stream("libx264", rate=self.fps)
            v.width, v.height, v.pix_fmt = self.width, self.height, "yuv420p"
            ctx = v.codec_context
            ctx.time_base = Fraction(1, self.fps)
            ctx.bit_rate = self.kbps * 1000
            # no tune=zerolatency: B-frames and lookahead are worth it for the archive copy
            ctx.options = x264_options(
                self.preset, keyframe_interval_frames(self.fps, RECORD_KEYFRAME_INTERVAL_S),
                self.kbps, 2 * self.kbps, zerolatency=False)
            self._vstream = v
            self._astream = self._add_copied_aac_stream(container)
            container.start_encoding()  # opens x264 here, on the recorder thread
        except OSError as exc:
            raise OSError(f"cannot write the local recording {path!r}: "
                          f"{_describe(exc)}") from exc
        except av.FFmpegError as exc:
            raise ValueError(f"local recording {path!r}: cannot set up the MP4 or the H.264 "
                             f"encoder: {_describe(exc)}") from exc
        try:
            self._sync_fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            log.warning("local recording: cannot reopen %s for fsync (%s); relying on the OS "
                        "to write it out", path, exc)
        self._last_sync = time.monotonic()

    def _add_copied_aac_stream(self, container: av.container.OutputContainer) -> av.AudioStream:
        """An AAC stream that takes ready-made packets and carries our AudioSpecificConfig.

        ``add_stream("aac")`` would open a second AAC encoder when the header is written,
        and that encoder replaces the extradata with its own. A stream made from a template
        is marked as already initialised, so its codec context is never opened and what we
        set (rate, layout, extradata) goes into the MP4 as it is. The template comes from a
        throwaway in-memory container that never writes anything.
        """
        scratch = av.open(io.BytesIO(), "w", format="mp4")
        try:
            template = scratch.add_stream("aac", rate=self.sample_rate)
            stream = container.add_stream_from_template(template)
        finally:
            scratch.close()
        ctx = stream.codec_context
        ctx.sample_rate = self.sample_rate
        ctx.layout = self._audio_layout  # from the ASC, so the MP4 box and the ASC agree
        ctx.time_base = Fraction(1, self.sample_rate)
        ctx.extradata = self._audio_extradata
        return stream

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                item = self._queue.popleft()
                if isinstance(item, _VideoItem):
                    self._queued_frames -= 1
                elif isinstance(item, EncodedUnit):
                    self._queued_audio -= 1
            if item is _STOP:
                return
            if isinstance(item, _VideoItem):
                self._write_video(item)
            elif isinstance(item, EncodedUnit):
                self._write_audio(item)

    def _write_video(self, item: _VideoItem) -> None:
        assert self._container is not None and self._vstream is not None
        frame = av.VideoFrame.from_ndarray(item.bgr, format="bgr24").reformat(format="yuv420p")
        frame.pts = item.index
        frame.time_base = Fraction(1, self.fps)
        self._mux_video(self._vstream.encode(frame))

    def _mux_video(self, packets: list[av.Packet]) -> None:
        assert self._container is not None
        for packet in packets:
            self._container.mux(packet)
            self.frames_written += 1
        if packets and self._sync_fd is not None \
                and time.monotonic() - self._last_sync >= FSYNC_INTERVAL_S:
            self._last_sync = time.monotonic()
            try:
                os.fsync(self._sync_fd)
            except OSError as exc:
                log.warning("local recording: fsync failed (%s); not syncing any more", exc)
                self._close_sync_fd()

    def _write_audio(self, unit: EncodedUnit) -> None:
        assert self._container is not None and self._astream is not None
        if self._last_audio_dts is not None and unit.dts <= self._last_audio_dts:
            self._late_audio += 1
            if not self._audio_warned:
                self._audio_warned = True
                log.warning("local recording: audio dts %d after %d does not increase; "
                            "dropped (logged once)", unit.dts, self._last_audio_dts)
            return
        packet = av.Packet(unit.payload)
        packet.pts, packet.dts = unit.pts, unit.dts
        packet.duration = AAC_FRAME_SAMPLES
        packet.time_base = Fraction(1, self.sample_rate)
        packet.is_keyframe = True
        packet.stream = self._astream
        self._container.mux(packet)
        self._last_audio_dts = unit.dts
        self.audio_packets += 1

    def _flush(self) -> None:
        assert self._vstream is not None
        self._mux_video(self._vstream.encode(None))

    def _close_container(self) -> None:
        """Write the trailer (last fragment) and release everything; errors are recorded."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception as exc:
                log.warning("local recording: closing %s failed: %s", self.path, exc)
                self._fail(f"closing the file failed: {_describe(exc)}")
        if self._sync_fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._sync_fd)
            self._close_sync_fd()
        with self._cond:  # free queued frames; later calls drop
            self._queue.clear()
            self._queued_frames = self._queued_audio = 0

    def _close_sync_fd(self) -> None:
        fd, self._sync_fd = self._sync_fd, None
        if fd is not None:
            os.close(fd)

    def _fail(self, reason: str) -> None:
        with self._cond:
            if self._error is None:
                self._error = reason
                log.error("local recording %s stopped: %s (what was written so far is kept)",
                          self.path, reason)

    def _abandon(self) -> None:
        with self._cond:
            self._closing = True
            self._queue.append(_STOP)
            self._cond.notify()


def _check_arguments(path: Path, width: int, height: int, fps: int, kbps: int, preset: str,
                     audio_extradata: bytes, sample_rate: int, queue_s: float) -> None:
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"local recording path {str(path)!r} must end in .mp4")
    if path.is_dir():
        raise ValueError(f"local recording path {str(path)!r} is a directory; give a file "
                         f"name ending in .mp4")
    directory = path.parent
    if not directory.is_dir():
        raise OSError(f"cannot record to {str(path)!r}: directory {str(directory)!r} does "
                      f"not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OSError(f"cannot record to {str(path)!r}: directory {str(directory)!r} is not "
                      f"writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise OSError(f"cannot record to {str(path)!r}: the file exists and is not writable")
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"local recording size {width}x{height}: width and height must be "
                         f"positive and even (H.264 4:2:0)")
    if fps <= 0:
        raise ValueError(f"local recording fps={fps} must be positive")
    if kbps <= 0:
        raise ValueError(f"local recording kbps={kbps} must be positive")
    if preset not in X264_PRESETS:
        raise ValueError(f"local recording preset {preset!r} is not an x264 preset; valid: "
                         f"{', '.join(X264_PRESETS)}")
    if not audio_extradata:
        raise ValueError("local recording: audio_extradata is empty; pass the uplink's AAC "
                         "AudioSpecificConfig (MediaEncoder.tracks(), the audio track)")
    if sample_rate <= 0:
        raise ValueError(f"local recording sample_rate={sample_rate} must be positive")
    _asc_channels(audio_extradata, sample_rate)
    if not queue_s > 0:
        raise ValueError(f"local recording queue_s={queue_s} must be positive")


def _asc_channels(asc: bytes, sample_rate: int) -> int:
    """Channel count of an AAC AudioSpecificConfig; ValueError unless it is 1 or 2 and the
    ASC's sampling frequency is sample_rate."""
    bits = "".join(f"{byte:08b}" for byte in asc[:8])
    pos = 5  # audioObjectType
    if len(bits) >= 5 and int(bits[:5], 2) == 31:
        pos += 6  # audioObjectTypeExt
    index = int(bits[pos:pos + 4] or "0", 2)
    pos += 4
    if index == 15:  # explicit samplingFrequency
        asc_rate = int(bits[pos:pos + 24] or "0", 2)
        pos += 24
    else:
        asc_rate = AAC_SAMPLE_RATES_HZ[index] if index < len(AAC_SAMPLE_RATES_HZ) else 0
    channel_bits = bits[pos:pos + 4]
    channels = int(channel_bits, 2) if len(channel_bits) == 4 else 0
    if asc_rate != sample_rate or channels not in AAC_LAYOUTS:
        raise ValueError(f"local recording: audio_extradata {asc.hex()} is not an AAC "
                         f"AudioSpecificConfig for {sample_rate} Hz mono or stereo (it says "
                         f"{asc_rate} Hz, {channels} channel configuration)")
    return channels


def _lower_thread_priority() -> None:
    """Raise the calling thread's nice value (Linux: per thread, inherited by new threads)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid,
                       os.getpriority(os.PRIO_PROCESS, tid) + RECORDER_NICE_INCREMENT)
    except OSError as exc:
        log.debug("local recording: cannot lower the thread priority: %s", exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
