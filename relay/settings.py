"""Typed settings of the relay. The face (steadycast.config) reads TOML into these."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from monitor.dropout import LOW_THROUGHPUT_S_DEFAULT, LOW_THROUGHPUT_SHARE_DEFAULT
from monitor.redact import mask_url
from relay.rtmp.url import split_rtmp_url
from uplink.media import BUFFER_MS_DEFAULT

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
    """One platform ingest: an rtmp:// or rtmps:// URL and the stream key appended to it.

    The key may also be written inside ``url`` (``rtmp://host/app/KEY`` with ``key = ""``):
    everything after the application segment is the key either way, so it is never shown
    (:attr:`shown_url`) and is registered as a secret (:meth:`secrets`)."""

    name: str
    url: str = field(repr=False)  # may hold the key
    key: str = field(repr=False)  # secret
    queue_s: float = 10.0
    connect_timeout_s: float = 5.0
    io_timeout_s: float = 10.0
    retry_first_s: float = 1.0
    retry_max_s: float = 5.0
    ca_file: Path | None = None  # PEM certificates trusted instead of the system's (rtmps)
    tls_verify: bool = True  # False: rtmps without checking the certificate (logged loudly)

    @property
    def publish_url(self) -> str:
        """The full URL with the key; a secret: never log it."""
        if not self.key:
            return self.url
        return self.url.rstrip("/") + "/" + self.key

    @property
    def shown_url(self) -> str:
        """scheme://host[:port]/app with anything after it masked: what pages and APIs show."""
        return mask_url(self.url)

    def secrets(self) -> list[str]:
        """The stream key, whether in ``key`` or inside ``url`` (with and without a query)."""
        out = [self.key]
        try:
            name = split_rtmp_url(self.publish_url).stream_name
        except ValueError:
            name = ""
        out += [name, name.partition("?")[0]]
        return [x for x in dict.fromkeys(out) if x]


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
    # the self-signed certificate's names (DNS names, IP addresses); () = relay.tls defaults
    names: tuple[str, ...] = ()


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
            for d in s.destinations:
                out.extend(d.secrets())
        return [x for x in out if x]
