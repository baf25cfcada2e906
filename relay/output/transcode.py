"""Decode the ingest, encode the constant output profile once per stream.

The output encoders live in an in-memory FLV container that is never written to: its
streams carry the exact codec parameters (SPS/PPS, AudioSpecificConfig) that every
destination muxer copies with ``add_stream_from_template``. (A muxer's own ``add_stream``
would open a second encoder at header time whose extradata does not match our packets.)
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from av.audio.resampler import AudioResampler
from av.codec.context import CodecContext
from av.video.frame import VideoFrame

from relay.output.playout import AccessUnit
from relay.settings import OutputProfile
from uplink import Codec, TrackConfig, TrackKind
from uplink.media import AacFramer, keyframe_interval_frames, x264_options

log = logging.getLogger(__name__)

OUTPUT_CHANNELS = 2
CODEC_DECODER_NAMES = {Codec.H264: "h264", Codec.AAC: "aac"}


@dataclass(frozen=True)
class OutPacket:
    """One encoded output packet, immutable so every destination can mux its own copy."""

    is_video: bool
    data: bytes
    pts: int
    dts: int
    time_base: Fraction
    keyframe: bool

    @property
    def dts_s(self) -> float:
        return float(self.dts * self.time_base)

    def to_av(self) -> av.Packet:
        p = av.Packet(self.data)
        p.pts, p.dts, p.time_base = self.pts, self.dts, self.time_base
        p.is_keyframe = self.keyframe
        return p


def _packets(pkts: list[av.Packet], is_video: bool) -> list[OutPacket]:
    out = []
    for p in pkts:
        if p.pts is None or p.dts is None or p.time_base is None:
            continue
        out.append(OutPacket(is_video, bytes(p), p.pts, p.dts, p.time_base, p.is_keyframe))
    return out


class OutputEncoder:
    """H.264 + AAC encoders for one stream's constant output profile."""

    def __init__(self, profile: OutputProfile) -> None:
        self.profile = profile
        self._template = av.open(io.BytesIO(), "w", format="flv")
        v = self._template.add_stream("libx264", rate=profile.fps)
        v.width, v.height, v.pix_fmt = profile.width, profile.height, "yuv420p"
        v.bit_rate = profile.video_kbps * 1000
        v.options = {**x264_options(profile.x264_preset,
                                    keyframe_interval_frames(profile.fps, profile.keyframe_s),
                                    profile.video_kbps, profile.video_kbps * 2,
                                    zerolatency=True)}
        a = self._template.add_stream("aac", rate=profile.audio_sample_rate)
        a.layout = "stereo"
        a.bit_rate = profile.audio_kbps * 1000
        self._template.start_encoding()
        self.video_stream = v
        self.audio_stream = a
        self._video_tb = Fraction(1, profile.fps)
        self._aac = AacFramer(OUTPUT_CHANNELS)

    def encode_video(self, frame: VideoFrame, index: int) -> list[OutPacket]:
        frame.pts = index
        frame.time_base = self._video_tb
        return _packets(self.video_stream.codec_context.encode(frame), True)

    def encode_audio(self, samples: npt.NDArray[np.float32]) -> list[OutPacket]:
        """Planar float samples (2, n) at the output rate; encoded in AAC-sized frames."""
        out: list[OutPacket] = []
        ctx = self.audio_stream.codec_context
        for pts, chunk in self._aac.push(samples):
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            af.sample_rate = self.profile.audio_sample_rate
            af.pts = pts
            af.time_base = Fraction(1, self.profile.audio_sample_rate)
            out += _packets(ctx.encode(af), False)
        return out

    def flush(self) -> list[OutPacket]:
        out = _packets(self.video_stream.codec_context.encode(None), True)
        out += _packets(self.audio_stream.codec_context.encode(None), False)
        return out

    def close(self) -> None:
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            self._template.close()


class IngestDecoder:
    """Decodes ingest access units into output-sized YUV frames and output-rate stereo audio."""

    def __init__(self, profile: OutputProfile) -> None:
        self.profile = profile
        self._decoders: dict[int, Any] = {}
        self._resampler: AudioResampler | None = None
        self.decode_errors = 0
        self.config_errors = 0  # TRACKs the decoder refused (their media is not decoded)

    def configure(self, track: TrackConfig) -> None:
        name = CODEC_DECODER_NAMES.get(track.codec)
        if name is None:
            log.warning("track %d: codec %s is not decodable by the relay; ignored",
                        track.track_id, track.codec)
            return
        try:
            ctx: Any = CodecContext.create(name, "r")
            if track.extradata:
                ctx.extradata = track.extradata
            if track.kind == TrackKind.AUDIO:
                ctx.sample_rate = track.sample_rate
                ctx.layout = "mono" if track.channels == 1 else "stereo"
                self._resampler = AudioResampler(format="fltp", layout="stereo",
                                                 rate=self.profile.audio_sample_rate)
        except (av.FFmpegError, ValueError, OverflowError) as exc:
            # the wire bounds (uplink/wire.py) keep every value in what FFmpeg takes; should
            # one still be refused, the track is left undecoded instead of ending the pipeline
            self.config_errors += 1
            self._decoders.pop(track.track_id, None)
            log.warning("track %d: the decoder refused its config (%s); the track is not "
                        "decoded", track.track_id, exc)
            return
        self._decoders[track.track_id] = ctx

    def decode_video(self, unit: AccessUnit) -> list[VideoFrame]:
        ctx = self._decoders.get(unit.track_id)
        if ctx is None:
            return []
        frames: list[VideoFrame] = []
        try:
            for f in ctx.decode(av.Packet(unit.payload)):
                frames.append(f.reformat(width=self.profile.width, height=self.profile.height,
                                         format="yuv420p"))
        except (av.FFmpegError, ValueError) as exc:
            self.decode_errors += 1
            log.debug("video decode error on seq %d: %s", unit.seq, exc)
        return frames

    def decode_audio(self, unit: AccessUnit) -> npt.NDArray[np.float32]:
        ctx = self._decoders.get(unit.track_id)
        empty = np.zeros((OUTPUT_CHANNELS, 0), dtype=np.float32)
        if ctx is None or self._resampler is None:
            return empty
        chunks = []
        try:
            for f in ctx.decode(av.Packet(unit.payload)):
                for r in self._resampler.resample(f):
                    chunks.append(r.to_ndarray().reshape(OUTPUT_CHANNELS, -1).astype(np.float32))
        except (av.FFmpegError, ValueError) as exc:
            self.decode_errors += 1
            log.debug("audio decode error on seq %d: %s", unit.seq, exc)
        return np.concatenate(chunks, axis=1) if chunks else empty


def rgb_to_frame(rgb: npt.NDArray[np.uint8]) -> VideoFrame:
    return VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
