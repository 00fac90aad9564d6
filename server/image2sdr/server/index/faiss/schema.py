"""The SQLite schema of the FAISS engine's store, and its migrations from every earlier release.

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
    6  ``item_keypoints`` (one row per item stored with keypoints, by label): the
       versioned blob of ``keypoints.py`` (about 3.5 KB), read only for the few
       candidates a duplicate check verifies.  Upgraded from 5 by creating it,
       empty: older items have none and are judged without keypoints

Every upgrade runs in one transaction, so an interrupted one leaves the old
version intact.
"""

from __future__ import annotations

import logging
import re
import secrets
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from ...errors import ConfigError

__all__ = ["SCHEMA_VERSION", "check_space_names", "open_schema"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 6
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
    # Keyed by label like the thumbnails, for the same reasons.
    """
CREATE TABLE IF NOT EXISTS item_keypoints (
    label  INTEGER PRIMARY KEY,
    points BLOB NOT NULL  -- keypoints.py's blob: a version byte, then coordinates and ORB descriptors
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


def check_space_names(spaces: Sequence[str]) -> None:
    for space in spaces:
        if not _SPACE_NAME.fullmatch(space):
            raise ConfigError(f"a space is named by lowercase letters, digits and _, not {space!r}")


def open_schema(connection: sqlite3.Connection, path: Path, sdr_size: int, spaces: Sequence[str]) -> None:
    """Bring the store at ``path`` to ``SCHEMA_VERSION``, set its meta defaults, add missing space columns."""
    _migrate(connection, path)
    _init_meta(connection, path, sdr_size)
    _add_space_columns(connection, path, spaces)


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to ``SCHEMA_VERSION`` in place, in one transaction; never drops a row."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(connection)
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"the index at {path} has schema version {version}, written by a newer release "
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
        logger.info("index store %s upgraded from schema %d to %d", path, step, step + 1)


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


def _add_space_columns(connection: sqlite3.Connection, path: Path, spaces: Sequence[str]) -> None:
    present = {row[1] for row in connection.execute("PRAGMA table_info(items)")}
    missing = [space for space in spaces if f"sdr_{space}" not in present]
    for space in missing:  # NULL for every existing item: none has an SDR there yet
        connection.execute(f"ALTER TABLE items ADD COLUMN sdr_{space} BLOB")
        logger.info("index store %s: space %r added", path, space)


def _init_meta(connection: sqlite3.Connection, path: Path, sdr_size: int) -> None:
    with connection:
        connection.execute("BEGIN IMMEDIATE")
        defaults = {"store_id": secrets.token_hex(16), "changes": "0", "next_label": "0", "sdr_size": str(sdr_size)}
        for key, value in defaults.items():
            connection.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))
    stored_size = int(connection.execute("SELECT value FROM meta WHERE key = 'sdr_size'").fetchone()[0])
    if stored_size != sdr_size:
        raise ConfigError(f"the index at {path} holds SDRs of size {stored_size}, not {sdr_size}")
