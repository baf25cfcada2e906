"""Prometheus metrics of the relay, in a registry of their own (names prefixed ``steadycast_``).

Labels carry stream and destination *names* only, never URLs, keys or tokens.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

PREFIX = "steadycast_"


class RelayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        s = ["stream"]
        d = ["stream", "destination"]
        self.ingest_bytes = Counter(PREFIX + "ingest_bytes", "Media payload bytes received", s,
                                    registry=r)
        self.ingest_kbps = Gauge(PREFIX + "ingest_bitrate_kbps", "Ingest media bitrate, 2 s window",
                                 s, registry=r)
        self.ingest_connected = Gauge(PREFIX + "ingest_connected", "1 while a sender is connected",
                                      s, registry=r)
        self.ingest_connections = Counter(PREFIX + "ingest_connections",
                                          "Accepted ingest connections", s, registry=r)
        self.ingest_rejected = Counter(PREFIX + "ingest_rejected",
                                       "Refused ingest attempts", ["reason"], registry=r)
        self.auth_throttled = Counter(PREFIX + "auth_throttled",
                                      "Requests refused with 429: the address is locked out "
                                      "after wrong credentials", ["endpoint"], registry=r)
        self.protocol_errors = Counter(PREFIX + "protocol_errors",
                                       "Connections closed for bad input", ["stream", "code"],
                                       registry=r)
        self.duplicates = Counter(PREFIX + "ingest_duplicates", "Duplicate media messages dropped",
                                  s, registry=r)
        self.dropouts = Counter(PREFIX + "dropouts", "Ingest dropouts (outages)",
                                ["stream", "cause"], registry=r)
        self.dropout_seconds = Counter(PREFIX + "dropout_seconds", "Total ingest outage time", s,
                                       registry=r)
        self.buffer_s = Gauge(PREFIX + "buffer_seconds", "Playout buffer level", s, registry=r)
        self.output_source = Gauge(PREFIX + "output_source", "1 for the source on air now",
                                   ["stream", "source"], registry=r)
        self.output_frames = Counter(PREFIX + "output_frames", "Frames sent to the platforms",
                                     ["stream", "source"], registry=r)
        self.pipeline_failures = Counter(PREFIX + "pipeline_failures",
                                         "Output pipelines that failed (replaced on resume)", s,
                                         registry=r)
        self.skipped_late = Counter(PREFIX + "skipped_late_units",
                                    "Access units too old for the live edge (still recorded)", s,
                                    registry=r)
        self.dest_up = Gauge(PREFIX + "destination_up", "1 while the platform session is open", d,
                             registry=r)
        self.dest_reconnects = Counter(PREFIX + "destination_reconnects", "Platform reconnects", d,
                                       registry=r)
        self.dest_disconnects = Counter(PREFIX + "destination_disconnects",
                                        "Platform sessions lost (not ended on purpose)", d,
                                        registry=r)
        self.dest_dropped = Counter(PREFIX + "destination_dropped_packets",
                                    "Packets dropped because the destination fell behind", d,
                                    registry=r)

        self.recording_ok = Gauge(PREFIX + "recording_ok",
                                  "1 while the archive is written, 0 while it fails", s,
                                  registry=r)
        self.recording_errors = Counter(PREFIX + "recording_errors",
                                        "Archive failures (each counted once, when it starts)",
                                        s, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
