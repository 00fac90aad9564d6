"""A stored row as the FAISS engine reads it back (``Row``), and the encodings of its columns.

A row carries its *label*, the int64 id FAISS knows the item by (``store.py``);
SDRs are little-endian uint16 or uint32 blobs, concepts and metadata JSON, the
pHash a signed 64-bit integer (SQLite has no unsigned one).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ...fingerprints import Fingerprint
from ...sdr import Sdr
from ..codes import pack_codes
from ..values import SEMANTIC, Item, Match, StoredItem
from .live import Hits

__all__ = [
    "Codes",
    "Row",
    "codes_of",
    "decode_row",
    "dump_concepts",
    "item_of",
    "label_array",
    "load_concepts",
    "matches_of",
    "to_signed",
]

logger = logging.getLogger(__name__)
Codes = tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.int64]]  # rows, codes, lengths


@dataclass(frozen=True)
class Row:
    label: int
    id: str
    sdrs: dict[str, npt.NDArray[np.uint32]]  # positions by space, for the spaces this item has
    concepts: tuple[tuple[str, float], ...]
    metadata: dict[str, str]
    fingerprint: Fingerprint | None = None


def item_of(row: Row, sdr_size: int) -> Item:
    """The item a row holds, as reads give it back."""
    spaces = {name: Sdr.trusted(positions, sdr_size) for name, positions in row.sdrs.items() if name != SEMANTIC}
    return Item(
        row.id,
        Sdr.trusted(row.sdrs[SEMANTIC], sdr_size),
        row.concepts,
        types.MappingProxyType(row.metadata),
        types.MappingProxyType(spaces),
        row.fingerprint,
    )


def decode_row(spaces: Sequence[str], dtype: np.dtype[Any], row: Sequence[object]) -> Row:
    """(label, id, one column per space, concepts, metadata) as a Row."""
    count = len(spaces)
    blobs = row[2 : 2 + count]
    sdrs = {
        space: np.frombuffer(blob, dtype=dtype).astype(np.uint32)
        for space, blob in zip(spaces, blobs, strict=True)
        if isinstance(blob, bytes)
    }
    concepts_json, metadata_json = str(row[2 + count]), str(row[3 + count])
    concepts = load_concepts(concepts_json)
    sha256, phash = row[4 + count], row[5 + count]
    fingerprint = (
        Fingerprint(sha256, int(phash) & UINT64) if isinstance(sha256, str) and isinstance(phash, int) else None
    )
    return Row(int(str(row[0])), str(row[1]), sdrs, concepts, dict(json.loads(metadata_json)), fingerprint)


UINT64 = (1 << 64) - 1


def to_signed(phash: int) -> int:
    """A 64-bit pHash as SQLite's signed INTEGER holds it (the same bits)."""
    return phash - (1 << 64) if phash >= 1 << 63 else phash


def dump_concepts(concepts: Sequence[tuple[str, float]]) -> str:
    return json.dumps([[term, confidence] for term, confidence in concepts], ensure_ascii=False, separators=(",", ":"))


def label_array(rows: Iterator[tuple[int]] | sqlite3.Cursor) -> npt.NDArray[np.int64]:
    return np.fromiter((row[0] for row in rows), dtype=np.int64)


def load_concepts(concepts_json: str) -> tuple[tuple[str, float], ...]:
    return tuple((str(term), float(confidence)) for term, confidence in json.loads(concepts_json))


def codes_of(prepared: Sequence[StoredItem], space: str, sdr_size: int, equalize_bits: int) -> Codes:
    """(rows of ``prepared`` with an SDR in ``space``, their padded codes, their active counts)."""
    rows = np.array([n for n, item in enumerate(prepared) if space in item.sdrs], dtype=np.int64)
    sdrs = [prepared[n].sdrs[space] for n in rows.tolist()]
    positions = np.concatenate(sdrs) if sdrs else np.zeros(0, dtype=np.uint32)
    lengths = np.fromiter((sdr.size for sdr in sdrs), dtype=np.int64, count=len(sdrs))
    return rows, pack_codes(positions, lengths, sdr_size, equalize_bits, pad=True), lengths


def matches_of(hits: Sequence[Hits], rows: Mapping[int, Row], space: str, sdr_size: int) -> list[list[Match]]:
    """Each query's hits as matches, from the rows of their labels."""
    answers: list[list[Match]] = []
    for hit in hits:
        matches = []
        for label, overlap in zip(hit.labels.tolist(), hit.overlaps.tolist(), strict=True):
            row = rows.get(label)
            if row is None:  # cannot happen under the read lock; never invent a result
                logger.error("label %d is indexed but not in the store", label)
                continue
            overlaps = types.MappingProxyType({space: int(overlap)})
            matches.append(Match(row.id, int(overlap), item_of(row, sdr_size), overlaps, float(overlap)))
        answers.append(matches)
    return answers
