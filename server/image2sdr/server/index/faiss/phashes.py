"""pHashes by label, in memory, for finding near-exact copies of an image.

A near-exact copy (re-encoded, resized, brightened a little) keeps its 64-bit
pHash within a few bits of the original. Comparing a query's pHash with every
stored one is one XOR and one popcount per item (about a millisecond per
million), so a flat array beats any structure here. Rebuilt from the store at
open, like the backends' state; never snapshotted (8 bytes per label).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["PhashTable"]

Labels = npt.NDArray[np.int64]


class PhashTable:
    def __init__(self) -> None:
        self._hashes = np.zeros(0, dtype=np.uint64)
        self._present = np.zeros(0, dtype=bool)

    def add(self, labels: Labels, hashes: npt.NDArray[np.uint64]) -> None:
        if labels.size == 0:
            return
        self._grow(int(labels.max()) + 1)
        self._hashes[labels] = hashes
        self._present[labels] = True

    def remove(self, labels: Labels) -> None:
        labels = labels[(labels >= 0) & (labels < self._present.size)]
        self._present[labels] = False

    def near(self, phash: int, max_distance: int) -> tuple[Labels, npt.NDArray[np.int64]]:
        """(labels, distances) of the stored pHashes within ``max_distance`` bits, label order."""
        distances = np.bitwise_count(np.bitwise_xor(self._hashes, np.uint64(phash))).astype(np.int64)
        hits = np.flatnonzero(self._present & (distances <= max_distance))
        return hits.astype(np.int64), distances[hits]

    def _grow(self, size: int) -> None:
        if size <= self._hashes.size:
            return
        capacity = max(size, 2 * self._hashes.size, 1024)
        hashes = np.zeros(capacity, dtype=np.uint64)
        hashes[: self._hashes.size] = self._hashes
        present = np.zeros(capacity, dtype=bool)
        present[: self._present.size] = self._present
        self._hashes, self._present = hashes, present
