"""Named spaces (one backend and snapshot each) and the store's schema versions, with migration."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from image2sdr.server.config import IndexConfig
from image2sdr.server.errors import ConfigError, InvalidInputError
from image2sdr.server.index import SEMANTIC, Item, NoSdrInSpaceError, SdrIndex
from image2sdr.server.index.faiss import LEGACY_SNAPSHOT_FILE, SCHEMA_VERSION, STORE_FILE, snapshot_file
from image2sdr.server.sdr import Sdr
from tests.helpers.index import SIZE, brute_force, clustered_items, pairs, random_sdr

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
BOTH = (SEMANTIC, "visual")
ONLY_SEMANTIC = (SEMANTIC,)


def _columns(directory: Path) -> set[str]:
    with sqlite3.connect(directory / STORE_FILE) as connection:
        return {row[1] for row in connection.execute("PRAGMA table_info(items)")}


def _schema_version(directory: Path) -> str:
    with sqlite3.connect(directory / STORE_FILE) as connection:
        return str(connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])


def test_an_index_from_the_release_before_spaces_opens_upgraded_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """tests/fixtures/index_v1 was written by the release before schema versions (positions column, faiss.snapshot)."""
    directory = tmp_path / "index"
    shutil.copytree(FIXTURES / "index_v1", directory)
    expected = {
        item_id: Sdr.from_positions(bits, SIZE)
        for item_id, bits in json.loads((FIXTURES / "index_v1.expected.json").read_text()).items()
    }
    assert "positions" in _columns(directory) and (directory / LEGACY_SNAPSHOT_FILE).exists()
    caplog.set_level(logging.INFO)
    with SdrIndex(directory, IndexConfig()) as index:
        assert "upgraded from schema 1" in caplog.text
        assert index.count() == len(expected) == 39
        for item_id, sdr in expected.items():
            assert index.get(item_id).sdr == sdr
        assert dict(index.get("photo-07").metadata) == {"album": "c"}
        assert index.get("photo-07").concepts == (("cat", 0.5),)
        assert index.contains(["photo-05"]) == [False]  # removed before the upgrade, still removed
        items = [Item(item_id, sdr) for item_id, sdr in expected.items()]
        query = expected["photo-12"]
        assert {m.id for m in index.search(query, k=3)} == {i for i, _ in brute_force(items, query, 3)}
        index.add("after-upgrade", query)
    assert _schema_version(directory) == str(SCHEMA_VERSION)
    assert "sdr_semantic" in _columns(directory) and "positions" not in _columns(directory)
    assert not (directory / LEGACY_SNAPSHOT_FILE).exists() and (directory / snapshot_file(SEMANTIC)).exists()
    caplog.clear()
    with SdrIndex(directory, IndexConfig()) as index:  # the upgraded index opens as any other
        assert "snapshot loaded" in caplog.text and "upgraded" not in caplog.text
        assert index.count() == 40


def test_an_index_from_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    with SdrIndex(tmp_path, IndexConfig()) as index:
        index.add("one", Sdr.from_positions([1, 2, 3], SIZE))
    with sqlite3.connect(tmp_path / STORE_FILE) as connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(ConfigError, match="schema version 99"):
        SdrIndex(tmp_path, IndexConfig())
    assert _schema_version(tmp_path) == "99"
    with sqlite3.connect(tmp_path / STORE_FILE) as connection:
        connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
    with SdrIndex(tmp_path, IndexConfig()) as index:  # the refusal released the directory lock
        assert index.count() == 1


def _with_visual(items: list[Item], every: int) -> list[Item]:
    """Every ``every``-th item also gets a visual SDR (a different one from its semantic SDR)."""
    rng = np.random.default_rng(5)
    return [
        Item(item.id, item.sdr, item.concepts, item.metadata, {"visual": random_sdr(rng, 80)} if n % every == 0 else {})
        for n, item in enumerate(items)
    ]


def test_each_space_is_searched_on_its_own(tmp_path: Path) -> None:
    items = _with_visual(clustered_items(120, seed=21), every=2)
    visual = [Item(i.id, i.spaces["visual"]) for i in items if "visual" in i.spaces]
    with SdrIndex(tmp_path, IndexConfig(), spaces=BOTH) as index:
        assert index.spaces == BOTH
        index.add_many(items)
        assert index.count() == 120
        query = visual[3].sdr
        assert pairs(index.search(query, k=5, space="visual")) == brute_force(visual, query, 5)
        assert pairs(index.search(items[1].sdr, k=5)) == brute_force(items, items[1].sdr, 5)
        got = index.get(items[0].id)
        assert got.in_space("visual") == items[0].spaces["visual"] and index.get(items[1].id).in_space("visual") is None
        _, near = index.neighbours(visual[0].id, k=4, space="visual")
        assert pairs(near) == brute_force(visual, visual[0].sdr, 4, exclude=visual[0].id)
        with pytest.raises(NoSdrInSpaceError):
            index.neighbours(items[1].id, k=4, space="visual")
        index.remove(visual[1].id)  # gone from every space
        assert visual[1].id not in [m.id for m in index.search(visual[1].sdr, k=5, space="visual")]
        with pytest.raises(InvalidInputError):
            index.add_many([Item("x", items[0].sdr, spaces={"smell": items[0].sdr})])
    assert (tmp_path / snapshot_file(SEMANTIC)).exists() and (tmp_path / snapshot_file("visual")).exists()


def test_each_space_has_its_own_snapshot(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    items = _with_visual(clustered_items(80, seed=22), every=3)
    with SdrIndex(tmp_path, IndexConfig(), spaces=BOTH) as index:
        index.add_many(items)
        before = pairs(index.search(items[0].spaces["visual"], k=6, space="visual"))
    caplog.set_level(logging.INFO)
    with SdrIndex(tmp_path, IndexConfig(), spaces=BOTH) as index:
        assert caplog.text.count("snapshot loaded") == 2 and "rebuilt" not in caplog.text
        assert pairs(index.search(items[0].spaces["visual"], k=6, space="visual")) == before
    (tmp_path / snapshot_file("visual")).unlink()  # one space's snapshot lost: only that one is rebuilt
    caplog.clear()
    with SdrIndex(tmp_path, IndexConfig(), spaces=BOTH) as index:
        assert "snapshot loaded: semantic" in caplog.text and "rebuilt from the store: visual" in caplog.text
        assert pairs(index.search(items[0].spaces["visual"], k=6, space="visual")) == before


def test_a_space_added_later_starts_empty_and_keeps_every_item(tmp_path: Path) -> None:
    items = clustered_items(50, seed=23)
    with SdrIndex(tmp_path, IndexConfig(), spaces=ONLY_SEMANTIC) as index:
        index.add_many(items)
    with SdrIndex(tmp_path, IndexConfig(), spaces=BOTH) as index:
        assert index.count() == 50 and "sdr_visual" in _columns(tmp_path)
        assert index.search(items[0].sdr, k=3, space="visual") == []
        look = random_sdr(np.random.default_rng(9), 70)
        index.add_many([Item("seen", items[0].sdr, spaces={"visual": look})])
        assert [m.id for m in index.search(look, k=3, space="visual")] == ["seen"]
    with SdrIndex(tmp_path, IndexConfig(), spaces=ONLY_SEMANTIC) as index:  # opened without it: nothing is lost
        assert index.count() == 51 and index.spaces == (SEMANTIC,)
    with SdrIndex(tmp_path, IndexConfig(), spaces=BOTH) as index:
        assert index.get("seen").in_space("visual") == look


def test_space_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SdrIndex(tmp_path / "a", IndexConfig(), spaces=("visual",))  # semantic comes first
    with pytest.raises(ConfigError):
        SdrIndex(tmp_path / "b", IndexConfig(), spaces=(SEMANTIC, "Robert'); DROP TABLE items;--"))


def test_an_index_from_the_release_with_spaces_but_no_fingerprints_opens_upgraded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """tests/fixtures/index_v2 was written by schema 2 (spaces, no fingerprints): it gains them, keeps every item."""
    directory = tmp_path / "index"
    shutil.copytree(FIXTURES / "index_v2", directory)
    expected = json.loads((FIXTURES / "index_v2.expected.json").read_text())
    assert _schema_version(directory) == "2" and "sha256" not in _columns(directory)
    caplog.set_level(logging.INFO)
    with SdrIndex(directory, IndexConfig()) as index:
        assert "upgraded from schema 2 to 3" in caplog.text
        assert "snapshot loaded: semantic" in caplog.text  # the upgrade changed no item: its snapshot still holds
        assert index.count() == len(expected) == 29 and index.count("visual") == 0
        for item_id, bits in expected.items():
            item = index.get(item_id)
            assert item.sdr == Sdr.from_positions(bits, SIZE) and item.fingerprint is None
        assert index.search(Sdr.from_positions(expected["pic-05"], SIZE), k=1)[0].id == "pic-05"
        look = random_sdr(np.random.default_rng(3), 300)
        old = index.get("pic-05")
        index.add_many([Item("pic-05", old.sdr, old.concepts, old.metadata, {"visual": look})])  # re-added
        assert index.count("visual") == 1 and index.get("pic-05").in_space("visual") == look
        assert [m.id for m in index.search(look, k=1, space="visual")] == ["pic-05"]
    assert _schema_version(directory) == str(SCHEMA_VERSION)
    assert {"sha256", "phash", "sdr_visual"} <= _columns(directory)
