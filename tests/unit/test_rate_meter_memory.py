"""What a flood of tiny media makes the rate meters hold (issue 13, fault 5).

The receiver's arrival rate (ACK `arrival_kbps`) and the low-throughput detector kept one
entry per media message over their 2 s windows: a sender of tens of thousands of tiny units
a second made each hold megabytes. Both now sum in buckets (uplink.window.WindowedSum).
Measured with tracemalloc around the real cores.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

from monitor.dropout import LowThroughputDetector
from uplink import Codec, Hello, Media, TrackConfig, TrackKind, UplinkReceiver, encode

UNITS = 40_000  # in one second: all inside the 2 s windows
HELD_LIMIT_BYTES = 300_000  # 40 000 entries held ~3 MB before


def _held_after(feed: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = feed()
        held = tracemalloc.get_traced_memory()[0] - before
        del keep
        return held
    finally:
        tracemalloc.stop()


def test_receiver_arrival_window_is_bounded_under_a_flood_of_tiny_units() -> None:
    video = TrackConfig(0, TrackKind.VIDEO, Codec.H264, 1, 90000, 320, 180, 0, 0)
    messages = [encode(Media(seq, 0, True, seq, seq, 0, b"\x00")) for seq in range(UNITS)]

    def feed() -> UplinkReceiver:
        r = UplinkReceiver(buffer_ms=1000)
        r.connection_made(0.0)
        r.receive(encode(Hello(b"F" * 16)), 0.0)
        r.receive(encode(video), 0.0)
        for seq, data in enumerate(messages):
            r.receive(data, seq / UNITS)
            if seq % 1000 == 0:
                r.data_to_send(seq / UNITS)
        assert r.next_seq == UNITS and r.arrival_kbps > 0
        return r

    held = _held_after(feed)
    assert held < HELD_LIMIT_BYTES, f"the receiver holds {held} bytes after {UNITS} units"


def test_low_throughput_window_is_bounded_under_a_flood_of_tiny_units() -> None:
    def feed() -> LowThroughputDetector:
        d = LowThroughputDetector()
        for i in range(UNITS):
            d.on_media(i / UNITS, 1)
        assert d.rate_kbps(1.0) > 0
        return d

    held = _held_after(feed)
    assert held < HELD_LIMIT_BYTES, f"the detector holds {held} bytes after {UNITS} units"
