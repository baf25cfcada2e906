"""What a viewer on the platform saw, measured without trusting the code under test.

The test pattern draws a frame code (frame number + capture wall-clock time) into every frame
(``encoder.framecode``). This module reads it back on the platform side:

* :func:`read_frame_codes`: the code of every frame of a recorded file;
* :class:`PlatformViewer`: a thread that plays the live stream from the RTMP server (nginx in
  the tests and benchmarks) with PyAV, as a viewer would, and records for every decoded frame
  when it arrived, its pts, which publish session it belongs to and its frame code;
* :func:`score_viewing`: a pure function (no clock, no I/O) that turns those records into
  what the viewer experienced: fresh, frozen and slate frames, sessions, seconds of
  interruption, capture-to-viewer latency, and a per-second timeline for plots.

The code is read from the decoder's luma plane in place (no colour conversion, no copy), and
only the code band at the top; docs/benchmarks.md ("Measuring at the platform") gives the
cost.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

import av
import numpy as np
import numpy.typing as npt

from encoder.framecode import FrameCode, read_frame_code_gray
from monitor.redact import mask_secret, mask_url
from relay.rtmp.url import DEFAULT_PORTS

log = logging.getLogger(__name__)

PLAYER_BUFFER_S = 1.0  # start-up buffer of the modelled player at each new session
# A picture on screen for at most this long is live video (the encoder's lowest frame rate,
# 10 fps, shows each picture for 100 ms); one held longer is a freeze or a stall.
LIVE_HOLD_MAX_S = 0.15

RETRY_S = 0.3  # pause before connecting again after a connection failed or ended
# A viewer connection waits like a player: through a publisher's stall and between
# publishers (nginx-rtmp keeps a waiting viewer attached and hands it the next publisher from
# its first keyframe). Only a server silent for this long (nginx-rtmp pings every 60 s) ends
# it; stop() does not wait for it, it cuts the connection (see _Cutoff).
SILENT_SERVER_TIMEOUT_S = 90.0
STOP_JOIN_S = 2.0  # stop() waits this long for the thread to finish
# The open waits at most this much stream time for a track the server announced but does not
# send (FFmpeg's RTMP client announces audio and video; a video-only stream otherwise holds
# the open for 5 s of stream).
PROBE_S = 0.5
_CHUNK_BYTES = 64 * 1024

_BOUNDARY_S = 1e-6  # a frame shown on a second's boundary counts in the later second

# Formats whose first plane is 8-bit luma: the code is read from it in place.
_LUMA_FIRST_FORMATS = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21",
     "gray"}
)


class PlatformViewerError(RuntimeError):
    """The viewer thread failed in a way a retry cannot fix (a bug, not a network event)."""


@dataclass(frozen=True)
class ViewedFrame:
    """One frame a viewer decoded."""

    arrival_wall: float  # time.time() when it came out of the decoder
    pts_s: float | None  # presentation time in seconds, as the platform sent it
    session: int  # publish session index, 0 for the first one the viewer saw
    code: FrameCode | None  # None: no frame code (a slate, or an unreadable picture)


@dataclass(frozen=True)
class ViewerSession:
    """One publish session as the viewer saw it."""

    index: int
    first_wall: float  # arrival of its first frame
    last_wall: float  # arrival of its last frame so far
    frames: int
    connections: int  # viewer connections that saw it (more than 1 if one broke within it)


@dataclass(frozen=True)
class TimelineSecond:
    """Frames shown during one second of the window, on the player's clock."""

    start_s: float  # seconds after start_wall
    fresh: int
    frozen: int
    slate: int
    none: int  # frame slots (at fps) with no frame at all


@dataclass(frozen=True)
class ViewingStats:
    """What the viewer experienced; see :func:`score_viewing` for the definitions."""

    frames_live: int
    frames_frozen: int
    frames_slate: int
    sessions: int
    window_s: float
    live_s: float
    interruption_s: float  # = slate_s + frozen_s + no_video_s = window_s - live_s
    slate_s: float
    frozen_s: float
    no_video_s: float
    stall_s: float  # total playback stalls of the modelled player (a held picture: frozen_s)
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    live_timeline: list[TimelineSecond] = field(default_factory=list)


class _Kind(StrEnum):
    FRESH = "fresh"
    FROZEN = "frozen"
    SLATE = "slate"


# -- reading codes ---------------------------------------------------------------------------


def luma_plane(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """The frame's 8-bit luma as an (h, w) array: a view of the decoder's plane when the
    format allows it (no conversion, no copy), else a conversion to gray."""
    if frame.format.name in _LUMA_FIRST_FORMATS:
        plane = frame.planes[0]
        rows = np.frombuffer(memoryview(plane), np.uint8, plane.line_size * plane.height)
        return rows.reshape(plane.height, plane.line_size)[:, : plane.width]
    return np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)


def read_frame_codes(path: str | Path) -> list[FrameCode | None]:
    """The frame code of every decoded video frame of a file, in decode order (None where a
    frame has none). Raises ValueError naming the file if it has no video stream."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream to read frame codes from")
        return [read_frame_code_gray(luma_plane(f)) for f in container.decode(video=0)]


# -- scoring (sans-I/O) ----------------------------------------------------------------------


def _union_length(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of [a, b) intervals, clipped to [lo, hi)."""
    total = 0.0
    cur_a = cur_b = lo
    for a, b in sorted(intervals):
        a, b = max(a, lo), min(b, hi)
        if b <= a:
            continue
        if a > cur_b:
            total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    return total + (cur_b - cur_a)


def _frame_number(frame: ViewedFrame) -> int | None:
    return frame.code.frame_number if frame.code is not None else None


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def score_viewing(
    frames: Sequence[ViewedFrame],
    *,
    fps: float,
    start_wall: float,
    end_wall: float,
    player_buffer_s: float = PLAYER_BUFFER_S,
) -> ViewingStats:
    """Score what a viewer saw over the window [start_wall, end_wall] (Unix seconds) during
    which the stream should have been live. Pure: the frames carry all the times.

    Frames, in arrival order:

    * fresh (``frames_live``): a frame number seen for the first time;
    * frozen: a frame number already seen (normally the previous frame's, repeated);
    * slate: no frame code.

    The player model (small on purpose; YouTube- and TikTok-like players behave so): within
    a session, frames play in pts order. At a session's first frame (arrival a0, pts p0) the
    player buffers ``player_buffer_s`` (B): frame i is due at a0 + B + (p_i - p0) + shift. A
    frame arriving after its due time stalls playback by the difference (``stall_s``) and
    ``shift`` grows by as much: the clock moves on from there. Each frame stays on screen
    until the next one of its session is due; the last one for 1/fps. A new session starts
    over with a fresh buffer. The viewer thus watches B behind the wall clock, so the window
    is judged on the player's clock over [start_wall + B, end_wall + B].

    Within the window, every moment is one of:

    * live: a fresh picture on screen, for as long as it stays there if that is at most
      ``LIVE_HOLD_MAX_S`` (0.15 s: a stream at the encoder's 10 fps floor is live video);
      a picture that stays longer is live for its first 1/fps only;
    * slate: a slate frame on screen;
    * frozen: a picture held past that (repeated frames, a stall, missing frames);
    * no video: nothing to show: before the first session, between sessions, after the last.

    ``interruption_s`` = slate_s + frozen_s + no_video_s = window_s - live_s.

    Latency: arrival minus capture time of fresh frames, in ms; p50 and p95 by linear
    interpolation between ranks (numpy's default); None without fresh frames.

    ``live_timeline``: for each second k of the window, the frames whose display time minus
    B falls in [start_wall + k, start_wall + k + 1) (one on a boundary in the later second),
    and the frame slots at ``fps`` left empty (``none``).

    Counts cover all frames given, inside the window or not.
    """
    if fps <= 0:
        raise ValueError(f"score_viewing: fps must be > 0, got {fps!r}")
    if end_wall < start_wall:
        raise ValueError(
            f"score_viewing: end_wall={end_wall!r} is before start_wall={start_wall!r}"
        )
    if player_buffer_s < 0:
        raise ValueError(f"score_viewing: player_buffer_s must be >= 0, got {player_buffer_s!r}")
    frame_s = 1.0 / fps
    hold_max_s = max(LIVE_HOLD_MAX_S, frame_s)
    ordered = sorted(frames, key=lambda f: f.arrival_wall)  # stable: ties keep their order

    kinds: list[_Kind] = []
    seen: set[int] = set()
    latencies_ms: list[float] = []
    for f in ordered:
        if f.code is None:
            kinds.append(_Kind.SLATE)
        elif f.code.frame_number in seen:
            kinds.append(_Kind.FROZEN)
        else:
            seen.add(f.code.frame_number)
            kinds.append(_Kind.FRESH)
            latencies_ms.append(f.arrival_wall * 1000.0 - f.code.capture_time_ms)

    # display time of every frame, session by session (a session is a run of one index)
    display: list[float] = []
    session_ends: list[bool] = []  # True for the last frame of its session run
    stall_s = 0.0
    a0 = p0 = shift = 0.0
    prev_pts: float | None = None
    for i, f in enumerate(ordered):
        new_session = i == 0 or f.session != ordered[i - 1].session
        if new_session:
            a0, shift, prev_pts = f.arrival_wall, 0.0, None
        pts = f.pts_s
        if pts is None or (prev_pts is not None and pts <= prev_pts):
            pts = prev_pts + frame_s if prev_pts is not None else 0.0
        if new_session:
            p0 = pts
        prev_pts = pts
        due = a0 + player_buffer_s + (pts - p0) + shift
        if f.arrival_wall > due:
            late = f.arrival_wall - due
            stall_s += late
            shift += late
            due = f.arrival_wall
        display.append(due)
        session_ends.append(i == len(ordered) - 1 or ordered[i + 1].session != f.session)

    ends = [
        display[i] + frame_s if session_ends[i] else display[i + 1] for i in range(len(ordered))
    ]

    live: list[tuple[float, float]] = []
    slate: list[tuple[float, float]] = []
    shown: list[tuple[float, float]] = []
    i = 0
    while i < len(ordered):
        if kinds[i] == _Kind.SLATE:
            slate.append((display[i], ends[i]))
            shown.append((display[i], ends[i]))
            i += 1
            continue
        if kinds[i] == _Kind.FROZEN:  # a repeat that does not follow its own picture
            shown.append((display[i], ends[i]))
            i += 1
            continue
        # a fresh picture and the repeats of it that directly follow, in the same session
        number = _frame_number(ordered[i])
        j = i + 1
        while (
            j < len(ordered)
            and not session_ends[j - 1]
            and kinds[j] == _Kind.FROZEN
            and _frame_number(ordered[j]) == number
        ):
            j += 1
        begin, end = display[i], ends[j - 1]
        shown.append((begin, end))
        live.append((begin, end if end - begin <= hold_max_s * (1 + 1e-9) else begin + frame_s))
        i = j

    lo, hi = start_wall + player_buffer_s, end_wall + player_buffer_s
    window_s = hi - lo
    live_s = _union_length(live, lo, hi)
    live_or_slate_s = _union_length(live + slate, lo, hi)
    shown_s = _union_length(shown, lo, hi)

    timeline: list[TimelineSecond] = []
    seconds = int(np.ceil(window_s)) if window_s > 0 else 0
    counts = np.zeros((seconds, 3), dtype=np.int64)
    column = {_Kind.FRESH: 0, _Kind.FROZEN: 1, _Kind.SLATE: 2}
    for t, kind in zip(display, kinds, strict=True):
        k = int(np.floor(t - lo + _BOUNDARY_S))
        if 0 <= k < seconds:
            counts[k, column[kind]] += 1
    for k in range(seconds):
        slots = round(fps * min(1.0, window_s - k))
        fresh, frozen, slate_n = (int(x) for x in counts[k])
        none = max(0, slots - fresh - frozen - slate_n)
        timeline.append(TimelineSecond(float(k), fresh, frozen, slate_n, none))

    return ViewingStats(
        frames_live=kinds.count(_Kind.FRESH),
        frames_frozen=kinds.count(_Kind.FROZEN),
        frames_slate=kinds.count(_Kind.SLATE),
        sessions=len({f.session for f in ordered}),
        window_s=window_s,
        live_s=live_s,
        interruption_s=window_s - live_s,
        slate_s=live_or_slate_s - live_s,
        frozen_s=shown_s - live_or_slate_s,
        no_video_s=window_s - shown_s,
        stall_s=stall_s,
        latency_ms_p50=_percentile(latencies_ms, 50),
        latency_ms_p95=_percentile(latencies_ms, 95),
        live_timeline=timeline,
    )


# -- the live viewer (I/O) -------------------------------------------------------------------


class _Cutoff:
    """A loopback TCP forwarder that the viewer's FFmpeg connects through, so that stop() can
    end a read blocked on a silent server at once: closing it closes the viewer's side, and
    FFmpeg sees the end of the stream. It adds no delay of note (one copy, a few KB a frame).
    """

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._peer: dict[socket.socket, socket.socket] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="platform-viewer-cutoff",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(STOP_JOIN_S)

    def _run(self) -> None:
        try:
            while True:
                for key, _ in self._selector.select():
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._wake_r:
                        return
                    if sock is self._listener:
                        self._accept()
                    else:
                        self._pump(sock)
        finally:
            for sock in [*self._peer, self._listener, self._wake_r, self._wake_w]:
                sock.close()
            self._selector.close()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        try:
            upstream = socket.create_connection(self._target, timeout=STOP_JOIN_S)
        except OSError:
            client.close()  # the server is down: FFmpeg's open fails at once
            return
        for sock in (client, upstream):
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._selector.register(sock, selectors.EVENT_READ)
        self._peer[client], self._peer[upstream] = upstream, client

    def _pump(self, sock: socket.socket) -> None:
        other = self._peer[sock]
        try:
            data = sock.recv(_CHUNK_BYTES)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        for s in (sock, other):  # one side ended: end both
            self._selector.unregister(s)
            del self._peer[s]
            s.close()


@dataclass
class _SessionState:
    index: int
    first_wall: float
    last_wall: float
    frames: int = 0
    connections: int = 1


class PlatformViewer:
    """Plays a live stream from the platform (``rtmp://HOST:PORT/APP/KEY``) on a thread of its
    own and records every decoded video frame as a :class:`ViewedFrame`.

    It behaves like a player that stays on the page: one connection waits through stalls and
    between publishers (nginx-rtmp keeps a waiting viewer attached and hands it each new
    publisher from its first keyframe). When the connection fails or ends it connects again
    every ``RETRY_S`` until :meth:`stop`, which cuts the connection and returns within
    ``STOP_JOIN_S``.

    Publish sessions are told apart without asking the server: a new one starts when the
    codec configuration arrives again on a connection (nginx-rtmp sends each new publisher's
    sequence headers; FFmpeg marks the next packet with new extradata) or when the pts goes
    back (a new publisher starts its timestamps again; on a reconnect into the same session
    nginx-rtmp sends the publisher's own timestamps, which go on). A publisher that restarts
    with continuing timestamps while the viewer was between connections counts as the same
    session; the server's own log (``NginxRtmp.publish_sessions``) is the authority on
    platform sessions.

    FFmpeg options: ``rw_timeout`` is long (a player waits); ``fpsprobesize=0`` stops the open
    from holding back about 1.4 s of frames to guess the frame rate (measured: the first
    frames then arrive within ~0.3 s of capture instead of ~1.4 s); ``analyzeduration`` is
    ``PROBE_S``. The ``timeout`` option is not used: for ``rtmp://`` it means *listen* for a
    connection.
    """

    def __init__(self, url: str, *, retry_s: float = RETRY_S,
                 silent_server_timeout_s: float = SILENT_SERVER_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(
                f"PlatformViewer: {mask_url(url)!r} is not an rtmp:// or rtmps:// URL "
                "with a host"
            )
        self.url = url
        self.retry_s = retry_s
        self.options = {
            "rw_timeout": str(round(silent_server_timeout_s * 1_000_000)),
            "fpsprobesize": "0",
            "analyzeduration": str(round(PROBE_S * 1_000_000)),
        }
        self._target = (parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme])
        self._parts = parts
        self.connections = 0  # successful opens
        self.last_error = ""  # the latest connection error, stream key masked
        self._frames: list[ViewedFrame] = []
        self._sessions: list[_SessionState] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cutoff: _Cutoff | None = None
        self._crash: Exception | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> PlatformViewer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            raise PlatformViewerError(f"viewer of {mask_url(self.url)} already started")
        self._cutoff = _Cutoff(*self._target)
        local = self._parts._replace(netloc=f"127.0.0.1:{self._cutoff.port}").geturl()
        self._thread = threading.Thread(target=self._run, args=(local,),
                                        name="platform-viewer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching: cut the connection and wait (at most ``STOP_JOIN_S``) for the
        thread. Raises PlatformViewerError if the thread failed on something other than the
        network."""
        self._stop.set()
        if self._cutoff is not None:
            self._cutoff.close()
        if self._thread is not None:
            self._thread.join(STOP_JOIN_S)
        if self._crash is not None:
            raise PlatformViewerError(
                f"viewer of {mask_url(self.url)} failed: {self._crash!r}"
            ) from self._crash

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- results ---------------------------------------------------------------------------

    @property
    def frames(self) -> list[ViewedFrame]:
        """Every frame recorded so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._frames)

    @property
    def sessions(self) -> list[ViewerSession]:
        """The publish sessions seen so far, in order."""
        with self._lock:
            return [
                ViewerSession(s.index, s.first_wall, s.last_wall, s.frames, s.connections)
                for s in self._sessions
            ]

    # -- the thread ------------------------------------------------------------------------

    def _run(self, local_url: str) -> None:
        try:
            last_pts: float | None = None
            while not self._stop.is_set():
                last_pts = self._watch_once(local_url, last_pts)
                self._stop.wait(self.retry_s)
        except Exception as exc:  # a bug, not a network event: stop() raises it
            self._crash = exc
            log.exception("platform viewer of %s failed", mask_url(self.url))

    def _watch_once(self, local_url: str, last_pts: float | None) -> float | None:
        """One connection: open, decode until it ends. Returns the last pts seen."""
        try:
            container = av.open(local_url, options=self.options)
        except (av.FFmpegError, OSError) as exc:
            self.last_error = self._describe(exc)
            return last_pts
        try:
            if not container.streams.video:
                self.last_error = "no video stream"
                return last_pts
            self.connections += 1
            first_on_connection = True
            new_publish = False
            for packet in container.demux(container.streams.video[0]):
                if self._stop.is_set():
                    break
                if not first_on_connection and packet.has_sidedata("new_extradata"):
                    new_publish = True
                for frame in packet.decode():
                    arrival = time.time()
                    pts = frame.time
                    code = read_frame_code_gray(luma_plane(frame))
                    went_back = pts is not None and last_pts is not None and pts < last_pts
                    if self._stop.is_set():
                        break
                    self._record(arrival, pts, code, new_publish or went_back,
                                 first_on_connection)
                    first_on_connection = new_publish = False
                    if pts is not None:
                        last_pts = pts
        except (av.FFmpegError, OSError) as exc:
            if not self._stop.is_set():  # else it is the cut of stop()
                self.last_error = self._describe(exc)
        finally:
            with contextlib.suppress(av.FFmpegError, OSError):
                container.close()
        return last_pts

    def _record(self, arrival: float, pts: float | None, code: FrameCode | None,
                new_session: bool, first_on_connection: bool) -> None:
        with self._lock:
            if new_session or not self._sessions:
                self._sessions.append(_SessionState(len(self._sessions), arrival, arrival))
            elif first_on_connection:
                self._sessions[-1].connections += 1
            current = self._sessions[-1]
            current.frames += 1
            current.last_wall = arrival
            self._frames.append(ViewedFrame(arrival, pts, current.index, code))

    def _describe(self, exc: BaseException) -> str:
        """The error as text naming the platform's address (not the local forwarder's), with
        the stream key masked (FFmpeg quotes the whole URL)."""
        text = f"{type(exc).__name__}: {exc}"
        if self._cutoff is not None:
            text = text.replace(f"127.0.0.1:{self._cutoff.port}", self._parts.netloc)
        key = self._parts.path.rpartition("/")[2]
        return text.replace(key, mask_secret(key)) if key else text
