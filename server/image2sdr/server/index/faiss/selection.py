"""A filter becomes the set of labels passing it: from the store's filter tables, through a cache.

Each condition of a ``Filter`` is made of *atoms*: one metadata pair ``(key,
value)``, or one concept name at a minimum confidence. An atom's labels come
from one index range of ``item_meta`` or ``item_concepts`` (``store.py``), read
once and then kept here: reading a condition that half the collection passes
costs ~100+ ms at 1M items, far more than the search it narrows. A kept atom is
grown under the index's write lock as items are added (labels are never reused,
so a new one is always above every kept one, and appending keeps the order);
removals do not touch it: every answer is ANDed with the live labels of the
space searched, so a removed or replaced item's old label never passes.

The atoms of a key's value set are ORed, the conditions ANDed, then the live
labels; the answer (``Allowed``) is a sorted label array when few pass and a
bitmap in FAISS's ``IDSelectorBitmap`` layout when many do, each form made from
the other on demand.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import numpy.typing as npt

from ..values import Filter, StoredItem
from .bitmaps import (
    Bitmap,
    bitmap_and,
    bitmap_or,
    in_bitmap,
    in_sorted,
    newest_in_bitmap,
    popcount,
    set_bits,
    to_bitmap,
)
from .live import Labels, LiveLabels
from .store import SqliteStore

__all__ = ["Allowed", "Bitmap", "ReadSdrs", "Selections"]

ReadSdrs = Callable[[Sequence[int]], tuple[Labels, npt.NDArray[np.uint32], npt.NDArray[np.int64]]]
AtomKey = tuple[str, str, str] | tuple[str, str, float]

CACHE_BYTES = 256 << 20  # atoms kept at most (labels and bitmaps): ~60 conditions passing half of 1M items
_DENSE = 64  # an atom holding more than one label in this many also keeps a bitmap (it is then the smaller)
_NO_LABELS = np.zeros(0, dtype=np.int64)
# What an atom costs the budget beyond its arrays (its key, its entry, the array headers):
# an atom of a value no item has is not free, or a filter of unseen values would grow the
# cache without bound.
_ATOM_OVERHEAD = 256


def _no_sdrs(labels: Sequence[int]) -> tuple[Labels, npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
    return _NO_LABELS, np.zeros(0, dtype=np.uint32), _NO_LABELS


class Allowed:
    """The labels a filter lets through that are live in the space searched.

    ``count`` is exact. ``labels()`` (ascending) and ``bitmap()`` are the same set;
    whichever was not computed is made on first use. ``read_sdrs`` reads the SDRs
    of some of these labels from the store, for an engine that scores them directly.
    """

    def __init__(
        self,
        *,
        live_count: int,
        labels: Labels | None = None,
        bitmap: Bitmap | None = None,
        read_sdrs: ReadSdrs = _no_sdrs,
    ) -> None:
        if (labels is None) == (bitmap is None):
            raise ValueError("an Allowed set is made from its labels or from its bitmap")
        self._labels = labels
        self._bitmap = bitmap
        self._flags: npt.NDArray[np.bool_] | None = None
        self.count = int(labels.size) if labels is not None else popcount(bitmap)  # type: ignore[arg-type]
        self.live_count = live_count
        self.read_sdrs = read_sdrs

    @property
    def fraction(self) -> float:
        """The share of the space's live items that pass (its selectivity)."""
        return self.count / self.live_count if self.live_count else 0.0

    def labels(self) -> Labels:
        if self._labels is None:
            assert self._bitmap is not None
            self._labels = np.flatnonzero(np.unpackbits(self._bitmap, bitorder="little")).astype(np.int64)
        return self._labels

    def bitmap(self) -> Bitmap:
        if self._bitmap is None:
            assert self._labels is not None
            self._bitmap = to_bitmap(self._labels)
        return self._bitmap

    def mask(self, labels: Labels) -> npt.NDArray[np.bool_]:
        """Whether each of ``labels`` passes: one lookup each in a byte per label (made on first use).

        A bitmap test costs ten passes over ``labels``; a gathering IVF search tests
        hundreds of thousands of list entries per query, so this is the form it needs.
        """
        if self._flags is None:
            flags = np.zeros(self.bitmap().size * 8 + 1, dtype=bool)  # the last one stands for every label past the end
            flags[:-1] = np.unpackbits(self.bitmap(), bitorder="little").view(bool)
            self._flags = flags
        return self._flags.take(labels, mode="clip") & (labels >= 0)

    def selector(self) -> faiss.IDSelectorBitmap:
        """A FAISS selector letting these labels through; it holds the bitmap it points into."""
        bitmap = self.bitmap()
        selector = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))  # n: bytes of the bitmap
        selector.referenced_objects = [bitmap]  # type: ignore[attr-defined]  # FAISS's own keep-alive slot
        return selector

    def newest(self, below: int | None, count: int) -> tuple[Labels, bool]:
        """Up to ``count`` labels under ``below`` (all when None), highest first; and whether more lie below them."""
        if self._labels is not None:
            end = self._labels.size if below is None else int(np.searchsorted(self._labels, below))
            return self._labels[max(end - count, 0) : end][::-1].copy(), end > count
        assert self._bitmap is not None
        return newest_in_bitmap(self._bitmap, below, count)


class _Atom:
    """The labels of one atom, ascending, with room to grow; and, once it is dense, its bitmap."""

    __slots__ = ("_bitmap", "_buffer", "count", "removed_at")

    def __init__(self, labels: Labels, removed_at: int) -> None:
        self._buffer = labels
        self.count = int(labels.size)
        self._bitmap: Bitmap | None = None
        self.removed_at = removed_at  # Selections' removal count when it was read: how stale it may grow

    @property
    def labels(self) -> Labels:
        return self._buffer[: self.count]

    @property
    def nbytes(self) -> int:
        bitmap = int(self._bitmap.nbytes) if self._bitmap is not None else 0
        return _ATOM_OVERHEAD + int(self._buffer.nbytes) + bitmap

    def dense(self, nbits: int) -> bool:
        return self.count * _DENSE > nbits

    def bitmap(self) -> Bitmap:
        if self._bitmap is None:
            self._bitmap = to_bitmap(self.labels)
        return self._bitmap

    def append(self, labels: Labels) -> None:
        """Add labels above every one held (new items); amortised, the buffer doubles when full."""
        needed = self.count + int(labels.size)
        if needed > self._buffer.size:
            grown = np.empty(max(needed, 2 * self._buffer.size, 16), dtype=np.int64)
            grown[: self.count] = self.labels
            self._buffer = grown
        self._buffer[self.count : needed] = labels
        self.count = needed
        if self._bitmap is not None:
            self._bitmap = set_bits(self._bitmap, labels)


class Selections:
    """Filters to ``Allowed`` sets, for one index; atoms cached up to ``budget`` bytes (least recently used go).

    ``allowed`` runs under the index's read lock (several at once: the cache has a
    mutex of its own); ``added``, ``removed`` and ``clear`` under its write lock,
    after the store has committed, so no reader sees an atom half-updated.
    """

    def __init__(self, store: SqliteStore, budget: int = CACHE_BYTES) -> None:
        self._store = store
        self._budget = budget
        self._atoms: OrderedDict[AtomKey, _Atom] = OrderedDict()
        self._thresholds: dict[str, set[float]] = {}  # concept name -> minimums of its cached atoms
        self._bytes = 0
        self._mutex = threading.Lock()
        self._removed = 0  # labels removed or replaced since open: the most dead labels an atom can hold

    # -- reads (under the index's read lock) ---------------------------------------------

    def allowed(self, where: Filter, live: LiveLabels, read_sdrs: ReadSdrs = _no_sdrs) -> Allowed:
        """The live labels passing every condition of ``where``."""
        nbits = live.size
        parts: list[_Part] = []
        for key, values in where.metadata:
            parts.append(_union(self._pairs(key, list(dict.fromkeys(values))), nbits))
        for condition in where.concepts:
            parts.append(_union([self._concept(condition.name, float(condition.min_confidence))], nbits))
        if not parts:  # an empty filter lets every live label through
            return Allowed(live_count=live.count, bitmap=live.bitmap(), read_sdrs=read_sdrs)
        parts.sort(key=lambda part: part.count)
        smallest = parts[0]
        if smallest.labels is not None:
            labels = smallest.labels
            for part in parts[1:]:
                labels = labels[part.mask(labels)]
            return Allowed(live_count=live.count, labels=labels[live.mask(labels)], read_sdrs=read_sdrs)
        bitmap = live.bitmap()
        for part in parts:
            bitmap = bitmap_and(bitmap, part.bitmap())
        return Allowed(live_count=live.count, bitmap=bitmap, read_sdrs=read_sdrs)

    def _pairs(self, key: str, values: Sequence[str]) -> list[_Atom]:
        """The atoms of one key's values: kept ones from the cache, the others read in one batch."""
        found: dict[str, _Atom] = {}
        with self._mutex:
            for value in values:
                atom = self._kept(("m", key, value))
                if atom is not None:
                    found[value] = atom
        missing = [value for value in values if value not in found]
        if missing:
            read = self._store.labels_with_pairs(key, missing)
            fresh = {value: _Atom(read[value], self._removed) for value in missing}
            self._keep([(("m", key, value), atom) for value, atom in fresh.items()])
            found.update(fresh)
        return [found[value] for value in values]

    def _concept(self, name: str, minimum: float) -> _Atom:
        key: AtomKey = ("c", name, minimum)
        with self._mutex:
            atom = self._kept(key)
        if atom is None:
            atom = _Atom(self._store.labels_with_concept(name, minimum), self._removed)
            self._keep([(key, atom)])
        return atom

    def _kept(self, key: AtomKey) -> _Atom | None:
        """The kept atom, now the most recently used; None when removals may have left half of it dead (mutex held)."""
        atom = self._atoms.get(key)
        if atom is None:
            return None
        self._atoms.move_to_end(key)
        return atom if self._removed - atom.removed_at <= atom.count // 2 else None

    def _keep(self, fresh: Sequence[tuple[AtomKey, _Atom]]) -> None:
        """Keep atoms just read, evicting the least recently used: O(1) each (the thresholds too)."""
        with self._mutex:
            for key, atom in fresh:
                self._forget(key)
                if atom.nbytes > self._budget:
                    continue
                self._atoms[key] = atom
                self._bytes += atom.nbytes
                if key[0] == "c":
                    self._thresholds.setdefault(key[1], set()).add(float(key[2]))
            while self._bytes > self._budget:
                self._forget(next(iter(self._atoms)))

    def _forget(self, key: AtomKey) -> None:
        atom = self._atoms.pop(key, None)
        if atom is None:
            return
        self._bytes -= atom.nbytes
        if key[0] == "c":
            minimums = self._thresholds[key[1]]
            minimums.discard(float(key[2]))
            if not minimums:
                del self._thresholds[key[1]]

    # -- writes (under the index's write lock, after the store committed) ---------------------

    def added(self, labels: Labels, items: Sequence[StoredItem]) -> None:
        """New items got ``labels``: each kept atom they belong to gains theirs."""
        if not self._atoms:
            return
        gained: dict[AtomKey, list[int]] = {}
        for label, item in zip(labels.tolist(), items, strict=True):
            for key, value in item.metadata.items():
                if ("m", key, value) in self._atoms:
                    gained.setdefault(("m", key, value), []).append(label)
            best: dict[str, float] = {}
            for name, confidence in item.concepts:
                best[name] = max(confidence, best.get(name, confidence))
            for name, confidence in best.items():
                for minimum in self._thresholds.get(name, ()):
                    if confidence >= minimum:
                        gained.setdefault(("c", name, minimum), []).append(label)
        with self._mutex:
            for atom_key, new in gained.items():
                atom = self._atoms[atom_key]
                before = atom.nbytes
                atom.append(np.array(new, dtype=np.int64))
                self._bytes += atom.nbytes - before

    def note_removed(self, count: int) -> None:
        """``count`` labels died (removed or replaced items): kept atoms may now hold them."""
        self._removed += count

    def clear(self) -> None:
        """Forget every atom (they are read again when asked for)."""
        with self._mutex:
            self._atoms.clear()
            self._thresholds.clear()
            self._bytes = 0

    @property
    def cached_bytes(self) -> int:
        return self._bytes


@dataclass(frozen=True)
class _Part:
    """One condition's labels during an evaluation: a sorted array, or a bitmap when many pass."""

    count: int  # an upper bound when made from a bitmap of several atoms
    labels: Labels | None = None
    bitmap_: Bitmap | None = None

    def mask(self, labels: Labels) -> npt.NDArray[np.bool_]:
        return in_sorted(labels, self.labels) if self.labels is not None else in_bitmap(labels, self.bitmap())

    def bitmap(self) -> Bitmap:
        return self.bitmap_ if self.bitmap_ is not None else to_bitmap(self.labels)  # type: ignore[arg-type]


def _union(atoms: Sequence[_Atom], nbits: int) -> _Part:
    """The OR of a key's values (or one concept atom), in the cheaper form."""
    count = sum(atom.count for atom in atoms)
    if len(atoms) == 1 and not atoms[0].dense(nbits):
        return _Part(count, labels=atoms[0].labels)
    if count * _DENSE <= nbits:
        joined = np.concatenate([atom.labels for atom in atoms]) if atoms else _NO_LABELS
        return _Part(count, labels=np.unique(joined))
    bitmap = np.zeros(0, dtype=np.uint8)
    for atom in atoms:
        other = atom.bitmap() if atom.dense(nbits) else to_bitmap(atom.labels)
        bitmap = bitmap_or(bitmap, other)
    return _Part(count, bitmap_=bitmap)
