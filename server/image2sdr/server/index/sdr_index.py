"""``SdrIndex``: store SDRs durably, find the nearest by overlap, in one or more spaces.

Where things live, under the index directory:

    items.sqlite3      the source of truth: id, one SDR per space, concepts, metadata,
                       thumbnails (WAL)
    <space>.snapshot   that space's FAISS backend as of some change counter; rebuilt from
                       items.sqlite3 whenever missing, stale, truncated or corrupt
    LOCK               held (flock) while a process has the index open

An add returns once its SQLite transaction has committed; each space's backend
is updated in memory under the same exclusive lock. Searches take the lock
shared. Snapshots are written by a background thread once ``snapshot_every``
changes have accumulated, and on close: a writer waits at most for one chunk
of a snapshot to be copied (``backend.py``), never for the whole of it.

Searches and listings take a ``Filter``: ``selection.py`` turns it into the
live labels that pass (from the store's filter tables, through a cache kept in
step with writes), and each backend answers among those only, exactly as
unfiltered (flat) or as well as unfiltered (IVF): see ``flat.py`` and ``ivf.py``
for how each picks its way by the share that passes. Custom concepts are named
documents in the store, opaque here.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import threading
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from ..config import IndexConfig
from ..errors import (
    IndexClosedError,
    IndexLockedError,
    InvalidInputError,
    NoFingerprintError,
    NoSdrInSpaceError,
    NotFoundError,
)
from ..fingerprints import Fingerprint
from ..sdr import Sdr
from .backend import Backend, Layout
from .checks import (
    ItemChecks,
    check_concept_name,
    check_document,
    check_filter,
    check_id,
    check_metadata,
    compare,
    duplicate_order,
    is_int,
    page_label,
    screen,
)
from .checks import page_token as token_below
from .codes import pack_codes
from .flat import FlatBackend
from .ivf import IvfBackend
from .live import Hits
from .phashes import PhashTable
from .protocol import (
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
from .rwlock import ReadWriteLock
from .selection import Allowed, Selections
from .snapshot import SnapshotKey, load_snapshot, remove_temporaries, write_snapshot
from .store import Row, SqliteStore, StoredItem

__all__ = ["SdrIndex", "snapshot_file"]

logger = logging.getLogger(__name__)

STORE_FILE = "items.sqlite3"
LOCK_FILE = "LOCK"
LEGACY_SNAPSHOT_FILE = "faiss.snapshot"  # the release before spaces; rebuilt, not read
_EMPTY_METADATA: Mapping[str, str] = types.MappingProxyType({})
_BLEND_DEPTH = 2048  # candidates per space a blended search examines at most


def snapshot_file(space: str) -> str:
    return f"{space}.snapshot"


@dataclass
class _Space:
    """One space's backend and where its snapshot stands. Mutated under the index's write lock."""

    name: str
    backend: Backend
    path: Path
    saved_at: int = -1  # change counter of the snapshot on disk; -1: none that matches


class SdrIndex:
    """Items by id, searchable by SDR overlap in each space. Thread-safe; one process per directory.

    Results are ordered by overlap, highest first; ties go to the item added (or
    last replaced) earlier. ``kind="exact"`` answers are exact; ``kind="ivf"``
    ones are approximate once a space is large enough to train on
    (``ivf_train_min``), exact before.
    """

    def __init__(
        self,
        directory: Path,
        config: IndexConfig,
        sdr_size: int = 16384,
        spaces: Sequence[str] = (SEMANTIC, VISUAL),
    ) -> None:
        if not spaces or spaces[0] != SEMANTIC or len(set(spaces)) != len(spaces):
            raise ValueError(f"spaces must start with {SEMANTIC!r} and not repeat, got {spaces!r}")
        self.directory = Path(directory)
        self.config = config
        self.sdr_size = sdr_size
        self.layout = Layout(sdr_size, config.equalize_bits)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_directory(self.directory / LOCK_FILE)
        self._checks = ItemChecks(config, sdr_size, spaces)
        self._lock = ReadWriteLock()
        self._snapshot_mutex = threading.Lock()  # one snapshot pass at a time
        self._freezes = 0  # snapshots being written: compaction waits (it would move frozen bytes)
        self._closed = False
        try:
            self._store = SqliteStore(
                self.directory / STORE_FILE,
                sdr_size,
                spaces=spaces,
                synchronous=config.sqlite_synchronous,
                cache_mib=config.sqlite_cache_mib,
                busy_timeout_ms=config.sqlite_busy_timeout_ms,
            )
        except BaseException:
            self._lock_file.close()
            raise
        try:
            self._store_id = self._store.store_id
            self._changes = self._store.changes()  # kept here, read and written under the lock
            # Filters to labels, its cache kept in step with writes.
            self._selections = Selections(self._store, budget=config.filter_cache_mib << 20)
            self._drop_legacy_snapshot()
            self._spaces = {space: self._open_space(space) for space in spaces}
            self._phashes = self._load_phashes()
        except BaseException:
            self._store.close()  # what was opened is closed again, so the caller may retry
            self._lock_file.close()
            raise
        # Told of each space's snapshot pass: (space, seconds, written); the server's metrics. None: nobody.
        self.on_snapshot: Callable[[str, float, bool], None] | None = None
        self._background = _BackgroundSnapshots(self._write_snapshots)
        if self._snapshot_due():
            self._background.request()

    # -- lifecycle ------------------------------------------------------------

    @property
    def spaces(self) -> tuple[str, ...]:
        return tuple(self._spaces)

    def __enter__(self) -> SdrIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for a running snapshot, snapshot what changed since, then release everything."""
        with self._lock.write():
            if self._closed:
                return
            self._closed = True  # from here on, calls fail with IndexClosedError
        try:
            self._background.stop()
            self._write_snapshots()
        finally:
            self._store.close()
            self._lock_file.close()

    def available(self) -> bool:
        """Open: everything lives in this process, so it serves whenever it is open."""
        return not self._closed

    def snapshot(self) -> None:
        """Write every space's snapshot now, in the caller's thread (searches and writes go on)."""
        with self._lock.read():
            self._check_open()
        self._write_snapshots()

    # -- writes ---------------------------------------------------------------

    def add(
        self,
        item_id: str,
        sdr: Sdr,
        concepts: Sequence[tuple[str, float]] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Insert or replace one item (semantic space only); durable when this returns."""
        self.add_many([Item(item_id, sdr, tuple(concepts), metadata if metadata is not None else _EMPTY_METADATA)])

    def add_many(
        self,
        items: Sequence[Item],
        *,
        on_duplicate: OnDuplicate = OnDuplicate.KEEP,
        thresholds: DuplicateThresholds | None = None,
    ) -> list[AddOutcome]:
        """Insert or replace many items in one transaction (all or none).

        An id given twice keeps its last occurrence, as if added one by one. Under
        SKIP or REPLACE each item with a fingerprint is checked for copies, held
        against the store and the items before it, under the write lock: two
        concurrent adds of one photo cannot both be stored under SKIP.
        """
        prepared = self._checks.prepare(items)
        if not prepared:
            return []
        limits = self._checks.thresholds(thresholds)
        codes = {space: self._codes(prepared, space) for space in self._spaces}
        with self._lock.write():
            self._check_open()
            outcomes, removed = self._screen(prepared, on_duplicate, limits)
            kept = [item for item, outcome in zip(prepared, outcomes, strict=True) if outcome.stored]
            if kept:
                if len(kept) != len(prepared):
                    codes = {space: self._codes(kept, space) for space in self._spaces}
                self._commit(kept, codes, removed)
            due = self._snapshot_due()
        if due:
            self._background.request()
        return outcomes

    def _commit(
        self,
        kept: Sequence[StoredItem],
        codes: Mapping[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.int64]]],
        removed: Sequence[str],
    ) -> None:
        """Store ``kept`` and delete ``removed`` in one transaction, then update every space; caller holds the lock."""
        labels, replaced, self._changes = self._store.upsert(kept, remove=removed)

        def change() -> None:
            for name, space in self._spaces.items():
                rows, space_codes, lengths = codes[name]
                space.backend.remove(replaced)
                space.backend.add(labels[rows], space_codes, lengths)
            self._selections.note_removed(int(replaced.size))
            self._selections.added(labels, kept)
            self._phashes.remove(replaced)
            printed = [n for n, item in enumerate(kept) if item.fingerprint is not None]
            hashes = np.array([kept[n].fingerprint.phash for n in printed], dtype=np.uint64)  # type: ignore[union-attr]
            self._phashes.add(labels[printed], hashes)

        self._apply(change)

    def _screen(
        self, prepared: Sequence[StoredItem], policy: OnDuplicate, limits: DuplicateThresholds
    ) -> tuple[list[AddOutcome], list[str]]:
        """What to do with each item under ``policy``: (outcomes, ids to delete); caller holds the write lock."""

        def stored_copies(fingerprint: Fingerprint, visual: Sdr | None) -> list[Duplicate]:
            return self._duplicates(fingerprint, visual, limits, self.config.max_k, exclude_label=-1)

        return screen(prepared, policy, limits, stored_copies, self.sdr_size)

    def check_item(self, item_id: str, metadata: Mapping[str, str] | None = None) -> None:
        """Raise what ``add`` would raise for this id and metadata, without storing anything.

        Lets a caller refuse a bad request before the work that produces its SDR.
        """
        check_id(item_id, self.config.max_id_length)
        check_metadata(metadata if metadata is not None else _EMPTY_METADATA, self.config.max_metadata_bytes)

    def remove(self, item_id: str) -> None:
        """Remove an item; NotFoundError if there is none with this id."""
        check_id(item_id, self.config.max_id_length)
        with self._lock.write():
            self._check_open()
            label, self._changes = self._store.remove(item_id)
            if label is None:
                raise NotFoundError(f"no item with id {item_id!r}", resource=item_id)
            removed = np.array([label], dtype=np.int64)

            def change() -> None:
                for space in self._spaces.values():
                    space.backend.remove(removed)
                self._selections.note_removed(1)
                self._phashes.remove(removed)

            self._apply(change)
            due = self._snapshot_due()
        if due:
            self._background.request()

    def _apply(self, change: Callable[[], None]) -> None:
        """Run a backend change that follows a committed store change, then keep each backend healthy.

        The store has already committed: if FAISS fails here (out of memory), the
        in-memory backends are rebuilt from the store so they never disagree with it.
        """
        try:
            change()
            for space in self._spaces.values():
                if self._due_for_training(space.backend):
                    logger.info("training IVF for space %s on %d items", space.name, space.backend.live_count)
                    space.backend = self._build(space.name)
                elif not self._freezes and space.backend.needs_compaction():
                    space.backend.compact()
        except Exception:
            logger.exception("FAISS update failed after commit; rebuilding from the store")
            for space in self._spaces.values():
                space.backend = self._build(space.name)
            self._phashes = self._load_phashes()
            self._selections.clear()
            raise

    # -- reads ----------------------------------------------------------------

    def get(self, item_id: str) -> Item:
        check_id(item_id, self.config.max_id_length)
        with self._lock.read():
            self._check_open()
            row = self._store.get(item_id)
        if row is None:
            raise NotFoundError(f"no item with id {item_id!r}", resource=item_id)
        return self._item(row)

    def contains(self, item_ids: Sequence[str]) -> list[bool]:
        for item_id in item_ids:
            check_id(item_id, self.config.max_id_length)
        with self._lock.read():
            self._check_open()
            present = self._store.existing(item_ids)
        return [item_id in present for item_id in item_ids]

    def thumbnails(self, item_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored thumbnails of these items (ids without one, or unknown, are absent)."""
        for item_id in item_ids:
            check_id(item_id, self.config.max_id_length)
        with self._lock.read():
            self._check_open()
            return self._store.thumbnails(list(dict.fromkeys(item_ids)))

    def count(self, space: str | None = None) -> int:
        """Items stored; with a space, those that have an SDR in it."""
        if space is not None and space not in self._spaces:
            raise InvalidInputError(
                f"unknown space {space!r}; this index keeps {', '.join(self.spaces)}", field="space"
            )
        with self._lock.read():
            self._check_open()
            return self._spaces[space or SEMANTIC].backend.live_count

    def list_items(self, page_size: int, page_token: str = "", *, where: Filter | None = None) -> ItemPage:
        """Stored items passing ``where``, newest first; the token is the label to continue below.

        Under a filter, ``total`` counts the items passing it now, and the token also
        carries the filter's digest: it continues only the listing it came from.
        """
        if not is_int(page_size) or not 1 <= page_size <= self.config.max_k:
            raise InvalidInputError(
                f"page_size must be an integer in [1, {self.config.max_k}], got {page_size!r}", field="page_size"
            )
        where = check_filter(where, self.config.max_metadata_bytes)
        before = page_label(page_token, where)
        with self._lock.read():
            self._check_open()
            if where is None:
                rows = self._store.rows_before(before if before is not None else 1 << 62, page_size)
                total = self._spaces[SEMANTIC].backend.live_count
                more = len(rows) == page_size and rows[-1].label > 0
            else:
                allowed = self._passing(where, SEMANTIC)
                labels, more = allowed.newest(before, page_size)
                found = self._store.rows_by_label(labels.tolist())
                rows = [found[label] for label in labels.tolist() if label in found]
                total = allowed.count
        token = token_below(rows[-1].label, where) if more and rows else ""
        return ItemPage(tuple(self._item(row) for row in rows), token, total)

    def find_duplicates(
        self,
        fingerprint: Fingerprint | None,
        visual: Sdr | None,
        thresholds: DuplicateThresholds | None = None,
        k: int = 10,
        *,
        exclude: str | None = None,
    ) -> list[Duplicate]:
        """Stored copies of an image: same bytes, near-exact (pHash) or transformed (visual overlap)."""
        limits = self._checks.thresholds(thresholds)
        self._checks.search(k, 0, SEMANTIC)
        if visual is not None:
            self._checks.sdr(visual, "visual")
        with self._lock.read():
            self._check_open()
            skip = -1
            if exclude is not None:
                row = self._store.get(exclude)
                skip = row.label if row is not None else -1
            return self._duplicates(fingerprint, visual, limits, k, exclude_label=skip)

    def duplicates_of(
        self, item_id: str, thresholds: DuplicateThresholds | None = None, k: int = 10
    ) -> tuple[Item, list[Duplicate]]:
        """A stored item and its stored copies, itself left out, read under one lock."""
        check_id(item_id, self.config.max_id_length)
        limits = self._checks.thresholds(thresholds)
        self._checks.search(k, 0, SEMANTIC)
        with self._lock.read():
            self._check_open()
            row = self._store.get(item_id)
            if row is None:
                raise NotFoundError(f"no item with id {item_id!r}", resource=item_id)
            if row.fingerprint is None:
                raise NoFingerprintError(
                    f"item {item_id!r} was added without an image: it has no fingerprint", field="id"
                )
            visual = row.sdrs.get(VISUAL)
            query = Sdr.trusted(visual, self.sdr_size) if visual is not None else None
            found = self._duplicates(row.fingerprint, query, limits, k, exclude_label=row.label)
        return self._item(row), found

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

        Candidates come from each space's own search; every candidate's two overlaps
        are then computed exactly. An item found in neither list scores at most
        ``(1 - weight) * s' + weight * v'`` (the last overlap each list returned), so
        once the k-th score found is above that bound the answer is proven; otherwise
        both lists grow, up to ``_BLEND_DEPTH`` candidates each, after which the answer
        is the best of those seen. Items without a visual SDR count 0 there.
        """
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise InvalidInputError(f"blend_weight must be in [0, 1], got {weight!r}", field="blend_weight")
        self._checks.search(k, 0, VISUAL)
        self._checks.sdr(semantic, "semantic")
        self._checks.sdr(visual, "visual")
        where = check_filter(where, self.config.max_metadata_bytes)
        with self._lock.read():
            self._check_open()
            skip = -1
            if exclude is not None:
                row = self._store.get(exclude)
                skip = row.label if row is not None else -1
            allowed = {space: self._allowed(where, space) for space in (SEMANTIC, VISUAL)}
            return self._blend(semantic, visual, float(weight), k, skip, allowed=allowed)

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
        """``search`` for many queries at once (FAISS scans the index once per batch)."""
        self._checks.search(k, min_overlap, space)
        for number, query in enumerate(queries):
            self._checks.sdr(query, f"queries[{number}]")
        where = check_filter(where, self.config.max_metadata_bytes)
        if not queries:
            return []
        positions = np.concatenate([query.positions for query in queries])
        lengths = np.fromiter((query.active for query in queries), dtype=np.int64, count=len(queries))
        exclude = np.full(len(queries), -1, dtype=np.int64)
        with self._lock.read():
            self._check_open()
            backend = self._spaces[space].backend
            allowed = self._allowed(where, space)
            return self._answer(backend.search(positions, lengths, k, min_overlap, exclude, allowed=allowed), space)

    def search_by_id(self, item_id: str, k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC) -> list[Match]:
        """Nearest neighbours of a stored item, the item itself left out."""
        return self.neighbours(item_id, k, min_overlap, space=space)[1]

    def neighbours(
        self, item_id: str, k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC, where: Filter | None = None
    ) -> tuple[Item, list[Match]]:
        """A stored item and its nearest neighbours in ``space``, read together under one lock.

        Reading the item and searching with it in two steps would let a replace or
        remove slip in between: the answer could be NOT_FOUND after a successful
        search, or name a query SDR that was not the one searched.
        """
        check_id(item_id, self.config.max_id_length)
        self._checks.search(k, min_overlap, space)
        where = check_filter(where, self.config.max_metadata_bytes)
        with self._lock.read():
            self._check_open()
            row = self._store.get(item_id)
            if row is None:
                raise NotFoundError(f"no item with id {item_id!r}", resource=item_id)
            positions = row.sdrs.get(space)
            if positions is None:
                raise NoSdrInSpaceError(f"item {item_id!r} has no SDR in space {space!r}", field="id")
            lengths = np.array([positions.size], dtype=np.int64)
            exclude = np.array([row.label], dtype=np.int64)
            backend = self._spaces[space].backend
            allowed = self._allowed(where, space)
            hits = backend.search(positions, lengths, k, min_overlap, exclude, allowed=allowed)
            matches = self._answer(hits, space)[0]
        return self._item(row), matches

    def _allowed(self, where: Filter | None, space: str) -> Allowed | None:
        """The live labels of ``space`` passing ``where`` (None: no filter); caller holds the lock."""
        return self._passing(where, space) if where is not None else None

    def _passing(self, where: Filter, space: str) -> Allowed:
        """The live labels of ``space`` passing ``where``; caller holds the lock."""

        def read_sdrs(
            labels: Sequence[int],
        ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
            return self._store.positions_by_label(labels, space)

        return self._selections.allowed(where, self._spaces[space].backend.live, read_sdrs)

    def _answer(self, hits: Sequence[Hits], space: str) -> list[list[Match]]:
        """Look up the rows of the final labels (only those: ids live in SQLite, not RAM)."""
        wanted = np.unique(np.concatenate([hit.labels for hit in hits])) if hits else np.zeros(0, dtype=np.int64)
        rows = self._store.rows_by_label(wanted.tolist())
        answers: list[list[Match]] = []
        for hit in hits:
            matches = []
            for label, overlap in zip(hit.labels.tolist(), hit.overlaps.tolist(), strict=True):
                row = rows.get(label)
                if row is None:  # cannot happen under the read lock; never invent a result
                    logger.error("label %d is indexed but not in the store", label)
                    continue
                overlaps = types.MappingProxyType({space: int(overlap)})
                matches.append(Match(row.id, int(overlap), self._item(row), overlaps, float(overlap)))
            answers.append(matches)
        return answers

    # -- custom concepts ---------------------------------------------------------------

    def put_concept(self, name: str, document: str) -> StoredConcept:
        """Store a custom concept durably (its own transaction), replacing one of the same name."""
        check_concept_name(name, "name")
        check_document(document)
        updated_ms = time.time_ns() // 1_000_000
        with self._lock.write():
            self._check_open()
            self._store.put_concept(name, document, updated_ms)
        return StoredConcept(name, document, updated_ms)

    def get_concept(self, name: str) -> StoredConcept:
        """The custom concept, or NotFoundError naming it."""
        check_concept_name(name, "name")
        with self._lock.read():
            self._check_open()
            found = self._store.concepts(name)
        if not found:
            raise NotFoundError(f"no custom concept named {name!r}", resource=name)
        return StoredConcept(*found[0])

    def list_concepts(self) -> list[StoredConcept]:
        """Every custom concept, by name."""
        with self._lock.read():
            self._check_open()
            return [StoredConcept(*found) for found in self._store.concepts()]

    def remove_concept(self, name: str) -> None:
        """Remove a custom concept, or NotFoundError naming it."""
        check_concept_name(name, "name")
        with self._lock.write():
            self._check_open()
            if not self._store.remove_concept(name):
                raise NotFoundError(f"no custom concept named {name!r}", resource=name)

    # -- duplicates and blends (caller holds the lock) -----------------------------

    def _duplicates(
        self,
        fingerprint: Fingerprint | None,
        visual: Sdr | None,
        limits: DuplicateThresholds,
        k: int,
        *,
        exclude_label: int,
    ) -> list[Duplicate]:
        """Stored copies by all three tests, each item once under its strongest kind, best first."""
        labels: set[int] = set()
        if fingerprint is not None:
            labels.update(self._store.labels_by_sha256(fingerprint.sha256))
            near, _ = self._phashes.near(fingerprint.phash, limits.max_phash_distance)
            labels.update(near.tolist())
        if visual is not None and visual.active:
            floor = max(1, math.ceil(limits.min_visual_share * visual.active))
            exclude = np.array([exclude_label], dtype=np.int64)
            hits = self._spaces[VISUAL].backend.search(
                visual.positions, np.array([visual.active], dtype=np.int64), k + len(labels), floor, exclude
            )[0]
            labels.update(hits.labels.tolist())
        labels.discard(exclude_label)
        rows = self._store.rows_by_label(sorted(labels))
        found = []
        for row in rows.values():
            duplicate = self._compare_row(fingerprint, visual, row, limits)
            if duplicate is not None:
                found.append(duplicate)
        return sorted(found, key=duplicate_order)[:k]

    def _compare_row(
        self, fingerprint: Fingerprint | None, visual: Sdr | None, row: Row, limits: DuplicateThresholds
    ) -> Duplicate | None:
        stored = StoredItem(row.id, row.sdrs, row.concepts, row.metadata, row.fingerprint)
        duplicate = compare(fingerprint, visual, stored, limits, self.sdr_size)
        return (
            None
            if duplicate is None
            else Duplicate(
                duplicate.id, duplicate.kind, duplicate.phash_distance, duplicate.visual_overlap, self._item(row)
            )
        )

    def _blend(
        self,
        semantic: Sdr,
        visual: Sdr,
        weight: float,
        k: int,
        exclude_label: int,
        *,
        allowed: Mapping[str, Allowed | None],
    ) -> list[Match]:
        """Candidates from each space (passing the filter, when ``allowed`` has one), scored exactly in both."""
        queries = {SEMANTIC: semantic, VISUAL: visual}
        fetch = max(k * self.config.candidate_factor, k + self.config.candidate_margin)
        passing = allowed[SEMANTIC]
        total = passing.count if passing is not None else self._spaces[SEMANTIC].backend.live_count
        # When the two spaces disagree (an item near in one is average in the other), the
        # proof may need most of the collection; past this depth the answer is the best
        # of the candidates seen, each scored exactly.
        deepest = max(_BLEND_DEPTH, 4 * fetch)
        while True:
            candidates: set[int] = set()
            bound = 0.0
            for space, query in queries.items():
                share = weight if space == VISUAL else 1.0 - weight
                hits = self._spaces[space].backend.search(
                    query.positions,
                    np.array([query.active], dtype=np.int64),
                    fetch,
                    0,
                    np.array([exclude_label], dtype=np.int64),
                    allowed=allowed[space],
                )[0]
                candidates.update(hits.labels.tolist())
                if hits.labels.size >= fetch:  # the list may have left out items scoring up to its last
                    bound += share * int(hits.overlaps[-1])
            rows = self._store.rows_by_label(sorted(candidates))
            scored = sorted(
                (self._blend_match(row, queries, weight) for row in rows.values()),
                key=lambda pair: (-pair[0].score, pair[1]),
            )
            best = [match for match, _ in scored[:k]]
            # Strictly above: an unseen item tying the bound could win the tie on its label.
            if (len(best) >= k and best[-1].score > bound) or fetch >= min(total, deepest):
                return best
            fetch *= 4

    def _blend_match(self, row: Row, queries: Mapping[str, Sdr], weight: float) -> tuple[Match, int]:
        overlaps = {}
        for space, query in queries.items():
            positions = row.sdrs.get(space)
            overlaps[space] = (
                0 if positions is None else int(np.intersect1d(query.positions, positions, assume_unique=True).size)
            )
        score = (1.0 - weight) * overlaps[SEMANTIC] + weight * overlaps[VISUAL]
        match = Match(row.id, overlaps[SEMANTIC], self._item(row), types.MappingProxyType(overlaps), score)
        return match, row.label

    def _load_phashes(self) -> PhashTable:
        table = PhashTable()
        for labels, hashes in self._store.phashes():
            table.add(labels, hashes)
        return table

    # -- validation ------------------------------------------------------------

    def _codes(
        self, prepared: Sequence[StoredItem], space: str
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
        """(rows of ``prepared`` with an SDR in ``space``, their padded codes, their active counts)."""
        rows = np.array([n for n, item in enumerate(prepared) if space in item.sdrs], dtype=np.int64)
        sdrs = [prepared[n].sdrs[space] for n in rows.tolist()]
        positions = np.concatenate(sdrs) if sdrs else np.zeros(0, dtype=np.uint32)
        lengths = np.fromiter((sdr.size for sdr in sdrs), dtype=np.int64, count=len(sdrs))
        codes = pack_codes(positions, lengths, self.sdr_size, self.config.equalize_bits, pad=True)
        return rows, codes, lengths

    def _check_open(self) -> None:
        if self._closed:
            raise IndexClosedError(f"the index at {self.directory} is closed")

    # -- backends and their snapshots ----------------------------------------------

    def _open_space(self, name: str) -> _Space:
        path = self.directory / snapshot_file(name)
        remove_temporaries(path)
        key = SnapshotKey.of(self._store_id, self._changes, name, self.layout, self.config)
        started = time.perf_counter()
        loaded = load_snapshot(path, key, self.config)
        if loaded is not None and not self._due_for_training(loaded):
            elapsed = time.perf_counter() - started
            logger.info("snapshot loaded: %s, %d items in %.1f s", name, loaded.live_count, elapsed)
            return _Space(name, loaded, path, saved_at=self._changes)
        built = self._build(name)
        elapsed = time.perf_counter() - started
        logger.info("index rebuilt from the store: %s, %d items in %.1f s", name, built.live_count, elapsed)
        return _Space(name, built, path)  # snapshotted in the background (or on close)

    def _drop_legacy_snapshot(self) -> None:
        legacy = self.directory / LEGACY_SNAPSHOT_FILE
        if legacy.exists():
            logger.info("%s is from the release before spaces; the index is rebuilt from the store", legacy)
            legacy.unlink()
        remove_temporaries(legacy)

    def _due_for_training(self, backend: Backend) -> bool:
        """IVF wanted, enough items, and the structure fitted to a much smaller collection (or none: flat)."""
        live = backend.live_count
        if self.config.kind != "ivf" or live < self.config.ivf_train_min:
            return False
        return live >= self.config.ivf_retrain_growth * backend.trained_for

    def _build(self, space: str) -> Backend:
        """A fresh backend from every row of the store with an SDR in ``space`` (IVF trained first if due)."""
        labels = self._store.labels(space)
        backend: Backend
        if self.config.kind == "ivf" and labels.size >= self.config.ivf_train_min:
            rng = np.random.default_rng(labels.size)
            sample = np.sort(rng.choice(labels, min(self.config.ivf_train_sample, labels.size), replace=False))
            _, positions, lengths = self._store.positions_by_label(sample.tolist(), space)
            backend = IvfBackend.train(self.layout, self.config, positions, lengths, int(labels.size))
        else:
            backend = FlatBackend(self.layout, self.config)
        for chunk_labels, positions, lengths in self._store.scan(space):
            codes = pack_codes(positions, lengths, self.sdr_size, self.config.equalize_bits, pad=True)
            backend.add(chunk_labels, codes, lengths)
        return backend

    def _snapshot_due(self) -> bool:
        """Whether ``snapshot_every`` changes have piled up since the oldest snapshot; caller holds the lock."""
        every = self.config.snapshot_every
        oldest = min(space.saved_at for space in self._spaces.values())
        return bool(every) and self._changes - max(oldest, 0) >= every

    def _write_snapshots(self) -> None:
        """Snapshot every space whose snapshot is behind; one pass at a time, any thread."""
        with self._snapshot_mutex:
            for space in self._spaces.values():
                with self._lock.read():
                    changes = self._changes
                    if space.saved_at == changes:
                        continue
                    key = SnapshotKey.of(self._store_id, changes, space.name, self.layout, self.config)
                    frozen = space.backend.freeze()
                    self._freezes += 1
                started = time.perf_counter()
                try:
                    write_snapshot(space.path, key, frozen, self._lock.read)
                except BaseException:
                    self._snapshot_done(space.name, time.perf_counter() - started, written=False)
                    raise
                finally:
                    with self._lock.read():
                        self._freezes -= 1
                space.saved_at = changes
                elapsed = time.perf_counter() - started
                self._snapshot_done(space.name, elapsed, written=True)
                logger.info("snapshot written: %s at change %d in %.1f s", space.name, changes, elapsed)

    def _snapshot_done(self, space: str, seconds: float, *, written: bool) -> None:
        if self.on_snapshot is not None:
            self.on_snapshot(space, seconds, written)

    def _item(self, row: Row) -> Item:
        spaces = {
            name: Sdr.trusted(positions, self.sdr_size) for name, positions in row.sdrs.items() if name != SEMANTIC
        }
        return Item(
            row.id,
            Sdr.trusted(row.sdrs[SEMANTIC], self.sdr_size),
            row.concepts,
            types.MappingProxyType(row.metadata),
            types.MappingProxyType(spaces),
            row.fingerprint,
        )


class _BackgroundSnapshots:
    """One daemon thread that runs ``write`` when asked; requests while it runs fold into one more run."""

    def __init__(self, write: Callable[[], None]) -> None:
        self._write = write
        self._wanted = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="index-snapshots", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        """Let a running snapshot finish, then end the thread."""
        self._stopping = True
        self._wanted.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping:
                return
            try:
                self._write()
            except Exception:  # the store has every change; the next pass or the next open catches up
                logger.exception("background snapshot failed")


def _lock_directory(path: Path) -> IO[bytes]:
    handle = open(path, "a+b")  # noqa: SIM115 - held open for the life of the index
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise IndexLockedError(f"{path.parent} is open in another process") from None
    os.set_inheritable(handle.fileno(), False)
    return handle
