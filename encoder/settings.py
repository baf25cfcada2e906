"""Typed settings of the encoder (filled by the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field

RECONNECT_FIRST_S = 0.25  # the first retry comes within 0.5 s of a lost connection
RECONNECT_MAX_S = 2.0  # retries never more than 2 s apart
ACK_TIMEOUT_S = 10.0  # unacked data and no ACK for this long: the connection is dead
KEYFRAME_INTERVAL_S = 2.0
AUDIO_SAMPLE_RATE = 48000
AUDIO_KBPS = 64
FINAL_ACK_WAIT_S = 30.0  # at the end, wait this long for the relay to ack everything


@dataclass(frozen=True)
class EncoderSettings:
    relay_url: str  # http(s)://host:port of the relay
    stream: str
    token: str = field(repr=False)  # secret
    source: str = "testpattern"  # "testpattern" | "file:PATH"
    kbps: int = 1000
    width: int = 1280
    height: int = 720
    fps: int = 30
    duration_s: float | None = None
    title: str = "steadycast"
    x264_preset: str = "veryfast"
    verify_tls: bool = True  # False accepts a relay's self-signed certificate

    @property
    def ingest_url(self) -> str:
        base = self.relay_url.rstrip("/")
        if base.startswith("https://"):
            base = "wss://" + base[len("https://"):]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://"):]
        return f"{base}/ingest/{self.stream}"
