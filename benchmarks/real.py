"""One benchmark run through the real pipeline, in real time: ``run_real(trace, abr, ...)``.

```
 steadycast encode ──▶ LinkEmulator ──▶ steadycast relay ──RTMP──▶ nginx-rtmp ──▶ PlatformViewer
 (test pattern, --abr)  (trace + outages,  (buffer_ms, recording)   ("platform")    (decodes every
                         delay; a thread)                                             frame code)
```

``abr="direct-rtmp"`` replaces the encoder and the relay with what farmers use today
(``benchmarks.direct_rtmp``: RTMP at a fixed ``start_kbps`` straight to nginx through the same
emulated link, reconnecting like OBS Studio).

Every part is real: the encoder and the relay are ``steadycast`` subprocesses, nginx with its
RTMP module is the platform (``harness.nginx_platform``), and what the viewers saw is
measured on the platform side by decoding the frame code the test pattern draws into every
frame (``benchmarks.platform_viewer``), without trusting the code under test.

**The emulator runs in a thread of this process** (its own asyncio loop), not as a
``steadycast emulate`` subprocess: the run reads its per-second delivered bytes and its trace
clock directly (no status lines to parse), and the trace clock starts at a known instant. Its
work is small (tens of kB/s through a few sockets). Nothing in this process may block on the
emulator while holding the GIL, which is why the direct-RTMP pusher is a subprocess.

**Clocks.** The emulator's trace clock starts right before the encoder (or the pusher) is
launched: second 0 of the trace, of the outages and of ``series`` is that instant. The sender
starts capturing a moment later (Python start-up, about a second; each run measures it as the
capture time of frame 0 minus the trace's start and reports it in ``notes``), so an outage at
trace second t hits media captured at about t minus that start-up. The oracle (capacity,
outages, unavoidable interruption) is computed over trace seconds ``[0, duration_s)``.

**What the viewer is judged on** (``score_viewing``): the window during which the platform
should show live video, on the platform's clock: from ``STARTUP_GRACE_S`` after frame 0 could
first be shown (capture time of frame 0 plus the relay's ``buffer_ms``; plus nothing for
direct RTMP, which has no buffer) to the end of the captured media shown at the same delay.
The grace leaves out the session's start-up (connection, first keyframe), which is no
controller's doing.

**Figures** (``RunResult``): ``delivered_kbps_mean`` and the ``delivered_kbps`` series are the
bytes the emulated link delivered (the sender's payload plus its framing: WebSocket and uplink
headers, or RTMP/FLV), the same instrument for every run and the same unit as the trace's
capacity; ``sent_kbps_mean`` is the encoder's own count of media payload sent (retransmissions
included) or, for direct RTMP, the bytes the link took from the pusher. ``frames_archived``
counts distinct frame numbers in the relay's recording (direct RTMP: in the platform's
recordings). ``platform_sessions`` comes from nginx's own log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import direct_rtmp
from benchmarks.direct_rtmp import DirectRtmpSummary
from benchmarks.oracle import floor_bound_interruption_s
from benchmarks.platform_viewer import PlatformViewer, ViewingStats, read_frame_codes, score_viewing
from benchmarks.results import RunResult, qoe_score
from encoder.abr import names as abr_names
from encoder.settings import AUDIO_KBPS
from harness.local_services import free_port, stop_process
from harness.nginx_platform import NginxRtmp, missing_nginx_rtmp
from linklab.emulator import LinkEmulator, LinkSpec
from linklab.outages import overlay_outages, unavoidable_interruption_s
from linklab.traces import Outage, Trace
from uplink.media import parse_resolution

DIRECT_RTMP = "direct-rtmp"
STREAM = "bench"  # the relay's stream name
PLATFORM_KEY = "bench"  # the stream key at the platform
TOKEN = "steadycast-bench-publish-token"  # the relay's publish token (local only)
MIN_KBPS = 150  # the encoder's floor and ceiling, as `steadycast encode` and the simulator
MAX_KBPS = 2500
X264_PRESET = "ultrafast"  # encoder and relay: the whole pipeline shares two cores
OUTPUT_VIDEO_KBPS = 800  # the relay's constant output profile (its size and rate: the run's)
OUTPUT_AUDIO_KBPS = 64
OUTPUT_KEYFRAME_S = 2.0

SAMPLE_INTERVAL_S = 0.25  # encoder metrics, relay status and emulator counters
BIN_S = 1.0  # series bins
PROGRESS_INTERVAL_S = 5.0
MIN_OUTAGE_S = 0.5  # the oracle's outages: overlay outages and the trace's own gaps this long
STARTUP_GRACE_S = 2.0  # the first seconds of the session are not judged (see the docstring)
START_TIMEOUT_S = 30.0  # relay /healthz after start
DRAIN_TIMEOUT_S = 60.0  # after the capture ends: the encoder's backlog upload
DIRECT_END_TIMEOUT_S = 30.0  # after the capture ends: the pusher's last flush
PLAYOUT_END_MARGIN_S = 15.0  # beyond buffer_ms: the relay plays its buffer out and closes
VIEWER_TAIL_S = 1.5  # the viewer keeps watching this long after the platform session ended
HTTP_TIMEOUT_S = 1.0
LOG_TAIL_CHARS = 3000

# the run's files under ``workdir``
RELAY_RECORDINGS_DIR = "relay-recordings"  # the relay's archive: <dir>/<STREAM>/*.ts
PLATFORM_DIR = "platform"  # nginx's files; its recordings in <dir>/rec/*.flv
_RUN_DIRS = (RELAY_RECORDINGS_DIR, PLATFORM_DIR, "relay-state")

T = TypeVar("T")


class RealRunError(RuntimeError):
    """A real run that could not be carried out; the message names the part and why."""


# --- small pure helpers (tested without processes) ---------------------------------------------
def parse_prometheus(text: str) -> dict[str, float]:
    """Metric name (labels dropped) -> value of its first sample in Prometheus text format."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m and m.group(1) not in values:
            with contextlib.suppress(ValueError):
                values[m.group(1)] = float(m.group(3))
    return values


def parse_encode_summary(text: str) -> dict[str, str]:
    """The key=value pairs of the encoder's closing ``encode done: ...`` line (empty if none)."""
    lines = re.findall(r"encode done:(.*)", text)
    return dict(re.findall(r"(\w+)=(\S+)", lines[-1])) if lines else {}


def bin_means(times_s: Sequence[float], values: Sequence[float], n_bins: int,
              bin_s: float = BIN_S) -> list[float | None]:
    """The mean of the values whose time falls in each bin ``[i*bin_s, (i+1)*bin_s)``; None
    for a bin without one."""
    sums = [0.0] * n_bins
    counts = [0] * n_bins
    for t, v in zip(times_s, values, strict=True):
        i = math.floor(t / bin_s)
        if 0 <= i < n_bins:
            sums[i] += v
            counts[i] += 1
    return [s / c if c else None for s, c in zip(sums, counts, strict=True)]


def fill_forward(values: Sequence[float | None], first: float) -> list[float]:
    """Each None replaced by the last value before it (``first`` at the start)."""
    out: list[float] = []
    last = first
    for v in values:
        last = last if v is None else v
        out.append(last)
    return out


def count_switches(values: Sequence[float], min_change: float = 1.0) -> int:
    """How many times consecutive values differ by at least ``min_change``."""
    return sum(1 for a, b in zip(values, values[1:], strict=False) if abs(b - a) >= min_change)


def outage_flags(outages: Sequence[Outage], n_bins: int, duration_s: float,
                 bin_s: float = BIN_S) -> list[float]:
    """1.0 for a bin at least half covered by an outage, else 0.0 (as the simulator marks)."""
    flags = [0.0] * n_bins
    for o in outages:
        for i in range(max(0, int(o.start_s // bin_s)), min(n_bins, math.ceil(o.end_s / bin_s))):
            length = min(bin_s, duration_s - i * bin_s)
            covered = min(o.end_s, (i + 1) * bin_s) - max(o.start_s, i * bin_s)
            if covered >= length / 2:
                flags[i] = 1.0
    return flags


def capture_start_wall(codes: Sequence[Any], fps: float) -> float | None:
    """Capture wall time (Unix seconds) of frame 0 from frame codes: frame 0's own when there,
    else the earliest ``capture - number / fps``. None without codes."""
    best: float | None = None
    for code in codes:
        if code is None:
            continue
        if code.frame_number == 0:
            return float(code.capture_time_ms) / 1000.0
        estimate = code.capture_time_ms / 1000.0 - code.frame_number / fps
        best = estimate if best is None else min(best, estimate)
    return best


def relay_config_toml(*, port: int, workdir: Path, record_dir: Path, width: int, height: int,
                      fps: int, buffer_ms: int, platform_url: str | None) -> str:
    """The relay's config for one run: one stream, its recording, and the platform (if any)
    as its only destination."""
    def q(value: object) -> str:
        return json.dumps(str(value))  # a TOML basic string

    destination = ""
    if platform_url is not None:
        destination = (f"\n[[streams.{STREAM}.destinations]]\nname = \"platform\"\n"
                       f"url = {q(platform_url)}\nkey = {q(PLATFORM_KEY)}\n")
    return (f"[relay]\nlisten = {q(f'127.0.0.1:{port}')}\nrecord_dir = {q(record_dir)}\n"
            f"event_log = {q(workdir / 'relay-events.jsonl')}\n"
            f"state_dir = {q(workdir / 'relay-state')}\n\n"
            f"[output]\nwidth = {width}\nheight = {height}\nfps = {fps}\n"
            f"video_kbps = {OUTPUT_VIDEO_KBPS}\naudio_kbps = {OUTPUT_AUDIO_KBPS}\n"
            f"keyframe_s = {OUTPUT_KEYFRAME_S}\nx264_preset = {q(X264_PRESET)}\n\n"
            f"[streams.{STREAM}]\ntoken = {q(TOKEN)}\ntitle = \"steadycast bench\"\n"
            f"buffer_ms = {buffer_ms}\nrecord = true\n{destination}")


# --- the parts -----------------------------------------------------------------------------------
class _EmulatorThread:
    """A ``LinkEmulator`` on its own asyncio loop in a daemon thread; ``call`` runs a function
    on that loop (the emulator is not thread-safe) and returns its result."""

    def __init__(self, emulator: LinkEmulator) -> None:
        self.emulator = emulator
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="link-emulator",
                                        daemon=True)
        self.start_wall = 0.0  # time.time() at the trace's second 0

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def start(self) -> None:
        self._thread.start()
        self._run(self.emulator.start())
        self.start_wall = time.time() - (time.monotonic() - self.emulator.start_time)

    def call(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return self._run(run())

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                self._run(self.emulator.stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return ""


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as r:
            body: bytes = r.read()
            return body
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _stream_status(relay_port: int) -> dict[str, Any] | None:
    body = _get(f"http://127.0.0.1:{relay_port}/api/streams")
    if body is None:
        return None
    with contextlib.suppress(ValueError):
        for s in json.loads(body).get("streams", []):
            if s.get("name") == STREAM:
                return dict(s)
    return None


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RealRunError(f"the relay exited with code {proc.returncode} at start "
                               f"(log {log_path}):\n{_log_tail(log_path)}")
        if _get(f"http://127.0.0.1:{port}/healthz") is not None:
            return
        time.sleep(0.1)
    raise RealRunError(f"the relay did not answer /healthz within {START_TIMEOUT_S:g} s "
                       f"(log {log_path}):\n{_log_tail(log_path)}")


@dataclass
class _Sample:
    t_s: float  # on the trace clock
    target_kbps: float | None = None
    sent_bytes: float | None = None
    acked_bytes: float | None = None
    frames_captured: float | None = None
    relay_buffer_ms: float | None = None
    output_source: str | None = None
    output_frames: dict[str, int] = field(default_factory=dict)
    skipped_late_units: int = 0
    link_offered_bytes: int = 0
    link_delivered_bytes: int = 0


@dataclass
class _Run:
    """Everything a run collects before it is turned into a ``RunResult``."""

    samples: list[_Sample] = field(default_factory=list)
    delivered_per_s: list[int] = field(default_factory=list)
    frames: list[Any] = field(default_factory=list)  # ViewedFrame
    viewer_sessions: int = 0
    platform_sessions: int = 0
    archive_codes: list[Any] = field(default_factory=list)  # FrameCode | None
    encoder_summary: dict[str, str] = field(default_factory=dict)
    direct: DirectRtmpSummary | None = None
    relay_status: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


# --- the run -------------------------------------------------------------------------------------
def run_real(trace: Trace, abr: str, *, duration_s: float = 60, buffer_ms: int = 5000,
             outages: Sequence[Outage] = (), delay_ms: float = 40, seed: int = 0,
             workdir: Path, start_kbps: int = 800, resolution: str = "640x360", fps: int = 15,
             progress: Callable[[str], None] | None = None,
             require_platform: bool = True) -> RunResult:
    """Run ``abr`` (an ``encoder.abr`` name, or ``"direct-rtmp"``) for ``duration_s`` of
    capture over ``trace`` with ``outages`` overlaid and ``delay_ms`` each way, behind a relay
    buffer of ``buffer_ms``, in real time (see the module docstring). Files go to ``workdir``
    (relay and encoder logs, the relay's recording, the platform's recordings).

    Without nginx-rtmp installed, ``require_platform=False`` runs relay-only (no platform, no
    viewer: interruption from the relay's own output status, no latency, 0 sessions); with the
    default it raises RealRunError naming the packages. Every process and thread started is
    stopped before this returns or raises."""
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise RealRunError(f"run_real: duration_s={duration_s!r} must be > 0")
    if not 0 <= buffer_ms <= 120_000:
        raise RealRunError(f"run_real: buffer_ms={buffer_ms} must be within 0..120000 (the "
                           "relay's limits)")
    if fps <= 0 or start_kbps <= 0:
        raise RealRunError(f"run_real: fps={fps} and start_kbps={start_kbps} must be > 0")
    try:
        width, height = parse_resolution(resolution)
    except ValueError:
        raise RealRunError(f"run_real: resolution {resolution!r} must be WIDTHxHEIGHT with "
                           "even numbers, e.g. 640x360") from None
    direct = abr == DIRECT_RTMP
    valid = [*abr_names(), DIRECT_RTMP]
    if abr not in valid:
        raise RealRunError(f"run_real: unknown controller {abr!r}; choose from "
                           f"{', '.join(valid)}")
    missing = missing_nginx_rtmp()
    platform_on = not missing
    if missing and (require_platform or direct):
        raise RealRunError(f"the real benchmark needs nginx with its RTMP module as the "
                           f"platform: apt-get install {' '.join(missing)}")
    say = progress or (lambda _line: None)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for name in _RUN_DIRS:  # a previous run's files would be counted as this run's
        shutil.rmtree(workdir / name, ignore_errors=True)
    outages = list(outages)
    run = _Run()
    timing: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        nginx: NginxRtmp | None = None
        if platform_on:
            nginx = NginxRtmp(workdir / PLATFORM_DIR)
            say("starting the platform (nginx-rtmp)")
            nginx.start()
            stack.callback(nginx.stop)
        viewer: PlatformViewer | None = None
        if nginx is not None:
            viewer = PlatformViewer(f"{nginx.url('live')}/{PLATFORM_KEY}")
            viewer.start()
            stack.callback(_stop_viewer_quietly, viewer)
        relay: subprocess.Popen[bytes] | None = None
        relay_log = workdir / "relay.log"
        relay_port = 0
        if direct:
            assert nginx is not None
            target = ("127.0.0.1", nginx.port)
        else:
            relay_port = free_port()
            record_dir = workdir / RELAY_RECORDINGS_DIR
            config = workdir / "relay.toml"
            config.write_text(relay_config_toml(
                port=relay_port, workdir=workdir, record_dir=record_dir, width=width,
                height=height, fps=fps, buffer_ms=buffer_ms,
                platform_url=nginx.url("live") if nginx is not None else None), encoding="utf-8")
            say(f"starting the relay (buffer {buffer_ms / 1000:g} s)")
            with relay_log.open("wb") as log_file:
                relay = subprocess.Popen(
                    [sys.executable, "-m", "steadycast.cli", "relay", "--config", str(config)],
                    stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
            stack.callback(stop_process, relay)
            _wait_healthy(relay, relay_port, relay_log)
            target = ("127.0.0.1", relay_port)
        uplink = LinkSpec(trace=trace, delay_ms=delay_ms, outages=tuple(outages), seed=seed)
        downlink = LinkSpec(trace=None, delay_ms=delay_ms, outages=tuple(outages),
                            seed=seed + 1)  # a dead radio is dead both ways
        emulator = _EmulatorThread(LinkEmulator(("127.0.0.1", 0), target, uplink, downlink))
        stack.callback(emulator.stop)
        emulator.start()
        timing["trace_start_wall"] = emulator.start_wall
        if direct:
            assert nginx is not None
            sender = _start_direct(workdir, emulator.emulator.port, duration_s=duration_s,
                                   kbps=start_kbps, resolution=resolution, fps=fps)
            say(f"pushing RTMP straight to the platform at {start_kbps} kbit/s "
                f"({duration_s:g} s)")
        else:
            metrics_port = free_port()
            sender = _start_encoder(workdir, emulator.emulator.port, abr=abr,
                                    duration_s=duration_s, start_kbps=start_kbps,
                                    resolution=resolution, fps=fps, metrics_port=metrics_port)
            say(f"encoding with --abr {abr} at {start_kbps} kbit/s to start ({duration_s:g} s)")
        stack.callback(stop_process, sender)
        grace_s = DIRECT_END_TIMEOUT_S if direct else DRAIN_TIMEOUT_S
        end_by = time.monotonic() + duration_s + grace_s
        next_sample = time.monotonic()
        next_progress = PROGRESS_INTERVAL_S
        while sender.poll() is None and time.monotonic() < end_by:
            if relay is not None and relay.poll() is not None:
                raise RealRunError(f"the relay exited with code {relay.returncode} during the "
                                   f"run (log {relay_log}):\n{_log_tail(relay_log)}")
            sample = _take_sample(emulator, None if direct else metrics_port, relay_port)
            run.samples.append(sample)
            if sample.t_s >= next_progress and sample.t_s <= duration_s + 1:
                say(_progress_line(sample, run.samples, trace, outages))
                next_progress += PROGRESS_INTERVAL_S
            next_sample += SAMPLE_INTERVAL_S
            time.sleep(max(0.0, next_sample - time.monotonic()))
        if sender.poll() is None:
            run.notes.append(f"the sender had not finished {grace_s:g} s after the capture's "
                             "end and was stopped")
            say("the sender did not finish in time; stopping it")
            stop_process(sender)
        run.delivered_per_s = emulator.call(
            lambda: emulator.emulator.stats("up").delivered_bytes_per_s)
        if direct:
            run.direct = _read_direct_summary(workdir)
            if run.direct is None:
                raise RealRunError(f"the direct-RTMP pusher ended with code {sender.returncode} "
                                   f"and no summary (log {workdir / 'direct.log'}):\n"
                                   f"{_log_tail(workdir / 'direct.log')}")
        else:
            run.encoder_summary = parse_encode_summary(
                _log_tail(workdir / "encoder.out"))
            if not run.encoder_summary and not run.notes:
                raise RealRunError(f"the encoder ended with code {sender.returncode} and no "
                                   f"closing line (log {workdir / 'encoder.log'}):\n"
                                   f"{_log_tail(workdir / 'encoder.log')}")
            say("capture done; the relay plays its buffer out")
            assert relay is not None
            run.relay_status = _wait_relay_end(relay, relay_port, buffer_ms)
        time.sleep(VIEWER_TAIL_S if viewer is not None else 0)
        if viewer is not None:
            viewer.stop()
            run.frames = viewer.frames
            run.viewer_sessions = len(viewer.sessions)
        # the stack stops the rest: the sender, the emulator, the relay, then nginx (gracefully,
        # so that its access log has every session)
    if nginx is not None:
        run.platform_sessions = len(nginx.publish_sessions(PLATFORM_KEY))
        if run.platform_sessions == 0:
            run.platform_sessions = len(nginx.recordings(PLATFORM_KEY))
    run.archive_codes = _archive_codes(workdir, nginx, direct)
    return _result(run, trace, abr, duration_s=duration_s, buffer_ms=0 if direct else buffer_ms,
                   outages=outages, start_kbps=start_kbps, fps=fps, timing=timing,
                   platform_on=platform_on, delay_ms=delay_ms)


def _stop_viewer_quietly(viewer: PlatformViewer) -> None:
    with contextlib.suppress(Exception):
        viewer.stop()


def _start_encoder(workdir: Path, emulator_port: int, *, abr: str, duration_s: float,
                   start_kbps: int, resolution: str, fps: int,
                   metrics_port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "steadycast.cli", "encode",
        "--relay", f"http://127.0.0.1:{emulator_port}", "--stream", STREAM,
        "--source", "testpattern", "--title", "steadycast bench", "--abr", abr,
        "--start-kbps", str(start_kbps), "--min-kbps", str(min(MIN_KBPS, start_kbps)),
        "--max-kbps", str(max(MAX_KBPS, start_kbps)), "--resolution", resolution,
        "--fps", str(fps), "--duration", f"{duration_s:g}", "--preset", X264_PRESET,
        "--metrics-port", str(metrics_port), "--events", str(workdir / "encoder-events.jsonl"),
        "--status-interval", f"{PROGRESS_INTERVAL_S:g}",
    ]
    with (workdir / "encoder.out").open("wb") as out, (workdir / "encoder.log").open("wb") as err:
        return subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True,
                                env={**os.environ, "STEADYCAST_TOKEN": TOKEN})


def _start_direct(workdir: Path, emulator_port: int, *, duration_s: float, kbps: int,
                  resolution: str, fps: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "benchmarks.direct_rtmp",
               "--url", f"rtmp://127.0.0.1:{emulator_port}/live/{PLATFORM_KEY}",
               "--duration", f"{duration_s:g}", "--kbps", str(kbps),
               "--resolution", resolution, "--fps", str(fps)]
    with (workdir / "direct.out").open("wb") as out, (workdir / "direct.log").open("wb") as err:
        return subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True)


def _read_direct_summary(workdir: Path) -> DirectRtmpSummary | None:
    for line in reversed(_log_tail(workdir / "direct.out").splitlines()):
        with contextlib.suppress(ValueError, TypeError):
            return DirectRtmpSummary.from_json(line)
    return None


def _take_sample(emulator: _EmulatorThread, metrics_port: int | None,
                 relay_port: int) -> _Sample:
    def link() -> tuple[float, int, int]:
        s = emulator.emulator.stats("up")
        return emulator.emulator.elapsed_s(), s.offered_bytes, s.delivered_bytes

    t_s, offered, delivered = emulator.call(link)
    sample = _Sample(t_s=t_s, link_offered_bytes=offered, link_delivered_bytes=delivered)
    if metrics_port is not None:
        body = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        if body is not None:
            m = parse_prometheus(body.decode(errors="replace"))
            prefix = "steadycast_encoder_"
            sample.target_kbps = m.get(prefix + "target_bitrate_kbps")
            sample.sent_bytes = m.get(prefix + "sent_bytes_total", m.get(prefix + "sent_bytes"))
            sample.acked_bytes = m.get(prefix + "acked_bytes_total",
                                       m.get(prefix + "acked_bytes"))
            sample.frames_captured = m.get(prefix + "frames_captured_total",
                                           m.get(prefix + "frames_captured"))
    if relay_port:
        status = _stream_status(relay_port)
        if status is not None:
            sample.relay_buffer_ms = float(status.get("buffer_ms", 0))
            sample.output_source = str(status.get("output_source", ""))
            sample.skipped_late_units = int(status.get("skipped_late_units", 0) or 0)
            frames = status.get("output_frames")
            if isinstance(frames, dict):
                sample.output_frames = {str(k): int(v) for k, v in frames.items()}
    return sample


def _progress_line(sample: _Sample, samples: Sequence[_Sample], trace: Trace,
                   outages: Sequence[Outage]) -> str:
    t = sample.t_s
    second = max(0, math.floor(t) - 1)
    capacity = float(trace.capacity_kbps(second + 1.0)[-1]) if second >= 0 else 0.0
    out = any(o.start_s <= t < o.end_s for o in outages)
    earlier = [s for s in samples if s.t_s <= t - 1.0]
    delivered = 0.0
    if earlier:
        delivered = (sample.link_delivered_bytes - earlier[-1].link_delivered_bytes) * 8 / 1000 \
            / max(1e-6, t - earlier[-1].t_s)
    parts = [f"{t:5.1f} s", "OUTAGE" if out else f"link {capacity:5.0f} kbit/s",
             f"delivered {delivered:5.0f}"]
    if sample.target_kbps is not None:
        parts.append(f"target {sample.target_kbps:5.0f}")
    if sample.relay_buffer_ms is not None:
        parts.append(f"relay buffer {sample.relay_buffer_ms / 1000:4.1f} s")
    if sample.output_source:
        parts.append(f"relay output {sample.output_source}")
    return "  ".join(parts)


def _wait_relay_end(relay: subprocess.Popen[bytes], relay_port: int,
                    buffer_ms: int) -> dict[str, Any] | None:
    """Wait until the relay has played its buffer out and closed the platform sessions."""
    deadline = time.monotonic() + buffer_ms / 1000 + PLAYOUT_END_MARGIN_S
    last = None
    while time.monotonic() < deadline and relay.poll() is None:
        status = _stream_status(relay_port)
        if status is not None:
            last = status
            if status.get("state") == "ended" and status.get("output_source") == "offline":
                return status
        time.sleep(0.2)
    return last


def relay_recordings(workdir: Path) -> list[Path]:
    """The relay's recording files of a run in ``workdir`` (one per sender session)."""
    return sorted((Path(workdir) / RELAY_RECORDINGS_DIR / STREAM).glob("*.ts"))


def platform_recordings(workdir: Path) -> list[Path]:
    """The platform's recording files of a run in ``workdir`` (one per RTMP session)."""
    return sorted((Path(workdir) / PLATFORM_DIR / "rec").glob(f"{PLATFORM_KEY}-*.flv"))


def _archive_codes(workdir: Path, nginx: NginxRtmp | None, direct: bool) -> list[Any]:
    """Frame codes of every recorded frame: the relay's recording, or for direct RTMP the
    platform's recordings (what a farmer would find in the platform's archive)."""
    if direct:
        files = nginx.recordings(PLATFORM_KEY) if nginx is not None else []
    else:
        files = relay_recordings(workdir)
    codes: list[Any] = []
    for path in files:
        with contextlib.suppress(Exception):  # a file cut short by a kill still counts in part
            codes.extend(read_frame_codes(path))
    return codes


def _value_at(samples: Sequence[_Sample], attr: str, t_s: float) -> tuple[float, float] | None:
    """(time, value) of the last sample at or before ``t_s`` that has ``attr``."""
    found = None
    for s in samples:
        v = getattr(s, attr)
        if s.t_s <= t_s and v is not None:
            found = (s.t_s, float(v))
    return found


def _relay_only_viewing(run: _Run, *, window: tuple[float, float], trace_start_wall: float,
                        fps: int) -> ViewingStats:
    """Without a platform: the share of samples in the window where the relay's output was
    not live, and its live output frames."""
    lo, hi = (w - trace_start_wall for w in window)
    inside = [s for s in run.samples if lo <= s.t_s < hi and s.output_source]
    not_live = sum(1 for s in inside if s.output_source != "live")
    window_s = max(0.0, hi - lo)
    interruption = window_s * not_live / len(inside) if inside else window_s
    live_frames = 0
    for s in reversed(run.samples):
        if s.output_frames:
            live_frames = s.output_frames.get("live", 0)
            break
    return ViewingStats(frames_live=live_frames, frames_frozen=0, frames_slate=0, sessions=0,
                        window_s=window_s, live_s=window_s - interruption,
                        interruption_s=interruption, slate_s=0.0, frozen_s=0.0, no_video_s=0.0,
                        stall_s=0.0, latency_ms_p50=None, latency_ms_p95=None)


def _result(run: _Run, trace: Trace, abr: str, *, duration_s: float, buffer_ms: int,
            outages: Sequence[Outage], start_kbps: int, fps: int, timing: dict[str, float],
            platform_on: bool, delay_ms: float) -> RunResult:
    direct = abr == DIRECT_RTMP
    d = float(duration_s)
    n = max(1, math.ceil(d / BIN_S - 1e-9))
    overlaid = overlay_outages(trace, outages, d)
    gaps = overlaid.outages(d, MIN_OUTAGE_S)
    capacity = [float(x) for x in overlaid.capacity_kbps(d, BIN_S)]
    capacity_mean = overlaid.mean_kbps(d)
    unavoidable = unavoidable_interruption_s(gaps, buffer_ms / 1000)
    # the direct baseline sends a fixed bitrate without a buffer: no floor bound (None)
    floor_kbps = (start_kbps if direct else min(MIN_KBPS, start_kbps)) + AUDIO_KBPS
    floor_bound = floor_bound_interruption_s(overlaid, floor_kbps=floor_kbps,
                                             buffer_s=buffer_ms / 1000,
                                             one_way_delay_s=delay_ms / 1000, duration_s=d)

    delivered_bins = (list(run.delivered_per_s) + [0] * n)[:n]
    lengths = [min(BIN_S, d - i * BIN_S) for i in range(n)]
    delivered_kbps = [b * 8 / 1000 / length for b, length in zip(delivered_bins, lengths,
                                                                 strict=True)]
    delivered_mean = sum(delivered_bins) * 8 / 1000 / d

    if direct:
        target = [float(start_kbps)] * n
        buffer_series = [0.0] * n
        switches = 0
        sent = _value_at(run.samples, "link_offered_bytes", d)
    else:
        with_target = [s for s in run.samples if s.target_kbps is not None]
        target = fill_forward(bin_means([s.t_s for s in with_target],
                                        [float(s.target_kbps or 0) for s in with_target], n),
                              float(start_kbps))
        switches = count_switches([float(s.target_kbps or 0) for s in with_target
                                   if s.t_s <= d])
        with_buffer = [s for s in run.samples if s.relay_buffer_ms is not None]
        buffer_series = [v if v is not None else 0.0 for v in bin_means(
            [s.t_s for s in with_buffer], [float(s.relay_buffer_ms or 0) for s in with_buffer],
            n)]
        sent = _value_at(run.samples, "sent_bytes", d)
    sent_mean = sent[1] * 8 / 1000 / d if sent is not None else 0.0

    trace_start = timing["trace_start_wall"]
    start = capture_start_wall(run.archive_codes, fps)
    if direct and run.direct is not None and run.direct.start_wall:
        start = run.direct.start_wall
    if start is None:
        start = capture_start_wall([f.code for f in run.frames], fps)
    if start is None:
        start = trace_start
    startup_s = start - trace_start
    nominal_delay_s = buffer_ms / 1000
    window = (start + nominal_delay_s + STARTUP_GRACE_S, start + d + nominal_delay_s)
    if platform_on:
        viewing = score_viewing(run.frames, fps=fps, start_wall=window[0], end_wall=window[1])
    else:
        viewing = _relay_only_viewing(run, window=window, trace_start_wall=trace_start, fps=fps)

    archived = len({c.frame_number for c in run.archive_codes if c is not None})
    if direct:
        captured = run.direct.frames_captured if run.direct is not None else 0
    else:
        captured_text = run.encoder_summary.get("frames_captured")
        if captured_text is not None and captured_text.isdigit():
            captured = int(captured_text)
        else:
            last = _value_at(run.samples, "frames_captured", math.inf)
            captured = int(last[1]) if last is not None else 0

    series = {
        "t_s": [float(i * BIN_S) for i in range(n)],
        "capacity_kbps": [round(x, 1) for x in capacity],
        "target_kbps": [round(x, 1) for x in target],
        "delivered_kbps": [round(x, 1) for x in delivered_kbps],
        "relay_buffer_ms": [round(x, 1) for x in buffer_series],
        "outage": outage_flags(gaps, n, d),
    }
    score = qoe_score(delivered_mean, viewing.interruption_s, series["target_kbps"], d)
    notes = [f"real pipeline; sender start-up {startup_s:.1f} s after the trace clock "
             f"(outages hit media captured that much earlier); judged from "
             f"{STARTUP_GRACE_S:g} s after the first frame could be shown; delivered = link "
             "bytes incl. framing"]
    if direct:
        s = run.direct
        notes.append(f"direct RTMP to the platform at a fixed {start_kbps} kbit/s, no relay "
                     f"(buffer 0, so the oracle counts every outage in full); OBS reconnect "
                     f"policy: {direct_rtmp.RETRY_DELAY_S:g} s, "
                     f"x{direct_rtmp.RETRY_BACKOFF_FACTOR:g} per retry, "
                     f"{direct_rtmp.MAX_RETRIES} retries; a write blocked "
                     f"{direct_rtmp.STALL_S:g} s drops the connection")
        if s is not None:
            notes.append(f"connections={s.connections} attempts={s.attempts} stalls={s.stalls} "
                         f"failures={s.failures} frames_sent={s.frames_sent} "
                         f"frames_dropped={s.frames_dropped} gave_up={s.gave_up}")
        else:
            notes.append("the pusher left no summary")
    else:
        e = run.encoder_summary
        if e:
            notes.append("encoder: " + " ".join(
                f"{k}={e[k]}" for k in ("all_acked", "connections", "reconnects", "outages",
                                        "outage_s", "live_jumps") if k in e))
        else:
            notes.append("the encoder left no closing line")
        acked = _value_at(run.samples, "acked_bytes", d)
        if acked is not None:
            notes.append(f"acked media payload {acked[1] * 8 / 1000 / d:.0f} kbit/s")
        final = next((x for x in reversed(run.samples) if x.output_frames), None)
        if final is not None:
            frames = " ".join(f"{k}={v}" for k, v in sorted(final.output_frames.items()))
            notes.append(f"relay: skipped_late_units={final.skipped_late_units} output frames "
                         f"{frames}")
        if (run.relay_status or {}).get("state") != "ended":
            notes.append("the relay had not ended the stream when it was stopped")
    if platform_on:
        notes.append(f"viewer: sessions seen {viewing.sessions}, slate {viewing.slate_s:.1f} s, "
                     f"frozen {viewing.frozen_s:.1f} s, no video {viewing.no_video_s:.1f} s")
    else:
        notes.append("no platform (nginx-rtmp not installed): interruption from the relay's "
                     "own output status, no latency, no platform sessions")
    notes += run.notes
    return RunResult(
        trace=trace.name, abr=abr, mode="real", duration_s=d, buffer_ms=buffer_ms,
        capacity_kbps_mean=round(capacity_mean, 1), sent_kbps_mean=round(sent_mean, 1),
        delivered_kbps_mean=round(delivered_mean, 1),
        utilization=round(delivered_mean / capacity_mean, 4) if capacity_mean > 0 else 0.0,
        outages=[[round(o.start_s, 3), round(o.length_s, 3)] for o in gaps],
        unavoidable_interruption_s=round(unavoidable, 3),
        interruption_s=round(viewing.interruption_s, 3),
        platform_sessions=run.platform_sessions,
        latency_ms_p50=None if viewing.latency_ms_p50 is None else round(viewing.latency_ms_p50, 1),
        latency_ms_p95=None if viewing.latency_ms_p95 is None else round(viewing.latency_ms_p95, 1),
        bitrate_switches=switches, frames_captured=captured, frames_live=viewing.frames_live,
        frames_archived=archived, score=round(score, 4), series=series,
        notes="; ".join(notes), floor_kbps=floor_kbps,
        floor_bound_interruption_s=None if floor_bound is None else round(floor_bound, 3))


__all__ = ["DIRECT_RTMP", "PLATFORM_DIR", "RELAY_RECORDINGS_DIR", "RealRunError",
           "platform_recordings", "relay_recordings", "run_real"]
