"""What farmers get today: RTMP pushed straight to the platform, reconnecting like OBS Studio.

The baseline of the real-pipeline benchmark (``abr="direct-rtmp"`` in ``benchmarks.real``):
no relay, no buffer, no resume. A capture loop draws the test pattern (``encoder.testpattern``,
frame number and capture time in every frame, so the platform-side viewer measures it like
every other run) at the wall-clock frame rate and hands each frame to an encoder that pushes
H.264 + AAC at a fixed bitrate as FLV over RTMP. When the connection breaks or stalls the
pusher drops it and connects again with OBS Studio's default "Automatically Reconnect" policy
(:class:`ReconnectPolicy`). Every new connection is a new RTMP publish, which a platform shows
as "stream interrupted" or a new live. Frames captured while disconnected are lost; frames
the connection cannot take are dropped (OBS drops frames under congestion too): only the
newest frame waits, so the live edge stays near the wall clock.

The encoder and the RTMP client are the ``ffmpeg`` command (Debian package ffmpeg), one
process per connection, fed raw frames on its stdin. Not PyAV, for two measured reasons:
PyAV opens an output's ``rtmp://`` connection with ``avio_open`` without options, so neither
``rw_timeout`` nor a send-buffer size reaches the socket (a dead link then blocks a write
until the kernel gives up, minutes later, after the default autotuned send buffer of up to
4 MB has swallowed tens of seconds of media), and it does so holding the GIL, which deadlocks
against a proxy thread in the same process. The command takes ``-rw_timeout`` and
``-send_buffer_size`` as protocol options.

The connection is judged the way an app judges it, from the sender's side only:

- connected: ffmpeg has taken the first frame (it reads its input only after the RTMP
  connect, handshake and publish have succeeded);
- stalled: one frame write has been blocked for ``STALL_S`` (5 s): the socket's send buffer
  (``SEND_BUFFER_BYTES``) and the link's queue are full and nothing moves. ffmpeg's own
  ``-rw_timeout`` (the same 5 s) ends a connect or handshake that hangs;
- broken: ffmpeg exited (connection refused or reset, publish refused by the server).

Video timestamps are the wall-clock time at which ffmpeg read each frame
(``-use_wallclock_as_timestamps``), the audio a 440 Hz tone paced in real time (``-re``), so
a dropped frame leaves a gap in time instead of shifting the rest.

Run it in a process of its own (``python -m benchmarks.direct_rtmp --url ... --duration S``
prints one JSON line with the :class:`DirectRtmpSummary`), or call :func:`push_direct_rtmp`
from a thread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from encoder.testpattern import TestPattern
from uplink.media import parse_resolution

log = logging.getLogger(__name__)

# OBS Studio's defaults for Settings > Advanced > "Automatically Reconnect": enabled, "Retry
# Delay" 2 s, "Maximum Retries" 25 (UI/window-basic-main.cpp, InitBasicConfigDefaults; older
# versions had 10 s and 20). libobs (obs-output.c, output_reconnect) waits the retry delay
# before the first attempt, multiplies the wait by 1.5 (plus up to 5 % random, left out here
# so runs repeat exactly) before each further attempt, caps it at 15 minutes, gives up after
# the maximum, and starts over from the retry delay once a connection succeeds. Written from
# that description, not from OBS's (GPL) code.
RETRY_DELAY_S = 2.0
MAX_RETRIES = 25
RETRY_BACKOFF_FACTOR = 1.5
RETRY_DELAY_MAX_S = 15 * 60.0

STALL_S = 5.0  # a frame write blocked this long: the connection is dead
SEND_BUFFER_BYTES = 64 * 1024  # the socket's send buffer (the kernel doubles it)
KEYFRAME_INTERVAL_S = 2.0  # what the platforms ask for
AUDIO_KBPS = 64
AUDIO_SAMPLE_RATE = 44100
TONE_HZ = 440
X264_PRESET = "ultrafast"  # a phone uses its hardware encoder; keep the CPU for the rest
INPUT_QUEUE_FRAMES = 4  # ffmpeg's input thread queue (frames read ahead of the encoder)
END_FLUSH_S = 10.0  # at the end, how long ffmpeg may take to send what it holds
WATCH_INTERVAL_S = 0.05
EXIT_OK = 0
EXIT_USAGE = 2


class DirectRtmpError(RuntimeError):
    """The pusher cannot run (ffmpeg missing, bad settings); the message says what to do."""


class ReconnectPolicy:
    """OBS Studio's reconnect rule as a sans-I/O core (see the module constants).

    ``disconnected()`` returns the seconds to wait before the next attempt, or None when the
    retries are used up (OBS stops the stream); ``connected()`` starts the count over.
    """

    def __init__(self, retry_delay_s: float = RETRY_DELAY_S, max_retries: int = MAX_RETRIES,
                 backoff_factor: float = RETRY_BACKOFF_FACTOR,
                 max_delay_s: float = RETRY_DELAY_MAX_S) -> None:
        if retry_delay_s <= 0 or max_retries < 0 or backoff_factor < 1 or max_delay_s <= 0:
            raise ValueError(
                f"ReconnectPolicy: retry_delay_s={retry_delay_s} must be > 0, max_retries="
                f"{max_retries} >= 0, backoff_factor={backoff_factor} >= 1, max_delay_s="
                f"{max_delay_s} > 0")
        self.retry_delay_s = retry_delay_s
        self.max_retries = max_retries
        self.backoff_factor = backoff_factor
        self.max_delay_s = max_delay_s
        self.retries = 0  # attempts since the last successful connection
        self._delay_s = retry_delay_s

    def connected(self) -> None:
        self.retries = 0
        self._delay_s = self.retry_delay_s

    def disconnected(self) -> float | None:
        if self.retries >= self.max_retries:
            return None
        if self.retries:
            self._delay_s = min(self._delay_s * self.backoff_factor, self.max_delay_s)
        self.retries += 1
        return self._delay_s


@dataclass
class DirectRtmpSummary:
    """What one push did; ``start_wall`` is the capture time of frame 0 (Unix seconds)."""

    frames_captured: int = 0
    frames_sent: int = 0  # taken by ffmpeg
    frames_dropped: int = 0  # captured while disconnected, or while the connection was full
    connections: int = 0  # RTMP sessions that took media
    attempts: int = 0  # ffmpeg runs started
    stalls: int = 0  # connections dropped because a write stayed blocked STALL_S
    failures: int = 0  # connections that ended on their own (refused, reset, publish refused)
    gave_up: bool = False  # retries used up before the end
    start_wall: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> DirectRtmpSummary:
        return cls(**json.loads(text))


def ffmpeg_command(url: str, *, kbps: int, width: int, height: int, fps: int,
                   ffmpeg: str = "ffmpeg") -> list[str]:
    """The ffmpeg command line of one connection: raw BGR frames on stdin, FLV to ``url``."""
    stall_us = str(round(STALL_S * 1_000_000))
    return [
        ffmpeg, "-hide_banner", "-nostats", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}",
        "-framerate", str(fps), "-use_wallclock_as_timestamps", "1",
        "-thread_queue_size", str(INPUT_QUEUE_FRAMES), "-i", "pipe:0",
        "-re", "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ}:sample_rate={AUDIO_SAMPLE_RATE}",
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", X264_PRESET, "-tune", "zerolatency",
        "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{kbps}k",
        "-g", str(round(KEYFRAME_INTERVAL_S * fps)), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", f"{AUDIO_KBPS}k",
        "-rw_timeout", stall_us, "-send_buffer_size", str(SEND_BUFFER_BYTES),
        "-shortest", "-f", "flv", url,
    ]


class _Connection:
    """One ffmpeg process and the thread that writes frames to its stdin.

    Only the newest frame waits: a frame offered while the previous one is still waiting
    replaces it (the older one is dropped).
    """

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._cond = threading.Condition()
        self._pending: bytes | None = None
        self._closing = False
        self.blocked_since: float | None = None  # monotonic start of the write in progress
        self.frames_written = 0
        self.dropped = 0
        self.broken = False
        self._stderr: list[bytes] = []
        self._writer = threading.Thread(target=self._write_loop, name="direct-rtmp-writer",
                                        daemon=True)
        self._reader = threading.Thread(target=self._read_stderr, name="direct-rtmp-stderr",
                                        daemon=True)
        self._writer.start()
        self._reader.start()

    def offer(self, frame: bytes) -> None:
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = frame
            self._cond.notify()

    def _write_loop(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                if self._pending is None:
                    break
                frame, self._pending = self._pending, None
                self.blocked_since = time.monotonic()
            try:
                stdin.write(frame)
                stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.broken = True
                break
            finally:
                self.blocked_since = None
            self.frames_written += 1
        with contextlib.suppress(OSError, ValueError):
            stdin.close()

    def _read_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        for line in stream:
            if len(self._stderr) < 50:
                self._stderr.append(line)

    @property
    def error(self) -> str:
        lines = [b.decode(errors="replace").strip() for b in self._stderr]
        return " | ".join(line for line in lines if line)[-300:]

    def alive(self) -> bool:
        return self.proc.poll() is None and not self.broken

    def stalled(self, now: float) -> bool:
        since = self.blocked_since
        return since is not None and now - since >= STALL_S

    def finish(self, timeout_s: float) -> None:
        """End cleanly: let ffmpeg take the waiting frame, flush and close the session."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._writer.join(timeout_s)
        try:
            self.proc.wait(max(0.1, timeout_s))
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with self._cond:
            self._closing = True
            if self._pending is not None:
                self.dropped += 1
                self._pending = None
            self._cond.notify()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._writer.join(2)
        self._reader.join(2)


def push_direct_rtmp(url: str, *, duration_s: float, kbps: int, width: int = 640,
                     height: int = 360, fps: int = 15, stop: threading.Event | None = None,
                     policy: ReconnectPolicy | None = None,
                     log_line: Callable[[str], None] | None = None) -> DirectRtmpSummary:
    """Capture ``duration_s`` of test pattern at ``fps`` and push it to ``url`` (``rtmp://``)
    at ``kbps``, reconnecting like OBS (see the module docstring). ``stop`` ends it early.
    Raises DirectRtmpError if ffmpeg is not installed."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise DirectRtmpError("direct RTMP needs the ffmpeg command (Debian package ffmpeg): "
                              "apt-get install ffmpeg")
    if not (duration_s > 0 and kbps > 0 and fps > 0 and width > 0 and height > 0):
        raise DirectRtmpError(f"direct RTMP: duration_s={duration_s}, kbps={kbps}, fps={fps} "
                              f"and the size {width}x{height} must be > 0")
    if width % 2 or height % 2:
        raise DirectRtmpError(f"direct RTMP: the size {width}x{height} must be even")
    policy = policy or ReconnectPolicy()
    say = log_line or (lambda line: log.info("%s", line))
    command = ffmpeg_command(url, kbps=kbps, width=width, height=height, fps=fps,
                             ffmpeg=ffmpeg)
    pattern = TestPattern(width, height, fps, title="direct RTMP")
    summary = DirectRtmpSummary()
    total_frames = round(duration_s * fps)
    conn: _Connection | None = None
    conn_connected = False
    retry_at: float | None = 0.0  # monotonic time of the next attempt; None: gave up
    t0 = time.monotonic()

    def drop_connection(now: float, reason: str) -> None:
        nonlocal conn, conn_connected, retry_at
        assert conn is not None
        error = conn.error
        conn.kill()
        summary.frames_sent += conn.frames_written
        summary.frames_dropped += conn.dropped
        conn, conn_connected = None, False
        delay = policy.disconnected()
        if delay is None:
            retry_at = None
            summary.gave_up = True
            say(f"direct-rtmp: {reason}; retries used up, stream stopped")
        else:
            retry_at = now + delay
            say(f"direct-rtmp: {reason}{f' ({error})' if error else ''}; reconnecting in "
                f"{delay:.1f} s (retry {policy.retries}/{policy.max_retries})")

    try:
        for n in range(total_frames):
            due = t0 + n / fps
            # watch the connection until the frame is due
            while True:
                now = time.monotonic()
                if stop is not None and stop.is_set():
                    break
                if conn is not None:
                    if not conn_connected and conn.frames_written > 0:
                        conn_connected = True
                        summary.connections += 1
                        policy.connected()
                        say(f"direct-rtmp: connected (session {summary.connections}) at "
                            f"{now - t0:.1f} s")
                    if conn.stalled(now):
                        summary.stalls += 1
                        drop_connection(now, f"write blocked {STALL_S:g} s at {now - t0:.1f} s")
                    elif not conn.alive():
                        summary.failures += 1
                        drop_connection(now, f"connection ended at {now - t0:.1f} s")
                if conn is None and retry_at is not None and now >= retry_at:
                    summary.attempts += 1
                    conn = _Connection(command)
                    retry_at = None  # set again when this connection ends
                if now >= due:
                    break
                time.sleep(min(WATCH_INTERVAL_S, due - now))
            if stop is not None and stop.is_set():
                break
            image: npt.NDArray[np.uint8] = pattern.video_frame(n, int(time.time() * 1000))
            if n == 0:
                summary.start_wall = time.time()
            summary.frames_captured += 1
            if conn is not None:
                conn.offer(image.tobytes())
            else:
                summary.frames_dropped += 1
        if conn is not None:
            conn.finish(END_FLUSH_S)
            summary.frames_sent += conn.frames_written
            summary.frames_dropped += conn.dropped
            if not conn_connected and conn.frames_written > 0:
                summary.connections += 1
            conn = None
    finally:
        if conn is not None:
            conn.kill()
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.direct_rtmp --url rtmp://... --duration S``: push, then print the
    summary as one JSON line on stdout (progress on stderr). SIGTERM/SIGINT end it early."""
    import signal

    p = argparse.ArgumentParser(prog="python -m benchmarks.direct_rtmp",
                                description="Push the test pattern straight to an RTMP server "
                                            "at a fixed bitrate, reconnecting like OBS Studio.")
    p.add_argument("--url", required=True, help="rtmp://HOST:PORT/APP/KEY")
    p.add_argument("--duration", type=float, required=True, metavar="S")
    p.add_argument("--kbps", type=int, default=800, help="video bitrate (default %(default)s)")
    p.add_argument("--resolution", default="640x360", help="WIDTHxHEIGHT (default %(default)s)")
    p.add_argument("--fps", type=int, default=15, help="frame rate (default %(default)s)")
    args = p.parse_args(argv)
    try:
        width, height = parse_resolution(args.resolution)
    except ValueError:
        print(f"direct_rtmp: --resolution {args.resolution!r} is not WIDTHxHEIGHT with even "
              "numbers",
              file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        summary = push_direct_rtmp(args.url, duration_s=args.duration, kbps=args.kbps,
                                   width=width, height=height, fps=args.fps, stop=stop,
                                   log_line=say)
    except DirectRtmpError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    print(summary.to_json(), flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
