"""FLV muxing into memory with PyAV: the output packets of one platform session as FLV tags.

PyAV/FFmpeg does only the muxing here, into a Python object that collects the bytes (it
has no ``seek``, so FFmpeg treats the output as a live stream and never goes back to patch
the header); the network is the relay's own (relay/output/platform_link.py). The tags come out
through :class:`relay.rtmp.flv.FlvReader`, which checks the byte stream as it splits it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import av

from relay.output.transcode import OutPacket
from relay.rtmp.flv import FlvReader, FlvTag

MUX_OPTIONS = {"flvflags": "no_duration_filesize", "flush_packets": "1"}


class _Sink:
    """A write-only, non-seekable file object."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


class FlvMemoryMuxer:
    """``mux(pkt, origin_s)`` -> the FLV tags completed by it (header tags first)."""

    def __init__(self, video_template: Any, audio_template: Any) -> None:
        self._sink = _Sink()
        self._reader = FlvReader()
        self._container = av.open(self._sink, "w", format="flv", options=dict(MUX_OPTIONS))
        self._video = self._container.add_stream_from_template(video_template)
        self._audio = self._container.add_stream_from_template(audio_template)

    def mux(self, pkt: OutPacket, origin_s: float) -> list[FlvTag]:
        """Mux one packet with its timestamps moved so that ``origin_s`` becomes 0."""
        offset = round(origin_s / pkt.time_base)
        p = pkt.to_av()
        p.pts, p.dts = pkt.pts - offset, pkt.dts - offset
        p.stream = self._video if pkt.is_video else self._audio
        self._container.mux(p)
        return self._reader.feed(self._sink.take())

    def close(self) -> list[FlvTag]:
        """Flush the interleaving queue; the tags still held come out."""
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            self._container.close()
        return self._reader.feed(self._sink.take())
