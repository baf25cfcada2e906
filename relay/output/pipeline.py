"""A stream's output: the playout buffer, the output clock, the slate, the fan-out.

Runs on a thread of its own (decoding and encoding are CPU work that must not stall the
ingest loop). The asyncio side hands it tracks, access units and commands through a queue.
What happens on each tick of the output clock (1/fps) is decided by
``relay.output.clock.OutputClock`` (source, platform sessions opened and ended after
``hold_s``, the frame and audio encoded, the end); this thread only carries it out:

1. units that are due leave the playout buffer and are decoded;
2. the clock is asked, and its answer is acted on: destinations started or stopped, one
   video frame (live, frozen or slate) and its audio (``relay.output.clock.LiveAudio``)
   encoded and offered to every destination, metrics and the status snapshot updated;
3. the thread sleeps to the next tick (a clock more than ``MAX_LAG_S`` behind restarts).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from monitor.dropout import CAUSE_RELAY_STOPPED
from monitor.events import EventLog
from monitor.metrics import RelayMetrics
from monitor.redact import REDACTOR
from relay.output.clock import LiveAudio, OutputClock
from relay.output.destination import Destination
from relay.output.playout import AccessUnit, PlayoutBuffer
from relay.output.slate import render_slate
from relay.output.source_selector import OutputSource
from relay.output.transcode import (
    OUTPUT_CHANNELS,
    IngestDecoder,
    OutPacket,
    OutputEncoder,
    rgb_to_frame,
)
from relay.settings import OutputProfile, StreamSettings
from uplink import TrackConfig

log = logging.getLogger(__name__)

MAX_LAG_S = 1.0  # a pipeline this far behind its clock resets the clock instead of bursting
ERROR_MAX_CHARS = 200  # a failure's text in the status API and the event log

DestinationFactory = Callable[[Any, Any], list[Destination]]


class StreamPipeline:
    def __init__(self, settings: StreamSettings, profile: OutputProfile,
                 make_destinations: DestinationFactory, metrics: RelayMetrics | None = None,
                 events: EventLog | None = None) -> None:
        self.settings = settings
        self.profile = profile
        self._make_destinations = make_destinations
        self._metrics = metrics
        self._events = events
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._snapshot: dict[str, Any] = {"output_source": "offline", "buffer_ms": 0,
                                          "on_air": False, "destinations": []}
        self.destinations: list[Destination] = []
        self.finished = threading.Event()
        self.error: str | None = None  # why the pipeline failed, secrets masked; None if not
        self._relay_stopping = False
        self._thread = threading.Thread(target=self._run_guarded, name=f"pipe-{settings.name}",
                                        daemon=True)
        self._thread.start()

    # --- called from the asyncio side ----------------------------------------------------
    def configure(self, track: TrackConfig) -> None:
        self._inbox.put(("track", track))

    def push(self, unit: AccessUnit) -> None:
        self._inbox.put(("unit", unit))

    def go_on_air(self) -> None:
        """Open the platform sessions now, on the slate (a session restored after a relay
        restart: the platforms get the slate at once, not when live media returns)."""
        self._inbox.put(("air", None))

    def new_timeline(self) -> None:
        self._inbox.put(("reset", None))

    def end(self) -> None:
        """The sender ended the stream: play out what is buffered, then close the sessions."""
        self._inbox.put(("end", None))

    def stop(self) -> None:
        """Relay shutdown: close everything now."""
        self._relay_stopping = True
        self._inbox.put(("stop", None))
        self._thread.join(15)

    @property
    def buffer_ms(self) -> int:
        """The playout buffer level at the last tick (cheap: read on every ingest message)."""
        return int(self._snapshot.get("buffer_ms", 0))

    def status(self) -> dict[str, Any]:
        snap = dict(self._snapshot)
        snap["destinations"] = [d.status() for d in self.destinations]
        return snap

    # --- the pipeline thread -------------------------------------------------------------
    def _run_guarded(self) -> None:
        """Run the pipeline; whatever way it ends, its destinations are stopped and its
        gauges read 0 (nothing is on air). A failure is reported once: the log (with the
        traceback), a ``pipeline_failed`` event, ``steadycast_pipeline_failures`` and
        `error` (the stream's status shows it). The stream replaces a finished pipeline on
        the next session or resume."""
        try:
            self._run()
        except Exception as exc:
            self.error = REDACTOR.scrub(f"{type(exc).__name__}: {exc}")[:ERROR_MAX_CHARS]
            log.exception("stream %s: output pipeline failed; a new one starts when the sender "
                          "resumes or starts a new session", self.settings.name)
            if self._metrics is not None:
                self._metrics.pipeline_failures.labels(self.settings.name).inc()
            if self._events is not None:
                self._events.write("pipeline_failed", stream=self.settings.name,
                                   error=self.error)
        finally:
            end_cause = CAUSE_RELAY_STOPPED if self._relay_stopping else None
            for d in self.destinations:
                d.stop(end_cause=end_cause)
            self._snapshot = {**self._snapshot, "output_source": "offline", "on_air": False,
                              "buffer_ms": 0}
            if self._metrics is not None:
                for src in OutputSource:
                    self._metrics.output_source.labels(self.settings.name, src.value).set(0)
                self._metrics.buffer_s.labels(self.settings.name).set(0)
            self.finished.set()

    def _run(self) -> None:
        """Move bytes around the output clock (``relay.output.clock``, which decides): inbox
        to playout, due units decoded, the clock asked, its answer carried out, then sleep
        to the next tick."""
        s, p = self.settings, self.profile
        enc = OutputEncoder(p)
        dec = IngestDecoder(p)
        playout = PlayoutBuffer(delay_s=s.buffer_ms / 1000)
        clock = OutputClock(fps=p.fps, audio_sample_rate=p.audio_sample_rate,
                            freeze_s=s.freeze_ms / 1000, hold_s=s.hold_s)
        live_audio = LiveAudio(OUTPUT_CHANNELS, p.audio_sample_rate)
        slate = rgb_to_frame(render_slate(p.width, p.height, s.title, s.slate_image))
        tick_s = 1 / p.fps
        last_frame = None
        skipped_reported = 0
        next_tick = time.monotonic()
        while True:
            now = time.monotonic()
            while True:
                try:
                    kind, arg = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if kind == "unit":
                    playout.push(arg, now)
                elif kind == "track":
                    dec.configure(arg)
                elif kind == "reset":
                    playout.reset()
                    clock.new_timeline()
                elif kind == "end":
                    clock.end()
                elif kind == "air":
                    clock.go_on_air()
                elif kind == "stop":
                    enc.close()
                    return

            new_frame = False
            for unit in playout.pop_due(now):
                if unit.is_video:
                    frames = dec.decode_video(unit)
                    if frames:
                        last_frame = frames[-1]
                        new_frame = True
                else:
                    live_audio.add(dec.decode_audio(unit))
            tick = clock.tick(now, new_frame, playout.units_buffered)
            source = tick.source

            if tick.end_sessions is not None:
                log.warning("stream %s: %.0f s of slate; ending the platform sessions on purpose",
                            s.name, tick.slate_s)
                if self._events is not None:
                    self._events.write("platform_sessions_ended", stream=s.name,
                                       reason=f"no live media for hold_s={s.hold_s:g} s")
                self._stop_destinations(drain=False)
            if tick.open_sessions:
                self.destinations = self._make_destinations(enc.video_stream, enc.audio_stream)
                for d in self.destinations:
                    d.start()

            if tick.frame_index is not None:
                frame = slate if tick.shows_slate or last_frame is None else last_frame
                packets: list[OutPacket] = enc.encode_video(frame, tick.frame_index)
                packets += enc.encode_audio(live_audio.take(tick.audio_samples))
                for pkt in packets:
                    for d in self.destinations:
                        d.offer(pkt)
                if self._metrics is not None:
                    self._metrics.output_frames.labels(s.name, source.value).inc()
            else:
                live_audio.clear()

            level_s = playout.level_s(now)
            if self._metrics is not None:
                for src in OutputSource:
                    self._metrics.output_source.labels(s.name, src.value).set(
                        1 if tick.on_air and src == source else 0)
                self._metrics.buffer_s.labels(s.name).set(level_s)
                if playout.skipped_late_units > skipped_reported:
                    self._metrics.skipped_late.labels(s.name).inc(
                        playout.skipped_late_units - skipped_reported)
                    skipped_reported = playout.skipped_late_units
            self._snapshot = {
                "output_source": tick.status_source,
                "on_air": tick.on_air,
                "buffer_ms": round(level_s * 1000),
                "buffered_units": playout.units_buffered,
                "skipped_late_units": playout.skipped_late_units,
                "output_frames": clock.frames_by_source,
                "decode_errors": dec.decode_errors,
            }

            if tick.finished:
                for pkt in enc.flush():
                    for d in self.destinations:
                        d.offer(pkt)
                self._stop_destinations(drain=True)
                enc.close()
                log.info("stream %s: ended by the sender; platform sessions closed", s.name)
                return

            next_tick += tick_s
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif -delay > MAX_LAG_S:
                log.warning("stream %s: output %.1f s behind its clock (CPU overloaded?)",
                            s.name, -delay)
                next_tick = time.monotonic()

    def _stop_destinations(self, drain: bool) -> None:
        threads = [threading.Thread(target=d.stop, kwargs={"drain": drain}) for d in
                   self.destinations]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
