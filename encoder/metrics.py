"""Prometheus metrics of the encoder (names prefixed ``steadycast_encoder_``).

A collector reads the latest ``SenderStatus`` at scrape time, so the counters are exactly the
sender's own totals. Served on ``--metrics-port`` by prometheus-client's HTTP server (its own
thread), bound to ``--metrics-host`` (default 127.0.0.1). Labels carry the stream name only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from encoder.status import SenderStatus

PREFIX = "steadycast_encoder_"


class SenderCollector(Collector):
    def __init__(self, stream: str, status: Callable[[], SenderStatus | None]) -> None:
        self._stream = stream
        self._status = status

    def collect(self) -> Iterator[Metric]:
        s = self._status()
        if s is None:
            return
        labels = ["stream"]
        value = [self._stream]

        def gauge(name: str, doc: str, v: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(PREFIX + name, doc, labels=labels)
            g.add_metric(value, v)
            return g

        def counter(name: str, doc: str, v: float) -> CounterMetricFamily:
            c = CounterMetricFamily(PREFIX + name, doc, labels=labels)
            c.add_metric(value, v)
            return c

        yield gauge("target_bitrate_kbps", "Video bitrate the ABR asks of the encoder",
                    s.target_kbps)
        yield gauge("sent_bitrate_kbps", "Media payload handed to the link, last second",
                    s.sent_kbps)
        yield gauge("acked_bitrate_kbps", "Media payload acknowledged by the relay, last second",
                    s.acked_kbps)
        yield gauge("frame_rate_fps", "Frames per second encoded (lowered below the floor)",
                    s.effective_fps)
        yield gauge("backlog_bytes", "Media bytes not yet acknowledged by the relay",
                    s.backlog_bytes)
        yield gauge("backlog_seconds", "Capture-time span of the unacknowledged media",
                    s.backlog_ms / 1000)
        yield gauge("rtt_seconds", "Smoothed round-trip time of the uplink",
                    (s.srtt_ms or 0.0) / 1000)
        yield gauge("relay_buffer_seconds", "The relay's playout delay, from its ACKs",
                    (s.relay_buffer_ms or 0) / 1000)
        yield gauge("connected", "1 while the relay has welcomed this connection",
                    1.0 if s.state in ("live", "catching-up") else 0.0)
        yield gauge("spool_memory_bytes", "Unacknowledged media held in memory",
                    s.spool_memory_bytes)
        yield gauge("spool_disk_bytes", "Unacknowledged media spilled to disk",
                    s.spool_disk_bytes)
        yield gauge("spool_full", "1 while the spool is full and new frames are dropped",
                    1.0 if s.spool_full else 0.0)
        yield counter("spool_dropped_frames", "Video frames dropped because the spool was full",
                      s.dropped_frames_total)
        yield counter("sent_bytes", "Media payload bytes sent, retransmissions included",
                      s.sent_bytes_total)
        yield counter("acked_bytes", "Media payload bytes acknowledged", s.acked_bytes_total)
        yield counter("retransmitted_bytes", "Media payload bytes sent again after a drop",
                      s.retransmitted_bytes_total)
        yield counter("reconnects", "Connections to the relay after the first", s.reconnects)
        yield counter("outages", "Uplink outages (no delivery for 0.5 s or a lost connection)",
                      s.outages)
        yield counter("outage_seconds", "Total length of ended uplink outages", s.outage_s_total)
        yield counter("frames_captured", "Frames taken from the source", s.frames_captured)
        yield counter("frames_encoded", "Frames encoded and queued for the relay",
                      s.frames_encoded)


def serve_metrics(stream: str, status: Callable[[], SenderStatus | None], port: int,
                  host: str = "127.0.0.1") -> CollectorRegistry:
    """Start the /metrics HTTP server on its own thread; returns its registry."""
    registry = CollectorRegistry()
    registry.register(SenderCollector(stream, status))
    start_http_server(port, addr=host, registry=registry)
    return registry
