"""Audio sources (``--audio none|tone|file|device:NAME``): planar float32 mono at 48 kHz.

The capture loop asks ``audio(n)`` once per output frame for that frame's n samples, shape
(1, n); it must not block. ``open_audio(spec, video_source, sample_rate)`` builds one:
- ``none``: silence. The stream still carries an audio track (a silent AAC track), because
  the relay and the platforms expect one.
- ``tone``: the test pattern's beep tone (``ToneGenerator``), in step with its beep square.
- ``file``: the audio of the ``file:PATH`` video source, decoded with its video.
- ``device:NAME``: a capture device through PyAV (Linux: PulseAudio then ALSA, NAME like
  ``default`` or ``hw:0``; macOS: AVFoundation; Windows: DirectShow), read on its own thread
  into a bounded buffer, resampled to mono 48 kHz; missing samples are filled with silence.
- ``auto``: the default for the video source: testpattern -> tone, file: -> file (none if the
  file has no audio), camera: -> none.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import av
import numpy as np
import numpy.typing as npt
from av.audio.resampler import AudioResampler

from encoder.sources import FileSource, SourceError, TestPatternSource, VideoSource
from encoder.testpattern import ToneGenerator

log = logging.getLogger(__name__)

AUDIO_SPECS_HELP = "none, tone, file or device:NAME (e.g. device:default or device:hw:0)"
AUDIO_OPTION_HELP = (
    "audio to send: none (a silent AAC track is still sent; the relay and platforms need an "
    "audio track), tone (a 440 Hz tone with an 880 Hz beep each second), file (the audio of "
    "the file: source) or device:NAME (a microphone or line-in, e.g. device:default or "
    "device:hw:0). Default: tone for testpattern, file for file: (none if the file has no "
    "audio), none for camera:")

TARGET_BUFFER_MS = 100  # device audio: start (and restart after a gap) with this much buffered
MAX_BUFFER_MS = 400  # device audio: beyond this the oldest samples are dropped (latency bound)
DEVICE_BACKOFF_FIRST_S = 0.5  # a device that fails is reopened after this, doubling ...
DEVICE_BACKOFF_MAX_S = 5.0  # ... up to this
CLOSE_JOIN_S = 2.0  # close() waits this long for the reader thread


class AudioSource(Protocol):
    def audio(self, n: int) -> npt.NDArray[np.float32]:
        """The next n samples, planar float32 mono, shape (1, n); never blocks long."""
        ...

    def describe(self) -> str:
        """One plain line: what this audio source is."""
        ...

    def close(self) -> None: ...


class SilentAudio:
    """Silence: the stream keeps a (silent) AAC track."""

    def audio(self, n: int) -> npt.NDArray[np.float32]:
        return np.zeros((1, n), np.float32)

    def describe(self) -> str:
        return "audio none: silence (a silent AAC track is still sent)"

    def close(self) -> None:
        pass


class ToneAudio:
    """The test-pattern tone: 440 Hz with an 880 Hz beep in the first 200 ms of each second."""

    def __init__(self, sample_rate: int) -> None:
        self._tone = ToneGenerator(sample_rate=sample_rate, channels=1)

    def audio(self, n: int) -> npt.NDArray[np.float32]:
        return self._tone.samples(n)

    def describe(self) -> str:
        t = self._tone
        return (f"audio tone: {t.frequency_hz:g} Hz with a beep each second, "
                f"{t.level_dbfs:g} dBFS peak")

    def close(self) -> None:
        pass


class FileAudio:
    """The audio track of a file source, decoded together with its video (so it stays in step
    through the loops). The file source owns the file: ``close()`` leaves it open."""

    def __init__(self, source: FileSource) -> None:
        if not source.has_audio:
            raise SourceError(f"--audio file: the file {str(source.path)!r} has no audio track; "
                              "use --audio tone or --audio none")
        self._source = source

    def audio(self, n: int) -> npt.NDArray[np.float32]:
        return self._source.audio(n)

    def describe(self) -> str:
        return f"audio file: the audio track of {str(self._source.path)!r}"

    def close(self) -> None:
        pass


class SampleBuffer:
    """A bounded buffer of mono samples between a device's reader thread and the capture loop.

    ``pull(n)`` returns nothing but silence until TARGET_BUFFER_MS of audio is buffered (so
    the device's bursts do not cause a gap every frame), then starts from the newest
    TARGET_BUFFER_MS; if it runs dry it pads with silence and waits for the target again.
    ``push`` drops the oldest samples beyond MAX_BUFFER_MS, so the delay never grows past
    that. Thread-safe.
    """

    def __init__(self, sample_rate: int, target_ms: int = TARGET_BUFFER_MS,
                 max_ms: int = MAX_BUFFER_MS) -> None:
        self.target_samples = sample_rate * target_ms // 1000
        self.max_samples = sample_rate * max_ms // 1000
        self._chunks: deque[npt.NDArray[np.float32]] = deque()
        self._size = 0
        self._primed = False
        self._lock = threading.Lock()
        self.samples_dropped = 0  # oldest samples dropped because the buffer was full
        self.underruns = 0  # pulls that had to be padded with silence after priming

    @property
    def buffered(self) -> int:
        with self._lock:
            return self._size

    def push(self, samples: npt.NDArray[np.float32]) -> None:
        """Add mono samples (1-D, or (1, k))."""
        chunk = np.ascontiguousarray(samples, np.float32).reshape(-1)
        if not chunk.size:
            return
        with self._lock:
            self._chunks.append(chunk)
            self._size += chunk.size
            self._drop_oldest_locked(self._size - self.max_samples)

    def _drop_oldest_locked(self, excess: int) -> None:
        while excess > 0:
            head = self._chunks[0]
            if head.size <= excess:
                self._chunks.popleft()
                dropped = head.size
            else:
                self._chunks[0] = head[excess:]
                dropped = excess
            self._size -= dropped
            self.samples_dropped += dropped
            excess -= dropped

    def pull(self, n: int) -> npt.NDArray[np.float32]:
        """The next n samples, shape (1, n); silence while priming or where the buffer ran dry."""
        out = np.zeros((1, n), np.float32)
        with self._lock:
            if not self._primed:
                if self._size < max(self.target_samples, 1):
                    return out
                self._primed = True
                self._drop_oldest_locked(self._size - self.target_samples)
            filled = 0
            while filled < n and self._chunks:
                head = self._chunks[0]
                take = min(n - filled, head.size)
                out[0, filled:filled + take] = head[:take]
                if take == head.size:
                    self._chunks.popleft()
                else:
                    self._chunks[0] = head[take:]
                filled += take
            self._size -= filled
            if filled < n:
                self.underruns += 1
                self._primed = False
        return out


def device_input_formats() -> list[tuple[str, str]]:
    """(PyAV input format, how NAME becomes its URL) to try for ``device:NAME``, in order."""
    if sys.platform.startswith("linux"):
        return [("pulse", "{name}"), ("alsa", "{name}")]
    if sys.platform == "darwin":
        return [("avfoundation", ":{name}")]
    if sys.platform == "win32":
        return [("dshow", "audio={name}")]
    return [("pulse", "{name}"), ("alsa", "{name}"), ("oss", "{name}")]


class DeviceAudio:
    """A capture device read through PyAV on its own thread into a ``SampleBuffer``.

    ``input_formats`` overrides the platform's list of (format, URL template) to try (tests use
    ``[("lavfi", "{name}")]`` with NAME a filter graph such as ``sine=frequency=440``). A device
    that fails while running is reopened with backoff; silence fills the gap.
    """

    def __init__(self, name: str, sample_rate: int,
                 input_formats: Sequence[tuple[str, str]] | None = None) -> None:
        if not name:
            raise SourceError("device: needs a device name after the colon: use "
                              f"{AUDIO_SPECS_HELP}")
        self.name = name
        self.sample_rate = sample_rate
        self.buffer = SampleBuffer(sample_rate)
        self.failures = 0  # times the device failed while running
        self._formats = list(input_formats or device_input_formats())
        self._stop = threading.Event()
        container, self.input_format, self._url = self._open_first()
        stream = container.streams.audio[0]
        self.device_rate = int(stream.rate or 0)
        self.device_layout = str(getattr(stream.layout, "name", "unknown"))
        log.info("%s", self.describe())
        self._thread = threading.Thread(target=self._read_loop, args=(container,),
                                        name=f"audio-{name}", daemon=True)
        self._thread.start()

    def _open_first(self) -> tuple[Any, str, str]:
        tried: list[str] = []
        for fmt, template in self._formats:
            url = template.format(name=self.name)
            try:
                container: Any = av.open(url, format=fmt)
            except (av.FFmpegError, ValueError, OSError) as exc:
                reason = str(exc)
                if isinstance(exc, ValueError) and "no container format" in reason:
                    reason = "this PyAV/FFmpeg build cannot capture with it"
                tried.append(f"{fmt} {url!r}: {reason}")
                continue
            if not container.streams.audio:
                container.close()
                tried.append(f"{fmt} {url!r}: opened but it has no audio stream")
                continue
            return container, fmt, url
        raise SourceError(f"audio device {self.name!r} could not be opened; tried "
                          + "; ".join(tried)
                          + ". Check the name (e.g. device:default or device:hw:0; `arecord -L` "
                          "or `pactl list short sources` list them) or use --audio tone|none")

    def _reopen(self) -> Any | None:
        try:
            container: Any = av.open(self._url, format=self.input_format)
        except (av.FFmpegError, ValueError, OSError) as exc:
            log.debug("audio device %r: reopen failed: %s", self.name, exc)
            return None
        if not container.streams.audio:
            container.close()
            return None
        return container

    def _read_loop(self, container: Any) -> None:
        backoff_s = DEVICE_BACKOFF_FIRST_S
        try:
            while not self._stop.is_set():
                if container is None:
                    if self._stop.wait(backoff_s):
                        break
                    backoff_s = min(backoff_s * 2, DEVICE_BACKOFF_MAX_S)
                    container = self._reopen()
                    if container is None:
                        continue
                    log.info("audio device %r is back", self.name)
                try:
                    self._pump(container)
                    why = "the device stopped giving audio"
                except (av.FFmpegError, OSError, ValueError) as exc:
                    why = str(exc)
                if self._stop.is_set():
                    break
                self.failures += 1
                log.warning("audio device %r failed (%s): sending silence and reopening it",
                            self.name, why)
                container.close()
                container = None
        finally:
            if container is not None:
                container.close()

    def _pump(self, container: Any) -> None:
        """Decode until the device ends or close() is called; resample into the buffer."""
        resampler = AudioResampler(format="fltp", layout="mono", rate=self.sample_rate)
        for frame in container.decode(audio=0):
            if self._stop.is_set():
                return
            for out in resampler.resample(frame):
                self.buffer.push(out.to_ndarray()[0])

    def audio(self, n: int) -> npt.NDArray[np.float32]:
        return self.buffer.pull(n)

    @property
    def reader_alive(self) -> bool:
        return self._thread.is_alive()

    def describe(self) -> str:
        rate = f"{self.device_rate} Hz" if self.device_rate else "unknown rate"
        return (f"audio device {self.name!r} via {self.input_format}: {rate} "
                f"{self.device_layout}, sent as {self.sample_rate} Hz mono")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(CLOSE_JOIN_S)
            if self._thread.is_alive():
                log.warning("audio device %r: the reader thread is still blocked after %.0f s",
                            self.name, CLOSE_JOIN_S)


def default_audio_spec(video_spec: str) -> str:
    """The ``--audio`` used when none is given: tone, file or none by the video source."""
    if video_spec == "testpattern":
        return "tone"
    if video_spec.startswith("file:"):
        return "file"
    return "none"


def open_audio(spec: str, video_source: VideoSource, sample_rate: int) -> AudioSource:
    """The audio source named by ``spec`` (see the module docstring); SourceError if bad."""
    spec = spec.strip()
    if spec == "auto":
        if isinstance(video_source, TestPatternSource):
            spec = "tone"
        elif isinstance(video_source, FileSource):
            if not video_source.has_audio:
                log.info("file %r has no audio track: sending silence", str(video_source.path))
                return SilentAudio()
            spec = "file"
        else:
            spec = "none"
    if spec == "none":
        return SilentAudio()
    if spec == "tone":
        return ToneAudio(sample_rate)
    if spec == "file":
        if not isinstance(video_source, FileSource):
            raise SourceError("--audio file takes the audio of a file:PATH video source, but "
                              f"the video source is {video_source.describe()!r}; use "
                              f"{AUDIO_SPECS_HELP}")
        return FileAudio(video_source)
    if spec.startswith("device:"):
        return DeviceAudio(spec[len("device:"):].strip(), sample_rate)
    raise SourceError(f"unknown audio {spec!r}: use {AUDIO_SPECS_HELP}")
