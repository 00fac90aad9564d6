"""Where SDRs become a grid: a 2-D embedding by overlap, snapped to cells by a linear assignment.

The distance between two SDRs is their Jaccard distance (1 - overlap / union),
computed exactly for every pair, a block of rows at a time (4096 items make
16.8 M pairs). t-SNE (openTSNE) embeds the items from each one's nearest
neighbours; the points are spread evenly along each axis (by rank), and
``lapjv`` (Jonker-Volgenant) then gives each item its own grid cell so that the
summed squared distance between points and cells is smallest.

Each choice was measured at 1024 and 4096 items (``make bench-map``, README
"Maps"): UMAP on the same neighbours keeps neighbourhoods better in the plane
but packs them into dense clumps that lose more when snapped to a grid (0.520
of neighbourhoods kept against t-SNE's 0.577 at 4096); on the same cost
matrix ``lapjv`` took 4.4 s, SciPy's ``linear_sum_assignment`` 8.3 s and
``lap`` 34.9 s, all three finding the same optimum.

The same SDRs in the same order always give the same layout (fixed seeds;
t-SNE's threads do not change it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse

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
_BLOCK = 512  # rows of the pairwise overlaps held at once: memory stays O(block x items), not O(items^2)
_MAX_EMPTY = 4  # a grid may have at most this many cells per item (more is a mostly empty map, and costly)
_MIN_CELLS = 16  # ... or this many, for tiny maps
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
    cells = columns * rows
    if cells < items:
        raise InvalidInputError(
            f"a {columns} x {rows} grid has {cells} cells for {items} items",
            field="columns",  # only a grid given both ways can be short (one 0 is filled in to fit)
        )
    if cells > max(_MAX_EMPTY * items, _MIN_CELLS):
        raise InvalidInputError(
            f"a {columns} x {rows} grid has {cells} cells for {items} items; at most {_MAX_EMPTY} per item",
            field="columns",
        )
    return columns, rows


def jaccard_neighbours(sdrs: Sequence[Sdr], k: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Each SDR's ``k`` nearest others by Jaccard distance, nearest first (ties: lower index first)."""
    count = len(sdrs)
    k = min(k, count - 1)
    pointers = np.zeros(count + 1, dtype=np.int64)
    np.cumsum([sdr.active for sdr in sdrs], out=pointers[1:])
    columns = np.concatenate([sdr.positions for sdr in sdrs]).astype(np.int32)
    bits = sparse.csr_matrix((np.ones(columns.size, dtype=np.float32), columns, pointers), shape=(count, sdrs[0].size))
    across = bits.T.tocsc()
    active = np.diff(pointers).astype(np.float64)
    nearest = np.empty((count, k), dtype=np.intp)
    chosen = np.empty((count, k), dtype=np.float64)
    for start in range(0, count, _BLOCK):
        stop = min(start + _BLOCK, count)
        overlaps = np.asarray((bits[start:stop] @ across).toarray(), dtype=np.float64)
        union = active[start:stop, None] + active[None, :] - overlaps
        distance = 1.0 - overlaps / np.maximum(union, 1.0)
        distance[np.arange(stop - start), np.arange(start, stop)] = np.inf  # not its own neighbour
        block = np.argpartition(distance, k - 1, axis=1)[:, :k] if k < count - 1 else _all_but_self(start, stop, count)
        nearest[start:stop] = block
        chosen[start:stop] = np.take_along_axis(distance, block, axis=1)
    # The k smallest of each row, ordered by (distance, index): the same neighbours on every run.
    order = np.lexsort((nearest, chosen), axis=1)
    return np.take_along_axis(nearest, order, axis=1), np.take_along_axis(chosen, order, axis=1)


def _all_but_self(start: int, stop: int, count: int) -> npt.NDArray[np.intp]:
    """Rows ``start:stop``: every other index (k = all of them)."""
    every = np.tile(np.arange(count), (stop - start, 1))
    keep = every != np.arange(start, stop)[:, None]
    others: npt.NDArray[np.intp] = every[keep].reshape(stop - start, count - 1)
    return others


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
    4096 items (``make bench-map``): SciPy's solver took 8.3 s instead of 27.6 s, and
    the map kept more neighbourhoods (0.577 against 0.550).
    """
    from lapjv import lapjv  # noqa: PLC0415 - a compiled extension only map jobs need

    scaled = _spread(points, columns, rows)
    cells = columns * rows
    x, y = np.tile(np.arange(columns), rows), np.repeat(np.arange(rows), columns)
    # lapjv solves square problems: the rows past the points are free cells (zero cost anywhere).
    cost = np.zeros((cells, cells), dtype=np.float64)
    cost[: len(points)] = np.subtract.outer(scaled[:, 0], x) ** 2 + np.subtract.outer(scaled[:, 1], y) ** 2
    assigned, _, _ = lapjv(cost)
    return np.asarray(assigned[: len(points)], dtype=np.intp)


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
    if progress is not None:
        progress("embedding", 0.0)  # a point to stop at between the long steps
    points = embed(neighbours, distances, progress, threads=threads)
    if progress is not None:
        progress("assigning", 0.0)
    cells = snap(points, columns, rows)
    if progress is not None:
        progress("assigning", 1.0)
    judged = neighbours[:, :NEIGHBOURS]
    return Layout(
        columns,
        rows,
        cells,
        points,
        neighbourhood_kept(cell_positions(cells, columns), judged),
        neighbourhood_kept(_to_grid(points, columns, rows), judged),
    )
