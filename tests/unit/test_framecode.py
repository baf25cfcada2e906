"""Frame code: raw round trips, round trips through libx264 at low bitrates, and rejections."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encoder.framecode import (
    CODE_BAND_HEIGHT_FRACTION,
    CODE_COLUMNS,
    CODE_ROWS,
    MAX_CAPTURE_TIME_MS,
    MAX_FRAME_NUMBER,
    FrameCode,
    _calibrated_cells,
    _draw_cells,
    code_band_height,
    crc24,
    draw_frame_code,
    read_frame_code,
    read_frame_code_gray,
)
from encoder.testpattern import TestPattern

SIZES = [(160, 90), (320, 180), (640, 360), (1280, 720), (1920, 1080)]
CODES = [
    FrameCode(0, 0),
    FrameCode(1, 1_763_820_000_123),
    FrameCode(MAX_FRAME_NUMBER, MAX_CAPTURE_TIME_MS),
    FrameCode(0x5A5A5A5A, 0xA5A5A5A5A5A5),
]
FPS = 30
EPOCH_MS = 1_763_820_000_000


def gray(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)


def mid_gray(width: int, height: int) -> npt.NDArray[np.uint8]:
    return np.full((height, width, 3), 128, dtype=np.uint8)


def codes_for_run(count: int) -> list[FrameCode]:
    # frame numbers and times that change many bits from frame to frame
    return [FrameCode(i * 7919 + 3, EPOCH_MS + i * 1000 // FPS) for i in range(count)]


def encode_decode(
    width: int, height: int, bit_rate: int, codes: list[FrameCode]
) -> list[av.VideoFrame]:
    """Encode the test pattern carrying codes with libx264, decode it; one frame per code."""
    pattern = TestPattern(width, height, FPS)
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width = width
    encoder.height = height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, FPS)
    encoder.framerate = Fraction(FPS, 1)
    encoder.bit_rate = bit_rate
    encoder.options = {"preset": "veryfast", "tune": "zerolatency"}
    packets = []
    for pts, code in enumerate(codes):
        image = pattern.video_frame(code.frame_number, code.capture_time_ms)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = pts
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    decoder = av.CodecContext.create("h264", "r")
    frames: list[av.VideoFrame] = []
    for packet in packets:
        frames += decoder.decode(packet)
    frames += decoder.decode(None)
    assert len(frames) == len(codes)
    return frames


# --- raw round trips -------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize("code", CODES)
def test_round_trip_on_raw_frame(width: int, height: int, code: FrameCode) -> None:
    image = mid_gray(width, height)
    draw_frame_code(image, code)
    assert read_frame_code(image) == code
    assert read_frame_code_gray(gray(image)) == code


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_code_stays_inside_top_band(width: int, height: int) -> None:
    image = mid_gray(width, height)
    draw_frame_code(image, CODES[1])
    band = code_band_height(width, height)
    assert band <= 0.15 * height + 1
    assert np.all(image[band:] == 128)
    assert set(np.unique(image[:band]).tolist()) == {16, 235}


def test_round_trip_on_odd_and_portrait_sizes() -> None:
    for width, height in [(80, 40), (161, 91), (333, 187), (1080, 1920), (720, 720)]:
        image = mid_gray(width, height)
        draw_frame_code(image, CODES[2])
        assert read_frame_code(image) == CODES[2], (width, height)


def test_round_trip_after_rescaling_raw_frame() -> None:
    image = mid_gray(640, 360)
    draw_frame_code(image, CODES[1])
    for width, height in [(1920, 1080), (1280, 720), (320, 180), (160, 90), (640, 480)]:
        scaled = np.asarray(
            cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8
        )
        assert read_frame_code(scaled) == CODES[1], (width, height)


def test_read_accepts_non_contiguous_views() -> None:
    image = mid_gray(330, 190)
    draw_frame_code(image, CODES[3])
    padded = np.zeros((190, 400, 3), dtype=np.uint8)
    padded[:, :330] = image
    assert read_frame_code(padded[:, :330]) == CODES[3]
    assert read_frame_code_gray(gray(padded)[:, :330]) == CODES[3]


def test_too_small_frame_cannot_carry_code() -> None:
    with pytest.raises(ValueError, match="too small"):
        draw_frame_code(mid_gray(60, 30), CODES[0])
    assert read_frame_code(mid_gray(60, 30)) is None
    assert read_frame_code_gray(np.zeros((30, 60), dtype=np.uint8)) is None


def test_wrong_image_shape_or_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        draw_frame_code(np.zeros((90, 160), dtype=np.uint8), CODES[0])
    with pytest.raises(ValueError, match="dtype"):
        read_frame_code(np.zeros((90, 160, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        read_frame_code_gray(np.zeros((90, 160, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("frame_number", "capture_time_ms"),
    [(-1, 0), (MAX_FRAME_NUMBER + 1, 0), (0, -1), (0, MAX_CAPTURE_TIME_MS + 1)],
)
def test_frame_code_out_of_range_is_refused(frame_number: int, capture_time_ms: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        FrameCode(frame_number, capture_time_ms)


def test_crc24_matches_openpgp_check_value() -> None:
    assert crc24(b"123456789") == 0x21CF02


@settings(max_examples=200, deadline=None)
@given(
    frame_number=st.integers(0, MAX_FRAME_NUMBER),
    capture_time_ms=st.integers(0, MAX_CAPTURE_TIME_MS),
    width=st.integers(80, 1920),
    height=st.integers(40, 1080),
)
def test_any_code_round_trips(
    frame_number: int, capture_time_ms: int, width: int, height: int
) -> None:
    code = FrameCode(frame_number, capture_time_ms)
    image = mid_gray(width, height)
    draw_frame_code(image, code)
    assert read_frame_code(image) == code
    assert read_frame_code_gray(gray(image)) == code


# --- through a real codec ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "bit_rate"),
    [(160, 90, 60_000), (320, 180, 150_000), (1280, 720, 600_000)],
)
def test_every_frame_reads_back_after_x264_at_low_bitrate(
    width: int, height: int, bit_rate: int
) -> None:
    codes = codes_for_run(60)
    frames = encode_decode(width, height, bit_rate, codes)
    assert [read_frame_code(f.to_ndarray(format="bgr24")) for f in frames] == codes
    assert [read_frame_code_gray(f.to_ndarray(format="gray")) for f in frames] == codes


@pytest.mark.parametrize(
    ("width", "height", "bit_rate", "scaled_sizes"),
    [
        (640, 360, 300_000, [(1280, 720), (320, 180), (160, 90)]),
        (320, 180, 150_000, [(1920, 1080), (640, 360)]),
    ],
)
def test_every_frame_reads_back_after_x264_and_rescaling(
    width: int, height: int, bit_rate: int, scaled_sizes: list[tuple[int, int]]
) -> None:
    codes = codes_for_run(60)
    frames = encode_decode(width, height, bit_rate, codes)
    for scaled_width, scaled_height in scaled_sizes:
        scaled = [f.reformat(width=scaled_width, height=scaled_height) for f in frames]
        assert [read_frame_code(f.to_ndarray(format="bgr24")) for f in scaled] == codes
        assert [read_frame_code_gray(f.to_ndarray(format="gray")) for f in scaled] == codes


def test_starved_encoder_gives_no_code_rather_than_a_wrong_one() -> None:
    # 160x90 at 30 kbit/s smears the cells; a frame may fail to read but never misread
    codes = codes_for_run(60)
    frames = encode_decode(160, 90, 30_000, codes)
    for code, frame in zip(codes, frames, strict=True):
        assert read_frame_code(frame.to_ndarray(format="bgr24")) in (None, code)
        assert read_frame_code_gray(frame.to_ndarray(format="gray")) in (None, code)


# --- pictures without a code ---------------------------------------------------------------


def horizontal_gradient(width: int, height: int, reverse: bool) -> npt.NDArray[np.uint8]:
    ramp = np.linspace(0, 255, width).astype(np.uint8)
    if reverse:
        ramp = ramp[::-1]
    return np.ascontiguousarray(np.broadcast_to(ramp[None, :, None], (height, width, 3)))


def random_text(width: int, height: int, seed: int) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 #:."))
    scale = height / 200
    for y in range(max(1, height // 12), height, max(1, height // 8)):
        text = "".join(rng.choice(letters, 40))
        cv2.putText(image, text, (0, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2)
    return image


def slate(width: int, height: int) -> npt.NDArray[np.uint8]:
    image = np.full((height, width, 3), (60, 20, 20), dtype=np.uint8)
    for i, line in enumerate(["steadycast", "Stream will resume shortly", "uplink lost"]):
        cv2.putText(
            image,
            line,
            (width // 10, height // 4 + i * height // 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            height / 400,
            (255, 255, 255),
            max(1, height // 200),
        )
    return image


def checkerboard(width: int, height: int) -> npt.NDArray[np.uint8]:
    # black/white squares on exactly the code grid, but not a code
    rows = np.arange(height) * CODE_ROWS * 20 // height
    cols = np.arange(width) * CODE_COLUMNS // width
    cells = (rows[:, None] + cols[None, :]) % 2
    return np.repeat(np.where(cells, 235, 16).astype(np.uint8)[:, :, None], 3, axis=2)


def coded_test_pattern_frame(width: int, height: int, code: FrameCode) -> npt.NDArray[np.uint8]:
    return TestPattern(width, height, FPS).video_frame(code.frame_number, code.capture_time_ms)


NON_CODE_PICTURES = {
    "black": lambda w, h: np.zeros((h, w, 3), dtype=np.uint8),
    "white": lambda w, h: np.full((h, w, 3), 255, dtype=np.uint8),
    "noise": lambda w, h: np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8),
    "gradient": lambda w, h: horizontal_gradient(w, h, reverse=False),
    "reversed gradient": lambda w, h: horizontal_gradient(w, h, reverse=True),
    "random text": lambda w, h: random_text(w, h, seed=7),
    "slate": slate,
    "checkerboard": checkerboard,
    "mirrored code": lambda w, h: np.ascontiguousarray(
        coded_test_pattern_frame(w, h, CODES[1])[:, ::-1]
    ),
    "upside-down code": lambda w, h: np.ascontiguousarray(
        coded_test_pattern_frame(w, h, CODES[1])[::-1]
    ),
}


@pytest.mark.parametrize("name", sorted(NON_CODE_PICTURES))
@pytest.mark.parametrize(("width", "height"), [(160, 90), (640, 360), (1920, 1080)])
def test_picture_without_code_reads_as_none(name: str, width: int, height: int) -> None:
    image = NON_CODE_PICTURES[name](width, height)
    assert read_frame_code(image) is None
    assert read_frame_code_gray(gray(image)) is None


def test_one_flipped_cell_reads_as_none() -> None:
    image = mid_gray(640, 360)
    draw_frame_code(image, CODES[1])
    cell_w, cell_h = 640 // CODE_COLUMNS, round(360 * CODE_BAND_HEIGHT_FRACTION) // CODE_ROWS
    for row in range(CODE_ROWS):
        for col in range(CODE_COLUMNS):
            damaged = image.copy()
            cell = damaged[row * cell_h : (row + 1) * cell_h, col * cell_w : (col + 1) * cell_w]
            cell[...] = 251 - cell  # 16 <-> 235
            assert read_frame_code(damaged) is None, (row, col)


def test_blend_of_two_coded_frames_reads_as_none() -> None:
    # e.g. a frame-rate converter that blends neighbouring frames
    first = coded_test_pattern_frame(640, 360, FrameCode(100, EPOCH_MS))
    second = coded_test_pattern_frame(640, 360, FrameCode(101, EPOCH_MS + 33))
    blend = ((first.astype(np.uint16) + second) // 2).astype(np.uint8)
    assert read_frame_code(blend) is None


def test_code_faded_to_low_contrast_reads_as_none() -> None:
    image = mid_gray(640, 360)
    draw_frame_code(image, CODES[1])
    faded = (128 + (image.astype(np.int16) - 128) // 4).astype(np.uint8)
    assert read_frame_code(faded) is None


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    width=st.integers(80, 640),
    height=st.integers(40, 360),
)
def test_random_noise_never_decodes(seed: int, width: int, height: int) -> None:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert read_frame_code(noise) is None
    assert read_frame_code_gray(noise[:, :, 1].copy()) is None


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_cells_with_valid_calibration_never_decode(seed: int) -> None:
    # a perfect black/white picture on the code grid with the right start pattern: only the
    # marker and the CRC (28 bits) stand between it and a false code
    cells = _calibrated_cells(np.random.default_rng(seed).integers(0, 2, 108).astype(bool))
    image = mid_gray(320, 180)
    _draw_cells(image, cells)
    assert read_frame_code(image) is None
