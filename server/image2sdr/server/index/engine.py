"""What an index engine implements: storage and search, on input ``ItemIndex`` has validated.

Two engines exist: ``faiss.FaissEngine`` (SQLite stores the items, FAISS searches
them, in this process) and ``milvus.MilvusEngine`` (Milvus stores and searches).
An engine checks nothing a caller sent: ids, SDRs, k, spaces, filters and
thresholds reach it valid, and ``ItemIndex`` turns its "none" answers (None,
False) into the errors callers see. Each engine keeps its own cursor inside a
page token and refuses one it never gave out (``paging.BadCursorError``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..fingerprints import Fingerprint
from ..sdr import Sdr
from .values import DuplicateThresholds, Filter, Item, Match, StoredConcept, StoredItem

__all__ = ["CopyQuery", "Decide", "Engine", "FindCopies", "Listing", "SnapshotHook", "Write"]

# Told of each space's snapshot pass: (space, seconds, written). Only an engine that snapshots calls it.
SnapshotHook = Callable[[str, float, bool], None]


@dataclass(frozen=True)
class CopyQuery:
    """Copies of one image looked for: by its fingerprint, by its look, within the thresholds."""

    fingerprint: Fingerprint | None
    visual: Sdr | None
    limits: DuplicateThresholds
    k: int  # candidates by look, about; every one by bytes and pHash
    verify: int = 0  # and this many nearest by look whatever their share: the keypoints verify them


# Candidate copies of an image among the stored items, unjudged: ``duplicates.rank`` decides.
FindCopies = Callable[[CopyQuery], list[Item]]


@dataclass(frozen=True)
class Write:
    """What one write stores (some of the items offered, in order) and which ids it deletes."""

    store: Sequence[StoredItem]
    delete: Sequence[str] = ()


# Decides a write under the engine's write lock, with the engine's way of finding copies in hand.
Decide = Callable[[FindCopies], Write]


@dataclass(frozen=True)
class Listing:
    """One page of items, newest first; ``cursor`` continues below the last ("" when no more)."""

    items: tuple[Item, ...]
    cursor: str
    total: int


class Engine(Protocol):
    """Items by id in named spaces, searchable by exact SDR overlap. Thread-safe.

    Results are ordered by overlap, highest first; ties go to the item added (or
    last replaced) earlier. Every write is durable when it returns.
    """

    on_snapshot: SnapshotHook | None

    @property
    def sdr_size(self) -> int: ...

    @property
    def spaces(self) -> tuple[str, ...]:
        """The spaces kept, ``semantic`` first."""
        ...

    @property
    def description(self) -> str:
        """Where the items live, as errors name it ("the index at /data/index")."""
        ...

    def write(self, offered: Sequence[StoredItem], decide: Decide) -> None:
        """Store and delete what ``decide`` says, deciding and writing under one write lock.

        ``offered`` are the items ``decide`` may keep (an engine may prepare them, or
        refuse what it cannot store, before taking the lock); ``decide`` finds copies
        with the callback it is given, which sees every earlier write.
        """
        ...

    def remove(self, item_id: str) -> bool:
        """Remove an item; False when none has this id."""
        ...

    def get(self, item_id: str) -> Item | None: ...

    def contains(self, item_ids: Sequence[str]) -> set[str]:
        """Which of these ids are stored."""
        ...

    def thumbnails(self, item_ids: Sequence[str]) -> dict[str, bytes]:
        """The thumbnails of these (distinct) ids that have one."""
        ...

    def keypoints(self, item_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored keypoint blobs (``keypoints.py``) of these (distinct) ids that have one.

        Called by ``decide`` under the engine's write lock too: it must not take that lock.
        """
        ...

    def count(self, space: str) -> int:
        """Items with an SDR in ``space``."""
        ...

    def search(
        self, queries: Sequence[Sdr], k: int, min_overlap: int, space: str, where: Filter | None
    ) -> list[list[Match]]:
        """The k items passing ``where`` sharing the most active bits with each query in ``space``."""
        ...

    def neighbours(
        self, item_id: str, k: int, min_overlap: int, space: str, where: Filter | None
    ) -> tuple[Item, list[Match]] | None:
        """The item and its nearest in ``space`` (itself left out), read together; None when unknown.

        An item without an SDR in ``space`` comes back with no neighbours.
        """
        ...

    def copies(self, query: CopyQuery, exclude: str | None) -> list[Item]:
        """Candidate copies of an image (``FindCopies``); the item ``exclude`` left out."""
        ...

    def copies_of(
        self, item_id: str, limits: DuplicateThresholds, k: int, verify: int = 0
    ) -> tuple[Item, list[Item]] | None:
        """A stored item and the candidate copies of its image, read together; None when unknown.

        An item without a fingerprint comes back with no candidates; ``verify`` as in ``CopyQuery``.
        """
        ...

    def search_blend(
        self, semantic: Sdr, visual: Sdr, weight: float, k: int, *, exclude: str | None, where: Filter | None
    ) -> list[Match]:
        """Top k by ``(1 - weight) * semantic overlap + weight * visual overlap``, exactly re-ranked."""
        ...

    def list_items(self, page_size: int, cursor: str, where: Filter | None) -> Listing:
        """Items passing ``where``, newest first, continuing below ``cursor`` ("" for the first page)."""
        ...

    def put_concept(self, name: str, document: str) -> StoredConcept: ...

    def get_concept(self, name: str) -> StoredConcept | None: ...

    def list_concepts(self) -> list[StoredConcept]:
        """Every custom concept, by name."""
        ...

    def remove_concept(self, name: str) -> bool:
        """Remove a custom concept; False when there is none of this name."""
        ...

    def available(self) -> bool:
        """Whether the engine can serve now (one cheap request, for health checks)."""
        ...

    def closing(self) -> None:
        """``close`` is coming: calls in flight should end soon (stop retrying)."""
        ...

    def close(self) -> None:
        """Release everything; called once, when no call is in flight any more."""
        ...
