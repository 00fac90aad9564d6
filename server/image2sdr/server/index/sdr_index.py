"""``SdrIndex``: store SDRs durably, find the nearest by overlap.

Where things live, under the index directory:

    items.sqlite3   the source of truth: id, positions, concepts, metadata (WAL)
    faiss.snapshot  the FAISS structure as of some change counter; rebuilt from
                    items.sqlite3 whenever missing, stale, truncated or corrupt
    LOCK            held (flock) while a process has the index open

An add returns once its SQLite transaction has committed; FAISS is updated in
memory under the same exclusive lock, and snapshotted every
``snapshot_every`` changes and on close. Searches take the lock shared.
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
from pathlib import Path
from typing import IO

import numpy as np

from ..config import IndexConfig
from ..errors import (
    IdTooLongError,
    IndexClosedError,
    IndexLockedError,
    InvalidIdError,
    InvalidInputError,
    InvalidSdrError,
    MetadataTooLargeError,
    NotFoundError,
    TooManyConceptsError,
)
from ..sdr import Sdr
from .codes import pack_codes
from .faiss_index import FaissIndex, Hits, Layout
from .protocol import SEMANTIC, Item, Match
from .rwlock import ReadWriteLock
from .snapshot import SnapshotKey, load_snapshot, remove_temporaries, write_snapshot
from .store import Row, SqliteStore, StoredItem

__all__ = ["Item", "Match", "SdrIndex"]

logger = logging.getLogger(__name__)

STORE_FILE = "items.sqlite3"
SNAPSHOT_FILE = "faiss.snapshot"
LOCK_FILE = "LOCK"
_EMPTY_METADATA: Mapping[str, str] = types.MappingProxyType({})


class SdrIndex:
    """Items by id, searchable by SDR overlap. Thread-safe; one process per directory.

    Results are ordered by overlap, highest first; ties go to the item added (or
    last replaced) earlier. ``kind="exact"`` answers are exact; ``kind="ivf"``
    ones are approximate once the collection is large enough to train on
    (``ivf_train_min``), exact before.
    """

    def __init__(self, directory: Path, config: IndexConfig, sdr_size: int = 16384) -> None:
        self.directory = Path(directory)
        self.config = config
        self.sdr_size = sdr_size
        self.layout = Layout(sdr_size, config.equalize_bits)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_directory(self.directory / LOCK_FILE)
        self._lock = ReadWriteLock()
        self._snapshot_mutex = threading.Lock()
        self._closed = False
        self._snapshot_path = self.directory / SNAPSHOT_FILE
        try:
            self._store = SqliteStore(
                self.directory / STORE_FILE,
                sdr_size,
                synchronous=config.sqlite_synchronous,
                cache_mib=config.sqlite_cache_mib,
                busy_timeout_ms=config.sqlite_busy_timeout_ms,
            )
        except BaseException:
            self._lock_file.close()
            raise
        try:
            remove_temporaries(self._snapshot_path)
            self._faiss, self._snapshot_changes = self._open_faiss()
        except BaseException:
            self._store.close()  # what was opened is closed again, so the caller may retry
            self._lock_file.close()
            raise

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> SdrIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Snapshot if anything changed since the last one, then release everything."""
        with self._lock.write():
            if self._closed:
                return
            self._closed = True
            try:
                if self._store.changes() != self._snapshot_changes:
                    self._write_snapshot()
            finally:
                self._store.close()
                self._lock_file.close()

    def snapshot(self) -> None:
        """Write the FAISS snapshot now (searches go on; writers wait)."""
        with self._lock.read():
            self._check_open()
            self._write_snapshot()

    # -- writes ---------------------------------------------------------------

    def add(
        self,
        item_id: str,
        sdr: Sdr,
        concepts: Sequence[tuple[str, float]] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Insert or replace one item; durable when this returns."""
        self.add_many([Item(item_id, sdr, tuple(concepts), metadata if metadata is not None else _EMPTY_METADATA)])

    def add_many(self, items: Sequence[Item]) -> None:
        """Insert or replace many items in one transaction (all or none).

        An id given twice keeps its last occurrence, as if added one by one.
        """
        prepared = self._prepare(items)
        if not prepared:
            return
        positions = np.concatenate([item.positions for item in prepared])
        lengths = np.fromiter((item.positions.size for item in prepared), dtype=np.int64, count=len(prepared))
        codes = pack_codes(positions, lengths, self.sdr_size, self.config.equalize_bits, pad=True)
        with self._lock.write():
            self._check_open()
            labels, replaced = self._store.upsert(prepared)

            def change() -> None:
                self._faiss.remove(replaced)
                self._faiss.add(labels, codes, lengths)

            self._apply(change)
        self._maybe_snapshot()

    def check_item(self, item_id: str, metadata: Mapping[str, str] | None = None) -> None:
        """Raise what ``add`` would raise for this id and metadata, without storing anything.

        Lets a caller refuse a bad request before the work that produces its SDR.
        """
        _check_id(item_id, self.config.max_id_length)
        _check_metadata(metadata if metadata is not None else _EMPTY_METADATA, self.config.max_metadata_bytes)

    def remove(self, item_id: str) -> None:
        """Remove an item; NotFoundError if there is none with this id."""
        _check_id(item_id, self.config.max_id_length)
        with self._lock.write():
            self._check_open()
            label = self._store.remove(item_id)
            if label is None:
                raise NotFoundError(f"no item with id {item_id!r}", resource=item_id)
            self._apply(lambda: self._faiss.remove(np.array([label], dtype=np.int64)))
        self._maybe_snapshot()

    def _apply(self, change: Callable[[], None]) -> None:
        """Run a FAISS change that follows a committed store change, then keep FAISS healthy.

        The store has already committed: if FAISS fails here (out of memory), the
        in-memory index is rebuilt from the store so it never disagrees with it.
        """
        try:
            change()
            if self._faiss.needs_training():
                logger.info("training IVF on %d items", self._faiss.live_count)
                self._faiss = self._build()
            elif self._faiss.needs_compaction():
                self._faiss.compact()
        except Exception:
            logger.exception("FAISS update failed after commit; rebuilding from the store")
            self._faiss = self._build()
            raise

    # -- reads ----------------------------------------------------------------

    def get(self, item_id: str) -> Item:
        _check_id(item_id, self.config.max_id_length)
        with self._lock.read():
            self._check_open()
            row = self._store.get(item_id)
        if row is None:
            raise NotFoundError(f"no item with id {item_id!r}", resource=item_id)
        return self._item(row)

    def contains(self, item_ids: Sequence[str]) -> list[bool]:
        for item_id in item_ids:
            _check_id(item_id, self.config.max_id_length)
        with self._lock.read():
            self._check_open()
            present = self._store.existing(item_ids)
        return [item_id in present for item_id in item_ids]

    @property
    def spaces(self) -> tuple[str, ...]:
        return (SEMANTIC,)

    def count(self) -> int:
        with self._lock.read():
            self._check_open()
            return self._faiss.live_count

    def search(self, query: Sdr, k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC) -> list[Match]:
        """The k stored items sharing the most active bits with ``query``."""
        return self.search_many([query], k, min_overlap, space=space)[0]

    def search_many(
        self, queries: Sequence[Sdr], k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC
    ) -> list[list[Match]]:
        """``search`` for many queries at once (FAISS scans the index once per batch)."""
        self._check_search(k, min_overlap, space)
        for number, query in enumerate(queries):
            self._check_sdr(query, f"queries[{number}]")
        if not queries:
            return []
        positions = np.concatenate([query.positions for query in queries])
        lengths = np.fromiter((query.active for query in queries), dtype=np.int64, count=len(queries))
        exclude = np.full(len(queries), -1, dtype=np.int64)
        with self._lock.read():
            self._check_open()
            return self._answer(self._faiss.search(positions, lengths, k, min_overlap, exclude))

    def search_by_id(self, item_id: str, k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC) -> list[Match]:
        """Nearest neighbours of a stored item, the item itself left out."""
        return self.neighbours(item_id, k, min_overlap, space=space)[1]

    def neighbours(
        self, item_id: str, k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC
    ) -> tuple[Item, list[Match]]:
        """A stored item and its nearest neighbours, read together under one lock.

        Reading the item and searching with it in two steps would let a replace or
        remove slip in between: the answer could be NOT_FOUND after a successful
        search, or name a query SDR that was not the one searched.
        """
        _check_id(item_id, self.config.max_id_length)
        self._check_search(k, min_overlap, space)
        with self._lock.read():
            self._check_open()
            row = self._store.get(item_id)
            if row is None:
                raise NotFoundError(f"no item with id {item_id!r}", resource=item_id)
            lengths = np.array([row.positions.size], dtype=np.int64)
            exclude = np.array([row.label], dtype=np.int64)
            matches = self._answer(self._faiss.search(row.positions, lengths, k, min_overlap, exclude))[0]
        return self._item(row), matches

    def _answer(self, hits: Sequence[Hits]) -> list[list[Match]]:
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
                matches.append(Match(row.id, int(overlap), self._item(row)))
            answers.append(matches)
        return answers

    # -- validation ------------------------------------------------------------

    def _prepare(self, items: Sequence[Item]) -> list[StoredItem]:
        last: dict[str, StoredItem] = {}
        for number, item in enumerate(items):
            if not isinstance(item, Item):
                raise InvalidInputError(f"items[{number}] is not an Item", field=f"items[{number}]")
            _check_id(item.id, self.config.max_id_length)
            self._check_sdr(item.sdr, "sdr")
            concepts = _check_concepts(item.concepts, self.config.max_concepts)
            metadata = _check_metadata(item.metadata, self.config.max_metadata_bytes)
            last.pop(item.id, None)  # keep insertion order of the surviving occurrence
            last[item.id] = StoredItem(item.id, item.sdr.positions, concepts, metadata)
        return list(last.values())

    def _check_sdr(self, sdr: object, name: str) -> None:
        if not isinstance(sdr, Sdr):
            raise InvalidSdrError(f"{name} is not an Sdr", field=name)
        if sdr.size != self.sdr_size:
            raise InvalidSdrError(
                f"{name} has size {sdr.size}, this index holds SDRs of size {self.sdr_size}", field=name
            )
        positions = sdr.positions
        # Sdr.from_positions validated already; Sdr(...) built directly did not.
        if positions.ndim != 1 or (positions.size and int(positions[-1]) >= self.sdr_size):
            raise InvalidSdrError(f"{name} positions must lie in [0, {self.sdr_size})", field=name)
        if positions.size > 1 and not bool((np.diff(positions.astype(np.int64)) > 0).all()):
            raise InvalidSdrError(f"{name} positions must be sorted ascending without duplicates", field=name)

    def _check_search(self, k: object, min_overlap: object, space: object) -> None:
        if space not in self.spaces:
            raise InvalidInputError(
                f"unknown space {space!r}; this index keeps {', '.join(self.spaces)}", field="space"
            )
        if not _is_int(k) or not 1 <= k <= self.config.max_k:  # type: ignore[operator]
            raise InvalidInputError(f"k must be an integer in [1, {self.config.max_k}], got {k!r}", field="k")
        if not _is_int(min_overlap) or min_overlap < 0:  # type: ignore[operator]
            raise InvalidInputError(f"min_overlap must be an integer >= 0, got {min_overlap!r}", field="min_overlap")

    def _check_open(self) -> None:
        if self._closed:
            raise IndexClosedError(f"the index at {self.directory} is closed")

    # -- FAISS lifecycle ---------------------------------------------------------

    def _key(self) -> SnapshotKey:
        store_id, changes = self._store.snapshot_state()
        return SnapshotKey(
            store_id, changes, self.layout, self.config.kind, self.config.ivf_nlist, self.config.ivf_lists_per_item
        )

    def _open_faiss(self) -> tuple[FaissIndex, int]:
        key = self._key()
        started = time.perf_counter()
        loaded = load_snapshot(self._snapshot_path, key, self.config)
        if loaded is not None and not loaded.needs_training():
            logger.info("snapshot loaded: %d items in %.1f s", loaded.live_count, time.perf_counter() - started)
            return loaded, key.changes
        built = self._build()
        logger.info("index rebuilt from the store: %d items in %.1f s", built.live_count, time.perf_counter() - started)
        self._faiss = built
        if built.live_count:
            self._write_snapshot()
            return built, self._snapshot_changes
        return built, -1  # nothing worth saving yet; close() writes one if anything is added

    def _build(self) -> FaissIndex:
        """A fresh FAISS index from every row of the store (IVF trained first if due)."""
        index = FaissIndex(self.layout, self.config)
        labels = self._store.labels()
        if self.config.kind == "ivf" and labels.size >= self.config.ivf_train_min:
            rng = np.random.default_rng(labels.size)
            sample = np.sort(rng.choice(labels, min(self.config.ivf_train_sample, labels.size), replace=False))
            _, positions, lengths = self._store.positions_by_label(sample.tolist())
            index.train(positions, lengths, int(labels.size))
        for chunk_labels, positions, lengths in self._store.scan():
            codes = pack_codes(positions, lengths, self.sdr_size, self.config.equalize_bits, pad=True)
            index.add(chunk_labels, codes, lengths)
        return index

    def _write_snapshot(self) -> None:
        """Caller holds the lock (shared or exclusive), so FAISS and the counter agree."""
        with self._snapshot_mutex:
            key = self._key()
            started = time.perf_counter()
            write_snapshot(self._snapshot_path, key, self._faiss)
            self._snapshot_changes = key.changes
            logger.info("snapshot written at change %d in %.1f s", key.changes, time.perf_counter() - started)

    def _maybe_snapshot(self) -> None:
        every = self.config.snapshot_every
        if every and self._store.changes() - max(self._snapshot_changes, 0) >= every:
            self.snapshot()

    def _item(self, row: Row) -> Item:
        sdr = Sdr.trusted(row.positions, self.sdr_size)
        return Item(row.id, sdr, row.concepts, types.MappingProxyType(row.metadata))


# -- checks shared by the methods above -------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_id(item_id: object, max_length: int) -> None:
    if not isinstance(item_id, str):
        raise InvalidIdError(f"an item id must be a string, got {type(item_id).__name__}", field="id")
    if not item_id.strip():
        raise InvalidIdError("an item id must not be empty", field="id")
    if len(item_id) > max_length:
        raise IdTooLongError(f"item id is {len(item_id)} characters, at most {max_length}", field="id")
    if "\x00" in item_id:
        raise InvalidIdError("an item id must not contain NUL", field="id")


def _check_concepts(concepts: object, max_concepts: int) -> tuple[tuple[str, float], ...]:
    if isinstance(concepts, (str, bytes)) or not isinstance(concepts, Sequence):
        raise InvalidInputError("concepts must be a sequence of (term, confidence) pairs", field="concepts")
    if len(concepts) > max_concepts:
        raise TooManyConceptsError(
            f"{len(concepts)} concepts, at most {max_concepts}", limit=max_concepts, actual=len(concepts)
        )
    checked = []
    for number, pair in enumerate(concepts):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not isinstance(pair[0], str) or not pair[0]:
            raise InvalidInputError(f"concepts[{number}] must be a (non-empty term, confidence) pair", field="concepts")
        if isinstance(pair[1], bool) or not isinstance(pair[1], (int, float)) or not math.isfinite(pair[1]):
            raise InvalidInputError(f"concepts[{number}] confidence must be a finite number", field="concepts")
        checked.append((pair[0], float(pair[1])))
    return tuple(checked)


def _check_metadata(metadata: object, max_bytes: int) -> dict[str, str]:
    if not isinstance(metadata, Mapping):
        raise InvalidInputError("metadata must be a mapping of strings to strings", field="metadata")
    size = 0
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidInputError("metadata keys and values must be strings", field="metadata")
        size += len(key.encode()) + len(value.encode())
    if size > max_bytes:
        raise MetadataTooLargeError(f"metadata is {size} bytes, at most {max_bytes}", limit=max_bytes, actual=size)
    return dict(metadata)


def _lock_directory(path: Path) -> IO[bytes]:
    handle = open(path, "a+b")  # noqa: SIM115 - held open for the life of the index
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise IndexLockedError(f"{path.parent} is open in another process") from None
    os.set_inheritable(handle.fileno(), False)
    return handle
