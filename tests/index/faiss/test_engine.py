"""SdrIndex: overlap ranking (with the Hamming trap), upsert, remove, both kinds, bad input, concurrency."""

from __future__ import annotations

import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from image2sdr.server import index as index_package
from image2sdr.server.config import IndexConfig
from image2sdr.server.errors import NotFoundError
from image2sdr.server.index import (
    IndexClosedError,
    IndexLockedError,
    Item,
    SdrIndex,
)
from image2sdr.server.index.faiss.ivf import IvfBackend
from image2sdr.server.sdr import Sdr
from tests.helpers.index import SIZE, brute_force, clustered_items, pairs, random_sdr, semantic_backend

EXACT = IndexConfig()
# IVF trained on tiny collections so the tests exercise the real IVF structure.
IVF = IndexConfig(kind="ivf", ivf_nlist=8, ivf_nprobe=8, ivf_train_min=200, ivf_train_sample=400, compact_min=16)
KINDS = {"exact": EXACT, "ivf": IVF}


def test_all_names_exported() -> None:
    for name in index_package.__all__:
        assert hasattr(index_package, name)


def test_overlap_not_hamming_decides_the_order(tmp_path: Path) -> None:
    """The Hamming trap: a short SDR is nearer by Hamming, a longer one shares more bits."""
    query = Sdr.from_positions(range(40), SIZE)
    short = Sdr.from_positions(range(10), SIZE)  # overlap 10, hamming 30
    long = Sdr.from_positions(list(range(20)) + list(range(1000, 1080)), SIZE)  # overlap 20, hamming 100
    assert bin_hamming(query, short) < bin_hamming(query, long)  # plain FAISS order: short first
    with SdrIndex(tmp_path, EXACT) as index:
        index.add("short", short)
        index.add("long", long)
        assert pairs(index.search(query, k=2)) == [("long", 20), ("short", 10)]


def bin_hamming(a: Sdr, b: Sdr) -> int:
    return int(np.bitwise_count(np.bitwise_xor(a.to_bits(), b.to_bits())).sum())


@pytest.mark.parametrize("equalize_bits", [0, 64, 512])
def test_exact_matches_brute_force_for_any_weights(tmp_path: Path, equalize_bits: int) -> None:
    """Exact for every weight mix, also when SDRs outgrow the equalising padding (or there is none)."""
    items = clustered_items(400, seed=equalize_bits)
    rng = np.random.default_rng(3)
    items += [Item(f"heavy-{n}", random_sdr(rng, int(rng.integers(600, 3000)))) for n in range(15)]
    with SdrIndex(tmp_path, IndexConfig(equalize_bits=equalize_bits)) as index:
        index.add_many(items)
        queries = [clustered_items(30, seed=99, prefix="q")[n].sdr for n in range(30)] + [random_sdr(rng, 2000)]
        for k in (1, 10, 57):
            for query, got in zip(queries, index.search_many(queries, k=k), strict=True):
                assert pairs(got) == brute_force(items, query, k)


def test_ties_go_to_the_earlier_item_and_min_overlap_filters(tmp_path: Path) -> None:
    same = Sdr.from_positions(range(50), SIZE)
    with SdrIndex(tmp_path, EXACT) as index:
        for name in ("c", "a", "b"):
            index.add(name, same)
        index.add("weak", Sdr.from_positions(range(45, 100), SIZE))
        assert pairs(index.search(same, k=3)) == [("c", 50), ("a", 50), ("b", 50)]
        assert pairs(index.search(same, k=10, min_overlap=6)) == [("c", 50), ("a", 50), ("b", 50)]
        assert pairs(index.search(same, k=10, min_overlap=5)) == [("c", 50), ("a", 50), ("b", 50), ("weak", 5)]
        assert index.search(Sdr.from_positions([9000], SIZE), k=5, min_overlap=1) == []
        assert [m.overlap for m in index.search(Sdr.from_positions([], SIZE), k=2)] == [0, 0]


@pytest.mark.parametrize("kind", KINDS)
def test_upsert_replaces_and_get_returns_everything(tmp_path: Path, kind: str) -> None:
    items = clustered_items(300, seed=1)
    with SdrIndex(tmp_path, KINDS[kind]) as index:
        index.add_many(items)
        fresh = Sdr.from_positions(range(7000, 7300), SIZE)
        index.add("item-3", fresh, [("new", 0.25)], {"k": "v"})
        assert index.count() == 300
        got = index.get("item-3")
        assert got.sdr == fresh and got.concepts == (("new", 0.25),) and dict(got.metadata) == {"k": "v"}
        top = index.search(fresh, k=1)[0]
        assert (top.id, top.overlap, top.item.concepts) == ("item-3", 300, (("new", 0.25),))
        assert "item-3" not in [m.id for m in index.search(items[3].sdr, k=5) if m.overlap == items[3].sdr.active]


def test_add_many_keeps_the_last_of_a_repeated_id(tmp_path: Path) -> None:
    first, second = Sdr.from_positions([1, 2], SIZE), Sdr.from_positions([3, 4, 5], SIZE)
    with SdrIndex(tmp_path, EXACT) as index:
        index.add_many([Item("x", first), Item("x", second)])
        assert index.count() == 1 and index.get("x").sdr == second


@pytest.mark.parametrize("kind", KINDS)
def test_remove_in_both_kinds(tmp_path: Path, kind: str) -> None:
    items = clustered_items(300, seed=2)
    with SdrIndex(tmp_path, KINDS[kind]) as index:
        index.add_many(items)
        for item in items[:40]:
            index.remove(item.id)
        assert index.count() == 260
        with pytest.raises(NotFoundError):
            index.get(items[0].id)
        with pytest.raises(NotFoundError):
            index.remove(items[0].id)
        live = items[40:]
        for item in items[:40]:  # a removed item never comes back, not even for its own SDR
            got = index.search(item.sdr, k=20)
            assert item.id not in [m.id for m in got]
            assert [m.overlap for m in got] == [o for _, o in brute_force(live, item.sdr, 20)]
    with SdrIndex(tmp_path, KINDS[kind]) as index:  # and stays removed after a reopen
        assert index.count() == 260
        assert items[0].id not in [m.id for m in index.search(items[0].sdr, k=20)]


@pytest.mark.parametrize("kind", KINDS)
def test_compaction_drops_removed_items_from_faiss(tmp_path: Path, kind: str) -> None:
    items = clustered_items(300, seed=4)
    config = KINDS[kind].model_copy(update={"compact_min": 10, "compact_ratio": 0.1})
    with SdrIndex(tmp_path, config) as index:
        index.add_many(items)
        for item in items[:40]:
            index.remove(item.id)
        backend = semantic_backend(index)
        assert backend.tombstones < 10  # compacted on the way
        # IVF stores each item in two lists; compaction drops both copies of a removed one.
        copies = backend.copies if isinstance(backend, IvfBackend) else 1
        assert copies == (2 if kind == "ivf" else 1)
        assert backend.index.ntotal == copies * (index.count() + backend.tombstones)
        query = items[50].sdr
        assert pairs(index.search(query, k=15)) == brute_force(items[40:], query, 15)


def test_search_by_id_excludes_itself(tmp_path: Path) -> None:
    items = clustered_items(120, seed=5)
    with SdrIndex(tmp_path, EXACT) as index:
        index.add_many(items)
        for item in items[:10]:
            assert pairs(index.neighbours(item.id, k=7)[1]) == brute_force(items, item.sdr, 7, exclude=item.id)
        with pytest.raises(NotFoundError):
            index.neighbours("nobody")


def test_ivf_is_trained_and_finds_near_items(tmp_path: Path) -> None:
    items = clustered_items(600, seed=6)
    with SdrIndex(tmp_path, IVF) as index:
        index.add_many(items[:150])
        assert not isinstance(semantic_backend(index), IvfBackend)  # below ivf_train_min: exact flat
        index.add_many(items[150:])
        assert isinstance(semantic_backend(index), IvfBackend)
        recall = []
        for item in items[:50]:
            expected = brute_force(items, item.sdr, 10)
            got = pairs(index.search(item.sdr, k=10))
            assert all(overlap == item.sdr.overlap(index.get(i).sdr) for i, overlap in got)  # overlaps exact
            recall.append(np.mean([o >= expected[-1][1] for _, o in got]) if got else 0.0)
        assert float(np.mean(recall)) >= 0.9  # nprobe == nlist here: nearly exhaustive
    with SdrIndex(tmp_path, IVF) as index:
        assert isinstance(semantic_backend(index), IvfBackend) and index.count() == 600


def test_ivf_probe_table_survives_reopen_and_single_equals_batched(tmp_path: Path) -> None:
    """The lists a query scans come from the probe table: saved with the snapshot, same answers after reopen.

    A single query is split across threads, a batch is not: both must give the same answer.
    """
    config = IVF.model_copy(update={"ivf_nprobe": 3})
    items = clustered_items(600, seed=8)
    queries = [item.sdr for item in items[:40]]
    with SdrIndex(tmp_path, config) as index:
        index.add_many(items)
        backend = semantic_backend(index)
        assert isinstance(backend, IvfBackend)
        table = backend.probe_table
        assert table is not None and table.shape == (SIZE, 8)
        single = [pairs(index.search(query, k=10)) for query in queries]
        assert [pairs(matches) for matches in index.search_many(queries, k=10)] == single
    with SdrIndex(tmp_path, config) as index:
        backend = semantic_backend(index)
        assert isinstance(backend, IvfBackend)
        assert np.array_equal(backend.probe_table, table)
        assert [pairs(index.search(query, k=10)) for query in queries] == single


def test_ivf_spills_each_item_into_two_lists_and_answers_each_once(tmp_path: Path) -> None:
    """Spilled items sit in two lists but come back once, at their true overlap, before and after reopen."""
    config = IVF.model_copy(update={"ivf_nprobe": 4, "ivf_nprobe_wide": 4})
    items = clustered_items(600, seed=9)
    with SdrIndex(tmp_path, config) as index:
        index.add_many(items)
        faiss_index = semantic_backend(index)
        assert isinstance(faiss_index, IvfBackend)
        assert faiss_index.copies == 2 and faiss_index.index.ntotal == 2 * 600
        invlists = faiss_index.index.invlists
        homes: dict[int, list[int]] = {}  # label -> the lists holding it
        for list_no in range(faiss_index.nlist):
            ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), invlists.list_size(list_no))
            for label in ids.tolist():
                homes.setdefault(label, []).append(list_no)
        assert len(homes) == 600 and all(len(set(lists)) == 2 == len(lists) for lists in homes.values())
        answers = [pairs(index.search(item.sdr, k=50)) for item in items[:30]]
        for item, got in zip(items[:30], answers, strict=True):
            ids = [item_id for item_id, _ in got]
            assert len(ids) == len(set(ids)) == 50
            assert all(overlap == item.sdr.overlap(index.get(i).sdr) for i, overlap in got)
    with SdrIndex(tmp_path, config) as index:
        backend = semantic_backend(index)
        assert isinstance(backend, IvfBackend) and backend.copies == 2 and backend.index.ntotal == 1200
        assert [pairs(index.search(item.sdr, k=50)) for item in items[:30]] == answers
        index.add("late", items[0].sdr)  # added after the reopen: spilled too
        assert semantic_backend(index).index.ntotal == 1202
        assert [m.id for m in index.search(items[0].sdr, k=2)] == [items[0].id, "late"]


def test_ivf_widens_the_search_for_a_diffuse_query(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A query whose best overlaps are a small share of its bits scans up to ivf_nprobe_wide lists.

    The mixture below takes a slice of every prototype, so its neighbours are spread
    over all lists: one list cannot hold its top 10, all eight (the wide breadth) do.
    """
    items = clustered_items(600, seed=10)
    rng = np.random.default_rng(11)
    prototypes = [np.unique(np.concatenate([item.sdr.positions for item in items[n::8][:40]])) for n in range(8)]
    mixture = Sdr.from_positions(
        np.unique(np.concatenate([rng.choice(p, 40, replace=False) for p in prototypes])), SIZE
    )
    focused = items[3].sdr  # its own cluster's list holds its neighbours: no widening
    scanned: list[int] = []
    scan = IvfBackend._scan

    def counting_scan(self: IvfBackend, codes: np.ndarray, fetch: int, probes: np.ndarray) -> object:
        scanned.append(probes.shape[1])
        return scan(self, codes, fetch, probes)

    monkeypatch.setattr(IvfBackend, "_scan", counting_scan)
    # ivf_nprobe_wide keeps its default, 256: capped at the 8 lists there are.
    narrow = IVF.model_copy(update={"ivf_nprobe": 1, "ivf_widen_below": 0.0})
    with SdrIndex(tmp_path, narrow) as index:
        index.add_many(items)
        assert pairs(index.search(mixture, k=10)) != brute_force(items, mixture, 10)  # one list is not enough
    with SdrIndex(tmp_path, narrow.model_copy(update={"ivf_widen_below": 0.5})) as index:
        scanned.clear()
        assert pairs(index.search(mixture, k=10)) == brute_force(items, mixture, 10)
        assert scanned == [1, 7]  # the first list, then the other seven
        scanned.clear()
        assert pairs(index.search(focused, k=10)) == brute_force(items, focused, 10)
        assert scanned == [1]
        # By id, the item itself is left out before judging: its own overlap (all its
        # bits) would otherwise make the best match look close and stop the widening.
        index.add("mixture", mixture)
        scanned.clear()
        assert pairs(index.neighbours("mixture", k=1)[1]) == brute_force(items, mixture, 1)
        assert scanned == [1, 7]


def test_one_process_per_directory_and_closed_index(tmp_path: Path) -> None:
    index = SdrIndex(tmp_path, EXACT)
    with pytest.raises(IndexLockedError):
        SdrIndex(tmp_path, EXACT)
    index.close()
    index.close()  # idempotent
    with pytest.raises(IndexClosedError):
        index.count()
    SdrIndex(tmp_path, EXACT).close()  # lock released


def test_searches_run_while_items_are_added_and_removed(tmp_path: Path) -> None:
    base = clustered_items(300, seed=7)
    extra = clustered_items(300, seed=8, prefix="extra")
    errors: list[BaseException] = []
    stop = threading.Event()
    with SdrIndex(tmp_path, IndexConfig(compact_min=20, compact_ratio=0.05)) as index:
        index.add_many(base)

        def search_loop(offset: int) -> None:
            try:
                while not stop.is_set():
                    for item in base[offset::7][:20]:
                        got = index.search(item.sdr, k=5)
                        assert got[0].id == item.id and got[0].overlap == item.sdr.active
                        assert all(m.overlap == item.sdr.overlap(m.item.sdr) for m in got)
                        assert [m.overlap for m in got] == sorted((m.overlap for m in got), reverse=True)
            except BaseException as exc:  # surfaced below, in the main thread
                errors.append(exc)

        readers = [threading.Thread(target=search_loop, args=(n,)) for n in range(3)]
        for reader in readers:
            reader.start()
        for number, item in enumerate(extra):
            index.add(item.id, item.sdr)
            if number % 3 == 0:
                index.remove(item.id)
        stop.set()
        for reader in readers:
            reader.join(timeout=60)
        assert not errors, errors[0]
        live = base + [item for number, item in enumerate(extra) if number % 3]
        assert index.count() == len(live)
        query = extra[1].sdr
        assert pairs(index.search(query, k=20)) == brute_force(live, query, 20)
