"""Filters on the FAISS index: the store's migration to schema 4, the cache of conditions, the strategies.

What every engine must do under a filter is in ``tests/index/test_contract_filters.py``;
here is what only ``SdrIndex`` has: the filter tables filled from an earlier
release's rows, the atoms kept in step with writes, and each way of searching
(flat: a selector or direct scoring; IVF: exact from the store, gathered lists,
a widened scan) held to the brute-force answer.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from image2sdr.server.config import IndexConfig
from image2sdr.server.index import SEMANTIC, ConceptCondition, Filter, Item, SdrIndex
from image2sdr.server.index.faiss import SCHEMA_VERSION, STORE_FILE
from image2sdr.server.index.faiss import flat as flat_module
from image2sdr.server.index.faiss import ivf as ivf_module
from image2sdr.server.index.faiss import schema as schema_module
from image2sdr.server.index.faiss.flat import FlatBackend
from image2sdr.server.index.faiss.ivf import IvfBackend
from image2sdr.server.index.faiss.selection import Allowed
from image2sdr.server.index.filters import passes
from image2sdr.server.sdr import Sdr
from tests.helpers.index import SIZE, brute_force, clustered_items, pairs, passing, random_sdr, semantic_backend

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FLAT = IndexConfig(compact_min=16, compact_ratio=0.1)
IVF = IndexConfig(kind="ivf", ivf_nlist=8, ivf_nprobe=8, ivf_train_min=200, ivf_train_sample=400, compact_min=16)


def _items(count: int, seed: int = 3) -> list[Item]:
    """Clustered SDRs; metadata "tag" in ten values, "odd" on odd numbers; concept "dog" on a third."""
    items = []
    for number, item in enumerate(clustered_items(count, seed=seed, prefix="it")):
        metadata = {"tag": f"t{number % 10}", **({"odd": "1"} if number % 2 else {})}
        concepts = (("dog", round((number % 7) / 6, 3)),) if number % 3 == 0 else (("cat", 0.5),)
        items.append(Item(item.id, item.sdr, concepts, metadata))
    return items


ITEMS = _items(400)


@pytest.fixture
def flat_index(tmp_path: Path) -> Iterator[SdrIndex]:
    with SdrIndex(tmp_path / "flat", FLAT, spaces=(SEMANTIC,)) as index:
        index.add_many(ITEMS)
        yield index


@pytest.fixture
def ivf_index(tmp_path: Path) -> Iterator[SdrIndex]:
    with SdrIndex(tmp_path / "ivf", IVF, spaces=(SEMANTIC,)) as index:
        index.add_many(ITEMS)
        assert isinstance(semantic_backend(index), IvfBackend)
        yield index


def _schema(directory: Path) -> tuple[str, set[str]]:
    with sqlite3.connect(directory / STORE_FILE) as connection:
        row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return (str(row[0]) if row else "none"), tables


# -- schema 4: the filter tables, filled in place from an earlier release's rows ----------------------


def _fixture_items(name: str) -> list[Item]:
    """A fixture's items as stored (label order), read straight from its SQLite file."""
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    with sqlite3.connect(FIXTURES / name / STORE_FILE) as connection:
        rows = connection.execute("SELECT id, concepts, metadata FROM items ORDER BY label").fetchall()
    return [
        Item(
            item_id,
            Sdr.from_positions(expected[item_id], SIZE),
            tuple((term, confidence) for term, confidence in json.loads(concepts)),
            json.loads(metadata),
        )
        for item_id, concepts, metadata in rows
    ]


@pytest.mark.parametrize(
    ("fixture", "filters"),
    [
        (
            "index_v1",
            [
                Filter(metadata=(("album", ("a",)),)),
                Filter(metadata=(("album", ("b", "c")),), concepts=(ConceptCondition("cat", 0.9),)),
                Filter(concepts=(ConceptCondition("dog", 0.7),)),
                Filter(concepts=(ConceptCondition("animal", 0.8), ConceptCondition("cat"))),
                Filter(concepts=(ConceptCondition("cat", 0.95),)),
            ],
        ),
        ("index_v2", [Filter(metadata=(("set", ("y",)),)), Filter(concepts=(ConceptCondition("dog", 0.8),))]),
    ],
)
def test_an_index_from_an_earlier_release_filters_lists_and_tags_its_items(
    tmp_path: Path, fixture: str, filters: list[Filter]
) -> None:
    """tests/fixtures/index_v1 (schema 1) and index_v2 (schema 2) predate the filter tables."""
    directory = tmp_path / "index"
    shutil.copytree(FIXTURES / fixture, directory)
    stored = _fixture_items(fixture)
    assert "item_meta" not in _schema(directory)[1]
    with SdrIndex(directory, IndexConfig()) as index:
        for where in filters:
            allowed = passing(stored, where)
            listed = index.list_items(100, where=where)
            assert [item.id for item in listed.items] == [item.id for item in reversed(allowed)]
            assert listed.total == len(allowed)
            for query in (stored[0].sdr, stored[-1].sdr):
                assert pairs(index.search(query, k=5, where=where)) == brute_force(allowed, query, 5)
        where = filters[0]
        gone = passing(stored, where)[0]
        index.remove(gone.id)
        index.add("after-upgrade", stored[1].sdr, [("dog", 0.99)], dict(passing(stored, where)[-1].metadata))
        assert index.list_items(1, where=where).items[0].id == "after-upgrade"
        assert gone.id not in [item.id for item in index.list_items(100, where=where).items]
    version, tables = _schema(directory)
    assert version == str(SCHEMA_VERSION) == "6"
    assert {"item_meta", "item_concepts", "custom_concepts"} <= tables
    with SdrIndex(directory, IndexConfig()) as index:  # opens again as any current store
        assert index.list_items(1, where=Filter(concepts=(ConceptCondition("dog", 0.99),))).total == 1


def test_an_interrupted_upgrade_leaves_the_old_schema_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "index"
    shutil.copytree(FIXTURES / "index_v1", directory)
    failing = (*schema_module._BACKFILL, "INSERT INTO no_such_table VALUES (1)")  # fails after the backfill ran
    monkeypatch.setattr(schema_module, "_BACKFILL", failing)
    with pytest.raises(sqlite3.OperationalError):
        SdrIndex(directory, IndexConfig())
    version, tables = _schema(directory)
    assert version == "none" and "item_meta" not in tables  # still schema 1, as written
    monkeypatch.undo()
    with SdrIndex(directory, IndexConfig()) as index:
        assert index.count() == 39
        assert index.list_items(50, where=Filter(metadata=(("album", ("c",)),))).total == 1


def test_the_filter_rows_follow_every_write_in_its_transaction(
    flat_index: SdrIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replacing and removing items leaves no filter row behind; a failed batch adds none."""

    def rows() -> tuple[int, int]:
        with sqlite3.connect(flat_index.directory / STORE_FILE) as connection:
            meta = connection.execute("SELECT count(*) FROM item_meta").fetchone()[0]
            concepts = connection.execute("SELECT count(*) FROM item_concepts").fetchone()[0]
        return int(meta), int(concepts)

    assert rows() == (sum(len(item.metadata) for item in ITEMS), len(ITEMS))
    flat_index.add_many([Item(ITEMS[0].id, ITEMS[0].sdr, (("a", 0.1), ("a", 0.7), ("b", 0.2)), {"x": "1"})])
    flat_index.remove(ITEMS[1].id)
    expected_meta = sum(len(item.metadata) for item in ITEMS[2:]) + 1
    assert rows() == (expected_meta, len(ITEMS) - 2 + 2)  # "a" given twice is one row, at its highest
    assert flat_index.list_items(5, where=Filter(concepts=(ConceptCondition("a", 0.7),))).total == 1

    def fail(*args: object, **kwargs: object) -> int:
        raise sqlite3.OperationalError("disk I/O error")  # after the item and filter rows were written

    monkeypatch.setattr(flat_index.engine._store, "_bump", fail)
    with pytest.raises(sqlite3.OperationalError):
        flat_index.add_many([Item("late", ITEMS[5].sdr, (("z", 1.0),), {"tag": "t9", "y": "2"})])
    with pytest.raises(sqlite3.OperationalError):
        flat_index.remove(ITEMS[6].id)
    assert rows() == (expected_meta, len(ITEMS))
    monkeypatch.undo()
    assert flat_index.list_items(5, where=Filter(metadata=(("y", ("2",)),))).total == 0


# -- the cache of conditions ------------------------------------------------------------------


@pytest.fixture
def reads(flat_index: SdrIndex, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every read of a condition from the store, as it happens."""
    seen: list[tuple[str, ...]] = []
    store = flat_index.engine._store
    by_pair, by_pairs, by_concept = store.labels_with_pair, store.labels_with_pairs, store.labels_with_concept

    def pair(key: str, value: str) -> npt.NDArray[np.int64]:
        seen.append(("m", key, value))
        return by_pair(key, value)

    def many(key: str, values: Sequence[str]) -> dict[str, npt.NDArray[np.int64]]:
        seen.extend(("m", key, value) for value in values)
        return by_pairs(key, values)

    def concept(name: str, minimum: float) -> npt.NDArray[np.int64]:
        seen.append(("c", name, str(minimum)))
        return by_concept(name, minimum)

    monkeypatch.setattr(store, "labels_with_pair", pair)
    monkeypatch.setattr(store, "labels_with_pairs", many)
    monkeypatch.setattr(store, "labels_with_concept", concept)
    return seen


def test_a_condition_is_read_once_then_kept_in_step_with_writes(
    flat_index: SdrIndex, reads: list[tuple[str, ...]]
) -> None:
    where = Filter(metadata=(("tag", ("t3", "t4")),), concepts=(ConceptCondition("dog", 0.5),))
    query = ITEMS[3].sdr
    assert pairs(flat_index.search(query, k=8, where=where)) == brute_force(passing(ITEMS, where), query, 8)
    assert sorted(reads) == [("c", "dog", "0.5"), ("m", "tag", "t3"), ("m", "tag", "t4")]
    rng = np.random.default_rng(4)
    new = [Item(f"new-{n}", random_sdr(rng, 120), (("dog", 0.9),), {"tag": "t4"}) for n in range(3)]
    flat_index.add_many([*new, Item("other", query, (("dog", 0.9),), {"tag": "t5"})])
    replaced = next(item for item in ITEMS if passes(item, where))
    flat_index.add_many([Item(replaced.id, replaced.sdr, (("dog", 0.1),), {"tag": "t4"})])  # no longer passes
    removed = [item for item in ITEMS if passes(item, where)][3]
    flat_index.remove(removed.id)
    now = [item for item in ITEMS if item.id not in (replaced.id, removed.id)] + new
    for sample in (query, new[1].sdr, ITEMS[9].sdr):
        assert pairs(flat_index.search(sample, k=8, where=where)) == brute_force(passing(now, where), sample, 8)
    assert flat_index.list_items(100, where=where).total == len(passing(now, where))
    assert len(reads) == 3  # the writes grew the kept conditions; nothing was read again


def test_a_condition_mostly_removed_is_read_again(flat_index: SdrIndex, reads: list[tuple[str, ...]]) -> None:
    where = Filter(metadata=(("tag", ("t7",)),))
    members = passing(ITEMS, where)
    assert flat_index.list_items(100, where=where).total == len(members)
    for item in members[: len(members) // 2 + 2]:
        flat_index.remove(item.id)
    left = members[len(members) // 2 + 2 :]
    assert [item.id for item in flat_index.list_items(100, where=where).items] == [i.id for i in reversed(left)]
    assert reads == [("m", "tag", "t7")] * 2  # re-read once over half its labels were dead


def test_a_cache_too_small_for_a_condition_still_answers(flat_index: SdrIndex, reads: list[tuple[str, ...]]) -> None:
    flat_index.engine._selections._budget = 64  # bytes: no condition fits
    where = Filter(metadata=(("odd", ("1",)),), concepts=(ConceptCondition("cat"),))
    for _ in range(2):
        got = flat_index.search(ITEMS[5].sdr, k=10, where=where)
        assert pairs(got) == brute_force(passing(ITEMS, where), ITEMS[5].sdr, 10)
    assert len(reads) == 4 and flat_index.engine._selections.cached_bytes == 0


def test_unseen_values_are_read_together_and_count_against_the_cache(
    flat_index: SdrIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22: a filter of values no item has (each an empty condition) used to cost nothing
    against the cache's budget, and each one kept rescanned the whole cache: 30 x 1,024 such
    values kept a server busy for minutes. Now a key's unread values are one batch of reads
    and every kept condition costs its bytes and a fixed overhead."""
    selections, store = flat_index.engine._selections, flat_index.engine._store
    budget = 512 << 10  # two rounds of 1,000 empty conditions fit, not three
    monkeypatch.setattr(selections, "_budget", budget)
    batches: list[int] = []
    by_pairs = store.labels_with_pairs

    def counted(key: str, values: Sequence[str]) -> dict[str, npt.NDArray[np.int64]]:
        batches.append(len(values))
        return by_pairs(key, values)

    monkeypatch.setattr(store, "labels_with_pairs", counted)
    query = ITEMS[3].sdr
    for round_ in range(4):
        values = ("t3", *(f"unseen-{round_}-{n}" for n in range(1000)))
        where = Filter(metadata=(("tag", values),))
        assert pairs(flat_index.search(query, k=8, where=where)) == brute_force(passing(ITEMS, where), query, 8)
        assert (budget // 3 if round_ else 0) < selections.cached_bytes <= budget
    assert batches == [1001, 1000, 1000, 1000]  # "t3" was kept from the first round on


def test_a_failed_faiss_update_rebuilds_and_forgets_the_conditions(
    flat_index: SdrIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = Filter(metadata=(("tag", ("t1",)),))
    flat_index.search(ITEMS[0].sdr, k=3, where=where)
    backend = semantic_backend(flat_index)

    def broken(*args: object) -> None:
        raise MemoryError("out of memory in FAISS")

    monkeypatch.setattr(backend, "add", broken)
    with pytest.raises(MemoryError):
        flat_index.add("late", ITEMS[0].sdr, [], {"tag": "t1"})  # committed, then FAISS failed: rebuilt
    assert flat_index.engine._selections.cached_bytes == 0
    assert flat_index.search(ITEMS[0].sdr, k=1, where=where)[0].id in {"late", ITEMS[0].id}
    assert flat_index.list_items(1, where=where).items[0].id == "late"


def test_filtered_searches_run_while_items_are_added_and_removed(tmp_path: Path) -> None:
    where = Filter(metadata=(("tag", ("t2", "t3")),), concepts=(ConceptCondition("cat"),))
    with SdrIndex(tmp_path, FLAT, spaces=(SEMANTIC,)) as index:
        index.add_many(ITEMS[:200])
        errors: list[BaseException] = []
        stop = threading.Event()

        def search() -> None:
            try:
                while not stop.is_set():
                    for match in index.search(ITEMS[7].sdr, k=10, where=where):
                        assert passes(match.item, where)
                    page = index.list_items(20, where=where)
                    assert all(passes(item, where) for item in page.items)
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        readers = [threading.Thread(target=search) for _ in range(3)]
        for reader in readers:
            reader.start()
        for item in ITEMS[200:]:
            index.add_many([item])
        for item in ITEMS[:100]:
            index.remove(item.id)
        stop.set()
        for reader in readers:
            reader.join()
        assert errors == []
        assert pairs(index.search(ITEMS[7].sdr, k=10, where=where)) == brute_force(
            passing(ITEMS[100:], where), ITEMS[7].sdr, 10
        )


def test_filters_after_a_reopen_from_the_snapshot(tmp_path: Path) -> None:
    where = Filter(metadata=(("odd", ("1",)),), concepts=(ConceptCondition("dog", 0.3),))
    with SdrIndex(tmp_path, FLAT, spaces=(SEMANTIC,)) as index:
        index.add_many(ITEMS)
        before = [pairs(index.search(item.sdr, k=6, where=where)) for item in ITEMS[:5]]
        listed = [item.id for item in index.list_items(30, where=where).items]
    with SdrIndex(tmp_path, FLAT, spaces=(SEMANTIC,)) as index:
        assert [pairs(index.search(item.sdr, k=6, where=where)) for item in ITEMS[:5]] == before
        assert [item.id for item in index.list_items(30, where=where).items] == listed


# -- strategies ------------------------------------------------------------------------------

WHERE = {
    "few": Filter(metadata=(("tag", ("t3",)),), concepts=(ConceptCondition("dog", 0.5),)),
    "a tenth": Filter(metadata=(("tag", ("t8",)),)),
    "half": Filter(metadata=(("odd", ("1",)),)),
    "most": Filter(metadata=(("tag", tuple(f"t{n}" for n in range(9))),)),
}


def _strategy(index: SdrIndex, where: Filter) -> str:
    with index.engine._lock.read():
        return semantic_backend(index).strategy(index.engine._passing(where, SEMANTIC))


def _exact_under(index: SdrIndex, where: Filter, *, k: int = 10) -> None:
    allowed = passing(ITEMS, where)
    for item in ITEMS[:12:3]:
        assert pairs(index.search(item.sdr, k=k, where=where)) == brute_force(allowed, item.sdr, k)
        _, near = index.neighbours(item.id, k=k, where=where)
        assert pairs(near) == brute_force(allowed, item.sdr, k, exclude=item.id)
    queries = [item.sdr for item in ITEMS[40:44]]
    assert [pairs(found) for found in index.search_many(queries, k=k, where=where)] == [
        brute_force(allowed, query, k) for query in queries
    ]


def test_the_flat_index_picks_its_way_by_the_share_that_passes(
    flat_index: SdrIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flat_module, "PREFILTER_BELOW", 0.05)
    monkeypatch.setattr(flat_module, "SCAN_ABOVE", 0.3)
    assert [_strategy(flat_index, WHERE[name]) for name in ("few", "a tenth", "half", "most")] == [
        "prefilter",
        "selector",
        "scan",
        "scan",
    ]


@pytest.mark.parametrize("way", ["prefilter", "selector", "scan"])
def test_every_flat_strategy_is_exact(flat_index: SdrIndex, monkeypatch: pytest.MonkeyPatch, way: str) -> None:
    settings = {"prefilter": (np.inf, np.inf), "selector": (0.0, np.inf), "scan": (0.0, 0.0)}[way]
    monkeypatch.setattr(flat_module, "PREFILTER_BELOW", settings[0])
    monkeypatch.setattr(flat_module, "SCAN_ABOVE", settings[1])
    for where in WHERE.values():
        assert _strategy(flat_index, where) == way
        _exact_under(flat_index, where)
    _exact_under(flat_index, WHERE["few"], k=40)  # more than pass
    _exact_under(flat_index, WHERE["a tenth"], k=200)  # more than pass, under a selector or not


def test_direct_scoring_finds_codes_by_label_after_compaction(
    flat_index: SdrIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flat_module, "PREFILTER_BELOW", np.inf)
    for item in ITEMS[100:200]:
        flat_index.remove(item.id)
    backend = semantic_backend(flat_index)
    assert isinstance(backend, FlatBackend) and backend.entries < len(ITEMS) - 50  # compacted on the way
    flat_index.add_many(ITEMS[100:120])  # back, with new labels at the end
    where = WHERE["half"]
    order = [*ITEMS[:100], *ITEMS[200:], *ITEMS[100:120]]
    for item in ITEMS[:12:3]:
        assert pairs(flat_index.search(item.sdr, k=10, where=where)) == brute_force(passing(order, where), item.sdr, 10)
    backend._in_label_order = False  # as if the id map were not in label order: the selector is used instead
    assert _strategy(flat_index, WHERE["few"]) == "selector"


@pytest.mark.parametrize("way", ["exact", "gather", "scan"])
def test_every_ivf_strategy_is_exact_when_it_probes_every_list(
    ivf_index: SdrIndex, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    settings = {"exact": (np.inf, 0.0), "gather": (0, np.inf), "scan": (0, 0.0)}[way]
    monkeypatch.setattr(ivf_module, "EXACT_PER_LIST", settings[0])
    monkeypatch.setattr(ivf_module, "GATHER_BELOW", settings[1])
    for where in WHERE.values():
        assert _strategy(ivf_index, where) == way
        _exact_under(ivf_index, where)
    _exact_under(ivf_index, WHERE["few"], k=40)
    nothing = Filter(metadata=(("tag", ("none",)),))
    assert ivf_index.search(ITEMS[0].sdr, k=5, where=nothing) == []


def test_a_gathering_search_sees_items_added_after_it_ran(ivf_index: SdrIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    """Views of FAISS's lists are kept between searches: an add must drop those of the lists it grew."""
    monkeypatch.setattr(ivf_module, "EXACT_PER_LIST", 0)
    monkeypatch.setattr(ivf_module, "GATHER_BELOW", np.inf)
    where = WHERE["a tenth"]
    _exact_under(ivf_index, where)
    late = [Item(f"late-{n}", item.sdr, item.concepts, {"tag": "t8"}) for n, item in enumerate(ITEMS[:60])]
    ivf_index.add_many(late)
    for item in ITEMS[:5]:
        found = pairs(ivf_index.search(item.sdr, k=10, where=where))
        assert found == brute_force(passing([*ITEMS, *late], where), item.sdr, 10)
    for item in ITEMS[:200]:  # then compaction rewrites every list
        ivf_index.remove(item.id)
    assert semantic_backend(ivf_index).entries < len(ITEMS) + len(late) - 100  # compacted on the way
    for item in ITEMS[200:205]:
        found = pairs(ivf_index.search(item.sdr, k=10, where=where))
        assert found == brute_force(passing([*ITEMS[200:], *late], where), item.sdr, 10)


def test_the_ivf_strategy_follows_the_share_that_passes(ivf_index: SdrIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ivf_module, "EXACT_PER_LIST", 2)  # 16 items with 8 lists
    monkeypatch.setattr(ivf_module, "GATHER_BELOW", 0.3)
    assert [_strategy(ivf_index, WHERE[name]) for name in ("few", "a tenth", "half", "most")] == [
        "exact",
        "gather",
        "scan",
        "scan",
    ]


def test_a_gathering_search_visits_more_lists_than_an_unfiltered_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nprobe 1 of 8 lists: the unfiltered search sees one list; a narrow filter's best lie in others."""
    config = IVF.model_copy(update={"ivf_nprobe": 1, "ivf_nprobe_wide": 1})
    monkeypatch.setattr(ivf_module, "EXACT_PER_LIST", 0)
    monkeypatch.setattr(ivf_module, "GATHER_BELOW", np.inf)
    monkeypatch.setattr(ivf_module, "GATHER_ITEMS", 1e9)
    with SdrIndex(tmp_path, config, spaces=(SEMANTIC,)) as index:
        index.add_many(ITEMS)
        _exact_under(index, WHERE["a tenth"])


# -- the Allowed set, in each of its forms -------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_an_allowed_set_answers_the_same_as_labels_or_as_a_bitmap(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.choice([10, 3000, 200_000]))
    labels = np.sort(rng.choice(size, int(rng.integers(0, min(size, 5000))), replace=False)).astype(np.int64)
    forms = [
        Allowed(live_count=size, labels=labels),
        Allowed(live_count=size, bitmap=Allowed(live_count=size, labels=labels).bitmap()),
    ]
    probe = rng.integers(-3, size + 20, size=500)
    truth = set(labels.tolist())
    for allowed in forms:
        assert allowed.count == labels.size
        assert allowed.labels().tolist() == labels.tolist()
        assert allowed.mask(probe).tolist() == [int(p) in truth for p in probe]
        for below in (None, 0, 1, *rng.integers(0, size + 5, size=5).tolist()):
            for count in (1, 3, 50):
                newest, more = allowed.newest(below, count)
                under = [label for label in labels.tolist() if below is None or label < below][::-1]
                assert newest.tolist() == under[:count] and more == (len(under) > count)


@pytest.mark.parametrize("seed", range(4))
def test_random_filters_against_the_oracle(tmp_path: Path, seed: int) -> None:
    """Random metadata and concepts; random filters mixing sparse and dense conditions."""
    rng = np.random.default_rng(seed)
    keys = {"k1": 2, "k2": 9, "k3": 150}
    items = []
    for item in clustered_items(1500, seed=seed, prefix="r"):
        metadata = {key: f"v{rng.integers(values)}" for key, values in keys.items() if rng.random() < 0.8}
        concepts = tuple((f"c{rng.integers(6)}", round(float(rng.random()), 2)) for _ in range(rng.integers(0, 3)))
        items.append(Item(item.id, item.sdr, concepts, metadata))
    with SdrIndex(tmp_path, FLAT, spaces=(SEMANTIC,)) as index:
        index.add_many(items)
        for _ in range(25):
            chosen = rng.choice(list(keys), size=int(rng.integers(0, 3)), replace=False)
            metadata = tuple(
                (str(key), tuple(f"v{value}" for value in rng.choice(keys[key], int(rng.integers(1, 4)), replace=True)))
                for key in chosen
            )
            metadata = tuple((key, tuple(dict.fromkeys(values))) for key, values in metadata)
            concepts = tuple(
                ConceptCondition(f"c{rng.integers(6)}", round(float(rng.random()), 2))
                for _ in range(rng.integers(0, 2))
            )
            where = Filter(metadata=metadata, concepts=concepts)
            allowed = passing(items, where)
            query = items[int(rng.integers(len(items)))].sdr
            assert pairs(index.search(query, k=10, where=where)) == brute_force(allowed, query, 10)
            page = index.list_items(25, where=where)
            assert page.total == len(allowed)
            assert [item.id for item in page.items] == [item.id for item in reversed(allowed)][:25]
