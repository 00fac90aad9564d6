"""One FAISS backend per space, and its snapshot: loaded or rebuilt at open, kept healthy, written behind.

Where things live, under the index directory:

    items.sqlite3      the source of truth (``store.py``)
    <space>.snapshot   that space's FAISS backend as of some change counter; rebuilt from
                       items.sqlite3 whenever missing, stale, truncated or corrupt

Snapshots are written by a background thread once ``snapshot_every`` changes have
accumulated, and on close: a writer waits at most for one chunk of a snapshot to
be copied (``backend.py``), never for the whole of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...config import IndexConfig
from ..codes import pack_codes
from ..engine import SnapshotHook
from .backend import Backend, Layout
from .flat import FlatBackend
from .ivf import IvfBackend
from .snapshot import SnapshotKey, load_snapshot, remove_temporaries, write_snapshot
from .store import SqliteStore

__all__ = ["LEGACY_SNAPSHOT_FILE", "Spaces", "snapshot_file"]

logger = logging.getLogger(__name__)

LEGACY_SNAPSHOT_FILE = "faiss.snapshot"  # the release before spaces; rebuilt, not read
ReadLock = Callable[[], AbstractContextManager[None]]


def snapshot_file(space: str) -> str:
    return f"{space}.snapshot"


@dataclass
class _Space:
    """One space's backend and where its snapshot stands. Mutated under the index's write lock."""

    name: str
    backend: Backend
    path: Path
    saved_at: int = -1  # change counter of the snapshot on disk; -1: none that matches


class Spaces:
    """The backends of every space, by name, with their snapshots; ``changes`` is the store's counter."""

    def __init__(
        self,
        directory: Path,
        store: SqliteStore,
        config: IndexConfig,
        layout: Layout,
        names: Sequence[str],
        *,
        report: SnapshotHook,
    ) -> None:
        self.directory = directory
        self.config = config
        self.layout = layout
        self.changes = store.changes()  # read and written under the index's lock
        self._store = store
        self._report = report  # told of each space's snapshot pass
        self._store_id = store.store_id
        self._snapshot_mutex = threading.Lock()  # one snapshot pass at a time
        self._freezes = 0  # snapshots being written: compaction waits (it would move frozen bytes)
        self._drop_legacy_snapshot()
        self._spaces = {name: self._open(name) for name in names}

    def __iter__(self) -> Iterator[_Space]:
        return iter(self._spaces.values())

    def backend(self, name: str) -> Backend:
        return self._spaces[name].backend

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._spaces)

    def keep_healthy(self) -> None:
        """Train IVF where due, compact where due (not while a snapshot holds frozen bytes); caller holds the lock."""
        for space in self._spaces.values():
            if self._due_for_training(space.backend):
                logger.info("training IVF for space %s on %d items", space.name, space.backend.live_count)
                space.backend = self.build(space.name)
            elif not self._freezes and space.backend.needs_compaction():
                space.backend.compact()

    def rebuild(self) -> None:
        """Every backend again from the store (after a failed FAISS update); caller holds the lock."""
        for space in self._spaces.values():
            space.backend = self.build(space.name)

    def snapshot_due(self) -> bool:
        """Whether ``snapshot_every`` changes have piled up since the oldest snapshot; caller holds the lock."""
        every = self.config.snapshot_every
        oldest = min(space.saved_at for space in self._spaces.values())
        return bool(every) and self.changes - max(oldest, 0) >= every

    def build(self, name: str) -> Backend:
        """A fresh backend from every row of the store with an SDR in ``name`` (IVF trained first if due)."""
        labels = self._store.labels(name)
        backend: Backend
        config = self.config
        if config.kind == "ivf" and labels.size >= config.ivf_train_min:
            rng = np.random.default_rng(labels.size)
            sample = np.sort(rng.choice(labels, min(config.ivf_train_sample, labels.size), replace=False))
            _, positions, lengths = self._store.positions_by_label(sample.tolist(), name)
            backend = IvfBackend.train(self.layout, config, positions, lengths, int(labels.size))
        else:
            backend = FlatBackend(self.layout, config)
        for chunk_labels, positions, lengths in self._store.scan(name):
            codes = pack_codes(positions, lengths, self.layout.sdr_size, config.equalize_bits, pad=True)
            backend.add(chunk_labels, codes, lengths)
        return backend

    def write_snapshots(self, read_lock: ReadLock) -> None:
        """Snapshot every space whose snapshot is behind; one pass at a time, any thread."""
        with self._snapshot_mutex:
            for space in self._spaces.values():
                with read_lock():
                    changes = self.changes
                    if space.saved_at == changes:
                        continue
                    key = SnapshotKey.of(self._store_id, changes, space.name, self.layout, self.config)
                    frozen = space.backend.freeze()
                    self._freezes += 1
                started = time.perf_counter()
                try:
                    write_snapshot(space.path, key, frozen, read_lock)
                except BaseException:
                    self._report(space.name, time.perf_counter() - started, False)
                    raise
                finally:
                    with read_lock():
                        self._freezes -= 1
                space.saved_at = changes
                elapsed = time.perf_counter() - started
                self._report(space.name, elapsed, True)
                logger.info("snapshot written: %s at change %d in %.1f s", space.name, changes, elapsed)

    def _open(self, name: str) -> _Space:
        path = self.directory / snapshot_file(name)
        remove_temporaries(path)
        key = SnapshotKey.of(self._store_id, self.changes, name, self.layout, self.config)
        started = time.perf_counter()
        loaded = load_snapshot(path, key, self.config)
        if loaded is not None and not self._due_for_training(loaded):
            elapsed = time.perf_counter() - started
            logger.info("snapshot loaded: %s, %d items in %.1f s", name, loaded.live_count, elapsed)
            return _Space(name, loaded, path, saved_at=self.changes)
        built = self.build(name)
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


class BackgroundSnapshots:
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
