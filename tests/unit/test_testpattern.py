"""Test-pattern video frames and the beeping tone generator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from encoder.framecode import FrameCode, code_band_height, read_frame_code
from encoder.testpattern import (
    BEEP_DURATION_MS,
    BEEP_FREQUENCY_RATIO,
    TestPattern,
    ToneGenerator,
    format_time_of_day_ms,
)

EPOCH_MS = 1_763_820_000_000


# --- video -----------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(160, 90), (320, 180), (1280, 720), (1920, 1080)])
def test_frame_has_size_and_carries_its_code(width: int, height: int) -> None:
    pattern = TestPattern(width, height, 30.0)
    for frame_number in (0, 1, 29, 12345):
        image = pattern.video_frame(frame_number, EPOCH_MS + frame_number * 33)
        assert image.shape == (height, width, 3)
        assert image.dtype == np.uint8
        assert read_frame_code(image) == FrameCode(frame_number, EPOCH_MS + frame_number * 33)


def test_frame_depends_only_on_number_and_time() -> None:
    pattern = TestPattern(320, 180, 25.0)
    first = pattern.video_frame(7, EPOCH_MS)
    pattern.video_frame(8, EPOCH_MS + 40)
    assert np.array_equal(pattern.video_frame(7, EPOCH_MS), first)
    assert np.array_equal(TestPattern(320, 180, 25.0).video_frame(7, EPOCH_MS), first)


def test_each_call_returns_a_new_array() -> None:
    pattern = TestPattern(320, 180, 30.0)
    first = pattern.video_frame(0, EPOCH_MS)
    kept = first.copy()
    pattern.video_frame(1, EPOCH_MS + 33)
    assert np.array_equal(first, kept)


def test_picture_moves_below_the_code_band() -> None:
    pattern = TestPattern(640, 360, 30.0)
    band = code_band_height(640, 360)
    previous = pattern.video_frame(0, EPOCH_MS)
    for frame_number in range(1, 10):
        image = pattern.video_frame(frame_number, EPOCH_MS)  # same time: only motion differs
        changed = np.any(image[band:] != previous[band:], axis=2)
        assert changed.mean() > 0.05, frame_number
        previous = image


def test_time_of_day_text() -> None:
    assert format_time_of_day_ms(0) == "00:00:00.000"
    assert format_time_of_day_ms(EPOCH_MS + 123) == "14:00:00.123"
    assert format_time_of_day_ms(86_399_999) == "23:59:59.999"
    assert format_time_of_day_ms(86_400_000 + 61_001) == "00:01:01.001"


def test_text_changes_with_time() -> None:
    pattern = TestPattern(640, 360, 30.0)
    band = code_band_height(640, 360)
    a = pattern.video_frame(5, EPOCH_MS)
    b = pattern.video_frame(5, EPOCH_MS + 1)
    assert not np.array_equal(a[band:], b[band:])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0, "height": 180, "fps": 30.0}, "positive"),
        ({"width": 320, "height": 180, "fps": 0.0}, "fps"),
        ({"width": 320, "height": 180, "fps": 30.0, "title": "caf\u00e9"}, "ASCII"),
    ],
)
def test_bad_pattern_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TestPattern(**kwargs)  # type: ignore[arg-type]


# --- audio -----------------------------------------------------------------------------


def test_samples_shape_dtype_and_range() -> None:
    tone = ToneGenerator(sample_rate=48000, channels=2)
    block = tone.samples(1024)
    assert block.shape == (2, 1024)
    assert block.dtype == np.float32
    assert np.all(np.abs(block) <= 1.0)
    assert np.array_equal(block[0], block[1])
    assert tone.samples(0).shape == (2, 0)


@pytest.mark.parametrize("chunk_sizes", [[1024] * 50, [1, 2, 3, 997, 0, 480, 9600, 441] * 5])
def test_phase_is_continuous_across_calls(chunk_sizes: list[int]) -> None:
    total = sum(chunk_sizes)
    whole = ToneGenerator().samples(total)
    tone = ToneGenerator()
    chunked = np.concatenate([tone.samples(n) for n in chunk_sizes], axis=1)
    assert tone.samples_produced == total
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_no_jumps_at_frequency_changes_or_call_boundaries() -> None:
    sample_rate, frequency_hz, level_dbfs = 48000, 440.0, -6.0
    tone = ToneGenerator(sample_rate, 1, frequency_hz, level_dbfs)
    signal = np.concatenate([tone.samples(333)[0] for _ in range(600)])  # > 4 s
    amplitude = 10 ** (level_dbfs / 20)
    max_step = amplitude * 2 * math.pi * frequency_hz * BEEP_FREQUENCY_RATIO / sample_rate
    assert np.max(np.abs(np.diff(signal))) <= max_step * 1.001


def test_level_is_peak_dbfs() -> None:
    tone = ToneGenerator(level_dbfs=-20.0)
    second = tone.samples(48000)[0]
    assert np.max(np.abs(second)) == pytest.approx(0.1, rel=1e-3)
    rms = float(np.sqrt(np.mean(second.astype(np.float64) ** 2)))
    assert rms == pytest.approx(0.1 / math.sqrt(2), rel=1e-2)


def test_beep_then_base_tone_every_second() -> None:
    sample_rate = 48000
    tone = ToneGenerator(sample_rate=sample_rate, frequency_hz=440.0)
    for _ in range(3):
        second = tone.samples(sample_rate)[0]
        beep_end = sample_rate * BEEP_DURATION_MS // 1000
        for part, expected_hz in [(second[:beep_end], 880.0), (second[beep_end:], 440.0)]:
            crossings = np.count_nonzero(np.diff(np.signbit(part)))
            measured_hz = crossings / 2 / (len(part) / sample_rate)
            assert measured_hz == pytest.approx(expected_hz, abs=5.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 0},
        {"channels": 0},
        {"frequency_hz": 0.0},
        {"sample_rate": 8000, "frequency_hz": 3000.0},
        {"level_dbfs": 3.0},
    ],
)
def test_bad_tone_arguments_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ToneGenerator(**kwargs)  # type: ignore[arg-type]
