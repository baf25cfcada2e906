"""The ABR interface: what every bitrate controller sees and what it decides.

Controllers are sans-I/O (the aioquic congestion-control habit): the uplink client, the
simulator and the tests build an ``Observation`` from what the sender can see, pass it with
``now`` to ``update`` about every ``UPDATE_INTERVAL_S``, and use the returned video bitrate.
A controller never reads a clock, a socket or a file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

UPDATE_INTERVAL_S = 0.1  # the client asks for a decision this often (10 Hz)


@dataclass(frozen=True, slots=True)
class AbrLimits:
    """Bounds of the video bitrate for the session, in kbit/s."""

    min_kbps: int = 200
    max_kbps: int = 2500
    start_kbps: int = 1000
    audio_kbps: int = 64  # the audio the link carries beside the video (encoder's AAC rate)

    def __post_init__(self) -> None:
        if self.min_kbps <= 0:
            raise ValueError(f"min_kbps must be positive, not {self.min_kbps}")
        if self.max_kbps < self.min_kbps:
            raise ValueError(f"max_kbps {self.max_kbps} is below min_kbps {self.min_kbps}")
        if self.audio_kbps < 0:
            raise ValueError(f"audio_kbps must not be negative, not {self.audio_kbps}")
        if not self.min_kbps <= self.start_kbps <= self.max_kbps:
            raise ValueError(f"start_kbps {self.start_kbps} is not within "
                             f"{self.min_kbps}..{self.max_kbps}")

    def clamp(self, kbps: float) -> int:
        return int(min(self.max_kbps, max(self.min_kbps, round(kbps))))


@dataclass(frozen=True, slots=True)
class AckSample:
    """One acknowledgement seen by the sender: it released `acked_bytes` of media payload, and
    the newest media it covered (sent exactly once) was sent at `sent_at` (None when the ACK
    gives no RTT sample, e.g. it only covered retransmissions)."""

    acked_at: float
    acked_bytes: int
    sent_at: float | None = None

    @property
    def rtt_s(self) -> float | None:
        return None if self.sent_at is None else max(0.0, self.acked_at - self.sent_at)


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything the sender can observe at one instant. Totals are cumulative over the
    session (a controller differentiates them itself); `acks` are the ACKs since the previous
    observation, oldest first."""

    connected: bool  # between the relay's WELCOME and the end of that connection
    sent_bytes_total: int  # media payload handed to the transport, retransmissions included
    acked_bytes_total: int  # media payload the relay acknowledged
    backlog_bytes: int  # payload not yet acknowledged (in flight + unsent)
    backlog_ms: int  # capture-time span of the unacknowledged media
    unsent_bytes: int  # payload not yet handed to the transport
    unsent_ms: int  # capture-time span of the media waiting unsent (OBS's congestion measure)
    srtt_s: float | None  # smoothed RTT (RFC 6298 gain), None before the first sample
    last_ack_time: float | None  # `now` of the last ACK or WELCOME
    relay_buffer_ms: int | None  # the relay's playout buffer level, from its ACKs
    relay_arrival_kbps: int | None  # the relay's view of the arrival rate, from its ACKs
    target_kbps: int  # the bitrate the encoder is running at now
    acks: tuple[AckSample, ...] = field(default=())
    backfill_bytes: int = 0  # media skipped by a live-edge jump, still to be sent for the
                             # relay's recording (it shares the link with the live edge)


class AbrController(ABC):
    """A named bitrate controller. Subclasses set `name` and implement `update`."""

    name: ClassVar[str]

    def __init__(self, limits: AbrLimits) -> None:
        self.limits = limits

    @abstractmethod
    def update(self, obs: Observation, *, now: float) -> int:
        """Decide the video bitrate (kbit/s, within the limits) from this observation."""

    def describe(self) -> str:
        """A short word on the controller's state, for the status line (e.g. 'probe')."""
        return ""
