"""The seam below ``SdrIndex``: a ``Backend`` is one FAISS structure over one space's codes.

``flat.py`` (exact, IndexBinaryFlat) and ``ivf.py`` (approximate,
IndexBinaryIVF over SDR k-means lists) are the two kinds. ``SdrIndex`` decides
which one a space needs (IVF once the collection is large enough to train on)
and never asks which kind it holds.

A backend snapshots itself piecewise: ``freeze()`` (called under the index's
lock, so no writer runs) fixes what the snapshot will contain and returns a
state plus a generator of byte chunks. The caller takes the lock again around
each ``next()``, so a writer waits at most for one chunk to be copied, never for
a whole snapshot. Adds after ``freeze()`` land beyond the frozen extent and
removals only touch the live-label weights, which were copied at the freeze;
compaction and retraining, which would move frozen bytes, are not run while a
snapshot is being written (retraining builds a new backend; the frozen one
stays as it was).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ...config import IndexConfig
from ..codes import code_size, pack_codes
from .live import Hits, Labels, LiveLabels, empty_hits
from .selection import Allowed

__all__ = ["Backend", "Codes", "FlatState", "Frozen", "IvfState", "Layout", "QueryBatch", "ReadBytes"]

Codes = npt.NDArray[np.uint8]
ReadBytes = Callable[[int], bytes]  # reads exactly n bytes of a snapshot body, or raises ValueError
CHUNK_BYTES = 1 << 20  # bytes copied per chunk of a snapshot: what one writer may wait for (~0.3 ms)


@dataclass(frozen=True)
class Layout:
    """How SDRs become FAISS codes; a snapshot with another layout is not loaded."""

    sdr_size: int
    equalize_bits: int

    @property
    def code_size(self) -> int:
        return code_size(self.sdr_size, self.equalize_bits)

    @property
    def bits(self) -> int:
        return self.code_size * 8

    @property
    def max_weight(self) -> int:
        return max(self.sdr_size, self.equalize_bits)


@dataclass(frozen=True)
class FlatState:
    """What a flat snapshot's header says about its body."""

    backend: Literal["flat"]
    labels: int  # weights by label: int32 each
    entries: int  # codes (code_size bytes each) and their labels (int64 each) in FAISS


@dataclass(frozen=True)
class IvfState:
    """What an IVF snapshot's header says about its body."""

    backend: Literal["ivf"]
    labels: int  # weights by label: int32 each
    nlist: int  # centroids (code_size bytes each), probe table columns, list sizes (int64 each)
    copies: int  # lists each item is stored in
    trained_for: int  # live items when the lists were fitted
    entries: int  # (label, code) pairs over all lists: int64 and code_size bytes each


@dataclass(frozen=True)
class Frozen:
    """A backend's snapshot: its typed state (for the header) and its body, chunk by chunk."""

    state: FlatState | IvfState
    chunks: Iterator[bytes]


@dataclass(frozen=True)
class QueryBatch:
    """The queries of one search: packed codes, active positions concatenated, and per query its weight and the
    label left out of its answer (-1: none)."""

    codes: Codes
    positions: npt.NDArray[np.uint32]
    lengths: npt.NDArray[np.int64]
    exclude: Labels

    @property
    def count(self) -> int:
        return int(self.lengths.size)


class Backend(ABC):
    """One FAISS structure answering top-k by exact overlap for the labels it holds.

    A kind stores its codes and runs its own search (``_search``); what both kinds do
    alike is here, once: the live labels' bookkeeping, the frame of a search, how many
    candidates to fetch first and the bound past which none can enter the top k.
    """

    layout: Layout
    config: IndexConfig
    live: LiveLabels  # which labels are live, and their weights

    @property
    def live_count(self) -> int:
        """Live items (removed ones excluded)."""
        return self.live.count

    @property
    @abstractmethod
    def trained_for(self) -> int:
        """Live items the structure was fitted to; 0 when it needs no fitting (flat)."""

    @property
    @abstractmethod
    def entries(self) -> int:
        """Items in FAISS, live or dead."""

    @property
    def tombstones(self) -> int:
        return self.entries - self.live.count

    @abstractmethod
    def add(self, labels: Labels, codes: Codes, lengths: npt.NDArray[np.int64]) -> None:
        """Index new labels (never seen before: the store never reuses one)."""

    def remove(self, labels: Labels) -> None:
        """Mark labels dead; searches skip them from now on."""
        self.live.remove(labels)

    def search(
        self,
        positions: npt.NDArray[np.uint32],
        lengths: npt.NDArray[np.int64],
        k: int,
        min_overlap: int,
        exclude: Labels,
        *,
        allowed: Allowed | None = None,
    ) -> list[Hits]:
        """Top-k by overlap for each query (positions concatenated); ``exclude[i]`` (or -1) is left out of answer i.

        With ``allowed`` (live labels passing a filter), only those are answered.
        """
        if allowed is not None and allowed.count == 0:
            return [empty_hits() for _ in range(int(lengths.size))]
        codes = pack_codes(positions, lengths, self.layout.sdr_size, self.layout.equalize_bits, pad=False)
        return self._search(QueryBatch(codes, positions, lengths, exclude), k, min_overlap, allowed)

    @abstractmethod
    def _search(self, batch: QueryBatch, k: int, min_overlap: int, allowed: Allowed | None) -> list[Hits]:
        """``search`` past its checks: ``allowed`` is None or lets at least one label through."""

    @abstractmethod
    def strategy(self, allowed: Allowed) -> str:
        """How a search under ``allowed`` would run (a name per kind's ways: for tests and benchmarks)."""

    def needs_compaction(self) -> bool:
        return self.live.compaction_due(self.entries, self.config.compact_min, self.config.compact_ratio)

    @abstractmethod
    def compact(self) -> int:
        """Drop dead labels from FAISS; how many went."""

    @abstractmethod
    def freeze(self) -> Frozen:
        """Fix the snapshot's content now (caller holds the lock); its chunks come later."""

    def _first_fetch(self, k: int, share: float, exclude: Labels) -> int:
        """Candidates to ask FAISS for first: the configured margin over k, more as fewer pass a filter
        (``share``), one more when a query leaves a label out."""
        wanted = max(k * self.config.candidate_factor, k + self.config.candidate_margin)
        return math.ceil(wanted / share) + int(exclude.max(initial=-1) >= 0)

    def _bound_twice(
        self, distances: npt.NDArray[np.integer], labels: Labels, query_weight: int, fetch: int
    ) -> int | None:
        """Twice the largest overlap an item FAISS did not return could have (it is at least as far as the last
        one returned); None when FAISS had nothing more to give."""
        returned = int((labels >= 0).sum())
        if returned < fetch or fetch >= self.entries:
            return None
        return query_weight + self.live.max_weight() - int(distances[returned - 1])


def copy_bytes(array: npt.NDArray[np.generic]) -> Iterator[bytes]:
    """An array as little-endian bytes, ``CHUNK_BYTES`` at a time."""
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    for start in range(0, flat.size, CHUNK_BYTES):
        yield flat[start : start + CHUNK_BYTES].tobytes()


def read_array(read: ReadBytes, dtype: str, count: int) -> npt.NDArray[Any]:
    """``count`` items of ``dtype`` from the snapshot body."""
    itemsize = np.dtype(dtype).itemsize
    return np.frombuffer(read(count * itemsize), dtype=dtype)  # read-only: every caller copies what it keeps
