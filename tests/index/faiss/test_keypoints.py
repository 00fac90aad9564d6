"""Keypoints in the FAISS engine's store: a store from before them opens, gains the table, and keeps them on disk."""

from __future__ import annotations

import io
import shutil
import sqlite3
from pathlib import Path

from PIL import Image

from image2sdr.server import keypoints
from image2sdr.server.config import IndexConfig
from image2sdr.server.index import Item, SdrIndex
from image2sdr.server.index.faiss import SCHEMA_VERSION, STORE_FILE
from tests.helpers.images import sample_photo

FIXTURES = Path(__file__).parents[2] / "fixtures"


def _tables(directory: Path) -> tuple[str, set[str]]:
    with sqlite3.connect(directory / STORE_FILE) as connection:
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return str(version), tables


def test_a_store_from_before_keypoints_opens_and_keeps_them_from_then_on(tmp_path: Path) -> None:
    directory = tmp_path / "index"
    shutil.copytree(FIXTURES / "index_v4", directory)  # schema 4: before thumbnails and keypoints
    assert "item_keypoints" not in _tables(directory)[1]
    with Image.open(io.BytesIO(sample_photo("chelsea"))) as image:
        points = keypoints.extract(image.convert("RGB"))
    with SdrIndex(directory, IndexConfig()) as index:
        assert index.engine.keypoints(["v4-00", "v4-01"]) == {}  # older items have none: judged the old way
        first = index.get("v4-00")
        index.add_many([Item("v4-00", first.sdr, first.concepts, first.metadata, first.spaces, first.fingerprint)])
        index.add_many([Item("v4-new", first.sdr, fingerprint=first.fingerprint, keypoints=points)])
        stored = index.engine.keypoints(["v4-00", "v4-new", "unknown"])
        assert stored == {"v4-new": points.to_blob()}
        assert len(stored["v4-new"]) <= 4096
    assert _tables(directory) == (str(SCHEMA_VERSION), _tables(directory)[1])
    assert SCHEMA_VERSION == 6 and "item_keypoints" in _tables(directory)[1]
    with SdrIndex(directory, IndexConfig()) as index:  # opens again as any current store; on disk, not in RAM
        assert index.engine.keypoints(["v4-new"]) == {"v4-new": points.to_blob()}
        index.add_many([Item("v4-new", first.sdr)])  # replaced without keypoints: the old ones go
        assert index.engine.keypoints(["v4-new"]) == {}
        index.add_many([Item("v4-kp", first.sdr, keypoints=points)])
        index.remove("v4-kp")
    with sqlite3.connect(directory / STORE_FILE) as connection:
        assert connection.execute("SELECT count(*) FROM item_keypoints").fetchone()[0] == 0  # removed with the item
