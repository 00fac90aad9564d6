"""``ItemIndex``: what the service asks of an index, with every rule, over whichever engine keeps the items.

Each call is validated here (``validation``, ``filters``, ``paging``), then handed
to the engine (``engine.Engine``: storage and search only); the duplicate rules
(``duplicates``) decide what an add keeps, under the engine's write lock. A
closed index refuses every call with ``IndexClosedError``; ``close`` waits for
the calls in flight before the engine lets go of anything.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from ..config import IndexConfig
from ..errors import IndexClosedError, NoFingerprintError, NoSdrInSpaceError, NotFoundError
from ..fingerprints import Fingerprint
from ..keypoints import ImageKeypoints, Keypoints, from_blob
from ..sdr import Sdr
from . import duplicates
from .engine import CopyQuery, Engine, FindCopies, SnapshotHook, Write
from .filters import FilterLimits, check_concept_name, check_filter
from .paging import BadCursorError, page_cursor, refuse_token
from .paging import page_token as token_for
from .validation import EMPTY_METADATA, ItemRules, check_document, check_metadata
from .values import (
    SEMANTIC,
    VISUAL,
    AddOutcome,
    Duplicate,
    DuplicateThresholds,
    Filter,
    Item,
    ItemPage,
    Match,
    OnDuplicate,
    StoredConcept,
)

__all__ = ["ItemIndex"]


class ItemIndex:
    """Items by id, searchable by SDR overlap in each space. Thread-safe.

    Results are ordered by overlap, highest first; ties go to the item added (or
    last replaced) earlier. Every write is durable when it returns.
    """

    def __init__(self, engine: Engine, config: IndexConfig) -> None:
        self.engine = engine
        self.config = config
        self.sdr_size = engine.sdr_size
        self._rules = ItemRules(config, engine.sdr_size, engine.spaces)
        self._gate = _Gate(engine.description)

    def __enter__(self) -> ItemIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def spaces(self) -> tuple[str, ...]:
        """The spaces this index keeps, ``semantic`` first."""
        return self.engine.spaces

    @property
    def on_snapshot(self) -> SnapshotHook | None:
        """Told of each space's snapshot pass (an engine that snapshots: FAISS); None: nobody."""
        return self.engine.on_snapshot

    @on_snapshot.setter
    def on_snapshot(self, hook: SnapshotHook | None) -> None:
        self.engine.on_snapshot = hook

    def available(self) -> bool:
        """Whether the engine can serve now (health checks ask; an embedded one always can, until closed)."""
        try:
            with self._gate:
                return self.engine.available()
        except IndexClosedError:
            return False

    def problem(self) -> str:
        """Why the engine cannot serve although its store answers (a Milvus collection missing); "" if none known."""
        return str(getattr(self.engine, "problem", ""))  # only the Milvus engine knows of such faults

    def close(self) -> None:
        """Refuse new calls, wait for those in flight, then release everything (twice is harmless)."""
        if self._gate.shut():
            self.engine.closing()
            self._gate.drain()
            self.engine.close()

    # -- writes ---------------------------------------------------------------

    def add(
        self,
        item_id: str,
        sdr: Sdr,
        concepts: Sequence[tuple[str, float]] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Insert or replace one item (semantic space only)."""
        self.add_many([Item(item_id, sdr, tuple(concepts), metadata if metadata is not None else EMPTY_METADATA)])

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
        the items before it in ``items``, under the engine's write lock: two
        concurrent adds of one photo cannot both be stored under SKIP.
        """
        prepared = self._rules.prepare(items)
        if not prepared:
            return []
        limits = self._rules.thresholds(thresholds)
        outcomes: list[AddOutcome] = []

        def decide(find: FindCopies) -> Write:
            def stored(fingerprint: Fingerprint, visual: Sdr | None, points: ImageKeypoints | None) -> list[Duplicate]:
                verify = duplicates.VERIFY if points is not None else 0
                found = find(CopyQuery(fingerprint, visual, limits, self.config.max_k, verify))
                return duplicates.rank(
                    fingerprint, visual, found, limits, self.config.max_k, points=points, stored_points=self._keypoints
                )

            decided, removed = duplicates.screen(prepared, on_duplicate, limits, stored, self.sdr_size)
            outcomes.extend(decided)
            kept = [item for item, outcome in zip(prepared, decided, strict=True) if outcome.stored]
            return Write(kept, removed)

        with self._gate:
            self.engine.write(prepared, decide)
        return outcomes

    def check_item(self, item_id: str, metadata: Mapping[str, str] | None = None) -> None:
        """Raise what ``add`` would raise for this id and metadata, storing nothing.

        Lets a caller refuse a bad request before the work that produces its SDR.
        """
        self._rules.new_id(item_id)
        check_metadata(metadata if metadata is not None else EMPTY_METADATA, self.config.max_metadata_bytes)

    def remove(self, item_id: str) -> None:
        """Remove an item, or NotFoundError."""
        self._rules.id(item_id)
        with self._gate:
            if not self.engine.remove(item_id):
                raise _not_found(item_id)

    # -- reads ----------------------------------------------------------------

    def get(self, item_id: str) -> Item:
        """The item, or NotFoundError."""
        self._rules.id(item_id)
        with self._gate:
            item = self.engine.get(item_id)
        if item is None:
            raise _not_found(item_id)
        return item

    def contains(self, item_ids: Sequence[str]) -> list[bool]:
        """For each id, whether an item with it is stored (one round trip for many)."""
        for item_id in item_ids:
            self._rules.id(item_id)
        with self._gate:
            present = self.engine.contains(item_ids)
        return [item_id in present for item_id in item_ids]

    def thumbnails(self, item_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored thumbnails of these items; ids without one, or unknown, are absent.

        An item's thumbnail is the one given with its last add: replaced with it,
        gone when that add had none, removed with the item.
        """
        for item_id in item_ids:
            self._rules.id(item_id)
        with self._gate:
            return self.engine.thumbnails(list(dict.fromkeys(item_ids)))

    def count(self, space: str | None = None) -> int:
        """Items stored; with a space, those that have an SDR in it."""
        checked = SEMANTIC if space is None else self._rules.space(space)
        with self._gate:
            return self.engine.count(checked)

    def list_items(self, page_size: int, page_token: str = "", *, where: Filter | None = None) -> ItemPage:
        """Stored items passing ``where``, newest first (the last added or replaced first), a page at a time.

        A token stays valid across writes: items added after the first page are not
        shown again, removed ones are skipped, and none is listed twice. ``total``
        counts the items passing ``where`` (all of them when it is None). A token
        is only good with the filter it was issued for; another is INVALID_ARGUMENT.
        """
        self._rules.page_size(page_size)
        where = check_filter(where, self.config.max_metadata_bytes, FilterLimits.of(self.config))
        cursor = page_cursor(page_token, where)
        with self._gate:
            try:
                listing = self.engine.list_items(page_size, cursor, where)
            except BadCursorError:
                raise refuse_token(page_token) from None
        return ItemPage(listing.items, token_for(listing.cursor, where), listing.total)

    # -- searches --------------------------------------------------------------

    def search(
        self, query: Sdr, k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC, where: Filter | None = None
    ) -> list[Match]:
        """The k stored items passing ``where`` that share the most active bits with ``query`` in ``space``."""
        return self.search_many([query], k, min_overlap, space=space, where=where)[0]

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
        self._rules.search(k, min_overlap, space)
        for number, query in enumerate(queries):
            self._rules.sdr(query, f"queries[{number}]")
        where = check_filter(where, self.config.max_metadata_bytes, FilterLimits.of(self.config))
        with self._gate:
            return self.engine.search(queries, k, min_overlap, space, where) if queries else []

    def neighbours(
        self, item_id: str, k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC, where: Filter | None = None
    ) -> tuple[Item, list[Match]]:
        """A stored item and its nearest neighbours passing ``where`` (itself left out), read together.

        Reading the item and searching with it in two steps would let a replace or
        remove slip in between: the answer could be NOT_FOUND after a successful
        search, or name a query SDR that was not the one searched.
        """
        self._rules.id(item_id)
        self._rules.search(k, min_overlap, space)
        where = check_filter(where, self.config.max_metadata_bytes, FilterLimits.of(self.config))
        with self._gate:
            found = self.engine.neighbours(item_id, k, min_overlap, space, where)
        if found is None:
            raise _not_found(item_id)
        if found[0].in_space(space) is None:
            raise NoSdrInSpaceError(f"item {item_id!r} has no SDR in space {space!r}", field="id")
        return found

    def find_duplicates(
        self,
        fingerprint: Fingerprint | None,
        visual: Sdr | None,
        thresholds: DuplicateThresholds | None = None,
        k: int = 10,
        *,
        exclude: str | None = None,
        points: ImageKeypoints | None = None,
    ) -> list[Duplicate]:
        """Stored copies of an image, strongest kind first, then closest; ``exclude`` is left out.

        With the image's ``points`` the best candidates are verified by keypoints (``duplicates.py``).
        """
        limits = self._rules.thresholds(thresholds)
        self._rules.search(k, 0, SEMANTIC)
        if visual is not None:
            self._rules.sdr(visual, "visual")
        verify = duplicates.VERIFY if points is not None else 0
        with self._gate:
            candidates = self.engine.copies(CopyQuery(fingerprint, visual, limits, k, verify), exclude)
            return duplicates.rank(
                fingerprint, visual, candidates, limits, k, points=points, stored_points=self._keypoints
            )

    def duplicates_of(
        self, item_id: str, thresholds: DuplicateThresholds | None = None, k: int = 10
    ) -> tuple[Item, list[Duplicate]]:
        """A stored item and its stored copies (itself left out); NoFingerprintError when it has no image."""
        self._rules.id(item_id)
        limits = self._rules.thresholds(thresholds)
        self._rules.search(k, 0, SEMANTIC)
        with self._gate:
            found = self.engine.copies_of(item_id, limits, k, duplicates.VERIFY)
            if found is None:
                raise _not_found(item_id)
            item, candidates = found
            if item.fingerprint is None:
                raise NoFingerprintError(
                    f"item {item_id!r} was added without an image: it has no fingerprint", field="id"
                )
            own = self._keypoints([item_id]).get(item_id)
            points = ImageKeypoints(own) if own is not None else None  # no mirror image: it only confirms
            return item, duplicates.rank(
                item.fingerprint,
                item.spaces.get(VISUAL),
                candidates,
                limits,
                k,
                points=points,
                stored_points=self._keypoints,
            )

    def _keypoints(self, item_ids: Sequence[str]) -> dict[str, Keypoints]:
        """The stored keypoints of these ids, read back (another version's blob is none); the caller holds the gate."""
        found = ((item_id, from_blob(blob)) for item_id, blob in self.engine.keypoints(list(item_ids)).items())
        return {item_id: points for item_id, points in found if points is not None}

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
        """Top k by ``(1 - weight) * semantic overlap + weight * visual overlap``, exactly re-ranked.

        Items without a visual SDR count 0 there.
        """
        checked = self._rules.blend_weight(weight)
        self._rules.search(k, 0, VISUAL)
        self._rules.sdr(semantic, "semantic")
        self._rules.sdr(visual, "visual")
        where = check_filter(where, self.config.max_metadata_bytes, FilterLimits.of(self.config))
        with self._gate:
            return self.engine.search_blend(semantic, visual, checked, k, exclude=exclude, where=where)

    # -- custom concepts ---------------------------------------------------------

    def put_concept(self, name: str, document: str) -> StoredConcept:
        """Store a custom concept durably, replacing one of the same name."""
        check_concept_name(name, "name")
        check_document(document)
        with self._gate:
            return self.engine.put_concept(name, document)

    def get_concept(self, name: str) -> StoredConcept:
        """The custom concept, or NotFoundError naming it."""
        check_concept_name(name, "name")
        with self._gate:
            found = self.engine.get_concept(name)
        if found is None:
            raise NotFoundError(f"no custom concept named {name!r}", resource=name)
        return found

    def list_concepts(self) -> list[StoredConcept]:
        """Every custom concept, by name."""
        with self._gate:
            return self.engine.list_concepts()

    def remove_concept(self, name: str) -> None:
        """Remove a custom concept, or NotFoundError naming it."""
        check_concept_name(name, "name")
        with self._gate:
            if not self.engine.remove_concept(name):
                raise NotFoundError(f"no custom concept named {name!r}", resource=name)


def _not_found(item_id: str) -> NotFoundError:
    return NotFoundError(f"no item with id {item_id!r}", resource=item_id)


class _Gate:
    """Counts the calls in flight; once shut, refuses new ones, and lets ``close`` wait for the rest."""

    def __init__(self, description: str) -> None:
        self._description = description
        self._condition = threading.Condition()
        self._active = 0
        self._shut = False

    def __enter__(self) -> None:
        with self._condition:
            if self._shut:
                raise IndexClosedError(f"{self._description} is closed")
            self._active += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._condition:
            self._active -= 1
            if not self._active:
                self._condition.notify_all()

    def shut(self) -> bool:
        """Refuse calls from now on; False when already shut."""
        with self._condition:
            if self._shut:
                return False
            self._shut = True
            return True

    def drain(self) -> None:
        with self._condition:
            while self._active:
                self._condition.wait()
