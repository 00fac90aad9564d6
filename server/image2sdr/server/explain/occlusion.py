"""Occlusion sensitivity: where a grey patch goes, the occluded images, and the heatmap they give.

A square patch slides over the image in steps of ``stride`` (both in pixels of
the image as sent); the last step in each direction is moved back so the patch
ends at the border, so every pixel is hidden at least once.  The heatmap has one
cell per stride step; a cell holds the mean fall of the score over the patches
that cover it, each patch weighted by the share of the cell it covers (1 or 0
when the patch is a whole number of strides, as with the defaults).  That mean
is two matrix products, so a grid of a thousand patches costs nothing beside
the classifier.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from ..config import ExplainConfig
from ..errors import InvalidInputError

__all__ = ["MAX_CELLS", "Grid", "heatmap", "occluded", "plan_grid"]

# Heatmap cells per explanation: a tiny stride under a huge patch gives few variants
# but millions of cells, more than any answer should carry (256 x 256).
MAX_CELLS = 65_536


@dataclass(frozen=True)
class Grid:
    """Where the patches go, in pixels of the image as sent."""

    width: int
    height: int
    patch: int
    stride: int
    xs: tuple[int, ...]  # left edge of each patch column
    ys: tuple[int, ...]  # top edge of each patch row

    @property
    def columns(self) -> int:
        return math.ceil(self.width / self.stride)

    @property
    def rows(self) -> int:
        return math.ceil(self.height / self.stride)

    @property
    def variants(self) -> int:
        return len(self.xs) * len(self.ys)

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """Each patch as (left, top, right, bottom), row by row from the top left: the variants' order."""
        return [(x, y, x + self.patch, y + self.patch) for y in self.ys for x in self.xs]


def plan_grid(width: int, height: int, config: ExplainConfig, patch: int | None, stride: int | None) -> Grid:
    """The patch grid for an image; unset sizes take shares of its shorter side (``explain.*``)."""
    side = min(width, height)
    size = max(1, round(config.patch_share * side)) if patch is None else patch
    step = max(1, round(config.stride_share * size)) if stride is None else stride
    if size < 1:
        raise InvalidInputError("patch must be at least 1 pixel", field="patch")
    if size > side:
        raise InvalidInputError(f"patch {size} px is larger than the {width}x{height} image", field="patch")
    if step < 1:
        raise InvalidInputError("stride must be at least 1 pixel", field="stride")
    if step > size:
        raise InvalidInputError(
            f"stride {step} px is larger than the patch ({size} px): parts would never be hidden", field="stride"
        )
    grid = Grid(width, height, size, step, _positions(width, size, step), _positions(height, size, step))
    if grid.variants > config.max_variants:
        raise _too_many_variants(grid, config.max_variants, patch, stride)
    if grid.rows * grid.columns > MAX_CELLS:
        raise InvalidInputError(
            f"stride {step} px makes a {grid.columns}x{grid.rows} heatmap, at most {MAX_CELLS} cells", field="stride"
        )
    return grid


def _too_many_variants(grid: Grid, limit: int, patch: int | None, stride: int | None) -> InvalidInputError:
    """The refusal of a grid over ``explain.max_variants``, naming what the caller can change."""
    made = f"makes {grid.variants} occluded images, explain.max_variants allows {limit}"
    if patch is None and stride is None:
        # The default patch is a share of the shorter side: a long thin image (a panorama
        # wider than about 18:1) gets many small patches along its length whatever is set.
        return InvalidInputError(
            f"the {grid.width}x{grid.height} image is too elongated for the default patch "
            f"({grid.patch} px at stride {grid.stride} px {made}): set a larger patch",
            field="image",
        )
    blame = "stride" if stride is not None else "patch"
    return InvalidInputError(
        f"patch {grid.patch} px at stride {grid.stride} px {made}: use a larger stride or patch", field=blame
    )


def _positions(length: int, patch: int, stride: int) -> tuple[int, ...]:
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:  # the last patch ends at the border
        starts.append(length - patch)
    return tuple(starts)


def occluded(image: Image.Image, grid: Grid, which: Sequence[int], fill: int) -> Iterator[Image.Image]:
    """The image with patch ``n`` painted ``fill`` grey, for each n in ``which``.

    ``image`` may be smaller than the image the grid was planned on (decoded at a
    reduced scale): boxes are scaled to it.
    """
    pixels = np.asarray(image)
    sx, sy = image.width / grid.width, image.height / grid.height
    boxes = grid.boxes()
    for n in which:
        left, top, right, bottom = boxes[n]
        hidden = pixels.copy()
        hidden[round(top * sy) : round(bottom * sy), round(left * sx) : round(right * sx)] = fill
        yield Image.fromarray(hidden)


def heatmap(grid: Grid, base: float, scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """rows x columns: the mean fall of the score (base - occluded) over the patches covering each cell."""
    if scores.shape != (grid.variants,):
        raise ValueError(f"{scores.shape[0]} scores for {grid.variants} variants")
    drops = (base - scores).reshape(len(grid.ys), len(grid.xs))
    across = _coverage(grid.xs, grid.patch, grid.stride, grid.width)  # [patch columns, cells]
    down = _coverage(grid.ys, grid.patch, grid.stride, grid.height)  # [patch rows, cells]
    total = down.T @ drops @ across
    weight = np.outer(down.sum(axis=0), across.sum(axis=0))
    return (total / weight).astype(np.float32)  # every cell is covered: weight > 0


def _coverage(starts: Sequence[int], patch: int, stride: int, length: int) -> npt.NDArray[np.float64]:
    """[patches, cells]: the share of each cell (one per stride step) that each patch covers."""
    cells = math.ceil(length / stride)
    first = np.arange(cells) * stride
    last = np.minimum(first + stride, length)
    begin = np.asarray(starts, dtype=np.float64)[:, None]
    covered = np.clip(np.minimum(begin + patch, last) - np.maximum(begin, first), 0, None)
    share: npt.NDArray[np.float64] = covered / (last - first)
    return share
