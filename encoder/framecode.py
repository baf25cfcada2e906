"""Machine-readable frame code: a frame number and capture time drawn into a video frame.

The code is a band of black/white cells across the top of the picture that survives lossy
H.264 at low bitrates and rescaling, so a sink can count delivered, skipped and duplicated
frames and measure capture-to-platform latency without trusting the code under test.

Layout (all geometry in fractions of the frame, so any rescale keeps it):

* The band is the top ``CODE_BAND_HEIGHT_FRACTION`` (15 %) of the frame, split into
  ``CODE_ROWS`` (3) rows of ``CODE_COLUMNS`` (40) equal cells: 120 cells. Each cell is black
  (luma ~16) or white (luma ~235).
* Calibration / start pattern: every row starts white, black and ends white, black
  (columns 0, 1, 38, 39). These 12 cells give the black and white reference levels; the
  threshold is their midpoint.
* The other 108 cells, row-major, carry 108 bits (MSB first): a 4-bit marker ``0b0101``,
  the frame number (32 bits), the capture time in ms since the Unix epoch (48 bits) and a
  CRC-24 (OpenPGP) over those 10 payload bytes, big-endian. The 108 bits are XORed with a
  fixed whitening mask so that any value shows a mix of black and white cells.
* A reader samples the mean luma of the inner half of each cell and accepts a code only if
  the calibration cells differ by at least ``MIN_CONTRAST_LEVELS``, no cell lies within
  ``AMBIGUOUS_HALF_WIDTH_FRACTION`` (10 %) of the black-white range of the threshold, the
  calibration pattern and the marker match, and the CRC matches. A random black/white
  pattern on the exact grid passes with probability 2**-40 (12 calibration cells, 4 marker
  bits, 24 CRC bits); a slate, a black frame or an ordinary picture fails the contrast or the
  ambiguity test long before that, and so does a 50/50 blend of two coded frames.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

FRAME_NUMBER_BITS = 32
CAPTURE_TIME_BITS = 48
MAX_FRAME_NUMBER = 2**FRAME_NUMBER_BITS - 1
MAX_CAPTURE_TIME_MS = 2**CAPTURE_TIME_BITS - 1

CODE_BAND_HEIGHT_FRACTION = 0.15
CODE_ROWS = 3
CODE_COLUMNS = 40

BLACK_LEVEL = 16
WHITE_LEVEL = 235

# column -> 1 (white) / 0 (black); the same in every row
# (asymmetric, so a mirrored picture fails the start pattern)
CALIBRATION_COLUMNS: dict[int, int] = {0: 1, 1: 0, CODE_COLUMNS - 2: 1, CODE_COLUMNS - 1: 0}

MARKER_BITS = 4
MARKER_VALUE = 0b0101
CRC_BITS = 24
PAYLOAD_BYTES = (FRAME_NUMBER_BITS + CAPTURE_TIME_BITS) // 8
DATA_BITS = MARKER_BITS + FRAME_NUMBER_BITS + CAPTURE_TIME_BITS + CRC_BITS

# smallest frame a code is drawn into: cells must be at least 2 pixels each way
MIN_CELL_PX = 2
MIN_CONTRAST_LEVELS = 80.0
AMBIGUOUS_HALF_WIDTH_FRACTION = 0.1  # of the black-white range, either side of the midpoint

# BT.601 luma weights in BGR order
_LUMA_WEIGHTS_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float64)

_CRC24_INIT = 0xB704CE
_CRC24_POLY = 0x864CFB

# cells a code occupies: True where a data bit goes, row-major; the rest are calibration
_DATA_CELL_MASK = np.ones((CODE_ROWS, CODE_COLUMNS), dtype=bool)
_DATA_CELL_MASK[:, list(CALIBRATION_COLUMNS)] = False
assert int(_DATA_CELL_MASK.sum()) == DATA_BITS
_CALIBRATION_TEMPLATE = np.zeros((CODE_ROWS, CODE_COLUMNS), dtype=bool)
_CALIBRATION_TEMPLATE[:, [c for c, v in CALIBRATION_COLUMNS.items() if v]] = True
_WHITE_COLUMNS = [c for c, v in CALIBRATION_COLUMNS.items() if v == 1]
_BLACK_COLUMNS = [c for c, v in CALIBRATION_COLUMNS.items() if v == 0]
_CALIBRATION_COLUMN_LIST = list(CALIBRATION_COLUMNS)

_WORD_BYTES = (DATA_BITS + 7) // 8
_WORD_PAD_BITS = _WORD_BYTES * 8 - DATA_BITS


def _crc24_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= _CRC24_POLY
        table.append(crc & 0xFFFFFF)
    return tuple(table)


_CRC24_TABLE = _crc24_table()

_WHITENING_MASK = int.from_bytes(hashlib.sha256(b"steadycast frame code v1").digest(), "big") >> (
    256 - DATA_BITS
)


@dataclass(frozen=True)
class FrameCode:
    """What a frame carries: its number and when it was captured."""

    frame_number: int  # 0 .. 2**32-1
    capture_time_ms: int  # ms since the Unix epoch, 0 .. 2**48-1

    def __post_init__(self) -> None:
        if not 0 <= self.frame_number <= MAX_FRAME_NUMBER:
            raise ValueError(f"frame_number={self.frame_number} out of range 0..{MAX_FRAME_NUMBER}")
        if not 0 <= self.capture_time_ms <= MAX_CAPTURE_TIME_MS:
            raise ValueError(
                f"capture_time_ms={self.capture_time_ms} out of range 0..{MAX_CAPTURE_TIME_MS}"
            )


def code_band_height(width: int, height: int) -> int:
    """Pixel rows at the top of a width x height frame that the code occupies."""
    del width  # the band spans the full width; its height depends on the height only
    return _edges(height * CODE_BAND_HEIGHT_FRACTION, 1)[-1]


def crc24(data: bytes) -> int:
    """CRC-24/OpenPGP (RFC 4880) of data."""
    crc = _CRC24_INIT
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ _CRC24_TABLE[((crc >> 16) ^ byte) & 0xFF]
    return crc


def encode_bits(code: FrameCode) -> npt.NDArray[np.bool_]:
    """The 108 data bits (after whitening) for code, in cell order (row-major)."""
    payload = code.frame_number.to_bytes(4, "big") + code.capture_time_ms.to_bytes(6, "big")
    word = MARKER_VALUE
    word = (word << (FRAME_NUMBER_BITS + CAPTURE_TIME_BITS)) | int.from_bytes(payload, "big")
    word = (word << CRC_BITS) | crc24(payload)
    word ^= _WHITENING_MASK
    unpacked = np.unpackbits(np.frombuffer(word.to_bytes(_WORD_BYTES, "big"), dtype=np.uint8))
    return unpacked[_WORD_PAD_BITS:].astype(bool)


def decode_bits(bits: npt.NDArray[np.bool_]) -> FrameCode | None:
    """Inverse of encode_bits; None if the marker or the CRC does not match."""
    padded = np.concatenate((np.zeros(_WORD_PAD_BITS, dtype=bool), bits))
    word = int.from_bytes(np.packbits(padded).tobytes(), "big") ^ _WHITENING_MASK
    crc = word & 0xFFFFFF
    word >>= CRC_BITS
    payload_int = word & ((1 << (FRAME_NUMBER_BITS + CAPTURE_TIME_BITS)) - 1)
    marker = word >> (FRAME_NUMBER_BITS + CAPTURE_TIME_BITS)
    if marker != MARKER_VALUE:
        return None
    payload = payload_int.to_bytes(PAYLOAD_BYTES, "big")
    if crc24(payload) != crc:
        return None
    return FrameCode(
        frame_number=int.from_bytes(payload[:4], "big"),
        capture_time_ms=int.from_bytes(payload[4:], "big"),
    )


def _edges(extent: float, count: int) -> list[int]:
    """Pixel edges of count equal cells over [0, extent): pixel i is in cell c when its
    centre i + 0.5 lies in [c * size, (c + 1) * size)."""
    size = extent / count
    return [math.ceil(c * size - 0.5) for c in range(count + 1)]


def _inner_ranges(extent: float, count: int) -> list[tuple[int, int]]:
    """Pixel ranges [start, stop) covering the inner half of each of count cells."""
    size = extent / count
    ranges = []
    for c in range(count):
        centre = (c + 0.5) * size
        start = math.ceil(centre - size / 4 - 0.5)
        stop = math.ceil(centre + size / 4 - 0.5)
        if stop <= start:
            start = int(centre)
            stop = start + 1
        ranges.append((start, stop))
    return ranges


@dataclass(frozen=True)
class _Geometry:
    row_edges: list[int]
    col_edges: list[int]
    row_ranges: list[tuple[int, int]]
    col_starts: npt.NDArray[np.intp]
    col_stops: npt.NDArray[np.intp]
    col_of_pixel: npt.NDArray[np.intp]  # cell column of each pixel column in the band


@lru_cache(maxsize=64)
def _geometry(width: int, height: int) -> _Geometry | None:
    band = height * CODE_BAND_HEIGHT_FRACTION
    if band / CODE_ROWS < MIN_CELL_PX or width / CODE_COLUMNS < MIN_CELL_PX:
        return None
    cols = _inner_ranges(width, CODE_COLUMNS)
    col_edges = _edges(width, CODE_COLUMNS)
    return _Geometry(
        row_edges=_edges(band, CODE_ROWS),
        col_edges=col_edges,
        row_ranges=_inner_ranges(band, CODE_ROWS),
        col_starts=np.array([a for a, _ in cols], dtype=np.intp),
        col_stops=np.array([b for _, b in cols], dtype=np.intp),
        col_of_pixel=np.repeat(np.arange(CODE_COLUMNS), np.diff(col_edges)),
    )


def _calibrated_cells(data_bits: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """CODE_ROWS x CODE_COLUMNS cells (True = white): calibration plus 108 data bits."""
    cells = _CALIBRATION_TEMPLATE.copy()
    cells[_DATA_CELL_MASK] = data_bits
    return cells


def _draw_cells(image: npt.NDArray[np.uint8], cells: npt.NDArray[np.bool_]) -> None:
    """Paint CODE_ROWS x CODE_COLUMNS cells (True = white) into the band of a BGR image."""
    height, width = image.shape[:2]
    geometry = _geometry(width, height)
    if geometry is None:
        raise ValueError(
            f"frame {width}x{height} too small for a frame code: cells must be at least "
            f"{MIN_CELL_PX} px (width >= {CODE_COLUMNS * MIN_CELL_PX}, "
            f"height >= {math.ceil(CODE_ROWS * MIN_CELL_PX / CODE_BAND_HEIGHT_FRACTION)})"
        )
    ys = geometry.row_edges
    levels = np.where(cells, np.uint8(WHITE_LEVEL), np.uint8(BLACK_LEVEL))
    for row in range(CODE_ROWS):
        # one (1, w, 3) pixel row per cell row, copied down the pixel rows of that cell row
        pixels = np.repeat(levels[row][geometry.col_of_pixel], 3).reshape(1, width, 3)
        image[ys[row] : ys[row + 1]] = pixels


def _check_image(image: npt.NDArray[np.generic], channels: int | None) -> None:
    if image.dtype != np.uint8:
        raise ValueError(f"image dtype must be uint8, got {image.dtype}")
    if channels is None:
        if image.ndim != 2:
            raise ValueError(f"luma plane must have shape (h, w), got {image.shape}")
    elif image.ndim != 3 or image.shape[2] != channels:
        raise ValueError(f"image must have shape (h, w, {channels}), got {image.shape}")


def draw_frame_code(image: npt.NDArray[np.uint8], code: FrameCode) -> None:
    """Draw code in place into the top band of a BGR uint8 image of shape (h, w, 3).

    Raises ValueError if the image is not (h, w, 3) uint8 or smaller than 80x40.
    """
    _check_image(image, 3)
    _draw_cells(image, _calibrated_cells(encode_bits(code)))


def _decide(cell_means: npt.NDArray[np.float64]) -> FrameCode | None:
    """Turn per-cell mean luma (CODE_ROWS x CODE_COLUMNS) into a code or None."""
    white = float(cell_means[:, _WHITE_COLUMNS].mean())
    black = float(cell_means[:, _BLACK_COLUMNS].mean())
    contrast = white - black
    if contrast < MIN_CONTRAST_LEVELS:
        return None
    normalised = (cell_means - black) / contrast
    if np.any(np.abs(normalised - 0.5) < AMBIGUOUS_HALF_WIDTH_FRACTION):
        return None
    cells = normalised > 0.5
    calibration = _CALIBRATION_COLUMN_LIST
    if not np.array_equal(cells[:, calibration], _CALIBRATION_TEMPLATE[:, calibration]):
        return None
    return decode_bits(cells[_DATA_CELL_MASK])


def _cell_means(geometry: _Geometry, image: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
    """Mean luma of the inner half of every cell; image is a luma plane or BGR."""
    means = np.empty((CODE_ROWS, CODE_COLUMNS), dtype=np.float64)
    widths = geometry.col_stops - geometry.col_starts
    for row, (start, stop) in enumerate(geometry.row_ranges):
        # column sums over the inner rows of this cell row: (1, w) or (1, w, 3)
        sums = cv2.reduce(
            np.ascontiguousarray(image[start:stop]), 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S
        )
        profile = sums.reshape(image.shape[1], -1).astype(np.float64)
        luma = profile[:, 0] if profile.shape[1] == 1 else profile @ _LUMA_WEIGHTS_BGR
        cumulative = np.concatenate(([0.0], np.cumsum(luma)))
        means[row] = (cumulative[geometry.col_stops] - cumulative[geometry.col_starts]) / (
            widths * (stop - start)
        )
    return means


def read_frame_code_gray(luma: npt.NDArray[np.generic]) -> FrameCode | None:
    """Read the code from a luma plane (h, w) uint8; None if there is no valid code.

    Typed for any ndarray so PyAV's ``frame.to_ndarray(format="gray")`` passes as it is; a
    dtype other than uint8 raises ValueError.
    """
    _check_image(luma, None)
    geometry = _geometry(luma.shape[1], luma.shape[0])
    if geometry is None:
        return None
    return _decide(_cell_means(geometry, luma))


def read_frame_code(image: npt.NDArray[np.generic]) -> FrameCode | None:
    """Read the code from a BGR uint8 image (h, w, 3); None if there is no valid code.

    Typed for any ndarray so PyAV's ``frame.to_ndarray(format="bgr24")`` passes as it is; a
    dtype other than uint8 raises ValueError.
    """
    _check_image(image, 3)
    geometry = _geometry(image.shape[1], image.shape[0])
    if geometry is None:
        return None
    return _decide(_cell_means(geometry, image))
