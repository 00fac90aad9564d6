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

Schema versions (``meta.schema_version``), each opened by every later release:

    1  (no version recorded) one ``positions`` column: the semantic SDR
    2  ``sdr_<space>`` columns; upgraded from 1 in place by renaming ``positions``
       to ``sdr_semantic``, in one transaction and without copying a row
    3  ``sha256`` and ``phash`` columns (an image's fingerprint; NULL for items
       added by SDR alone), an index on ``sha256`` and a covering one on
       ``(label, phash)``; upgraded from 2 by adding them
    4  ``item_meta`` (one row per metadata pair of an item) and ``item_concepts``
       (one per stored concept name of an item, its highest confidence): what a
       filter is answered from, by key and value or by name, without reading
       ``items``; and ``custom_concepts`` (named documents, opaque here).
       Upgraded from 3 by creating them and filling the first two from every
       row's JSON (``json_each``), in the same transaction
    5  ``item_thumbnails`` (one row per item stored with a thumbnail, by label):
       WebP or JPEG bytes, read apart from ``items`` so searches never load them.
       Upgraded from 4 by creating it, empty: older items have no thumbnail

Every upgrade runs in one transaction, so an interrupted one leaves the old
version intact.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError
from ..fingerprints import Fingerprint

__all__ = ["Row", "SqliteStore", "StoredItem"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 5
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS items (
    label        INTEGER PRIMARY KEY,  -- FAISS id; from meta.next_label, never reused
    id           TEXT NOT NULL UNIQUE,
    sdr_semantic BLOB NOT NULL,        -- sorted active bits, little-endian uint16 or uint32
    concepts     TEXT NOT NULL,        -- JSON [[term, confidence], ...]
    metadata     TEXT NOT NULL,        -- JSON {key: value}
    sha256       TEXT,                 -- hex SHA-256 of the image bytes; NULL: added by SDR alone
    phash        INTEGER               -- 64-bit pHash, stored as a signed 64-bit integer
)""",
    "CREATE INDEX IF NOT EXISTS items_sha256 ON items(sha256) WHERE sha256 IS NOT NULL",
    # Covers the pHash scan at open: reading the table itself would read every SDR too.
    "CREATE INDEX IF NOT EXISTS items_phash ON items(label, phash) WHERE phash IS NOT NULL",
    """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
)""",
    # Clustered by (key, value): the labels with one pair are one range, read in label
    # order. A row is deleted by its whole key (the items row it came from says which).
    """
CREATE TABLE IF NOT EXISTS item_meta (
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    label INTEGER NOT NULL,
    PRIMARY KEY (key, value, label)
) WITHOUT ROWID""",
    """
CREATE TABLE IF NOT EXISTS item_concepts (
    name       TEXT NOT NULL,
    label      INTEGER NOT NULL,
    confidence REAL NOT NULL,  -- the item's highest confidence for this name
    PRIMARY KEY (name, label)
) WITHOUT ROWID""",
    # Keyed by the item's label, as the filter tables are: deleted with the row, and a
    # replaced item (a new label) never shows its old thumbnail.
    """
CREATE TABLE IF NOT EXISTS item_thumbnails (
    label INTEGER PRIMARY KEY,
    image BLOB NOT NULL  -- WebP or JPEG bytes
)""",
    """
CREATE TABLE IF NOT EXISTS custom_concepts (
    name       TEXT PRIMARY KEY,
    document   TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
)""",
)
# Version 3 -> 4: the filter tables from every stored row, in SQL (no row crosses into Python).
_BACKFILL = (
    """
INSERT INTO item_meta(key, value, label)
SELECT pair.key, pair.value, items.label FROM items, json_each(items.metadata) AS pair
WHERE pair.type = 'text'""",
    """
INSERT INTO item_concepts(name, label, confidence)
SELECT json_extract(pair.value, '$[0]'), items.label, max(json_extract(pair.value, '$[1]'))
FROM items, json_each(items.concepts) AS pair
GROUP BY 1, 2""",
)
_SPACE_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")  # it becomes part of a column name
_SELECT_CHUNK = 900  # host parameters per IN (...); SQLite's default limit is 999 before 3.32


@dataclass(frozen=True)
class StoredItem:
    """One item as prepared for storage (positions already validated)."""

    id: str
    sdrs: Mapping[str, npt.NDArray[np.uint32]]  # positions by space; semantic always present
    concepts: tuple[tuple[str, float], ...]
    metadata: Mapping[str, str]
    fingerprint: Fingerprint | None = None
    thumbnail: bytes | None = None  # WebP or JPEG bytes; None: keep none


@dataclass(frozen=True)
class Row:
    label: int
    id: str
    sdrs: dict[str, npt.NDArray[np.uint32]]  # positions by space, for the spaces this item has
    concepts: tuple[tuple[str, float], ...]
    metadata: dict[str, str]
    fingerprint: Fingerprint | None = None


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
        for space in spaces:
            if not _SPACE_NAME.fullmatch(space):
                raise ConfigError(f"a space is named by lowercase letters, digits and _, not {space!r}")
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
            self._migrate()
            self._init_meta()
            self._add_space_columns()
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

    # -- schema ------------------------------------------------------------

    def _migrate(self) -> None:
        """Bring the schema to ``SCHEMA_VERSION`` in place, in one transaction; never drops a row."""
        connection = self._writer
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = self._schema_version(connection)
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"the index at {self.path} has schema version {version}, written by a newer release "
                    f"(this one reads up to {SCHEMA_VERSION})"
                )
            if version == 1:
                # Version 1 kept the semantic SDR in `positions`; a rename touches no row.
                connection.execute("ALTER TABLE items RENAME COLUMN positions TO sdr_semantic")
            if version <= 2:
                connection.execute("ALTER TABLE items ADD COLUMN sha256 TEXT")
                connection.execute("ALTER TABLE items ADD COLUMN phash INTEGER")
            for statement in _SCHEMA:  # one by one: executescript would commit first
                connection.execute(statement)
            if version <= 3:
                for statement in _BACKFILL:
                    connection.execute(statement)
            connection.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        for step in range(version, SCHEMA_VERSION):  # one line per step, each a change of layout
            logger.info("index store %s upgraded from schema %d to %d", self.path, step, step + 1)

    @staticmethod
    def _schema_version(connection: sqlite3.Connection) -> int:
        """The version on disk: recorded in meta since 2; 1 when items exist without it; current when new."""
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" in tables:
            row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is not None:
                return int(row[0])
        if "items" not in tables:
            return SCHEMA_VERSION  # a new store
        columns = {row[1] for row in connection.execute("PRAGMA table_info(items)")}
        return 1 if "positions" in columns else 2

    def _add_space_columns(self) -> None:
        present = {row[1] for row in self._writer.execute("PRAGMA table_info(items)")}
        missing = [space for space in self.spaces if f"sdr_{space}" not in present]
        for space in missing:  # NULL for every existing item: none has an SDR there yet
            self._writer.execute(f"ALTER TABLE items ADD COLUMN sdr_{space} BLOB")
            logger.info("index store %s: space %r added", self.path, space)

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
                _dump_concepts(item.concepts),
                json.dumps(dict(item.metadata), ensure_ascii=False, separators=(",", ":")),
                item.fingerprint.sha256 if item.fingerprint else None,
                _signed(item.fingerprint.phash) if item.fingerprint else None,
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
        """Delete the items with ``ids``, their filter rows and thumbnails; their labels, ascending."""
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
                concepts.append(_load_concepts(concepts_json))
        if labels:
            pairs, names = _filter_rows(labels, metadata, concepts)
            connection.executemany("DELETE FROM item_meta WHERE key = ? AND value = ? AND label = ?", pairs)
            connection.executemany(
                "DELETE FROM item_concepts WHERE name = ? AND label = ?", [(name, label) for name, label, _ in names]
            )
            connection.executemany("DELETE FROM item_thumbnails WHERE label = ?", [(label,) for label in labels])
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

    def thumbnails(self, ids: Sequence[str]) -> dict[str, bytes]:
        """The thumbnails of the items with ``ids`` that have one, by id."""
        found: dict[str, bytes] = {}
        reader = self._reader()
        for start in range(0, len(ids), _SELECT_CHUNK):
            chunk = list(ids[start : start + _SELECT_CHUNK])
            marks = ",".join("?" * len(chunk))
            query = (
                "SELECT items.id, item_thumbnails.image FROM items "
                f"JOIN item_thumbnails ON item_thumbnails.label = items.label WHERE items.id IN ({marks})"
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
        return _label_array(self._reader().execute(query, (key, value)))

    def labels_with_concept(self, name: str, min_confidence: float) -> npt.NDArray[np.int64]:
        """Labels of the items with concept ``name`` at ``min_confidence`` or more, ascending (one index range)."""
        query = "SELECT label FROM item_concepts WHERE name = ? AND confidence >= ? ORDER BY label"
        return _label_array(self._reader().execute(query, (name, float(min_confidence))))

    def rows_before(self, label: int, limit: int) -> list[Row]:
        """Up to ``limit`` rows with a label below ``label``, highest (newest) first."""
        query = f"{self._select} WHERE label < ? ORDER BY label DESC LIMIT ?"
        return [self._row(row) for row in self._reader().execute(query, (label, limit))]

    def rows_by_label(self, labels: Sequence[int]) -> dict[int, Row]:
        """The rows for ``labels`` (missing labels are simply absent)."""
        found: dict[int, Row] = {}
        reader = self._reader()
        for start in range(0, len(labels), _SELECT_CHUNK):
            chunk = [int(label) for label in labels[start : start + _SELECT_CHUNK]]
            marks = ",".join("?" * len(chunk))
            query = f"{self._select} WHERE label IN ({marks})"
            for row in reader.execute(query, chunk):
                found[int(row[0])] = self._row(row)
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

    def _row(self, row: Sequence[object]) -> Row:
        """(label, id, one column per space, concepts, metadata) as a Row."""
        count = len(self.spaces)
        blobs = row[2 : 2 + count]
        sdrs = {
            space: np.frombuffer(blob, dtype=self._dtype).astype(np.uint32)
            for space, blob in zip(self.spaces, blobs, strict=True)
            if isinstance(blob, bytes)
        }
        concepts_json, metadata_json = str(row[2 + count]), str(row[3 + count])
        concepts = _load_concepts(concepts_json)
        sha256, phash = row[4 + count], row[5 + count]
        fingerprint = (
            Fingerprint(sha256, int(phash) & _UINT64) if isinstance(sha256, str) and isinstance(phash, int) else None
        )
        return Row(int(str(row[0])), str(row[1]), sdrs, concepts, dict(json.loads(metadata_json)), fingerprint)


_UINT64 = (1 << 64) - 1


def _signed(phash: int) -> int:
    """A 64-bit pHash as SQLite's signed INTEGER holds it (the same bits)."""
    return phash - (1 << 64) if phash >= 1 << 63 else phash


def _dump_concepts(concepts: Sequence[tuple[str, float]]) -> str:
    return json.dumps([[term, confidence] for term, confidence in concepts], ensure_ascii=False, separators=(",", ":"))


def _label_array(rows: Iterator[tuple[int]] | sqlite3.Cursor) -> npt.NDArray[np.int64]:
    return np.fromiter((row[0] for row in rows), dtype=np.int64)


def _load_concepts(concepts_json: str) -> tuple[tuple[str, float], ...]:
    return tuple((str(term), float(confidence)) for term, confidence in json.loads(concepts_json))


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
