"""Typed settings of the encoder (filled by the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from uplink.media import AUDIO_KBPS as AUDIO_KBPS  # defined there for the connection check too

RECONNECT_FIRST_S = 0.25  # the first retry comes within 0.5 s of a lost connection
RECONNECT_MAX_S = 2.0  # retries never more than 2 s apart
RETRY_AFTER_MAX_S = 120.0  # the longest HTTP 429 Retry-After the encoder honours
ACK_TIMEOUT_S = 10.0  # unacked data and no ACK for this long: the connection is dead
KEYFRAME_INTERVAL_S = 2.0
AUDIO_SAMPLE_RATE = 48000
FINAL_ACK_WAIT_S = 30.0  # at the end, wait this long for the relay to ack everything
SPOOL_MEMORY_MB_DEFAULT = 64  # unacked media held in memory before spilling to disk
SPOOL_DISK_MB_DEFAULT = 2048  # ... and on disk at most (about 2 h at 2 Mbit/s)
RECORD_KBPS_DEFAULT = 2500  # the local full-quality copy (--record)


@dataclass(frozen=True)
class EncoderSettings:
    relay_url: str  # http(s)://host:port of the relay
    stream: str
    token: str = field(repr=False)  # secret
    source: str = "testpattern"  # "testpattern" | "file:PATH" | "camera:N"
    audio: str = "auto"  # "auto" | "none" | "tone" | "file" | "device:NAME"
    abr: str = "steady"
    start_kbps: int = 1000
    min_kbps: int = 200
    max_kbps: int = 2500
    fps_floor_kbps: int | None = None  # None: encoder.frame_rate.default_floor_kbps
    width: int = 1280
    height: int = 720
    fps: int = 30
    duration_s: float | None = None
    title: str = "steadycast"
    x264_preset: str = "veryfast"
    verify_tls: bool = True  # False accepts a relay's self-signed certificate
    ca_file: Path | None = None  # trust only this PEM certificate (the relay's own), not the
                                 # system's CA store
    framecode: bool = False  # draw the frame code over a file: source (testpattern always)
    spool_memory_mb: float = SPOOL_MEMORY_MB_DEFAULT
    spool_disk_mb: float = SPOOL_DISK_MB_DEFAULT
    spool_dir: Path | None = None  # None: the system's temp directory
    record_path: Path | None = None  # local full-quality MP4 copy
    record_kbps: int = RECORD_KBPS_DEFAULT
    quiet: bool = False  # no status line
    status_interval_s: float | None = None  # None: 1 s on a terminal, 10 s otherwise
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    events_path: Path | None = None

    @property
    def kbps(self) -> int:
        """The starting video bitrate (the fixed one with --abr fixed)."""
        return self.start_kbps

    @property
    def ingest_url(self) -> str:
        base = self.relay_url.rstrip("/")
        if base.startswith("https://"):
            base = "wss://" + base[len("https://"):]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://"):]
        return f"{base}/ingest/{self.stream}"
