"""Per label: is it live, and how heavy is its code. What turns Hamming into exact overlap.

Every backend keeps one ``LiveLabels``. FAISS returns candidates by Hamming
distance over the padded codes of ``codes.py``; each candidate's overlap follows
exactly from its distance and its stored weight ``W``:
``overlap = (|a| + W - hamming') / 2``. ``rank`` applies that, drops dead and
excluded labels, and orders by overlap (descending), ties by label (ascending:
the item added, or last replaced, earlier comes first).

Removal marks a label dead here; searches skip it at once, and the backend
drops it physically once enough pile up (compaction).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np
import numpy.typing as npt

from ..codes import stored_weights

__all__ = ["Hits", "Labels", "LiveLabels", "best", "empty_hits", "hammings", "overlaps_of", "unique_nearest"]

logger = logging.getLogger(__name__)

Labels = npt.NDArray[np.int64]
Distances = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Hits:
    """One query's answer: labels and overlaps, best first."""

    labels: Labels
    overlaps: npt.NDArray[np.int64]


def empty_hits() -> Hits:
    return Hits(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


class LiveLabels:
    """Weights by label (-1 = not live), a liveness bitmap in FAISS's IDSelectorBitmap layout, a weight histogram."""

    def __init__(self, max_weight: int, equalize_bits: int) -> None:
        self.equalize_bits = equalize_bits
        self._weights = np.full(0, -1, dtype=np.int32)
        self._bitmap = np.zeros(0, dtype=np.uint8)
        self._histogram = np.zeros(max_weight + 1, dtype=np.int64)  # live items per stored weight
        self.count = 0

    @classmethod
    def restore(cls, max_weight: int, equalize_bits: int, weights: npt.NDArray[np.int32]) -> LiveLabels:
        """Rebuild from the weights array of a snapshot (the bitmap follows from it)."""
        live = cls(max_weight, equalize_bits)
        live._weights = np.array(weights, dtype=np.int32)
        live._bitmap = np.packbits(live._weights >= 0, bitorder="little")
        alive = live._weights[live._weights >= 0]
        if alive.size and int(alive.max()) > max_weight:
            raise ValueError("a stored weight exceeds the layout's largest")
        live._histogram = np.bincount(alive, minlength=max_weight + 1).astype(np.int64)
        live.count = int(alive.size)
        return live

    @property
    def size(self) -> int:
        """Labels covered (live or not): one past the largest label seen, rounded up to 8."""
        return int(self._weights.size)

    def weights_copy(self) -> npt.NDArray[np.int32]:
        return self._weights.copy()

    def add(self, labels: Labels, lengths: npt.NDArray[np.int64]) -> None:
        """New labels (the store never reuses one) with their SDRs' active-bit counts."""
        self._grow(int(labels.max()) + 1)
        weights = stored_weights(lengths, self.equalize_bits)
        self._weights[labels] = weights
        np.bitwise_or.at(self._bitmap, labels >> 3, np.left_shift(1, labels & 7).astype(np.uint8))
        self._histogram += np.bincount(weights, minlength=self._histogram.size)
        self.count += int(labels.size)

    def remove(self, labels: Labels) -> int:
        """Mark labels dead; how many were live."""
        labels = labels[(labels >= 0) & (labels < self._weights.size)]
        labels = labels[self._weights[labels] >= 0]
        if labels.size == 0:
            return 0
        self._histogram -= np.bincount(self._weights[labels], minlength=self._histogram.size)
        self._weights[labels] = -1
        np.bitwise_and.at(self._bitmap, labels >> 3, np.invert(np.left_shift(1, labels & 7).astype(np.uint8)))
        self.count -= int(labels.size)
        return int(labels.size)

    def compaction_due(self, entries: int, compact_min: int, compact_ratio: float) -> bool:
        """Whether enough of a backend's ``entries`` are dead labels to drop them now."""
        dead = entries - self.count
        return dead >= compact_min and dead > compact_ratio * entries

    def drop_dead(self, index: faiss.IndexBinary, entries: int) -> int:
        """Remove every dead label from ``index`` (holding ``entries`` items) in one pass; how many went."""
        dead = entries - self.count
        if dead:
            live = self.selector()  # held here: IDSelectorNot keeps only a raw pointer to it
            index.remove_ids(faiss.IDSelectorNot(live))
            logger.info("index compacted: %d removed items dropped from FAISS", dead)
        return dead

    def max_weight(self) -> int:
        nonzero = np.flatnonzero(self._histogram)
        return int(nonzero[-1]) if nonzero.size else 0

    def mask(self, labels: Labels) -> npt.NDArray[np.bool_]:
        """Whether each of ``labels`` is live."""
        inside = (labels >= 0) & (labels < self._weights.size)
        live = np.zeros(labels.shape, dtype=bool)
        live[inside] = self._weights[labels[inside]] >= 0
        return live

    def bitmap(self) -> npt.NDArray[np.uint8]:
        """The live labels as a bitmap in FAISS's IDSelectorBitmap layout (this object's own: not to be written)."""
        return self._bitmap

    def selector(self) -> faiss.IDSelectorBitmap:
        """A FAISS selector letting only live labels through; it holds the bitmap it points into."""
        # FAISS's n is the bitmap's size in bytes: labels past it are refused, never read.
        selector = faiss.IDSelectorBitmap(self._bitmap.size, faiss.swig_ptr(self._bitmap))
        selector.referenced_objects = [self._bitmap]  # type: ignore[attr-defined]  # FAISS's own keep-alive slot
        return selector

    def search_parameters(self) -> faiss.SearchParameters:
        """Parameters with the live selector, passed as ``sel=`` so the parameters keep it referenced."""
        return faiss.SearchParameters(sel=self.selector())  # type: ignore[call-arg]  # kwargs: faiss Python init

    def rank(
        self,
        distances: Distances,
        labels: Labels,
        query_weight: int,
        k: int,
        min_overlap: int,
        *,
        exclude: int,
        passes: Callable[[Labels], npt.NDArray[np.bool_]] | None = None,
    ) -> tuple[Hits, int]:
        """Exact overlaps of the live candidates, best first; and the k-th overlap (or min_overlap).

        ``passes``, when given, tells which candidates a filter lets through; the others go as dead ones do.
        """
        valid = labels >= 0
        labels, distances = labels[valid], distances[valid]
        weights = self._weights[labels]
        keep = (weights >= 0) & (labels != exclude)
        if passes is not None:
            keep &= passes(labels)
        labels, distances, weights = labels[keep], distances[keep], weights[keep]
        overlaps = (query_weight + weights.astype(np.int64) - distances) // 2
        return best(labels, overlaps, k, min_overlap)

    def _grow(self, size: int) -> None:
        if size <= self._weights.size:
            return
        capacity = max(size, 2 * self._weights.size, 1024)
        capacity = (capacity + 7) // 8 * 8
        weights = np.full(capacity, -1, dtype=np.int32)
        weights[: self._weights.size] = self._weights
        bitmap = np.zeros(capacity // 8, dtype=np.uint8)
        bitmap[: self._bitmap.size] = self._bitmap
        self._weights, self._bitmap = weights, bitmap


def best(labels: Labels, overlaps: npt.NDArray[np.int64], k: int, min_overlap: int) -> tuple[Hits, int]:
    """The k highest overlaps of at least ``min_overlap``, ties to the lower label; and the k-th (or min_overlap)."""
    order = np.lexsort((labels, -overlaps))
    labels, overlaps = labels[order], overlaps[order]
    passing = overlaps >= min_overlap
    labels, overlaps = labels[passing][:k], overlaps[passing][:k]
    floor = int(overlaps[k - 1]) if overlaps.size >= k else min_overlap
    return Hits(labels, overlaps), floor


def overlaps_of(
    query: npt.NDArray[np.uint32], positions: npt.NDArray[np.uint32], lengths: npt.NDArray[np.int64], sdr_size: int
) -> npt.NDArray[np.int64]:
    """Active bits ``query`` shares with each SDR (``positions`` concatenated, ``lengths`` per SDR), counted exactly."""
    active = np.zeros(sdr_size, dtype=bool)
    active[query] = True
    shared = np.concatenate(([0], np.cumsum(active[positions], dtype=np.int64)))
    ends = np.cumsum(lengths)
    overlaps: npt.NDArray[np.int64] = shared[ends] - shared[ends - lengths]
    return overlaps


def hammings(queries: npt.NDArray[np.uint8], codes: npt.NDArray[np.uint8]) -> Distances:
    """Hamming distance of every query code to every code, (queries, codes): FAISS's popcount loop."""
    queries = np.ascontiguousarray(queries)
    codes = np.ascontiguousarray(codes)
    distances = np.empty((queries.shape[0], codes.shape[0]), dtype=np.int32)
    if distances.size:
        faiss.hammings(  # type: ignore[attr-defined]  # FAISS stubs omit it
            faiss.swig_ptr(queries),
            faiss.swig_ptr(codes),
            queries.shape[0],
            codes.shape[0],
            queries.shape[1],
            faiss.swig_ptr(distances),
        )
    return distances.astype(np.int64)


def unique_nearest(distances: Distances, labels: Labels, fetch: int) -> tuple[Distances, Labels]:
    """Per row, the ``fetch`` nearest distinct labels (-1 pads); the same item may come more than once.

    Sorting by (distance, label) puts an item's copies side by side: they share
    their code, hence their distance. Empty slots (-1) carry FAISS's largest
    distance and so sort last.
    """
    order = np.lexsort((labels, distances), axis=-1)
    distances = np.take_along_axis(distances, order, axis=1)
    labels = np.take_along_axis(labels, order, axis=1)
    repeat = np.zeros(labels.shape, dtype=bool)
    repeat[:, 1:] = (labels[:, 1:] == labels[:, :-1]) & (labels[:, 1:] >= 0)
    distances[repeat] = np.iinfo(np.int32).max
    labels[repeat] = -1
    keep = np.argsort(repeat, axis=1, kind="stable")[:, :fetch]  # distinct ones first, order kept
    return np.take_along_axis(distances, keep, axis=1), np.take_along_axis(labels, keep, axis=1)
