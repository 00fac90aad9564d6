"""Where SDRs become a grid: a 2-D embedding by overlap, snapped to cells by a linear assignment.

The distance between two SDRs is their Jaccard distance (1 - overlap / union),
computed exactly for every pair: 4096 items make 16.8 M pairs, one sparse
product. t-SNE (openTSNE) embeds them from each item's nearest neighbours;
SciPy's ``linear_sum_assignment`` then gives each item its own grid cell so
that the summed squared distance between points and cells is smallest.

Both choices were measured (``make bench-map``, README "Maps") against UMAP
with the same neighbours, and against ``lap`` and ``lapjv``: UMAP keeps
neighbourhoods better in the plane but packs them into dense clumps that lose
more when snapped to a grid, and SciPy's solver was the fastest of the three
at 1024 and 3131 items on this machine.

The same SDRs in the same order always give the same layout (fixed seeds).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from ..errors import InvalidInputError
from ..sdr import Sdr

__all__ = [
    "NEIGHBOURS",
    "RADIUS",
    "Layout",
    "embed",
    "grid_shape",
    "jaccard_neighbours",
    "lay_out",
    "neighbourhood_kept",
    "snap",
]

NEIGHBOURS = 10  # the neighbourhood a layout is judged on: each item's 10 nearest by overlap
RADIUS = 2  # ... kept when it lands within this grid distance (Chebyshev: a 5 x 5 block)
_KNN = 90  # neighbours t-SNE sees: 3 x perplexity 30, openTSNE's own rule
_PERPLEXITY = 30.0
_SEED = 42
_EXAGGERATED_ITERATIONS = 250  # openTSNE's defaults: early exaggeration 12, then the plain run
_ITERATIONS = 500

Progress = Callable[[str, float], None]  # (stage, fraction of that stage done)


@dataclass(frozen=True)
class Layout:
    """Each item's cell (index into the row-major grid) and how well the grid kept neighbourhoods."""

    columns: int
    rows: int
    cells: npt.NDArray[np.intp]  # per item, in the order given: row * columns + column
    embedding: npt.NDArray[np.float64]  # per item: its 2-D point before snapping
    neighbourhood_kept: float  # share of each item's NEIGHBOURS nearest within RADIUS cells
    embedding_kept: float  # the same share measured on the embedding scaled to the grid


def grid_shape(items: int, columns: int = 0, rows: int = 0) -> tuple[int, int]:
    """(columns, rows): both 0 gives the smallest square that holds ``items``; one 0 is filled in."""
    if items < 1:
        raise InvalidInputError("a map needs at least one item", field="items")
    if columns == 0 and rows == 0:
        side = math.isqrt(items - 1) + 1
        return side, side
    if columns == 0:
        columns = -(-items // rows)
    elif rows == 0:
        rows = -(-items // columns)
    if columns * rows < items:
        raise InvalidInputError(
            f"a {columns} x {rows} grid has {columns * rows} cells for {items} items",
            field="columns",  # only a grid given both ways can be short (one 0 is filled in to fit)
        )
    return columns, rows


def jaccard_neighbours(sdrs: Sequence[Sdr], k: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Each SDR's ``k`` nearest others by Jaccard distance, nearest first (ties: lower index first)."""
    count = len(sdrs)
    k = min(k, count - 1)
    pointers = np.zeros(count + 1, dtype=np.int64)
    np.cumsum([sdr.active for sdr in sdrs], out=pointers[1:])
    columns = np.concatenate([sdr.positions for sdr in sdrs]).astype(np.int32)
    size = sdrs[0].size
    bits = sparse.csr_matrix((np.ones(columns.size, dtype=np.float32), columns, pointers), shape=(count, size))
    overlaps = np.asarray((bits @ bits.T).toarray(), dtype=np.float64)
    active = np.diag(overlaps).copy()
    union = active[:, None] + active[None, :] - overlaps
    distance = 1.0 - overlaps / np.maximum(union, 1.0)
    np.fill_diagonal(distance, np.inf)
    # A stable sort of the k smallest: argpartition, then order them by (distance, index).
    nearest = np.argpartition(distance, k - 1, axis=1)[:, :k] if k < count - 1 else _all_but_self(count)
    chosen = np.take_along_axis(distance, nearest, axis=1)
    order = np.lexsort((nearest, chosen), axis=1)
    return np.take_along_axis(nearest, order, axis=1), np.take_along_axis(chosen, order, axis=1)


def _all_but_self(count: int) -> npt.NDArray[np.intp]:
    every = np.tile(np.arange(count), (count, 1))
    return every[~np.eye(count, dtype=bool)].reshape(count, count - 1)


def embed(
    neighbours: npt.NDArray[np.intp],
    distances: npt.NDArray[np.float64],
    progress: Progress | None = None,
    *,
    threads: int = 0,
) -> npt.NDArray[np.float64]:
    """t-SNE of the items from their nearest neighbours: one 2-D point each (``threads`` 0: one per core)."""
    from openTSNE import TSNEEmbedding, affinity, initialization  # noqa: PLC0415 - heavy; only map jobs need it
    from openTSNE.nearest_neighbors import PrecomputedNeighbors  # noqa: PLC0415

    count = neighbours.shape[0]
    if count <= 3:  # too few for perplexity: a line, in order (the grid is one row anyway)
        return np.column_stack([np.arange(count, dtype=np.float64), np.zeros(count)])
    perplexity = min(_PERPLEXITY, (neighbours.shape[1] - 1) / 3)
    knn = PrecomputedNeighbors(neighbours, np.maximum(distances, 0.0))
    jobs = threads or os.cpu_count() or 1
    affinities = affinity.PerplexityBasedNN(knn_index=knn, perplexity=perplexity, random_state=_SEED, n_jobs=jobs)
    start = initialization.spectral(affinities.P, random_state=_SEED)
    embedding = TSNEEmbedding(start, affinities, n_jobs=jobs, random_state=_SEED)
    total = _EXAGGERATED_ITERATIONS + _ITERATIONS
    done = [0]

    def tick(iteration: int, error: float, current: object) -> bool:
        done[0] += 25
        if progress is not None:
            progress("embedding", min(1.0, done[0] / total))
        return False  # False: go on

    options = {"callbacks": tick, "callbacks_every_iters": 25}
    embedding = embedding.optimize(n_iter=_EXAGGERATED_ITERATIONS, exaggeration=12, momentum=0.5, **options)
    embedding = embedding.optimize(n_iter=_ITERATIONS, momentum=0.8, **options)
    return np.asarray(embedding, dtype=np.float64)


def snap(points: npt.NDArray[np.float64], columns: int, rows: int) -> npt.NDArray[np.intp]:
    """Each point's own cell: the assignment of points to cell centres with the least summed squared distance.

    The points are first spread evenly along each axis (by rank): t-SNE packs clusters
    densely with empty space between them, and asking a dense cluster to claim the
    cells of the empty space around it is what makes the assignment slow. Measured at
    4096 items (``make bench-map``): 8.7 s instead of 27.6 s, and more neighbourhoods
    kept (0.577 against 0.550).
    """
    scaled = _spread(points, columns, rows)
    centres = np.column_stack([np.tile(np.arange(columns), rows), np.repeat(np.arange(rows), columns)])
    cost = ((scaled[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    assigned_rows, assigned_cells = linear_sum_assignment(cost)
    cells = np.empty(len(points), dtype=np.intp)
    cells[assigned_rows] = assigned_cells
    return cells


def _spread(points: npt.NDArray[np.float64], columns: int, rows: int) -> npt.NDArray[np.float64]:
    """Each coordinate replaced by its rank, stretched over the grid (ties: the earlier item first)."""
    ranks = np.argsort(np.argsort(points, axis=0, kind="stable"), axis=0, kind="stable").astype(np.float64)
    spread: npt.NDArray[np.float64] = ranks / max(len(points) - 1, 1) * np.array([columns - 1, rows - 1])
    return spread


def _to_grid(points: npt.NDArray[np.float64], columns: int, rows: int) -> npt.NDArray[np.float64]:
    """The points stretched over the grid: x over [0, columns - 1], y over [0, rows - 1]."""
    low = points.min(axis=0)
    span = np.maximum(points.max(axis=0) - low, 1e-12)
    scaled: npt.NDArray[np.float64] = (points - low) / span * np.array([columns - 1, rows - 1], dtype=np.float64)
    return scaled


def neighbourhood_kept(
    positions: npt.NDArray[np.float64], neighbours: npt.NDArray[np.intp], radius: float = RADIUS
) -> float:
    """Share of (item, neighbour) pairs whose positions are within ``radius`` (Chebyshev) of each other."""
    if neighbours.size == 0:
        return 1.0
    apart = np.abs(positions[:, None, :] - positions[neighbours]).max(axis=2)
    return float((apart <= radius).mean())


def cell_positions(cells: npt.NDArray[np.intp], columns: int) -> npt.NDArray[np.float64]:
    """(column, row) of each cell index."""
    return np.column_stack([cells % columns, cells // columns]).astype(np.float64)


def lay_out(
    sdrs: Sequence[Sdr], columns: int = 0, rows: int = 0, *, progress: Progress | None = None, threads: int = 0
) -> Layout:
    """The whole layout of ``sdrs``: neighbours, embedding, cells, and the neighbourhood figures."""
    columns, rows = grid_shape(len(sdrs), columns, rows)
    if len(sdrs) == 1:
        return Layout(columns, rows, np.zeros(1, dtype=np.intp), np.zeros((1, 2)), 1.0, 1.0)
    if progress is not None:
        progress("embedding", 0.0)
    neighbours, distances = jaccard_neighbours(sdrs, _KNN)
    points = embed(neighbours, distances, progress, threads=threads)
    if progress is not None:
        progress("assigning", 0.0)
    cells = snap(points, columns, rows)
    judged = neighbours[:, :NEIGHBOURS]
    return Layout(
        columns,
        rows,
        cells,
        points,
        neighbourhood_kept(cell_positions(cells, columns), judged),
        neighbourhood_kept(_to_grid(points, columns, rows), judged),
    )
