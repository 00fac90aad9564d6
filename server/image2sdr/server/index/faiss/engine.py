"""``FaissEngine``: items stored in SQLite, searched by FAISS, in this process (one process per directory).

Where things live, under the index directory:

    items.sqlite3      the source of truth: id, one SDR per space, concepts, metadata,
                       thumbnails (WAL; ``store.py``, its schema in ``schema.py``)
    <space>.snapshot   that space's FAISS backend (``spaces.py``, ``snapshot.py``)
    LOCK               held (flock) while a process has the index open

A write returns once its SQLite transaction has committed; each space's backend
is updated in memory under the same exclusive lock. Searches take the lock
shared. Searches and listings take a ``Filter``: ``selection.py`` turns it into
the live labels that pass, and each backend answers among those only (see
``flat.py`` and ``ivf.py``). Candidates of duplicates and blends are gathered
in ``appearance.py``. Custom concepts are named documents in the store, opaque here.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from ...config import IndexConfig
from ...errors import IndexLockedError
from ...sdr import Sdr
from ..engine import CopyQuery, Decide, Listing, SnapshotHook
from ..paging import BadCursorError
from ..values import SEMANTIC, VISUAL, DuplicateThresholds, Filter, Item, Match, StoredConcept, StoredItem
from .appearance import blend, copy_labels
from .backend import Backend, Layout
from .live import Hits
from .phashes import PhashTable
from .rows import Codes, Row, codes_of, item_of, matches_of
from .rwlock import ReadWriteLock
from .selection import Allowed, Selections
from .spaces import BackgroundSnapshots, Spaces
from .store import SqliteStore

__all__ = ["LOCK_FILE", "STORE_FILE", "FaissEngine"]

logger = logging.getLogger(__name__)

STORE_FILE = "items.sqlite3"
LOCK_FILE = "LOCK"
Positions = tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], npt.NDArray[np.int64]]  # labels, bits, lengths


class FaissEngine:
    """Items by id in a directory, searchable by SDR overlap in each space. Thread-safe.

    ``kind="exact"`` answers are exact; ``kind="ivf"`` ones are approximate once a
    space is large enough to train on (``ivf_train_min``), exact before.
    """

    def __init__(
        self, directory: Path, config: IndexConfig, sdr_size: int = 16384, spaces: Sequence[str] = (SEMANTIC, VISUAL)
    ) -> None:
        if not spaces or spaces[0] != SEMANTIC or len(set(spaces)) != len(spaces):
            raise ValueError(f"spaces must start with {SEMANTIC!r} and not repeat, got {spaces!r}")
        self.directory = Path(directory)
        self.config = config
        self._sdr_size = sdr_size
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_directory(self.directory / LOCK_FILE)
        self._lock = ReadWriteLock()
        self.on_snapshot: SnapshotHook | None = None  # told of each space's snapshot pass
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
            # Filters to labels, its cache kept in step with writes.
            self._selections = Selections(self._store, budget=config.filter_cache_mib << 20)
            layout = Layout(sdr_size, config.equalize_bits)
            self.backends = Spaces(self.directory, self._store, config, layout, spaces, report=self._snapshot_done)
            self._phashes = self._load_phashes()
        except BaseException:
            self._store.close()  # what was opened is closed again, so the caller may retry
            self._lock_file.close()
            raise
        self._background = BackgroundSnapshots(self._write_snapshots)
        if self.backends.snapshot_due():
            self._background.request()

    # -- lifecycle ------------------------------------------------------------

    @property
    def sdr_size(self) -> int:
        return self._sdr_size

    @property
    def spaces(self) -> tuple[str, ...]:
        return self.backends.names

    @property
    def description(self) -> str:
        return f"the index at {self.directory}"

    def available(self) -> bool:
        """Everything lives in this process: it serves whenever it is open."""
        return True

    def closing(self) -> None:
        """Nothing to cut short: calls here never wait on anything but the lock."""

    def close(self) -> None:
        """Wait for a running snapshot, snapshot what changed since, then release everything."""
        try:
            self._background.stop()
            self._write_snapshots()
        finally:
            self._store.close()
            self._lock_file.close()

    def _snapshot_done(self, space: str, seconds: float, written: bool) -> None:
        if self.on_snapshot is not None:
            self.on_snapshot(space, seconds, written)

    def snapshot(self) -> None:
        """Write every space's snapshot now, in the caller's thread (searches and writes go on)."""
        self._write_snapshots()

    def _write_snapshots(self) -> None:
        self.backends.write_snapshots(self._lock.read)

    # -- writes ---------------------------------------------------------------

    def write(self, offered: Sequence[StoredItem], decide: Decide) -> None:
        """Decide under the write lock, then commit the kept items and the deletions in one transaction."""
        codes = {space: self._codes(offered, space) for space in self.spaces}  # packed before the lock
        with self._lock.write():
            decided = decide(self._find_copies)
            kept = list(decided.store)
            if kept:
                if len(kept) != len(offered):
                    codes = {space: self._codes(kept, space) for space in self.spaces}
                self._commit(kept, codes, decided.delete)
            due = self.backends.snapshot_due()
        if due:
            self._background.request()

    def _find_copies(self, query: CopyQuery) -> list[Item]:
        return self._rows_as_items(self._copy_labels(query, -1))

    def _commit(self, kept: Sequence[StoredItem], codes: Mapping[str, Codes], removed: Sequence[str]) -> None:
        """Store ``kept`` and delete ``removed`` in one transaction, then update every space; caller holds the lock."""
        labels, replaced, self.backends.changes = self._store.upsert(kept, remove=removed)

        def change() -> None:
            for name in self.spaces:
                rows, space_codes, lengths = codes[name]
                backend = self.backends.backend(name)
                backend.remove(replaced)
                backend.add(labels[rows], space_codes, lengths)
            self._selections.note_removed(int(replaced.size))
            self._selections.added(labels, kept)
            self._phashes.remove(replaced)
            printed = [n for n, item in enumerate(kept) if item.fingerprint is not None]
            hashes = np.array([kept[n].fingerprint.phash for n in printed], dtype=np.uint64)  # type: ignore[union-attr]
            self._phashes.add(labels[printed], hashes)

        self._apply(change)

    def remove(self, item_id: str) -> bool:
        with self._lock.write():
            label, self.backends.changes = self._store.remove(item_id)
            if label is None:
                return False
            removed = np.array([label], dtype=np.int64)

            def change() -> None:
                for name in self.spaces:
                    self.backends.backend(name).remove(removed)
                self._selections.note_removed(1)
                self._phashes.remove(removed)

            self._apply(change)
            due = self.backends.snapshot_due()
        if due:
            self._background.request()
        return True

    def _apply(self, change: Callable[[], None]) -> None:
        """Run a backend change that follows a committed store change, then keep each backend healthy.

        The store has already committed: if FAISS fails here (out of memory), the
        in-memory backends are rebuilt from the store so they never disagree with it.
        """
        try:
            change()
            self.backends.keep_healthy()
        except Exception:
            logger.exception("FAISS update failed after commit; rebuilding from the store")
            self.backends.rebuild()
            self._phashes = self._load_phashes()
            self._selections.clear()
            raise

    # -- reads ----------------------------------------------------------------

    def get(self, item_id: str) -> Item | None:
        with self._lock.read():
            row = self._store.get(item_id)
        return None if row is None else self._item(row)

    def contains(self, item_ids: Sequence[str]) -> set[str]:
        with self._lock.read():
            return self._store.existing(item_ids)

    def thumbnails(self, item_ids: Sequence[str]) -> dict[str, bytes]:
        with self._lock.read():
            return self._store.thumbnails(item_ids)

    def keypoints(self, item_ids: Sequence[str]) -> dict[str, bytes]:
        # SQLite alone, no lock: a duplicate check asks under the write lock (``write``'s decide).
        return self._store.keypoints(item_ids)

    def count(self, space: str) -> int:
        with self._lock.read():
            return self.backends.backend(space).live_count

    def list_items(self, page_size: int, cursor: str, where: Filter | None) -> Listing:
        """Newest first; the cursor is ``l<label>``, the label to continue below."""
        before = _label_of(cursor)
        with self._lock.read():
            if where is None:
                rows = self._store.rows_before(before if before is not None else 1 << 62, page_size)
                total = self.backends.backend(SEMANTIC).live_count
                more = len(rows) == page_size and rows[-1].label > 0
            else:
                allowed = self._passing(where, SEMANTIC)
                labels, more = allowed.newest(before, page_size)
                found = self._store.rows_by_label(labels.tolist())
                rows = [found[label] for label in labels.tolist() if label in found]
                total = allowed.count
        following = f"l{rows[-1].label}" if more and rows else ""
        return Listing(tuple(self._item(row) for row in rows), following, total)

    # -- searches -------------------------------------------------------------

    def search(
        self, queries: Sequence[Sdr], k: int, min_overlap: int, space: str, where: Filter | None
    ) -> list[list[Match]]:
        """FAISS scans the index once per batch."""
        positions = np.concatenate([query.positions for query in queries])
        lengths = np.fromiter((query.active for query in queries), dtype=np.int64, count=len(queries))
        exclude = np.full(len(queries), -1, dtype=np.int64)
        with self._lock.read():
            backend = self.backends.backend(space)
            allowed = self._allowed(where, space)
            return self._answer(backend.search(positions, lengths, k, min_overlap, exclude, allowed=allowed), space)

    def neighbours(
        self, item_id: str, k: int, min_overlap: int, space: str, where: Filter | None
    ) -> tuple[Item, list[Match]] | None:
        with self._lock.read():
            row = self._store.get(item_id)
            if row is None:
                return None
            positions = row.sdrs.get(space)
            if positions is None:
                return self._item(row), []
            lengths = np.array([positions.size], dtype=np.int64)
            exclude = np.array([row.label], dtype=np.int64)
            allowed = self._allowed(where, space)
            hits = self.backends.backend(space).search(positions, lengths, k, min_overlap, exclude, allowed=allowed)
            matches = self._answer(hits, space)[0]
        return self._item(row), matches

    def copies(self, query: CopyQuery, exclude: str | None) -> list[Item]:
        with self._lock.read():
            return self._rows_as_items(self._copy_labels(query, self._label_of_id(exclude)))

    def copies_of(
        self, item_id: str, limits: DuplicateThresholds, k: int, verify: int = 0
    ) -> tuple[Item, list[Item]] | None:
        with self._lock.read():
            row = self._store.get(item_id)
            if row is None:
                return None
            item = self._item(row)
            if row.fingerprint is None:
                return item, []
            query = CopyQuery(row.fingerprint, item.spaces.get(VISUAL), limits, k, verify)
            labels = self._copy_labels(query, row.label)
            return item, self._rows_as_items(labels)

    def search_blend(
        self, semantic: Sdr, visual: Sdr, weight: float, k: int, *, exclude: str | None, where: Filter | None
    ) -> list[Match]:
        with self._lock.read():
            skip = self._label_of_id(exclude)
            allowed = {space: self._allowed(where, space) for space in (SEMANTIC, VISUAL)}
            backends = {space: self.backends.backend(space) for space in (SEMANTIC, VISUAL)}
            queries = {SEMANTIC: semantic, VISUAL: visual}
            return blend(
                backends,
                self._store,
                self._item,
                queries,
                weight=weight,
                k=k,
                exclude=skip,
                allowed=allowed,
                config=self.config,
            )

    # -- custom concepts ---------------------------------------------------------------

    def put_concept(self, name: str, document: str) -> StoredConcept:
        """Store a custom concept durably (its own transaction), replacing one of the same name."""
        updated_ms = time.time_ns() // 1_000_000
        with self._lock.write():
            self._store.put_concept(name, document, updated_ms)
        return StoredConcept(name, document, updated_ms)

    def get_concept(self, name: str) -> StoredConcept | None:
        with self._lock.read():
            found = self._store.concepts(name)
        return StoredConcept(*found[0]) if found else None

    def list_concepts(self) -> list[StoredConcept]:
        with self._lock.read():
            return [StoredConcept(*found) for found in self._store.concepts()]

    def remove_concept(self, name: str) -> bool:
        with self._lock.write():
            return self._store.remove_concept(name)

    # -- helpers (caller holds the lock) ------------------------------------------------

    def _copy_labels(self, query: CopyQuery, skip: int) -> set[int]:
        looks: Backend | None = self.backends.backend(VISUAL) if VISUAL in self.spaces else None
        return copy_labels(self._store, self._phashes, looks, query, exclude=skip)

    def _label_of_id(self, item_id: str | None) -> int:
        row = self._store.get(item_id) if item_id is not None else None
        return row.label if row is not None else -1

    def _rows_as_items(self, labels: set[int]) -> list[Item]:
        return [self._item(row) for row in self._store.rows_by_label(sorted(labels)).values()]

    def _allowed(self, where: Filter | None, space: str) -> Allowed | None:
        """The live labels of ``space`` passing ``where`` (None: no filter)."""
        return self._passing(where, space) if where is not None else None

    def _passing(self, where: Filter, space: str) -> Allowed:
        """The live labels of ``space`` passing ``where``."""

        def read_sdrs(labels: Sequence[int]) -> Positions:
            return self._store.positions_by_label(labels, space)

        return self._selections.allowed(where, self.backends.backend(space).live, read_sdrs)

    def _answer(self, hits: Sequence[Hits], space: str) -> list[list[Match]]:
        """Look up the rows of the final labels (only those: ids live in SQLite, not RAM)."""
        wanted = np.unique(np.concatenate([hit.labels for hit in hits])) if hits else np.zeros(0, dtype=np.int64)
        return matches_of(hits, self._store.rows_by_label(wanted.tolist()), space, self.sdr_size)

    def _load_phashes(self) -> PhashTable:
        table = PhashTable()
        for labels, hashes in self._store.phashes():
            table.add(labels, hashes)
        return table

    def _codes(self, prepared: Sequence[StoredItem], space: str) -> Codes:
        return codes_of(prepared, space, self.sdr_size, self.config.equalize_bits)

    def _item(self, row: Row) -> Item:
        return item_of(row, self.sdr_size)


def _label_of(cursor: str) -> int | None:
    """The label a cursor continues below; None for the first page."""
    if not cursor:
        return None
    label = cursor[1:]
    if cursor.startswith("l") and label.isascii() and label.isdigit() and int(label) < 1 << 63:
        return int(label)
    raise BadCursorError(cursor)


def _lock_directory(path: Path) -> IO[bytes]:
    handle = open(path, "a+b")  # noqa: SIM115 - held open for the life of the index
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise IndexLockedError(f"{path.parent} is open in another process") from None
    os.set_inheritable(handle.fileno(), False)
    return handle
