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

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from ..codes import code_size
from .live import Hits, Labels, LiveLabels
from .selection import Allowed

__all__ = ["Backend", "Codes", "FlatState", "Frozen", "IvfState", "Layout", "ReadBytes"]

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


class Backend(Protocol):
    """One FAISS structure answering top-k by exact overlap for the labels it holds."""

    @property
    def live(self) -> LiveLabels:
        """Which labels are live, and their weights."""
        ...

    @property
    def live_count(self) -> int:
        """Live items (removed ones excluded)."""
        ...

    @property
    def trained_for(self) -> int:
        """Live items the structure was fitted to; 0 when it needs no fitting (flat)."""
        ...

    def add(self, labels: Labels, codes: Codes, lengths: npt.NDArray[np.int64]) -> None:
        """Index new labels (never seen before: the store never reuses one)."""
        ...

    def remove(self, labels: Labels) -> None:
        """Mark labels dead; searches skip them from now on."""
        ...

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
        ...

    def strategy(self, allowed: Allowed) -> str:
        """How a search under ``allowed`` would run (a name per kind's ways: for tests and benchmarks)."""
        ...

    def needs_compaction(self) -> bool: ...

    def compact(self) -> int:
        """Drop dead labels from FAISS; how many went."""
        ...

    def freeze(self) -> Frozen:
        """Fix the snapshot's content now (caller holds the lock); its chunks come later."""
        ...


def copy_bytes(array: npt.NDArray[np.generic]) -> Iterator[bytes]:
    """An array as little-endian bytes, ``CHUNK_BYTES`` at a time."""
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    for start in range(0, flat.size, CHUNK_BYTES):
        yield flat[start : start + CHUNK_BYTES].tobytes()


def read_array(read: ReadBytes, dtype: str, count: int) -> npt.NDArray[Any]:
    """``count`` items of ``dtype`` from the snapshot body."""
    itemsize = np.dtype(dtype).itemsize
    return np.frombuffer(read(count * itemsize), dtype=dtype)  # read-only: every caller copies what it keeps
