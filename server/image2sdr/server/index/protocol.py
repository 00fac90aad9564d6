"""What the service needs of an index, whatever engine keeps it.

``SdrIndex`` (SQLite as the source of truth, FAISS to search) is one
implementation; an engine that is both store and search (Milvus) is another.
The service is written against ``ItemIndex`` only, and the contract tests in
``tests/test_index_contract.py`` run against every implementation.

An item carries one SDR per named *space*. ``semantic`` (what the picture
shows: its concepts' term SDRs merged) is always there; ``visual`` (how it
looks: the classifier's pooled feature projected to an SDR) is there when the
item was added from an image. Each space is searched on its own, or both at
once with a blend weight.

An item added from an image also keeps its fingerprint (SHA-256 of the bytes,
64-bit pHash), so copies of it can be found: the same bytes, a near-exact copy
(pHash within a few bits) or a transformed one (resized, cropped, mirrored:
visual overlap above a threshold).

An item added from an image may also carry a small thumbnail (WebP or JPEG
bytes, ``thumbnails.py``), kept beside it and read apart (``thumbnails``):
searches and listings never carry it.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..fingerprints import Fingerprint
from ..sdr import Sdr

__all__ = [
    "SEMANTIC",
    "VISUAL",
    "AddOutcome",
    "ConceptCondition",
    "Duplicate",
    "DuplicateKind",
    "DuplicateThresholds",
    "Filter",
    "Item",
    "ItemIndex",
    "ItemPage",
    "Match",
    "OnDuplicate",
    "StoredConcept",
]

SEMANTIC = "semantic"
VISUAL = "visual"
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
    fingerprint: Fingerprint | None = None  # None: added by SDR alone, without an image
    # Given on add (None: none kept); items read back leave it None: ``ItemIndex.thumbnails`` reads it.
    thumbnail: bytes | None = field(default=None, compare=False, repr=False)

    def in_space(self, space: str) -> Sdr | None:
        """This item's SDR in ``space``, or None when it has none there."""
        return self.sdr if space == SEMANTIC else self.spaces.get(space)


@dataclass(frozen=True)
class Match:
    """One search result: the stored item and how many active bits it shares with the query.

    ``overlap`` is the overlap in the space searched. A blended search also fills
    ``overlaps`` (per space that scored the match) and ``score`` (the weighted sum
    it was ranked by); a single-space search leaves ``overlaps`` with that one
    space and ``score`` equal to ``overlap``.
    """

    id: str
    overlap: int
    item: Item
    overlaps: Mapping[str, int] = field(default_factory=lambda: types.MappingProxyType({}))
    score: float = 0.0


class DuplicateKind(enum.Enum):
    """How a stored item copies the query image, strongest first."""

    SAME_BYTES = "same_bytes"  # identical SHA-256
    NEAR_EXACT = "near_exact"  # pHash within max_phash_distance bits
    TRANSFORMED = "transformed"  # visual overlap at least min_visual_share of the query's active bits


@dataclass(frozen=True)
class DuplicateThresholds:
    max_phash_distance: int  # bits of 64; a near-exact copy differs in at most this many
    min_visual_share: float  # in [0, 1]; a transformed copy shares at least this share of the visual bits


@dataclass(frozen=True)
class Duplicate:
    """A stored item that copies the query: the strongest kind that applies, and how close it is."""

    id: str
    kind: DuplicateKind
    phash_distance: int  # bits; -1 when the stored item has no fingerprint
    visual_overlap: int  # active bits shared in the visual space; -1 when either side has no visual SDR
    item: Item


class OnDuplicate(enum.Enum):
    """What an add does when the index already holds a duplicate of the item."""

    KEEP = "keep"  # store it anyway (no check: the behaviour before duplicates existed)
    SKIP = "skip"  # store nothing; the outcome names the duplicate
    REPLACE = "replace"  # remove the duplicate(s), store the new item


@dataclass(frozen=True)
class ConceptCondition:
    """Items whose stored concepts include ``name`` (exactly, as stored) with at least ``min_confidence``."""

    name: str
    min_confidence: float = 0.0


@dataclass(frozen=True)
class Filter:
    """What an item must satisfy to be searched or listed: every condition holds (AND).

    ``metadata`` pairs a key with the values allowed for it: the item's metadata
    has the key, with one of those values (one value: ``key = value``). ``concepts``
    names stored concepts the item must have, each at its minimum confidence.
    Answers under a filter are the best items that pass it, not the survivors of
    an unfiltered top k. Validated by ``checks.check_filter``.
    """

    metadata: tuple[tuple[str, tuple[str, ...]], ...] = ()
    concepts: tuple[ConceptCondition, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.metadata and not self.concepts


@dataclass(frozen=True)
class StoredConcept:
    """A custom concept as the index keeps it: its name and an opaque JSON document.

    The index stores and returns the document unchanged; what it means (the
    concept's SDRs, threshold, scale) is ``custom_concepts.py``'s business.
    """

    name: str
    document: str
    updated_ms: int = 0  # when it was last (re)defined, Unix milliseconds; set by the index


@dataclass(frozen=True)
class ItemPage:
    """One page of a listing, newest first; pass ``next_page_token`` back for the next (empty: no more)."""

    items: tuple[Item, ...]
    next_page_token: str
    total: int  # items stored when the page was read


@dataclass(frozen=True)
class AddOutcome:
    """What ``add_many`` did with one item (in the order given)."""

    id: str
    stored: bool
    duplicate: Duplicate | None = None  # the best duplicate found, under SKIP or REPLACE
    replaced: tuple[str, ...] = ()  # ids removed under REPLACE


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

    def add_many(
        self,
        items: Sequence[Item],
        *,
        on_duplicate: OnDuplicate = OnDuplicate.KEEP,
        thresholds: DuplicateThresholds | None = None,
    ) -> list[AddOutcome]:
        """Insert or replace many items at once, all or none; a repeated id keeps its last occurrence.

        Under SKIP or REPLACE, each item with a fingerprint is checked for duplicates
        (``thresholds``, or the index's defaults) against what is stored and against
        the items before it in ``items``, under the same lock as the add: two
        concurrent adds of one photo cannot both be stored under SKIP.
        """
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

    def thumbnails(self, item_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored thumbnails of these items; ids without one, or unknown, are absent.

        An item's thumbnail is the one given with its last add: replaced with it,
        gone when that add had none, removed with the item.
        """
        ...

    def search(
        self, query: Sdr, k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC, where: Filter | None = None
    ) -> list[Match]:
        """The k stored items passing ``where`` that share the most active bits with ``query`` in ``space``."""
        ...

    def search_many(
        self,
        queries: Sequence[Sdr],
        k: int = 10,
        min_overlap: int = 0,
        *,
        space: str = SEMANTIC,
        where: Filter | None = None,
    ) -> list[list[Match]]:
        """``search`` for many queries at once."""
        ...

    def neighbours(
        self, item_id: str, k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC, where: Filter | None = None
    ) -> tuple[Item, list[Match]]:
        """A stored item and its nearest neighbours passing ``where`` (itself left out), read together."""
        ...

    def find_duplicates(
        self,
        fingerprint: Fingerprint | None,
        visual: Sdr | None,
        thresholds: DuplicateThresholds | None = None,
        k: int = 10,
        *,
        exclude: str | None = None,
    ) -> list[Duplicate]:
        """Stored copies of an image, strongest kind first, then closest; ``exclude`` is left out."""
        ...

    def duplicates_of(
        self, item_id: str, thresholds: DuplicateThresholds | None = None, k: int = 10
    ) -> tuple[Item, list[Duplicate]]:
        """A stored item and its stored copies (itself left out); NoFingerprintError when it has no image."""
        ...

    def search_blend(
        self,
        semantic: Sdr,
        visual: Sdr,
        weight: float,
        k: int = 10,
        *,
        exclude: str | None = None,
        where: Filter | None = None,
    ) -> list[Match]:
        """Top k by ``(1 - weight) * semantic overlap + weight * visual overlap``, exactly re-ranked."""
        ...

    def count(self, space: str | None = None) -> int:
        """Items stored; with a space, those that have an SDR in it."""
        ...

    def list_items(self, page_size: int, page_token: str = "", *, where: Filter | None = None) -> ItemPage:
        """Stored items passing ``where``, newest first (the last added or replaced first), a page at a time.

        A token stays valid across writes: items added after the first page are not
        shown again, removed ones are skipped, and none is listed twice. ``total``
        counts the items passing ``where`` (all of them when it is None). A token
        is only good with the filter it was issued for; another is INVALID_ARGUMENT.
        """
        ...

    def put_concept(self, name: str, document: str) -> StoredConcept:
        """Store a custom concept durably, replacing one of the same name."""
        ...

    def get_concept(self, name: str) -> StoredConcept:
        """The custom concept, or NotFoundError."""
        ...

    def list_concepts(self) -> list[StoredConcept]:
        """Every custom concept, by name."""
        ...

    def remove_concept(self, name: str) -> None:
        """Remove a custom concept, or NotFoundError."""
        ...

    @property
    def spaces(self) -> tuple[str, ...]:
        """The spaces this index keeps, ``semantic`` first."""
        ...

    def available(self) -> bool:
        """Whether the engine can serve now (health checks ask; an embedded one always can, until closed)."""
        ...

    def close(self) -> None:
        """Release everything; waits for work in progress (such as a snapshot)."""
        ...
