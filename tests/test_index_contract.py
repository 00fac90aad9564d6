"""The ItemIndex contract: what the service relies on, run against every index implementation.

Each engine below opens a real index on real files. The IVF engine is trained
(it holds more items than ``ivf_train_min``) and probes every list, so its
answers must equal the brute-force oracle too; engines that are approximate by
design would loosen only the search assertions, never the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from image2sdr.server.config import IndexConfig
from image2sdr.server.errors import InvalidInputError, InvalidSdrError, LimitExceededError, NotFoundError
from image2sdr.server.index import (
    SEMANTIC,
    IndexClosedError,
    InvalidIdError,
    Item,
    ItemIndex,
    MetadataTooLargeError,
    SdrIndex,
)
from image2sdr.server.index.ivf import IvfBackend
from image2sdr.server.sdr import Sdr

from .index_helpers import SIZE, brute_force, clustered_items, pairs, random_sdr, semantic_backend

BASE = clustered_items(260, seed=41, prefix="base")  # above the IVF engine's ivf_train_min


@dataclass
class Engine:
    name: str
    open: Callable[[], ItemIndex]


def _sdr_index(config: IndexConfig, directory: Path) -> Callable[[], ItemIndex]:
    return lambda: SdrIndex(directory, config)


ENGINES = {
    "faiss-flat": IndexConfig(max_id_length=64, max_metadata_bytes=256, max_concepts=8),
    "faiss-ivf": IndexConfig(
        kind="ivf",
        ivf_nlist=8,
        ivf_nprobe=8,
        ivf_train_min=200,
        ivf_train_sample=200,
        max_id_length=64,
        max_metadata_bytes=256,
        max_concepts=8,
    ),
}


@pytest.fixture(params=list(ENGINES))
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    return Engine(request.param, _sdr_index(ENGINES[request.param], tmp_path / "index"))


@pytest.fixture
def index(engine: Engine) -> Iterator[ItemIndex]:
    """An open index holding BASE; closed after the test."""
    opened = engine.open()
    opened.add_many(BASE)
    if engine.name == "faiss-ivf":  # the contract is run on the trained structure, not on its flat start
        assert isinstance(opened, SdrIndex) and isinstance(semantic_backend(opened), IvfBackend)
    yield opened
    opened.close()


def test_the_protocol_is_what_the_engine_offers(index: ItemIndex) -> None:
    for name in ("add", "add_many", "check_item", "get", "contains", "remove", "search", "search_many"):
        assert callable(getattr(index, name))
    assert index.spaces[0] == SEMANTIC


def test_an_item_comes_back_as_it_was_added(index: ItemIndex) -> None:
    sdr = random_sdr(np.random.default_rng(1), 60)
    index.add("fresh", sdr, [("cat", 0.93), ("animal", 0.97)], {"album": "summer", "by": "ann"})
    item = index.get("fresh")
    assert (item.id, item.sdr, item.concepts) == ("fresh", sdr, (("cat", 0.93), ("animal", 0.97)))
    assert dict(item.metadata) == {"album": "summer", "by": "ann"}
    assert item.in_space(SEMANTIC) == sdr
    assert index.count() == len(BASE) + 1
    with pytest.raises(NotFoundError):
        index.get("nobody")


def test_search_ranks_by_exact_overlap_ties_to_the_earlier(index: ItemIndex) -> None:
    for item in BASE[:12]:
        assert pairs(index.search(item.sdr, k=10)) == brute_force(BASE, item.sdr, 10)
    query = BASE[3].sdr
    floor = brute_force(BASE, query, 5)[-1][1]
    assert pairs(index.search(query, k=50, min_overlap=floor)) == brute_force(BASE, query, 50, min_overlap=floor)
    queries = [item.sdr for item in BASE[20:30]]
    assert [pairs(m) for m in index.search_many(queries, k=7)] == [pairs(index.search(q, k=7)) for q in queries]
    assert index.search_many([], k=3) == []


def test_bad_searches_are_refused(index: ItemIndex) -> None:
    query = BASE[0].sdr
    for k in (0, -1, 10**9):
        with pytest.raises(InvalidInputError):
            index.search(query, k=k)
    with pytest.raises(InvalidInputError):
        index.search(query, k=3, min_overlap=-1)
    with pytest.raises(InvalidInputError):
        index.search(query, k=3, space="nowhere")
    with pytest.raises(InvalidSdrError):
        index.search(Sdr.from_positions([1, 2], 1024), k=3)


def test_a_replaced_item_is_one_item_ranked_as_added_last(index: ItemIndex) -> None:
    twin = BASE[5].sdr
    index.add("twin", twin)
    index.add(BASE[5].id, twin, [("again", 1.0)])  # replace: same SDR, now added after "twin"
    assert index.count() == len(BASE) + 1
    assert [m.id for m in index.search(twin, k=2)] == ["twin", BASE[5].id]
    assert index.get(BASE[5].id).concepts == (("again", 1.0),)


def test_add_many_is_all_or_nothing_and_keeps_the_last_of_a_repeated_id(index: ItemIndex) -> None:
    rng = np.random.default_rng(2)
    good = [Item(f"new-{n}", random_sdr(rng, 50)) for n in range(3)]
    with pytest.raises(InvalidIdError):
        index.add_many([*good, Item("", random_sdr(rng, 50))])
    with pytest.raises(MetadataTooLargeError):
        index.add_many([*good, Item("big", random_sdr(rng, 50), metadata={"k": "v" * 300})])
    assert index.contains([item.id for item in good]) == [False, False, False]
    last = random_sdr(rng, 70)
    index.add_many([*good, Item("new-0", last)])
    assert index.count() == len(BASE) + 3
    assert index.get("new-0").sdr == last


def test_removed_items_are_gone_and_unknown_ones_not_found(index: ItemIndex) -> None:
    for item in BASE[:30]:
        index.remove(item.id)
    live = BASE[30:]
    assert index.count() == len(live)
    for item in BASE[:5]:
        with pytest.raises(NotFoundError):
            index.get(item.id)
        assert pairs(index.search(item.sdr, k=10)) == brute_force(live, item.sdr, 10)
    with pytest.raises(NotFoundError):
        index.remove(BASE[0].id)


def test_contains_answers_many_ids_in_order(index: ItemIndex) -> None:
    ids = [BASE[7].id, "missing", BASE[0].id, "also missing", BASE[7].id]
    assert index.contains(ids) == [True, False, True, False, True]
    assert index.contains([]) == []
    with pytest.raises(InvalidIdError):
        index.contains(["fine", ""])


def test_neighbours_leave_the_item_out(index: ItemIndex) -> None:
    item, matches = index.neighbours(BASE[9].id, k=6)
    assert item.id == BASE[9].id and item.sdr == BASE[9].sdr
    assert pairs(matches) == brute_force(BASE, BASE[9].sdr, 6, exclude=BASE[9].id)
    with pytest.raises(NotFoundError):
        index.neighbours("nobody", k=3)


def test_check_item_refuses_what_add_would(index: ItemIndex) -> None:
    index.check_item("ok", {"a": "b"})
    for bad_id in ("", "   ", "x" * 65, "nul\x00"):
        with pytest.raises(InvalidIdError):
            index.check_item(bad_id)
    with pytest.raises(LimitExceededError):
        index.check_item("ok", {"k": "v" * 300})
    assert index.count() == len(BASE)


def test_everything_acknowledged_is_there_after_a_reopen(engine: Engine) -> None:
    first = engine.open()
    first.add_many(BASE)
    first.remove(BASE[1].id)
    first.add("late", BASE[2].sdr, [("late", 0.5)], {"when": "now"})
    expected = [pairs(first.search(item.sdr, k=8)) for item in BASE[:10]]
    first.close()
    again = engine.open()
    try:
        assert again.count() == len(BASE)
        assert again.contains([BASE[1].id, "late"]) == [False, True]
        assert dict(again.get("late").metadata) == {"when": "now"}
        assert [pairs(again.search(item.sdr, k=8)) for item in BASE[:10]] == expected
    finally:
        again.close()


def test_a_closed_index_says_so(engine: Engine) -> None:
    opened = engine.open()
    opened.add("one", Sdr.from_positions([1, 2, 3], SIZE))
    opened.close()
    opened.close()  # twice is harmless
    calls: list[Callable[[], object]] = [
        lambda: opened.get("one"),
        lambda: opened.search(Sdr.from_positions([1, 2], SIZE)),
        lambda: opened.add("two", Sdr.from_positions([4], SIZE)),
        lambda: opened.remove("one"),
        opened.count,
        lambda: opened.contains(["one"]),
    ]
    for call in calls:
        with pytest.raises(IndexClosedError):
            call()
