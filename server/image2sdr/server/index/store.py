"""The durable source of truth for stored SDRs: one SQLite database in WAL mode.

Everything the index answers comes from here or can be rebuilt from here; the
FAISS structure next to it is only an accelerator. Each row carries a *label*,
the int64 id FAISS knows the item by. Labels are handed out by this store from a
persisted counter and never reused: a replaced or removed item's old label may
linger in an index that cannot delete (until it is compacted), and must never
come back meaning another item.

Every mutating transaction also bumps a persisted change counter; a FAISS
snapshot records the counter it was taken at, so a stale one is recognised.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError

__all__ = ["Row", "SqliteStore", "StoredItem"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    label     INTEGER PRIMARY KEY,  -- FAISS id; from meta.next_label, never reused
    id        TEXT NOT NULL UNIQUE,
    positions BLOB NOT NULL,        -- sorted active bits, little-endian uint16 or uint32
    concepts  TEXT NOT NULL,        -- JSON [[term, confidence], ...]
    metadata  TEXT NOT NULL         -- JSON {key: value}
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_SELECT_CHUNK = 900  # host parameters per IN (...); SQLite's default limit is 999 before 3.32


@dataclass(frozen=True)
class StoredItem:
    """One item as prepared for storage (positions already validated)."""

    id: str
    positions: npt.NDArray[np.uint32]
    concepts: tuple[tuple[str, float], ...]
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class Row:
    label: int
    id: str
    positions: npt.NDArray[np.uint32]
    concepts: tuple[tuple[str, float], ...]
    metadata: dict[str, str]


class SqliteStore:
    """SQLite access: one writer connection, one read connection per thread.

    WAL lets readers run while a write commits. Locking against the in-memory
    index is the caller's job (``SdrIndex``); this class only keeps each SQLite
    connection on the thread it belongs to.
    """

    def __init__(self, path: Path, sdr_size: int, *, synchronous: str, cache_mib: int, busy_timeout_ms: int) -> None:
        self.path = path
        self.sdr_size = sdr_size
        self._dtype = np.dtype("<u2") if sdr_size <= 1 << 16 else np.dtype("<u4")
        self._pragmas = (
            f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",
            f"PRAGMA cache_size = {-1024 * int(cache_mib)}",
            f"PRAGMA synchronous = {synchronous}",
        )
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode = WAL")
        with self._writer:
            self._writer.executescript(_SCHEMA)
        self._init_meta()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    # -- connections -------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), so a
        # write never silently starts half-way through a read.
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in self._pragmas:
            connection.execute(pragma)
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            connection.execute("PRAGMA query_only = ON")
            self._local.connection = connection
            with self._readers_lock:
                self._readers.append(connection)
        return connection

    def close(self) -> None:
        with self._readers_lock:
            for connection in self._readers:
                connection.close()
            self._readers.clear()
        self._writer.close()

    # -- meta --------------------------------------------------------------

    def _init_meta(self) -> None:
        with self._writer:
            self._writer.execute("BEGIN IMMEDIATE")
            defaults = {
                "store_id": secrets.token_hex(16),
                "changes": "0",
                "next_label": "0",
                "sdr_size": str(self.sdr_size),
            }
            for key, value in defaults.items():
                self._writer.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))
        stored_size = int(self._meta("sdr_size"))
        if stored_size != self.sdr_size:
            raise ConfigError(f"the index at {self.path} holds SDRs of size {stored_size}, not {self.sdr_size}")

    def _meta(self, key: str, connection: sqlite3.Connection | None = None) -> str:
        row = (connection or self._writer).execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0])

    @property
    def store_id(self) -> str:
        """Random id of this database, so a snapshot from another store never matches."""
        return self._meta("store_id")

    def changes(self) -> int:
        return int(self._meta("changes"))

    def next_label(self) -> int:
        return int(self._meta("next_label"))

    # -- writes ------------------------------------------------------------

    def upsert(self, items: Sequence[StoredItem]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Insert or replace ``items`` (unique ids) in one transaction.

        Returns (new labels, one per item, in order; labels of the replaced rows).
        A replaced item gets a new label rather than keeping its old one: indexes
        that cannot overwrite a vector in place can then tombstone the old label.
        """
        rows = [
            (
                item.id,
                item.positions.astype(self._dtype, copy=False).tobytes(),
                _dump_concepts(item.concepts),
                json.dumps(dict(item.metadata), ensure_ascii=False, separators=(",", ":")),
            )
            for item in items
        ]
        connection = self._writer
        connection.execute("BEGIN IMMEDIATE")
        try:
            replaced = self._delete_ids(connection, [item.id for item in items])
            first = int(self._meta("next_label", connection))
            labels = np.arange(first, first + len(rows), dtype=np.int64)
            connection.executemany(
                "INSERT INTO items(label, id, positions, concepts, metadata) VALUES (?, ?, ?, ?, ?)",
                [(int(label), *row) for label, row in zip(labels, rows, strict=True)],
            )
            self._bump(connection, next_label=first + len(rows))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return labels, replaced

    def remove(self, item_id: str) -> int | None:
        """Delete one item; its label, or None when the id is unknown (nothing changes)."""
        connection = self._writer
        connection.execute("BEGIN IMMEDIATE")
        try:
            removed = self._delete_ids(connection, [item_id])
            if removed.size:
                self._bump(connection)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return int(removed[0]) if removed.size else None

    def _delete_ids(self, connection: sqlite3.Connection, ids: Sequence[str]) -> npt.NDArray[np.int64]:
        labels: list[int] = []
        for start in range(0, len(ids), _SELECT_CHUNK):
            chunk = ids[start : start + _SELECT_CHUNK]
            marks = ",".join("?" * len(chunk))
            labels.extend(
                row[0] for row in connection.execute(f"DELETE FROM items WHERE id IN ({marks}) RETURNING label", chunk)
            )
        return np.array(sorted(labels), dtype=np.int64)

    def _bump(self, connection: sqlite3.Connection, next_label: int | None = None) -> None:
        connection.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'changes'")
        if next_label is not None:
            connection.execute("UPDATE meta SET value = ? WHERE key = 'next_label'", (str(next_label),))

    # -- reads -------------------------------------------------------------

    def count(self) -> int:
        return int(self._reader().execute("SELECT count(*) FROM items").fetchone()[0])

    def get(self, item_id: str) -> Row | None:
        row = (
            self._reader()
            .execute("SELECT label, id, positions, concepts, metadata FROM items WHERE id = ?", (item_id,))
            .fetchone()
        )
        return None if row is None else self._row(row)

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored."""
        found: set[str] = set()
        reader = self._reader()
        for start in range(0, len(ids), _SELECT_CHUNK):
            chunk = list(ids[start : start + _SELECT_CHUNK])
            marks = ",".join("?" * len(chunk))
            found.update(row[0] for row in reader.execute(f"SELECT id FROM items WHERE id IN ({marks})", chunk))
        return found

    def rows_by_label(self, labels: Sequence[int]) -> dict[int, Row]:
        """The rows for ``labels`` (missing labels are simply absent)."""
        found: dict[int, Row] = {}
        reader = self._reader()
        for start in range(0, len(labels), _SELECT_CHUNK):
            chunk = [int(label) for label in labels[start : start + _SELECT_CHUNK]]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT label, id, positions, concepts, metadata FROM items WHERE label IN ({marks})"
            for row in reader.execute(query, chunk):
                found[int(row[0])] = self._row(row)
        return found

    def positions_by_label(
        self, labels: Sequence[int]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
        """(labels found, positions concatenated, lengths) for a sample of labels."""
        found: list[tuple[int, bytes]] = []
        reader = self._reader()
        for start in range(0, len(labels), _SELECT_CHUNK):
            chunk = [int(label) for label in labels[start : start + _SELECT_CHUNK]]
            marks = ",".join("?" * len(chunk))
            found.extend(reader.execute(f"SELECT label, positions FROM items WHERE label IN ({marks})", chunk))
        return self._columns(found)

    def labels(self) -> npt.NDArray[np.int64]:
        rows = self._reader().execute("SELECT label FROM items ORDER BY label").fetchall()
        return np.array([row[0] for row in rows], dtype=np.int64)

    def scan(
        self, chunk: int = 16384
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], npt.NDArray[np.int64]]]:
        """Every (labels, positions concatenated, lengths) in label order, ``chunk`` rows at a time.

        Keyset pagination on the label, each page its own short read, so a rebuild
        of a large store never holds one read transaction open for minutes.
        """
        reader = self._reader()
        last = -1
        while True:
            page = reader.execute(
                "SELECT label, positions FROM items WHERE label > ? ORDER BY label LIMIT ?", (last, chunk)
            ).fetchall()
            if not page:
                return
            last = int(page[-1][0])
            yield self._columns(page)

    def snapshot_state(self) -> tuple[str, int]:
        """(store_id, changes) read in one transaction."""
        reader = self._reader()
        reader.execute("BEGIN")
        try:
            return self._meta("store_id", reader), int(self._meta("changes", reader))
        finally:
            reader.execute("COMMIT")

    def _columns(
        self, rows: Sequence[tuple[int, bytes]]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
        labels = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        lengths = np.fromiter((len(row[1]) for row in rows), dtype=np.int64, count=len(rows)) // self._dtype.itemsize
        joined = b"".join(row[1] for row in rows)
        positions = np.frombuffer(joined, dtype=self._dtype).astype(np.uint32)
        return labels, positions, lengths

    def _row(self, row: tuple[int, str, bytes, str, str]) -> Row:
        positions = np.frombuffer(row[2], dtype=self._dtype).astype(np.uint32)
        concepts = tuple((str(term), float(confidence)) for term, confidence in json.loads(row[3]))
        return Row(int(row[0]), str(row[1]), positions, concepts, dict(json.loads(row[4])))


def _dump_concepts(concepts: Sequence[tuple[str, float]]) -> str:
    return json.dumps([[term, confidence] for term, confidence in concepts], ensure_ascii=False, separators=(",", ":"))
