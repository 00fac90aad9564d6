"""Label sets as bitmaps in FAISS's ``IDSelectorBitmap`` layout, and sorted label arrays tested against them.

Bit ``l & 7`` of byte ``l >> 3`` is label ``l``. A bitmap is as long as its highest
label needs; the operations take bitmaps of different lengths (missing bytes are 0).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .live import Labels

__all__ = [
    "Bitmap",
    "bitmap_and",
    "bitmap_or",
    "in_bitmap",
    "in_sorted",
    "newest_in_bitmap",
    "popcount",
    "set_bits",
    "to_bitmap",
]

Bitmap = npt.NDArray[np.uint8]  # bit (l & 7) of byte l >> 3 is label l: FAISS's IDSelectorBitmap layout
_NO_LABELS = np.zeros(0, dtype=np.int64)


def to_bitmap(labels: Labels) -> Bitmap:
    if labels.size == 0:
        return np.zeros(0, dtype=np.uint8)
    size = (int(labels.max()) >> 3) + 1
    flags = np.zeros(size * 8, dtype=bool)
    flags[labels] = True
    return np.packbits(flags, bitorder="little")


def set_bits(bitmap: Bitmap, labels: Labels) -> Bitmap:
    """``bitmap`` with ``labels`` set, grown (doubling) when they lie past its end."""
    if labels.size == 0:
        return bitmap
    needed = (int(labels.max()) >> 3) + 1
    if needed > bitmap.size:
        grown = np.zeros(max(needed, 2 * bitmap.size), dtype=np.uint8)
        grown[: bitmap.size] = bitmap
        bitmap = grown
    np.bitwise_or.at(bitmap, labels >> 3, np.left_shift(1, labels & 7).astype(np.uint8))
    return bitmap


def in_bitmap(labels: Labels, bitmap: Bitmap) -> npt.NDArray[np.bool_]:
    inside = (labels >= 0) & ((labels >> 3) < bitmap.size)
    found = np.zeros(labels.shape, dtype=bool)
    chosen = labels[inside]
    found[inside] = ((bitmap[chosen >> 3] >> (chosen & 7).astype(np.uint8)) & 1).astype(bool)
    return found


def in_sorted(labels: Labels, sorted_labels: Labels | None) -> npt.NDArray[np.bool_]:
    if sorted_labels is None or sorted_labels.size == 0:
        return np.zeros(labels.shape, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_labels, labels), sorted_labels.size - 1)
    return np.asarray(sorted_labels[at] == labels)


def bitmap_and(first: Bitmap, second: Bitmap) -> Bitmap:
    size = min(first.size, second.size)
    return np.bitwise_and(first[:size], second[:size])


def bitmap_or(first: Bitmap, second: Bitmap) -> Bitmap:
    if first.size < second.size:
        first, second = second, first
    joined = first.copy()
    joined[: second.size] |= second
    return joined


def popcount(bitmap: Bitmap) -> int:
    return int(np.bitwise_count(bitmap).sum(dtype=np.int64))


def newest_in_bitmap(bitmap: Bitmap, below: int | None, count: int) -> tuple[Labels, bool]:
    """The ``count`` highest set bits under ``below``, read backwards a window at a time; and whether more remain."""
    end = bitmap.size * 8 if below is None else min(max(below, 0), bitmap.size * 8)
    found: list[Labels] = []
    held = 0
    window = 1 << 15  # bits
    while end > 0 and held <= count:
        start = max(end - window, 0)
        first, last = start >> 3, (end + 7) >> 3
        bits = np.unpackbits(bitmap[first:last], bitorder="little")
        labels = np.flatnonzero(bits).astype(np.int64) + first * 8
        labels = labels[(labels >= start) & (labels < end)][::-1]
        found.append(labels)
        held += int(labels.size)
        end = start
        window *= 4
    labels = np.concatenate(found) if found else _NO_LABELS
    return labels[:count].copy(), labels.size > count
