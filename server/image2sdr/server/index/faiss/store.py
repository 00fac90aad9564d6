"""The durable source of truth for stored SDRs: one SQLite database in WAL mode.

Everything the index answers comes from here or can be rebuilt from here; the
FAISS structure next to it is only an accelerator. Each row carries a *label*,
the int64 id FAISS knows the item by. Labels are handed out by this store from a
persisted counter and never reused: a replaced or removed item's old label may
linger in an index that cannot delete (until it is compacted), and must never
come back meaning another item.

Every mutating transaction also bumps a persisted change counter; a FAISS
snapshot records the counter it was taken at, so a stale one is recognised.

One row per item; its SDR in each space is a column ``sdr_<space>``
(``sdr_semantic`` always set; other spaces' columns NULL where an item has
none). Adding a space adds a column, which SQLite does without rewriting rows.

The schema and its migrations are in ``schema.py``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..values import StoredItem
from .rows import Row, decode_row, dump_concepts, label_array, load_concepts, to_signed
from .schema import check_space_names, open_schema

__all__ = ["Row", "SqliteStore"]  # Row: re-exported from rows.py

logger = logging.getLogger(__name__)

_SELECT_CHUNK = 900  # host parameters per IN (...); SQLite's default limit is 999 before 3.32


class SqliteStore:
    """SQLite access: one writer connection, one read connection per thread.

    WAL lets readers run while a write commits. Locking against the in-memory
    index is the caller's job (``SdrIndex``); this class only keeps each SQLite
    connection on the thread it belongs to.
    """

    def __init__(
        self,
        path: Path,
        sdr_size: int,
        *,
        spaces: Sequence[str] = ("semantic",),
        synchronous: str,
        cache_mib: int,
        busy_timeout_ms: int,
    ) -> None:
        check_space_names(spaces)
        self.path = path
        self.sdr_size = sdr_size
        self.spaces = tuple(spaces)
        self._dtype = np.dtype("<u2") if sdr_size <= 1 << 16 else np.dtype("<u4")
        self._pragmas = (
            f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",
            f"PRAGMA cache_size = {-1024 * int(cache_mib)}",
            f"PRAGMA synchronous = {synchronous}",
        )
        self._writer = self._connect()
        try:
            self._writer.execute("PRAGMA journal_mode = WAL")
            open_schema(self._writer, path, sdr_size, self.spaces)
        except BaseException:
            self._writer.close()
            raise
        columns = ", ".join(f"sdr_{space}" for space in self.spaces)
        self._select = f"SELECT label, id, {columns}, concepts, metadata, sha256, phash FROM items"
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

    def _meta(self, key: str, connection: sqlite3.Connection | None = None) -> str:
        row = (connection or self._writer).execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0])

    @property
    def store_id(self) -> str:
        """Random id of this database, so a snapshot from another store never matches."""
        return self._meta("store_id")

    def changes(self) -> int:
        return int(self._meta("changes"))

    # -- writes ------------------------------------------------------------

    def upsert(
        self, items: Sequence[StoredItem], remove: Sequence[str] = ()
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
        """Insert or replace ``items`` (unique ids), and delete the ids in ``remove``, in one transaction.

        Returns (new labels, one per item, in order; labels of the replaced and
        removed rows; the change counter after this transaction). A replaced item
        gets a new label rather than keeping its old one: indexes that cannot
        overwrite a vector in place can then tombstone the old label.
        """
        rows = [
            (
                item.id,
                *(self._blob(item.sdrs.get(space)) for space in self.spaces),
                dump_concepts(item.concepts),
                json.dumps(dict(item.metadata), ensure_ascii=False, separators=(",", ":")),
                item.fingerprint.sha256 if item.fingerprint else None,
                to_signed(item.fingerprint.phash) if item.fingerprint else None,
            )
            for item in items
        ]
        columns = ", ".join(f"sdr_{space}" for space in self.spaces)
        marks = ", ".join("?" * (len(self.spaces) + 6))
        connection = self._writer
        connection.execute("BEGIN IMMEDIATE")
        try:
            replaced = self._delete_ids(connection, [*remove, *(item.id for item in items)])
            first = int(self._meta("next_label", connection))
            labels = np.arange(first, first + len(rows), dtype=np.int64)
            connection.executemany(
                f"INSERT INTO items(label, id, {columns}, concepts, metadata, sha256, phash) VALUES ({marks})",
                [(int(label), *row) for label, row in zip(labels, rows, strict=True)],
            )
            pairs, names = _filter_rows(
                labels.tolist(), [item.metadata for item in items], [item.concepts for item in items]
            )
            connection.executemany("INSERT INTO item_meta(key, value, label) VALUES (?, ?, ?)", pairs)
            connection.executemany("INSERT INTO item_concepts(name, label, confidence) VALUES (?, ?, ?)", names)
            connection.executemany(
                "INSERT INTO item_thumbnails(label, image) VALUES (?, ?)",
                [
                    (int(label), item.thumbnail)
                    for label, item in zip(labels, items, strict=True)
                    if item.thumbnail is not None
                ],
            )
            connection.executemany(
                "INSERT INTO item_keypoints(label, points) VALUES (?, ?)",
                [
                    (int(label), item.keypoints.to_blob())
                    for label, item in zip(labels, items, strict=True)
                    if item.keypoints is not None
                ],
            )
            changes = self._bump(connection, next_label=first + len(rows))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return labels, replaced, changes

    def _blob(self, positions: npt.NDArray[np.uint32] | None) -> bytes | None:
        return None if positions is None else positions.astype(self._dtype, copy=False).tobytes()

    def remove(self, item_id: str) -> tuple[int | None, int]:
        """Delete one item: (its label, or None when the id is unknown and nothing changed; the change counter)."""
        connection = self._writer
        connection.execute("BEGIN IMMEDIATE")
        try:
            removed = self._delete_ids(connection, [item_id])
            changes = self._bump(connection) if removed.size else int(self._meta("changes", connection))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return (int(removed[0]) if removed.size else None), changes

    def _delete_ids(self, connection: sqlite3.Connection, ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Delete the items with ``ids``, their filter rows, thumbnails and keypoints; their labels, ascending."""
        labels: list[int] = []
        metadata: list[Mapping[str, str]] = []
        concepts: list[Sequence[tuple[str, float]]] = []
        for start in range(0, len(ids), _SELECT_CHUNK):
            chunk = ids[start : start + _SELECT_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"DELETE FROM items WHERE id IN ({marks}) RETURNING label, metadata, concepts"
            for label, metadata_json, concepts_json in connection.execute(query, chunk):
                labels.append(int(label))
                metadata.append(json.loads(metadata_json))
                concepts.append(load_concepts(concepts_json))
        if labels:
            pairs, names = _filter_rows(labels, metadata, concepts)
            connection.executemany("DELETE FROM item_meta WHERE key = ? AND value = ? AND label = ?", pairs)
            connection.executemany(
                "DELETE FROM item_concepts WHERE name = ? AND label = ?", [(name, label) for name, label, _ in names]
            )
            connection.executemany("DELETE FROM item_thumbnails WHERE label = ?", [(label,) for label in labels])
            connection.executemany("DELETE FROM item_keypoints WHERE label = ?", [(label,) for label in labels])
        return np.array(sorted(labels), dtype=np.int64)

    def _bump(self, connection: sqlite3.Connection, next_label: int | None = None) -> int:
        """Count one change (and hand out labels up to ``next_label``); the counter after it."""
        row = connection.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'changes' RETURNING value"
        ).fetchone()
        if next_label is not None:
            connection.execute("UPDATE meta SET value = ? WHERE key = 'next_label'", (str(next_label),))
        return int(row[0])

    # -- custom concepts -----------------------------------------------------

    def put_concept(self, name: str, document: str, updated_ms: int) -> None:
        """Store or replace one named document, in its own transaction."""
        connection = self._writer
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute(
                "INSERT INTO custom_concepts(name, document, updated_ms) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET document = excluded.document, updated_ms = excluded.updated_ms",
                (name, document, updated_ms),
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def remove_concept(self, name: str) -> bool:
        """Delete one named document; whether there was one."""
        connection = self._writer
        connection.execute("BEGIN IMMEDIATE")
        try:
            gone = connection.execute("DELETE FROM custom_concepts WHERE name = ? RETURNING name", (name,)).fetchall()
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return bool(gone)

    def concepts(self, name: str | None = None) -> list[tuple[str, str, int]]:
        """(name, document, updated_ms) of one named document (or of all), by name."""
        query = "SELECT name, document, updated_ms FROM custom_concepts"
        rows = (
            self._reader().execute(f"{query} WHERE name = ?", (name,))
            if name is not None
            else self._reader().execute(f"{query} ORDER BY name")
        )
        return [(str(row[0]), str(row[1]), int(row[2])) for row in rows]

    # -- reads -------------------------------------------------------------

    def get(self, item_id: str) -> Row | None:
        row = self._reader().execute(f"{self._select} WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else decode_row(self.spaces, self._dtype, row)

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored."""
        found: set[str] = set()
        reader = self._reader()
        for start in range(0, len(ids), _SELECT_CHUNK):
            chunk = list(ids[start : start + _SELECT_CHUNK])
            marks = ",".join("?" * len(chunk))
            found.update(row[0] for row in reader.execute(f"SELECT id FROM items WHERE id IN ({marks})", chunk))
        return found

    def thumbnails(self, ids: Sequence[str]) -> dict[str, bytes]:
        """The thumbnails of the items with ``ids`` that have one, by id."""
        return self._blobs("item_thumbnails", "image", ids)

    def keypoints(self, ids: Sequence[str]) -> dict[str, bytes]:
        """The keypoint blobs of the items with ``ids`` that have one, by id."""
        return self._blobs("item_keypoints", "points", ids)

    def _blobs(self, table: str, column: str, ids: Sequence[str]) -> dict[str, bytes]:
        # ``table`` and ``column`` are this module's own names, never a caller's.
        found: dict[str, bytes] = {}
        reader = self._reader()
        for start in range(0, len(ids), _SELECT_CHUNK):
            chunk = list(ids[start : start + _SELECT_CHUNK])
            marks = ",".join("?" * len(chunk))
            query = (
                f"SELECT items.id, {table}.{column} FROM items "
                f"JOIN {table} ON {table}.label = items.label WHERE items.id IN ({marks})"
            )
            found.update((str(row[0]), bytes(row[1])) for row in reader.execute(query, chunk))
        return found

    def labels_by_sha256(self, sha256: str) -> list[int]:
        """Labels of the items whose image bytes hash to ``sha256`` (an indexed lookup)."""
        query = "SELECT label FROM items WHERE sha256 = ? ORDER BY label"
        return [int(row[0]) for row in self._reader().execute(query, (sha256,))]

    def phashes(self, chunk: int = 65536) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]]:
        """Every (labels, pHashes) of the items with a fingerprint, in label order, ``chunk`` rows at a time."""
        reader = self._reader()
        last = -1
        query = "SELECT label, phash FROM items WHERE label > ? AND phash IS NOT NULL ORDER BY label LIMIT ?"
        while True:
            page = reader.execute(query, (last, chunk)).fetchall()
            if not page:
                return
            last = int(page[-1][0])
            labels = np.fromiter((row[0] for row in page), dtype=np.int64, count=len(page))
            signed = np.fromiter((row[1] for row in page), dtype=np.int64, count=len(page))
            yield labels, signed.view(np.uint64)

    def labels_with_pair(self, key: str, value: str) -> npt.NDArray[np.int64]:
        """Labels of the items whose metadata maps ``key`` to ``value``, ascending (one index range)."""
        query = "SELECT label FROM item_meta WHERE key = ? AND value = ? ORDER BY label"
        return label_array(self._reader().execute(query, (key, value)))

    def labels_with_pairs(self, key: str, values: Sequence[str]) -> dict[str, npt.NDArray[np.int64]]:
        """``labels_with_pair`` for many values of one key, a few statements in all; every value answered."""
        found: dict[str, list[int]] = {value: [] for value in values}
        reader = self._reader()
        for start in range(0, len(values), _SELECT_CHUNK - 1):
            chunk = list(values[start : start + _SELECT_CHUNK - 1])
            marks = ",".join("?" * len(chunk))
            query = f"SELECT value, label FROM item_meta WHERE key = ? AND value IN ({marks}) ORDER BY value, label"
            for value, label in reader.execute(query, [key, *chunk]):
                found[value].append(label)
        return {value: np.array(labels, dtype=np.int64) for value, labels in found.items()}

    def labels_with_concept(self, name: str, min_confidence: float) -> npt.NDArray[np.int64]:
        """Labels of the items with concept ``name`` at ``min_confidence`` or more, ascending (one index range)."""
        query = "SELECT label FROM item_concepts WHERE name = ? AND confidence >= ? ORDER BY label"
        return label_array(self._reader().execute(query, (name, float(min_confidence))))

    def rows_before(self, label: int, limit: int) -> list[Row]:
        """Up to ``limit`` rows with a label below ``label``, highest (newest) first."""
        query = f"{self._select} WHERE label < ? ORDER BY label DESC LIMIT ?"
        return [decode_row(self.spaces, self._dtype, row) for row in self._reader().execute(query, (label, limit))]

    def rows_by_label(self, labels: Sequence[int]) -> dict[int, Row]:
        """The rows for ``labels`` (missing labels are simply absent)."""
        found: dict[int, Row] = {}
        reader = self._reader()
        for start in range(0, len(labels), _SELECT_CHUNK):
            chunk = [int(label) for label in labels[start : start + _SELECT_CHUNK]]
            marks = ",".join("?" * len(chunk))
            query = f"{self._select} WHERE label IN ({marks})"
            for row in reader.execute(query, chunk):
                found[int(row[0])] = decode_row(self.spaces, self._dtype, row)
        return found

    def positions_by_label(
        self, labels: Sequence[int], space: str
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
        """(labels found, positions concatenated, lengths) in ``space`` for a sample of labels."""
        column = self._column(space)
        found: list[tuple[int, bytes]] = []
        reader = self._reader()
        for start in range(0, len(labels), _SELECT_CHUNK):
            chunk = [int(label) for label in labels[start : start + _SELECT_CHUNK]]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT label, {column} FROM items WHERE label IN ({marks}) AND {column} IS NOT NULL"
            found.extend(reader.execute(query, chunk))
        return self._columns(found)

    def labels(self, space: str) -> npt.NDArray[np.int64]:
        """Labels of the items with an SDR in ``space``, ascending."""
        column = self._column(space)
        rows = self._reader().execute(f"SELECT label FROM items WHERE {column} IS NOT NULL ORDER BY label").fetchall()
        return np.array([row[0] for row in rows], dtype=np.int64)

    def scan(
        self, space: str, chunk: int = 16384
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], npt.NDArray[np.int64]]]:
        """Every (labels, positions concatenated, lengths) in ``space``, in label order, ``chunk`` rows at a time.

        Keyset pagination on the label, each page its own short read, so a rebuild
        of a large store never holds one read transaction open for minutes.
        """
        column = self._column(space)
        reader = self._reader()
        last = -1
        query = f"SELECT label, {column} FROM items WHERE label > ? AND {column} IS NOT NULL ORDER BY label LIMIT ?"
        while True:
            page = reader.execute(query, (last, chunk)).fetchall()
            if not page:
                return
            last = int(page[-1][0])
            yield self._columns(page)

    def _columns(
        self, rows: Sequence[tuple[int, bytes]]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
        labels = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        lengths = np.fromiter((len(row[1]) for row in rows), dtype=np.int64, count=len(rows)) // self._dtype.itemsize
        joined = b"".join(row[1] for row in rows)
        positions = np.frombuffer(joined, dtype=self._dtype).astype(np.uint32)
        return labels, positions, lengths

    def _column(self, space: str) -> str:
        if space not in self.spaces:
            raise ValueError(f"no space {space!r} in this store")
        return f"sdr_{space}"


def _filter_rows(
    labels: Sequence[int],
    metadata: Sequence[Mapping[str, str]],
    concepts: Sequence[Sequence[tuple[str, float]]],
) -> tuple[list[tuple[str, str, int]], list[tuple[str, int, float]]]:
    """The ``item_meta`` and ``item_concepts`` rows of items: (key, value, label) and (name, label, confidence).

    A name given twice in one item's concepts is one row, at its highest confidence:
    a concept condition asks whether any of the item's confidences reaches its minimum.
    """
    pairs = [
        (key, value, label) for label, pairs_of in zip(labels, metadata, strict=True) for key, value in pairs_of.items()
    ]
    names: list[tuple[str, int, float]] = []
    for label, concepts_of in zip(labels, concepts, strict=True):
        best: dict[str, float] = {}
        for name, confidence in concepts_of:
            best[name] = max(confidence, best.get(name, confidence))
        names.extend((name, label, confidence) for name, confidence in best.items())
    return pairs, names
