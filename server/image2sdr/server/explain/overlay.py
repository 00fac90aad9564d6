"""The heatmap drawn over its image, as a PNG a person can look at.

Only falls are coloured: a cell whose hiding raised the score shows the photo
as it is.  The colours run dark blue (no fall) through cyan and yellow to red
(the largest fall in this image), the usual "jet" reading of such maps; the
heat is upsampled bilinearly, so the cells blend instead of showing as tiles.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["ALPHA", "render"]

ALPHA = 0.5  # opacity of the colour at the largest fall; no fall leaves the photo as it is
MAX_SIDE = 1024  # longest side of the PNG: a heatmap needs no more pixels than a screen
# "jet": value in [0, 1] -> RGB, piecewise linear between these stops.
_STOPS = np.array([0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
_COLOURS = np.array(
    [[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]], dtype=np.float64
)


def render(image: Image.Image, heat: npt.NDArray[np.float32]) -> bytes:
    """PNG of ``image`` with ``heat`` (rows x columns, covering the whole image) laid over it."""
    shown = _bounded(image.convert("RGB"))
    level = _normalised(heat)
    upsampled = Image.fromarray(level, mode="F").resize(shown.size, Image.Resampling.BILINEAR)
    value = np.clip(np.asarray(upsampled, dtype=np.float64), 0.0, 1.0)
    colour = np.stack([np.interp(value, _STOPS, _COLOURS[:, c]) for c in range(3)], axis=-1)
    alpha = (ALPHA * value)[..., None]
    blended = (1.0 - alpha) * np.asarray(shown, dtype=np.float64) + alpha * colour
    buffer = io.BytesIO()
    Image.fromarray(np.round(blended).astype(np.uint8)).save(buffer, "PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _normalised(heat: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Falls scaled to [0, 1] by the largest; rises (negative heat) count as none."""
    falls = np.clip(np.nan_to_num(heat.astype(np.float32), nan=0.0), 0.0, None)
    top = float(falls.max(initial=0.0))
    return falls / top if top > 0 else falls


def _bounded(image: Image.Image) -> Image.Image:
    scale = MAX_SIDE / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)
