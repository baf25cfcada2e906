"""The "reconnecting" slate: the picture platforms see while the ingest is away.

Rendered once per stream with Pillow and the DejaVu Sans font that matplotlib ships (it has
the Vietnamese glyphs that OpenCV's Hershey fonts lack). A configured image replaces the
background; the text is drawn over it.
"""

from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

SLATE_LINE_VI = "Đang kết nối lại…"
SLATE_LINE_EN = "Reconnecting…"
BACKGROUND_RGB = (24, 32, 48)
TEXT_RGB = (240, 240, 240)
SUBTLE_RGB = (170, 180, 200)


def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = importlib.resources.files("matplotlib") / "mpl-data/fonts/ttf/DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(path), size_px)
    except OSError:
        log.warning("DejaVuSans.ttf not found; the slate falls back to Pillow's default font")
        return ImageFont.load_default(size=size_px)


def render_slate(width: int, height: int, title: str = "",
                 image: Path | None = None) -> npt.NDArray[np.uint8]:
    """The slate as an RGB uint8 array of shape (height, width, 3)."""
    canvas = Image.new("RGB", (width, height), BACKGROUND_RGB)
    if image is not None:
        try:
            with Image.open(image) as bg:
                canvas.paste(bg.convert("RGB").resize((width, height)))
        except OSError as exc:
            log.warning("slate image %s cannot be read (%s); using the plain background",
                        image, exc)
    draw = ImageDraw.Draw(canvas)
    big = _font(max(12, height // 12))
    small = _font(max(10, height // 22))
    lines: list[tuple[str, ImageFont.FreeTypeFont | ImageFont.ImageFont, tuple[int, int, int]]] = [
        (SLATE_LINE_VI, big, TEXT_RGB),
        (SLATE_LINE_EN, small, SUBTLE_RGB),
    ]
    if title:
        lines.insert(0, (title, small, SUBTLE_RGB))
    heights = [draw.textbbox((0, 0), text, font=font)[3] for text, font, _ in lines]
    gap = height // 30
    y = (height - sum(heights) - gap * (len(lines) - 1)) // 2
    for (text, font, colour), h in zip(lines, heights, strict=True):
        w = draw.textbbox((0, 0), text, font=font)[2]
        draw.text(((width - w) // 2, y), text, font=font, fill=colour)
        y += h + gap
    return np.asarray(canvas, dtype=np.uint8)
