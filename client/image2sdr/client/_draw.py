"""An SDR as a picture: active bits dark on light, one square per bit (needs Pillow, the `cli` extra)."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

from ._types import Sdr

__all__ = ["ACTIVE", "BACKGROUND", "grid_shape", "save_png", "sdr_image"]

ACTIVE = 24  # grey level of an active bit: dark
BACKGROUND = 240  # grey level of an inactive bit: light


def grid_shape(sdr: Sdr) -> tuple[int, int]:
    """(rows, columns) to draw: the SDR's own two dimensions, else the squarest grid that fits."""
    if len(sdr.dimensions) == 2:
        return sdr.dimensions[0], sdr.dimensions[1]
    columns = math.isqrt(sdr.size - 1) + 1 if sdr.size > 1 else 1
    return -(-sdr.size // columns), columns


def sdr_image(sdr: Sdr, *, scale: int = 4) -> Image.Image:
    """A greyscale picture of ``sdr``, each bit a ``scale`` x ``scale`` square, row-major."""
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    rows, columns = grid_shape(sdr)
    pixels = bytearray([BACKGROUND]) * (rows * columns)
    for position in sdr.active:
        pixels[position] = ACTIVE
    picture = Image.frombytes("L", (columns, rows), bytes(pixels))
    return picture.resize((columns * scale, rows * scale), Image.Resampling.NEAREST)


def save_png(sdr: Sdr, path: Path, *, scale: int = 4) -> None:
    sdr_image(sdr, scale=scale).save(path, "PNG")
