"""What the service needs of an index, whatever engine keeps it.

``SdrIndex`` (SQLite as the source of truth, FAISS to search) is one
implementation; an engine that is both store and search (Milvus) is another.
The service is written against ``ItemIndex`` only, and the contract tests in
``tests/test_index_contract.py`` run against every implementation.

An item carries one SDR per named *space*. ``semantic`` (what the picture
shows: its concepts' term SDRs merged) is always there; further spaces (such as
``visual``, how it looks) are optional per item. Each space is searched on its
own.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..sdr import Sdr

__all__ = ["SEMANTIC", "Item", "ItemIndex", "Match"]

SEMANTIC = "semantic"
_EMPTY: Mapping[str, str] = types.MappingProxyType({})
_NO_SPACES: Mapping[str, Sdr] = types.MappingProxyType({})


@dataclass(frozen=True)
class Item:
    """One stored item. ``sdr`` is its SDR in the semantic space; ``spaces`` holds any others by name."""

    id: str
    sdr: Sdr
    concepts: tuple[tuple[str, float], ...] = ()
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    spaces: Mapping[str, Sdr] = field(default_factory=lambda: _NO_SPACES)

    def in_space(self, space: str) -> Sdr | None:
        """This item's SDR in ``space``, or None when it has none there."""
        return self.sdr if space == SEMANTIC else self.spaces.get(space)


@dataclass(frozen=True)
class Match:
    """One search result: the stored item and how many active bits it shares with the query."""

    id: str
    overlap: int
    item: Item


class ItemIndex(Protocol):
    """Items by id, searchable by SDR overlap in each space. Thread-safe.

    Results are ordered by overlap, highest first; ties go to the item added (or
    last replaced) earlier. Every write is durable when it returns.
    """

    def add(
        self,
        item_id: str,
        sdr: Sdr,
        concepts: Sequence[tuple[str, float]] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Insert or replace one item."""
        ...

    def add_many(self, items: Sequence[Item]) -> None:
        """Insert or replace many items at once, all or none; a repeated id keeps its last occurrence."""
        ...

    def check_item(self, item_id: str, metadata: Mapping[str, str] | None = None) -> None:
        """Raise what ``add`` would raise for this id and metadata, storing nothing."""
        ...

    def get(self, item_id: str) -> Item:
        """The item, or NotFoundError."""
        ...

    def contains(self, item_ids: Sequence[str]) -> list[bool]:
        """For each id, whether an item with it is stored (one round trip for many)."""
        ...

    def remove(self, item_id: str) -> None:
        """Remove an item, or NotFoundError."""
        ...

    def search(self, query: Sdr, k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC) -> list[Match]:
        """The k stored items sharing the most active bits with ``query`` in ``space``."""
        ...

    def search_many(
        self, queries: Sequence[Sdr], k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC
    ) -> list[list[Match]]:
        """``search`` for many queries at once."""
        ...

    def neighbours(
        self, item_id: str, k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC
    ) -> tuple[Item, list[Match]]:
        """A stored item and its nearest neighbours (itself left out), read consistently together."""
        ...

    def count(self) -> int:
        """Items stored."""
        ...

    @property
    def spaces(self) -> tuple[str, ...]:
        """The spaces this index keeps, ``semantic`` first."""
        ...

    def close(self) -> None:
        """Release everything; waits for work in progress (such as a snapshot)."""
        ...
