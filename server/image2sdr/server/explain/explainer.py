"""One explanation: the image, then each occluded variant, scored in batches; the heatmap and its PNG.

Variants are made batch by batch (``Target.batch`` images at a time), so memory
holds one batch of copies, never all of them.  They are made from a working
copy of the image whose shorter side is at most ``WORK_SIDE``: the local
classifier sees 224 pixels and a remote one a few hundred, so larger copies
would cost memory and PNG time and change no score that matters.  The score on
that working copy is the base the falls are measured from.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from ..imaging import DecodedImage
from .occlusion import Grid, heatmap, occluded
from .overlay import render
from .targets import Target

__all__ = ["WORK_SIDE", "Explanation", "explain", "working_image"]

WORK_SIDE = 512  # px: the shorter side occluded images are made at, at most


@dataclass(frozen=True)
class Explanation:
    target: str  # the concept, custom concept or item id explained
    score: float  # the target's score on the whole image
    grid: Grid
    heat: npt.NDArray[np.float32]  # rows x columns: mean fall of the score when a cell is hidden
    png: bytes  # the heatmap over the image
    elapsed_ms: float


def explain(image: DecodedImage, target: Target, grid: Grid, fill: int) -> Explanation:
    """Occlusion sensitivity of ``target`` on ``image``: each patch of ``grid`` (``plan_grid``) hidden in grey."""
    started = time.perf_counter()
    work = working_image(image.image)
    (base,) = target.scores([_as_decoded(work, target.needs_bytes)])
    scores = np.empty(grid.variants, dtype=np.float64)
    for start in range(0, grid.variants, target.batch):
        which = range(start, min(start + target.batch, grid.variants))
        variants = [_as_decoded(hidden, target.needs_bytes) for hidden in occluded(work, grid, which, fill)]
        scores[which.start : which.stop] = target.scores(variants)
    heat = heatmap(grid, float(base), scores)
    png = render(work, heat)
    return Explanation(target.name, float(base), grid, heat, png, (time.perf_counter() - started) * 1000)


def working_image(image: Image.Image) -> Image.Image:
    """The image with its shorter side brought down to ``WORK_SIDE`` (never enlarged)."""
    scale = WORK_SIDE / min(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def _as_decoded(image: Image.Image, with_bytes: bool) -> DecodedImage:
    # PNG: lossless, so a remote provider or the encoder sees exactly the grey patch, no JPEG ringing around it.
    data = b""
    if with_bytes:
        buffer = io.BytesIO()
        image.save(buffer, "PNG", compress_level=1)
        data = buffer.getvalue()
    return DecodedImage(data=data, image=image, format="PNG", width=image.width, height=image.height)
