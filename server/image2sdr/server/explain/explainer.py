"""One explanation: the image, then each occluded variant, scored in batches; the heatmap and its PNG.

Variants are made batch by batch (``Target.batch`` images at a time), so memory
holds one batch of copies, never all of them.  They are made from a working
copy of the image whose shorter side is at most ``WORK_SIDE`` and whose pixels
are at most ``WORK_PIXELS``: the local classifier sees 224 pixels and a remote
one a few hundred, so larger copies would cost memory and PNG time and change no
score that matters.  The pixel bound holds a batch's memory to ~50 MB whatever
the aspect ratio (a 500 x 100000 strip, within image.max_pixels, would otherwise
copy 150 MB per variant); the grid is planned on the image as sent and scaled to
the copy (``occluded``).  The score on that working copy is the base the falls
are measured from.

Up to ``explain.max_variants`` classifier passes (billed, with a remote
provider) are no work to go on with once the caller has gone: ``stopped`` is
asked before each batch, and when it says so the explanation ends with
``DeadlineExceededError``.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from ..errors import DeadlineExceededError
from ..imaging import DecodedImage
from .occlusion import Grid, heatmap, occluded
from .overlay import render
from .targets import Target

__all__ = ["WORK_PIXELS", "WORK_SIDE", "Explanation", "explain", "working_image"]

WORK_SIDE = 512  # px: the shorter side occluded images are made at, at most
WORK_PIXELS = 1 << 20  # width x height of the working copy, at most (3 MB as RGB; photos up to 4:1 stay at WORK_SIDE)


@dataclass(frozen=True)
class Explanation:
    target: str  # the concept, custom concept or item id explained
    score: float  # the target's score on the whole image
    grid: Grid
    heat: npt.NDArray[np.float32]  # rows x columns: mean fall of the score when a cell is hidden
    png: bytes  # the heatmap over the image
    elapsed_ms: float


def explain(
    image: DecodedImage, target: Target, grid: Grid, fill: int, stopped: Callable[[], bool] | None = None
) -> Explanation:
    """Occlusion sensitivity of ``target`` on ``image``: each patch of ``grid`` (``plan_grid``) hidden in grey.

    ``stopped`` (None: never) says the caller has gone (cancelled, past its deadline):
    asked before every scoring call, it ends the work with ``DeadlineExceededError``.
    """
    started = time.perf_counter()
    work = working_image(image.image)
    _check(stopped, 0, grid.variants)
    (base,) = target.scores([_as_decoded(work, target.needs_bytes)])
    scores = np.empty(grid.variants, dtype=np.float64)
    for start in range(0, grid.variants, target.batch):
        _check(stopped, start, grid.variants)
        which = range(start, min(start + target.batch, grid.variants))
        variants = [_as_decoded(hidden, target.needs_bytes) for hidden in occluded(work, grid, which, fill)]
        scores[which.start : which.stop] = target.scores(variants)
    heat = heatmap(grid, float(base), scores)
    png = render(work, heat)
    return Explanation(target.name, float(base), grid, heat, png, (time.perf_counter() - started) * 1000)


def working_image(image: Image.Image) -> Image.Image:
    """The image scaled down (never enlarged) to ``working_size``."""
    size = working_size(image.width, image.height)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def working_size(width: int, height: int) -> tuple[int, int]:
    """The working copy's size: the shorter side at most ``WORK_SIDE``, the pixels at most ``WORK_PIXELS``."""
    scale = min(1.0, WORK_SIDE / min(width, height), math.sqrt(WORK_PIXELS / (width * height)))
    if scale >= 1:
        return width, height
    # Rounded down (past float error): rounding up could take a copy just over WORK_PIXELS.
    return max(1, math.floor(width * scale + 1e-9)), max(1, math.floor(height * scale + 1e-9))


def _check(stopped: Callable[[], bool] | None, done: int, variants: int) -> None:
    if stopped is not None and stopped():
        raise DeadlineExceededError(
            f"the caller cancelled or its deadline passed: the explanation stopped after {done} of "
            f"{variants} occluded images"
        )


def _as_decoded(image: Image.Image, with_bytes: bool) -> DecodedImage:
    # PNG: lossless, so a remote provider or the encoder sees exactly the grey patch, no JPEG ringing around it.
    data = b""
    if with_bytes:
        buffer = io.BytesIO()
        image.save(buffer, "PNG", compress_level=1)
        data = buffer.getvalue()
    return DecodedImage(data=data, image=image, format="PNG", width=image.width, height=image.height)
