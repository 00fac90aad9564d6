"""Items read back from their rows: the semantic row, and the side rows of its current version.

Readers take only the side rows whose seq is the one in the item's semantic row,
so a write that failed part-way, or an older version not yet deleted, is never seen.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ...fingerprints import Fingerprint
from ...sdr import Sdr
from ..codes import pack_codes
from ..values import SEMANTIC, Item, Match, StoredItem
from .expressions import code_bytes, in_chunks, item_key, keys_in, to_unsigned
from .schema import MilvusSchema

__all__ = ["MilvusRows", "Row"]


@dataclass(frozen=True)
class Row:
    stored: StoredItem
    seq: int


class MilvusRows(MilvusSchema):
    """Reads items by key; packs and unpacks their codes."""

    def get(self, item_id: str) -> Item | None:
        row = self._row(item_id)
        return None if row is None else self._item(row)

    def contains(self, item_ids: Sequence[str]) -> set[str]:
        ids = {item_key(item_id): item_id for item_id in item_ids}
        present: set[str] = set()
        for chunk in in_chunks(sorted(ids)):
            present.update(ids[str(row["key"])] for row in self._query(SEMANTIC, keys_in(chunk), ["key"]))
        return present

    def count(self, space: str) -> int:
        return self._count_where("" if space == SEMANTIC else f"in_{space} == true")

    def _row(self, item_id: str) -> Row | None:
        key = item_key(item_id)
        return self._rows([key]).get(key)

    def _rows(self, keys: Iterable[str]) -> dict[str, Row]:
        """The stored items with these keys (absent ones left out), each with its current side rows."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        fields = ["key", "id", "code", "seq", "concepts", "metadata", "sha256", "phash"]
        semantic = [row for chunk in in_chunks(wanted) for row in self._query(SEMANTIC, keys_in(chunk), fields)]
        current = {str(row["key"]): int(row["seq"]) for row in semantic}
        others: dict[str, dict[str, npt.NDArray[np.uint32]]] = {}
        for space in self._spaces[1:]:
            for chunk in in_chunks(sorted(current)):
                for row in self._query(space, keys_in(chunk), ["key", "seq", "code"]):
                    key = str(row["key"])
                    if current.get(key) == int(row["seq"]):  # the current version's row, not an old one
                        others.setdefault(key, {})[space] = self._positions(row["code"])
        rows = {}
        for row in semantic:
            key = str(row["key"])
            sdrs = {SEMANTIC: self._positions(row["code"]), **others.get(key, {})}
            concepts = row["concepts"] or {}
            pairs = tuple(zip(concepts.get("terms", []), (float(s) for s in concepts.get("scores", [])), strict=True))
            printed = Fingerprint(str(row["sha256"]), to_unsigned(int(row["phash"]))) if row["sha256"] else None
            stored = StoredItem(str(row["id"]), sdrs, pairs, dict(row["metadata"] or {}), printed)
            rows[key] = Row(stored, int(row["seq"]))
        return rows

    def _positions(self, code: object) -> npt.NDArray[np.uint32]:
        """The SDR of a stored code: its first sdr_size bits (the padding after them is dropped)."""
        packed = np.frombuffer(code_bytes(code), dtype=np.uint8)
        bits = np.unpackbits(packed, bitorder="little")[: self.sdr_size]
        return np.flatnonzero(bits).astype(np.uint32)

    def _query_code(self, query: Sdr) -> bytes:
        lengths = np.array([query.active], dtype=np.int64)
        codes = pack_codes(query.positions, lengths, self.sdr_size, self.config.equalize_bits, pad=False)
        return bytes(codes[0].tobytes())

    def _item(self, row: Row) -> Item:
        stored = row.stored
        spaces = {
            name: Sdr.trusted(positions, self.sdr_size) for name, positions in stored.sdrs.items() if name != SEMANTIC
        }
        return Item(
            stored.id,
            Sdr.trusted(stored.sdrs[SEMANTIC], self.sdr_size),
            stored.concepts,
            types.MappingProxyType(dict(stored.metadata)),
            types.MappingProxyType(spaces),
            stored.fingerprint,
        )

    def _match(self, row: Row, overlaps: Mapping[str, int], overlap: int, score: float) -> Match:
        return Match(row.stored.id, overlap, self._item(row), types.MappingProxyType(dict(overlaps)), score)

    def _codes(self, sdrs: Sequence[npt.NDArray[np.uint32]]) -> list[tuple[bytes, bool]]:
        """(padded code, heavy) per SDR."""
        if not sdrs:
            return []
        lengths = np.fromiter((sdr.size for sdr in sdrs), dtype=np.int64, count=len(sdrs))
        codes = pack_codes(np.concatenate(sdrs), lengths, self.sdr_size, self.config.equalize_bits, pad=True)
        limit = self.config.equalize_bits
        return [(code.tobytes(), bool(length > limit)) for code, length in zip(codes, lengths.tolist(), strict=True)]
