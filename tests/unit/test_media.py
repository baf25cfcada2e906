"""uplink.media, the media conventions the encoder, the relay and the connection check share:
AAC framing, libx264's options, the resolution form, the frame-rate floor."""

from __future__ import annotations

import numpy as np
import pytest

from uplink.media import (
    AAC_FRAME_SAMPLES,
    AacFramer,
    default_floor_kbps,
    keyframe_interval_frames,
    parse_resolution,
    x264_options,
)


def test_aac_framer_emits_whole_frames_numbered_in_samples_and_keeps_the_rest() -> None:
    framer = AacFramer(2)
    samples = np.arange(2 * 2500, dtype=np.float32).reshape(2, 2500)
    frames = framer.push(samples[:, :1000])
    assert frames == []  # not a whole frame yet
    frames = framer.push(samples[:, 1000:])
    assert [pts for pts, _ in frames] == [0, AAC_FRAME_SAMPLES]
    for i, (_, frame) in enumerate(frames):
        assert frame.shape == (2, AAC_FRAME_SAMPLES) and frame.dtype == np.float32
        assert frame.flags.c_contiguous
        start = i * AAC_FRAME_SAMPLES
        np.testing.assert_array_equal(frame, samples[:, start:start + AAC_FRAME_SAMPLES])
    assert framer.samples_out == 2 * AAC_FRAME_SAMPLES
    (pts, frame), = framer.push(np.zeros((2, AAC_FRAME_SAMPLES), np.float32))
    assert pts == 2 * AAC_FRAME_SAMPLES  # the 452 samples left over lead the next frame
    np.testing.assert_array_equal(frame[:, :452], samples[:, 2048:])


def test_aac_framer_hands_out_float32_whatever_it_is_fed() -> None:
    (_, frame), = AacFramer(1).push(np.ones((1, AAC_FRAME_SAMPLES), np.float64))
    assert frame.dtype == np.float32 and frame.shape == (1, AAC_FRAME_SAMPLES)


def test_live_x264_options_fix_the_keyframe_interval_under_a_vbv_cap() -> None:
    assert x264_options("veryfast", 60, 2500, 5000, zerolatency=True) == {
        "preset": "veryfast", "tune": "zerolatency", "g": "60", "keyint_min": "60",
        "sc_threshold": "0", "maxrate": "2500k", "bufsize": "5000k"}


def test_archive_x264_options_leave_out_zerolatency() -> None:
    options = x264_options("medium", 50, 2500, 5000, zerolatency=False)
    assert "tune" not in options and options["g"] == options["keyint_min"] == "50"


@pytest.mark.parametrize(("fps", "keyframe_s", "frames"),
                         [(30, 2.0, 60), (25, 2.0, 50), (15, 0.5, 8), (1, 0.1, 1)])
def test_keyframe_interval_is_rounded_and_at_least_one_frame(fps: int, keyframe_s: float,
                                                            frames: int) -> None:
    assert keyframe_interval_frames(fps, keyframe_s) == frames


@pytest.mark.parametrize(("text", "size"), [("1280x720", (1280, 720)), ("640x360", (640, 360)),
                                            ("16x16", (16, 16)), ("3840x2160", (3840, 2160))])
def test_resolution_parses(text: str, size: tuple[int, int]) -> None:
    assert parse_resolution(text) == size


@pytest.mark.parametrize("text", ["1281x720", "1280x721", "1280X720", "1280*720", "12800x720",
                                  "8x8", " 640x360", "640x360\n", "640x", "x360", ""])
def test_a_bad_resolution_is_a_value_error_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="WIDTHxHEIGHT with even numbers") as info:
        parse_resolution(text)
    assert repr(text) in str(info.value)


def test_frame_rate_floor_is_three_hundredths_of_a_bit_per_pixel_per_frame() -> None:
    assert default_floor_kbps(1280, 720, 30) == 829
    assert default_floor_kbps(854, 480, 30) == 369
    assert default_floor_kbps(16, 16, 1) == 1  # never 0
