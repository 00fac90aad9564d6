"""Packed FAISS codes for SDRs, with weight-equalising padding.

FAISS binary indexes rank by Hamming distance, and for SDRs ``a`` (the query)
and ``b`` (stored) ``hamming = |a| + |b| - 2 * overlap``: an SDR with fewer
active bits looks nearer than it is. Every stored code therefore carries
``equalize_bits`` extra bits after the SDR, of which ``equalize_bits - |b|``
are set (none when ``|b|`` is larger); queries leave them clear. The stored
weight becomes ``W(b) = max(|b|, equalize_bits)`` and

    hamming' = |a| + W(b) - 2 * overlap

so for every item with ``|b| <= equalize_bits`` FAISS's own order *is* the
overlap order, and the exact overlap of a candidate follows from its distance
without touching its bits. Heavier items stay exact through the bound in
``faiss_index`` (they just make exact searches look further).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["code_size", "pack_codes", "stored_weights"]

Codes = npt.NDArray[np.uint8]


def code_size(sdr_size: int, equalize_bits: int) -> int:
    """Bytes per code: the SDR bits rounded up to whole bytes, then the padding.

    FAISS binary codes must be a whole number of bytes; rounding the total up to
    8 bytes keeps every code on 64-bit words for FAISS's popcount loops.
    """
    raw = (sdr_size + 7) // 8 + equalize_bits // 8
    return (raw + 7) // 8 * 8


def stored_weights(lengths: npt.NDArray[np.integer], equalize_bits: int) -> npt.NDArray[np.int32]:
    """W(b) = max(|b|, equalize_bits): the weight FAISS sees for each stored code."""
    return np.maximum(lengths.astype(np.int32), np.int32(equalize_bits))


def pack_codes(
    positions: npt.NDArray[np.integer],
    lengths: npt.NDArray[np.integer],
    sdr_size: int,
    equalize_bits: int,
    *,
    pad: bool,
) -> Codes:
    """Pack many SDRs (``positions`` concatenated, ``lengths`` per SDR) into codes.

    ``pad`` sets the equalising bits (stored items); queries pass ``pad=False``.
    Works on the concatenation at once: each active bit becomes one byte index
    and one bit value, and bits that share a byte are summed with ``reduceat``
    (positions within an SDR are unique, so summing never carries).
    """
    count = int(lengths.size)
    size = code_size(sdr_size, equalize_bits)
    codes = np.zeros((count, size), dtype=np.uint8)
    if count == 0:
        return codes
    rows = np.repeat(np.arange(count, dtype=np.int64), lengths.astype(np.int64))
    pos = positions.astype(np.int64, copy=False)
    flat = rows * size + (pos >> 3)
    bits = np.left_shift(np.uint8(1), (pos & 7).astype(np.uint8))
    if flat.size:
        # Positions are sorted within a row and rows are in order, so equal byte
        # indices are adjacent: the group starts are where the index changes.
        starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
        codes.reshape(-1)[flat[starts]] = np.add.reduceat(bits, starts, dtype=np.uint8)
    if pad and equalize_bits:
        _set_padding(codes, lengths, sdr_size, equalize_bits)
    return codes


def _set_padding(codes: Codes, lengths: npt.NDArray[np.integer], sdr_size: int, equalize_bits: int) -> None:
    first = (sdr_size + 7) // 8
    missing = np.clip(equalize_bits - lengths.astype(np.int64), 0, equalize_bits)
    full, partial = missing // 8, missing % 8
    columns = np.arange(equalize_bits // 8, dtype=np.int64)[None, :]
    region = np.where(columns < full[:, None], np.uint8(0xFF), np.uint8(0))
    tail = ((1 << partial) - 1).astype(np.uint8)
    region = np.where(columns == full[:, None], tail[:, None], region).astype(np.uint8)
    codes[:, first : first + equalize_bits // 8] = region
