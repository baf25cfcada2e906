"""H.264 + AAC encoding of captured frames with PyAV, for the uplink.

The H.264 stream is Annex B with SPS/PPS repeated at every keyframe (no global header), so
the relay can start decoding at any keyframe and record to MPEG-TS as is.

Changing the bitrate of the running encoder without a new keyframe (``set_kbps``): libx264,
through FFmpeg, picks up a new ``bit_rate`` before the next frame (x264_encoder_reconfig),
but only with VBV on, and in x264's plain ABR mode (bitrate below maxrate) its rate control
aims at the average over the whole session so far. So the encoder is opened in CBR mode
(``bit_rate`` = maxrate at open, then lowered at once), and a new bitrate holds within about
a second (tests/unit/test_av_encoder_rate.py). maxrate and the VBV buffer stay as opened
(PyAV cannot write rc_max_rate or rc_buffer_size after open).

The VBV buffer is ``VBV_BUFFER_S`` at the ceiling bitrate (so 1 s at a quarter of the
ceiling): small, so that after a stretch where the picture needed less than the target a
drop of the target is not followed by seconds at several times the new rate, x264 paying
back the shortfall while the link fails. The price: flatter keyframes at high bitrates.
docs/encoder.md ("A small VBV buffer, so a drop stays a drop") has the measurements.

x264 budgets bits per frame from the nominal frame rate, not from timestamps, so when the
frame-rate governor keeps every k-th frame the encoder is asked for k times the bitrate.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
from av.codec.context import CodecContext

from uplink import Codec, TrackConfig, TrackKind
from uplink.media import AAC_FRAME_SAMPLES as AAC_FRAME_SAMPLES  # benchmarks.sim reads it here
from uplink.media import AacFramer, keyframe_interval_frames, x264_options

VIDEO_TRACK_ID = 0
AUDIO_TRACK_ID = 1
VBV_BUFFER_S = 0.25  # x264's VBV buffer, in seconds at the ceiling bitrate (see above)


@dataclass(frozen=True)
class EncodedUnit:
    track_id: int
    keyframe: bool
    pts: int
    dts: int
    capture_time_us: int
    payload: bytes


class MediaEncoder:
    def __init__(self, width: int, height: int, fps: int, kbps: int, keyframe_s: float,
                 sample_rate: int, audio_kbps: int, preset: str = "veryfast",
                 max_kbps: int | None = None, epoch_us: int = 0,
                 vbv_buffer_s: float = VBV_BUFFER_S) -> None:
        if not vbv_buffer_s > 0:
            raise ValueError(f"MediaEncoder: vbv_buffer_s must be > 0, got {vbv_buffer_s!r}")
        self.fps = fps
        self.epoch_us = epoch_us  # wall-clock capture time of audio sample 0
        self.sample_rate = sample_rate
        v = CodecContext.create("libx264", "w")
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.time_base = Fraction(1, fps)
        v.framerate = Fraction(fps, 1)
        ceiling = max(kbps, max_kbps or kbps)
        self.ceiling_kbps = ceiling
        v.bit_rate = ceiling * 1000  # CBR mode at open: see the module docstring
        v.options = x264_options(preset, keyframe_interval_frames(fps, keyframe_s), ceiling,
                                 max(1, round(ceiling * vbv_buffer_s)), zerolatency=True)
        v.open()
        v.bit_rate = kbps * 1000
        a = CodecContext.create("aac", "w")
        a.sample_rate = sample_rate
        a.layout = "mono"
        a.format = "fltp"
        a.bit_rate = audio_kbps * 1000
        a.time_base = Fraction(1, sample_rate)
        a.flags |= av.codec.context.Flags.global_header  # AudioSpecificConfig as extradata
        a.open()
        self._v, self._a = v, a
        self._aac = AacFramer(1)
        self._capture_us_by_pts: dict[int, int] = {}

    def tracks(self) -> list[TrackConfig]:
        v, a = self._v, self._a
        return [
            TrackConfig(track_id=VIDEO_TRACK_ID, kind=TrackKind.VIDEO, codec=Codec.H264,
                        time_base_num=1, time_base_den=self.fps, width=v.width, height=v.height,
                        sample_rate=0, channels=0, extradata=b""),
            TrackConfig(track_id=AUDIO_TRACK_ID, kind=TrackKind.AUDIO, codec=Codec.AAC,
                        time_base_num=1, time_base_den=self.sample_rate, width=0, height=0,
                        sample_rate=self.sample_rate, channels=1,
                        extradata=bytes(a.extradata or b"")),
        ]

    def set_kbps(self, kbps: int, frame_step: int = 1) -> None:
        """Video bitrate from the next frame on; `frame_step` k: only every k-th frame is
        encoded (the rate per frame is scaled up to match, at most the ceiling)."""
        self._v.bit_rate = min(self.ceiling_kbps, kbps * max(1, frame_step)) * 1000

    def encode_video(self, bgr: npt.NDArray[np.uint8], index: int,
                     capture_time_us: int, keyframe: bool = False) -> list[EncodedUnit]:
        """Encode one frame; `keyframe` forces this one to be an IDR frame (the GOP
        schedule carries on from it)."""
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
        frame.pts = index
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        self._capture_us_by_pts[index] = capture_time_us
        return self._video_units(self._v.encode(frame))

    def encode_audio(self, samples: npt.NDArray[np.float32]) -> list[EncodedUnit]:
        """Mono planar float samples; emitted in AAC frames of 1024 samples."""
        out: list[EncodedUnit] = []
        for pts, chunk in self._aac.push(samples):
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            af.sample_rate = self.sample_rate
            af.pts = pts
            for p in self._a.encode(af):
                if p.pts is None:
                    continue
                cap = self.epoch_us + round(p.pts * 1e6 / self.sample_rate)
                out.append(EncodedUnit(AUDIO_TRACK_ID, True, p.pts, p.dts if p.dts is not None
                                       else p.pts, cap, bytes(p)))
        return out

    def flush(self) -> list[EncodedUnit]:
        return self._video_units(self._v.encode(None))

    def _video_units(self, packets: list[av.Packet]) -> list[EncodedUnit]:
        out = []
        for p in packets:
            if p.pts is None:
                continue
            cap = self._capture_us_by_pts.pop(p.pts, 0)
            out.append(EncodedUnit(VIDEO_TRACK_ID, p.is_keyframe, p.pts,
                                   p.dts if p.dts is not None else p.pts, cap, bytes(p)))
        return out
