"""Typed settings of the relay. The face (steadycast.config) reads TOML into these."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from monitor.dropout import LOW_THROUGHPUT_S_DEFAULT, LOW_THROUGHPUT_SHARE_DEFAULT

BUFFER_MS_DEFAULT = 5000
HOLD_S_DEFAULT = 600.0
GRACE_S_DEFAULT = 600.0
FREEZE_MS_DEFAULT = 500
DROPOUT_MS_DEFAULT = 500  # no media for this long is an ingest dropout


@dataclass(frozen=True)
class OutputProfile:
    """The constant stream every platform sees, whatever the ingest does."""

    width: int = 1280
    height: int = 720
    fps: int = 30
    video_kbps: int = 2500
    audio_kbps: int = 128
    audio_sample_rate: int = 44100
    keyframe_s: float = 2.0
    x264_preset: str = "veryfast"


@dataclass(frozen=True)
class DestinationSettings:
    """One platform ingest: an rtmp:// or rtmps:// URL and the stream key appended to it."""

    name: str
    url: str
    key: str = field(repr=False)  # secret
    queue_s: float = 10.0
    connect_timeout_s: float = 5.0
    io_timeout_s: float = 10.0
    retry_first_s: float = 1.0
    retry_max_s: float = 5.0

    @property
    def publish_url(self) -> str:
        """The full URL with the key; a secret: never log it."""
        if not self.key:
            return self.url
        return self.url.rstrip("/") + "/" + self.key


@dataclass(frozen=True)
class StreamSettings:
    name: str
    token: str = field(repr=False)  # secret: the publish token
    title: str = ""
    buffer_ms: int = BUFFER_MS_DEFAULT
    hold_s: float = HOLD_S_DEFAULT
    freeze_ms: int = FREEZE_MS_DEFAULT
    slate_image: Path | None = None
    record: bool = True
    destinations: tuple[DestinationSettings, ...] = ()


@dataclass(frozen=True)
class TlsSettings:
    mode: str = "off"  # "off" | "self-signed" | "files"
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class RelaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    tls: TlsSettings = TlsSettings()
    state_dir: Path = Path("state")
    record_dir: Path = Path("recordings")
    event_log: Path = Path("events.jsonl")
    monitor_db: Path = Path("monitor.db")  # SQLite: dropouts and probe results
    dashboard_password: str = field(default="", repr=False)  # secret; "" = /dashboard off
    probe_token: str = field(default="", repr=False)  # secret; "" = publish tokens only
    grace_s: float = GRACE_S_DEFAULT
    dropout_ms: int = DROPOUT_MS_DEFAULT
    low_throughput_share: float = LOW_THROUGHPUT_SHARE_DEFAULT  # of the stream's bitrate
    low_throughput_s: float = LOW_THROUGHPUT_S_DEFAULT  # below the share this long
    max_message_bytes: int = 4 * 1024 * 1024
    output: OutputProfile = OutputProfile()
    streams: tuple[StreamSettings, ...] = ()

    def stream(self, name: str) -> StreamSettings | None:
        for s in self.streams:
            if s.name == name:
                return s
        return None

    def secrets(self) -> list[str]:
        """Every secret in these settings, for the log redactor."""
        out: list[str] = [self.dashboard_password, self.probe_token]
        for s in self.streams:
            out.append(s.token)
            out.extend(d.key for d in s.destinations)
        return [x for x in out if x]
