"""The ItemIndex contract for filters, listings and custom concepts, run against every engine.

The engines are those of ``test_index_contract.py`` (FAISS flat and trained IVF,
milvus-lite, a real Milvus server). Every filtered answer is held against the
brute-force oracle over the items that pass: exact, the k best that pass, never
the survivors of an unfiltered top k.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from image2sdr.server.errors import InvalidInputError, NotFoundError
from image2sdr.server.index import SEMANTIC, VISUAL, Item, ItemIndex
from image2sdr.server.index.protocol import ConceptCondition, Filter
from image2sdr.server.sdr import Sdr

from .index_helpers import brute_force, clustered_items, pairs, random_sdr
from .test_index_contract import _COLLECTIONS, ENGINES, MILVUS_ENGINES, Engine, _milvus_index, _sdr_index

ALBUMS = ("a", "b", "c", "d")


def _catalogued(count: int) -> list[Item]:
    """Clustered SDRs with metadata and concepts spread so that filters pass from all to none."""
    items = []
    for number, item in enumerate(clustered_items(count, seed=43, prefix="cat")):
        metadata = {"n": str(number), "album": ALBUMS[number % 4]}
        if number % 10 == 0:
            metadata["by"] = "ann"
        if number in (7, 101, 202):
            metadata["rare"] = "yes"
        concepts: list[tuple[str, float]] = [("animal", 0.5)]
        if number % 2 == 0:
            concepts.append(("dog", (number % 10) / 10))
        if number % 5 == 0:
            concepts.append(("cat", 0.9))
        items.append(Item(item.id, item.sdr, tuple(concepts), metadata))
    return items


CATALOGUE = _catalogued(280)  # above the IVF engine's ivf_train_min


def passes(item: Item, where: Filter) -> bool:
    """The filter's meaning, spelled out: every metadata condition and every concept condition holds."""
    for key, values in where.metadata:
        if item.metadata.get(key) not in values:
            return False
    return all(
        any(name == condition.name and score >= condition.min_confidence for name, score in item.concepts)
        for condition in where.concepts
    )


def passing(items: Sequence[Item], where: Filter) -> list[Item]:
    return [item for item in items if passes(item, where)]


@pytest.fixture(params=[*ENGINES, *MILVUS_ENGINES])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if request.param == "milvus-embedded":
        return Engine(request.param, _milvus_index(ENGINES["faiss-flat"], str(tmp_path / "milvus.db"), "filters"))
    if request.param == "milvus-server":
        server = request.getfixturevalue("milvus_server")
        collection = f"filters_{request.node.name.split('[')[0][5:40]}_{next(_COLLECTIONS)}"
        return Engine(request.param, _milvus_index(ENGINES["faiss-flat"], server.uri, collection))
    return Engine(request.param, _sdr_index(ENGINES[request.param], tmp_path / "index"))


@pytest.fixture
def index(engine: Engine) -> Iterator[ItemIndex]:
    """An open index holding CATALOGUE; closed after the test."""
    opened = engine.open()
    opened.add_many(CATALOGUE)
    yield opened
    opened.close()


def _beyond_the_top(query: Sdr, k: int) -> Filter:
    """A filter passing only items ranked after the unfiltered top k (by their "n")."""
    ranked = brute_force(CATALOGUE, query, 60)
    numbers = tuple(item_id.split("-")[1] for item_id, _ in ranked[k:])
    return Filter(metadata=(("n", numbers),))


FILTERS = {
    "a quarter": Filter(metadata=(("album", ("a",)),)),
    "a value set (OR within a key)": Filter(metadata=(("album", ("a", "c")),)),
    "every value": Filter(metadata=(("album", ALBUMS),)),
    "a tenth": Filter(metadata=(("by", ("ann",)),)),
    "two keys (AND)": Filter(metadata=(("album", ("a", "b")), ("by", ("ann",)))),
    "three items": Filter(metadata=(("rare", ("yes",)),)),
    "nothing": Filter(metadata=(("album", ("zzz",)),)),
    "a key no item has": Filter(metadata=(("nobody", ("a",)),)),
    "a concept": Filter(concepts=(ConceptCondition("cat"),)),
    "a concept at a confidence": Filter(concepts=(ConceptCondition("dog", 0.5),)),
    "a concept at confidence 0 (has it at all)": Filter(concepts=(ConceptCondition("dog", 0.0),)),
    "a concept at its highest confidence": Filter(concepts=(ConceptCondition("dog", 0.8),)),
    "names compare exactly": Filter(concepts=(ConceptCondition("Dog"),)),
    "metadata and concepts": Filter(
        metadata=(("album", ("a", "b", "c")),), concepts=(ConceptCondition("dog", 0.4), ConceptCondition("cat"))
    ),
}


@pytest.mark.parametrize("name", FILTERS)
def test_filtered_search_is_the_k_best_that_pass(index: ItemIndex, name: str) -> None:
    where = FILTERS[name]
    allowed = passing(CATALOGUE, where)
    for item in CATALOGUE[:6]:
        assert pairs(index.search(item.sdr, k=10, where=where)) == brute_force(allowed, item.sdr, 10)
    query = CATALOGUE[9].sdr
    floor = brute_force(allowed, query, 3)[-1][1] if len(allowed) >= 3 else 1
    got = index.search(query, k=20, min_overlap=floor, where=where)
    assert pairs(got) == brute_force(allowed, query, 20, min_overlap=floor)
    assert all(passes(match.item, where) for match in got)


def test_a_filter_passing_only_items_beyond_the_unfiltered_top_k(index: ItemIndex) -> None:
    for item in CATALOGUE[:5]:
        where = _beyond_the_top(item.sdr, 10)
        got = pairs(index.search(item.sdr, k=10, where=where))
        assert got == brute_force(passing(CATALOGUE, where), item.sdr, 10)
        assert not {item_id for item_id, _ in got} & {item_id for item_id, _ in brute_force(CATALOGUE, item.sdr, 10)}


def test_search_many_under_a_filter(index: ItemIndex) -> None:
    where = FILTERS["metadata and concepts"]
    queries = [item.sdr for item in CATALOGUE[20:26]]
    allowed = passing(CATALOGUE, where)
    assert [pairs(found) for found in index.search_many(queries, k=7, where=where)] == [
        brute_force(allowed, query, 7) for query in queries
    ]
    assert index.search_many([], k=3, where=where) == []


def test_an_empty_filter_filters_nothing(index: ItemIndex) -> None:
    query = CATALOGUE[3].sdr
    assert pairs(index.search(query, k=10, where=Filter())) == brute_force(CATALOGUE, query, 10)
    assert index.list_items(5, where=Filter()).total == len(CATALOGUE)


def test_filters_follow_adds_replaces_and_removes(index: ItemIndex) -> None:
    where = FILTERS["a tenth"]
    query = CATALOGUE[0].sdr
    index.search(query, k=5, where=where)  # the filter has been answered once before the writes
    rng = np.random.default_rng(5)
    late = Item("late-ann", query, (("dog", 0.9),), {"by": "ann", "album": "a"})
    index.add_many([late, Item("late-bob", random_sdr(rng, 80), (), {"by": "bob"})])
    moved = CATALOGUE[10]  # by ann; replaced by an item that is not
    index.add_many([Item(moved.id, moved.sdr, moved.concepts, {"album": "b"})])
    index.remove(CATALOGUE[20].id)
    order = [*(item for item in CATALOGUE if item.id not in (moved.id, CATALOGUE[20].id)), late]
    allowed = passing(order, where)
    assert pairs(index.search(query, k=12, where=where)) == brute_force(allowed, query, 12)
    assert index.list_items(50, where=where).total == len(allowed)
    tagged = Filter(concepts=(ConceptCondition("dog", 0.85),))
    assert "late-ann" in [match.id for match in index.search(query, k=3, where=tagged)]


def test_neighbours_under_a_filter(index: ItemIndex) -> None:
    where = FILTERS["a value set (OR within a key)"]
    for item in CATALOGUE[:4]:  # albums a, b, c, d: the item itself passes or not, it is left out either way
        found, matches = index.neighbours(item.id, k=8, where=where)
        assert found.id == item.id
        assert pairs(matches) == brute_force(passing(CATALOGUE, where), item.sdr, 8, exclude=item.id)
    _, none = index.neighbours(CATALOGUE[0].id, k=5, where=FILTERS["nothing"])
    assert none == []


def _photos(count: int) -> list[Item]:
    rng = np.random.default_rng(77)
    return [
        Item(
            f"photo-{n}",
            random_sdr(rng, 150),
            (("photo", 1.0),),
            {"album": ALBUMS[n % 4], "n": str(1000 + n)},
            {VISUAL: random_sdr(rng, 200)},
        )
        for n in range(count)
    ]


def _blend_oracle(items: Sequence[Item], semantic: Sdr, visual: Sdr, weight: float, k: int) -> list[tuple[str, float]]:
    scored = []
    for order, item in enumerate(items):
        look = item.spaces.get(VISUAL)
        score = (1 - weight) * semantic.overlap(item.sdr) + weight * (visual.overlap(look) if look else 0)
        scored.append((item.id, score, order))
    scored.sort(key=lambda entry: (-entry[1], entry[2]))
    return [(item_id, score) for item_id, score, _ in scored[:k]]


def test_visual_and_blended_searches_under_a_filter(index: ItemIndex) -> None:
    photos = _photos(40)
    index.add_many(photos)
    stored = [*CATALOGUE, *photos]
    where = Filter(metadata=(("album", ("b", "c")),))
    allowed = passing(stored, where)
    looks = [Item(item.id, item.spaces[VISUAL], item.concepts, item.metadata) for item in allowed if item.spaces]
    query = photos[5].spaces[VISUAL]
    assert pairs(index.search(query, k=6, space=VISUAL, where=where)) == brute_force(looks, query, 6)
    _, near = index.neighbours(photos[6].id, k=4, space=VISUAL, where=where)
    assert pairs(near) == brute_force(looks, photos[6].spaces[VISUAL], 4, exclude=photos[6].id)
    for weight in (0.0, 0.4, 1.0):
        semantic, visual = photos[1].sdr, photos[2].spaces[VISUAL]
        got = index.search_blend(semantic, visual, weight, k=9, where=where)
        assert [(m.id, m.score) for m in got] == _blend_oracle(allowed, semantic, visual, weight, 9)
    excluded = index.search_blend(photos[1].sdr, photos[1].spaces[VISUAL], 0.5, k=5, exclude=photos[1].id, where=where)
    assert photos[1].id not in [m.id for m in excluded] and all(passes(m.item, where) for m in excluded)
    assert index.search_blend(photos[1].sdr, photos[1].spaces[VISUAL], 0.5, k=5, where=FILTERS["nothing"]) == []


# -- listings ------------------------------------------------------------------------------


def _list_all(index: ItemIndex, where: Filter | None, page_size: int) -> list[str]:
    seen: list[str] = []
    page = index.list_items(page_size, where=where)
    seen += [item.id for item in page.items]
    while page.next_page_token:
        page = index.list_items(page_size, page.next_page_token, where=where)
        seen += [item.id for item in page.items]
    return seen


@pytest.mark.parametrize("name", ["a tenth", "a concept at a confidence", "metadata and concepts", "nothing"])
def test_a_filtered_listing_is_newest_first_with_its_total(index: ItemIndex, name: str) -> None:
    where = FILTERS[name]
    allowed = [item.id for item in reversed(passing(CATALOGUE, where))]
    first = index.list_items(4, where=where)
    assert first.total == len(allowed)
    assert [item.id for item in first.items] == allowed[:4]
    assert bool(first.next_page_token) == (len(allowed) > 4)
    assert all(passes(item, where) for item in first.items)
    assert _list_all(index, where, 7) == allowed


def test_a_filtered_listing_pages_across_writes(index: ItemIndex) -> None:
    where = Filter(metadata=(("album", ("a", "b")),), concepts=(ConceptCondition("animal", 0.5),))
    allowed = [item.id for item in reversed(passing(CATALOGUE, where))]
    first = index.list_items(10, where=where)
    assert [item.id for item in first.items] == allowed[:10]
    index.add("newer", CATALOGUE[0].sdr, [("animal", 0.9)], {"album": "a"})  # after the first page: not shown
    gone = allowed[30]
    index.remove(gone)  # not listed yet: skipped
    seen = [item.id for item in first.items]
    token = first.next_page_token
    while token:
        page = index.list_items(10, token, where=where)
        assert page.total == len(allowed)  # + newer - gone
        seen += [item.id for item in page.items]
        token = page.next_page_token
    assert seen == [item_id for item_id in allowed if item_id != gone]
    assert index.list_items(3, where=where).items[0].id == "newer"


def test_a_page_token_is_good_only_with_its_filter(index: ItemIndex) -> None:
    tenth, quarter = FILTERS["a tenth"], FILTERS["a quarter"]
    token = index.list_items(3, where=tenth).next_page_token
    unfiltered = index.list_items(3).next_page_token
    assert token and unfiltered
    same = Filter(metadata=(("by", ("ann",)),))  # equal to `tenth`, built again
    assert index.list_items(3, token, where=same).items
    for given, where in ((token, quarter), (token, None), (unfiltered, tenth)):
        with pytest.raises(InvalidInputError) as refused:
            index.list_items(3, given, where=where)
        assert refused.value.field == "page_token"
    for bad in ("garbage", "l12.nothex", token + "0", "l-1." + token.split(".")[-1]):
        with pytest.raises(InvalidInputError) as refused:
            index.list_items(3, bad, where=tenth)
        assert refused.value.field == "page_token"


# -- custom concepts -----------------------------------------------------------------------


def test_concepts_are_stored_listed_redefined_and_removed(engine: Engine) -> None:
    opened = engine.open()
    try:
        assert opened.list_concepts() == []
        stored = opened.put_concept("storefront", '{"sdr": [1, 2, 3], "threshold": 0.4}')
        assert (stored.name, stored.document) == ("storefront", '{"sdr": [1, 2, 3], "threshold": 0.4}')
        assert stored.updated_ms > 0
        opened.put_concept("grid shots", "{}")
        opened.put_concept("Ünïcode ✓", '{"note": "ünï"}')
        assert [c.name for c in opened.list_concepts()] == sorted(["storefront", "grid shots", "Ünïcode ✓"])
        again = opened.put_concept("storefront", '{"sdr": [4], "threshold": 0.5}')  # redefined: replaced
        assert again.updated_ms >= stored.updated_ms
        assert opened.get_concept("storefront").document == '{"sdr": [4], "threshold": 0.5}'
        assert len(opened.list_concepts()) == 3
        opened.remove_concept("grid shots")
        with pytest.raises(NotFoundError) as missing:
            opened.get_concept("grid shots")
        assert missing.value.resource == "grid shots"
        with pytest.raises(NotFoundError) as missing:
            opened.remove_concept("grid shots")
        assert missing.value.resource == "grid shots"
        big = '"' + "x" * 700_000 + '"'  # large documents are kept whole
        opened.put_concept("big", big)
    finally:
        opened.close()
    reopened = engine.open()
    try:
        assert [(c.name, c.document) for c in reopened.list_concepts()] == [
            ("big", big),
            ("storefront", '{"sdr": [4], "threshold": 0.5}'),
            ("Ünïcode ✓", '{"note": "ünï"}'),
        ]
        assert reopened.get_concept("Ünïcode ✓").document == '{"note": "ünï"}'
    finally:
        reopened.close()


def test_bad_concepts_are_refused_and_change_nothing(engine: Engine) -> None:
    opened = engine.open()
    try:
        opened.put_concept("kept", '{"v": 1}')
        too_big = "x" * ((1 << 20) + 1)
        cases: list[tuple[Callable[[], object], str]] = [
            (lambda: opened.put_concept("kept", too_big), "document"),
            (lambda: opened.put_concept("kept", 12), "document"),  # type: ignore[arg-type]
            (lambda: opened.put_concept("kept", "\ud800"), "document"),  # not encodable text
            (lambda: opened.put_concept("", "{}"), "name"),
            (lambda: opened.put_concept("   ", "{}"), "name"),
            (lambda: opened.put_concept("x" * 201, "{}"), "name"),
            (lambda: opened.put_concept("tab\there", "{}"), "name"),
            (lambda: opened.get_concept(""), "name"),
            (lambda: opened.remove_concept("x" * 201), "name"),
        ]
        for call, field in cases:
            with pytest.raises(InvalidInputError) as refused:
                call()
            assert refused.value.field == field
        assert [(c.name, c.document) for c in opened.list_concepts()] == [("kept", '{"v": 1}')]
        with pytest.raises(NotFoundError):
            opened.get_concept("never defined")
    finally:
        opened.close()


# -- bad filters ---------------------------------------------------------------------------

BAD_FILTERS: dict[str, tuple[object, str]] = {
    "a reserved key": (Filter(metadata=(("_x", ("1",)),)), "filter.metadata[0].key"),
    "an over-long key": (Filter(metadata=(("k" * 257, ("1",)),)), "filter.metadata[0].key"),
    "an empty key": (Filter(metadata=(("", ("1",)),)), "filter.metadata[0].key"),
    "the same key twice": (Filter(metadata=(("a", ("1",)), ("a", ("2",)))), "filter.metadata[1].key"),
    "a value that is not a string": (Filter(metadata=(("album", ("a", 3)),)), "filter.metadata[0].values"),  # type: ignore[arg-type]
    "no values": (Filter(metadata=(("album", ()),)), "filter.metadata[0].values"),
    "a value longer than any stored": (Filter(metadata=(("album", ("v" * 300,)),)), "filter.metadata[0].values"),
    "values not in a tuple": (Filter(metadata=(("album", "a"),)), "filter.metadata[0].values"),  # type: ignore[arg-type]
    "min_confidence above 1": (Filter(concepts=(ConceptCondition("dog", 1.5),)), "filter.concepts[0].min_confidence"),
    "min_confidence below 0": (
        Filter(concepts=(ConceptCondition("cat"), ConceptCondition("dog", -0.1))),
        "filter.concepts[1].min_confidence",
    ),
    "min_confidence NaN": (Filter(concepts=(ConceptCondition("dog", math.nan),)), "filter.concepts[0].min_confidence"),
    "min_confidence a bool": (Filter(concepts=(ConceptCondition("dog", True),)), "filter.concepts[0].min_confidence"),
    "an empty concept name": (Filter(concepts=(ConceptCondition(""),)), "filter.concepts[0].name"),
    "not a Filter": ({"album": "a"}, "filter"),
}


@pytest.mark.parametrize("name", BAD_FILTERS)
def test_a_bad_filter_is_refused_with_its_field_and_changes_nothing(index: ItemIndex, name: str) -> None:
    where, field = BAD_FILTERS[name]
    item = CATALOGUE[4]
    calls: list[Callable[[], object]] = [
        lambda: index.search(item.sdr, k=5, where=where),  # type: ignore[arg-type]
        lambda: index.search_many([item.sdr], k=5, where=where),  # type: ignore[arg-type]
        lambda: index.neighbours(item.id, k=5, where=where),  # type: ignore[arg-type]
        lambda: index.search_blend(item.sdr, item.sdr, 0.5, k=5, where=where),  # type: ignore[arg-type]
        lambda: index.list_items(5, where=where),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(InvalidInputError) as refused:
            call()
        assert refused.value.field == field
    assert index.count() == len(CATALOGUE)
    assert pairs(index.search(item.sdr, k=5)) == brute_force(CATALOGUE, item.sdr, 5)
    assert index.list_items(3).items[0].id == CATALOGUE[-1].id


def test_a_filter_does_not_change_what_is_stored(index: ItemIndex) -> None:
    where = FILTERS["metadata and concepts"]
    for _ in range(2):
        index.search(CATALOGUE[0].sdr, k=5, where=where)
        index.list_items(5, where=where)
    assert index.count() == len(CATALOGUE) and index.count(SEMANTIC) == len(CATALOGUE)
    assert dict(index.get(CATALOGUE[12].id).metadata) == dict(CATALOGUE[12].metadata)


def test_hostile_keys_and_values_match_exactly(index: ItemIndex) -> None:
    rng = np.random.default_rng(8)
    odd = {
        'quote"': 'it\'s "x"',
        "back\\slash": "a\\b",
        "percent%": "100%_",
        "ünï ✓": "✓",
        "like": "%",
        "space key": " padded ",
    }
    stored = [Item(f"odd-{n}", random_sdr(rng, 60), (), {key: value}) for n, (key, value) in enumerate(odd.items())]
    index.add_many(stored)
    index.add("near-miss", random_sdr(rng, 60), [], {"like": "x", "percent%": "100%"})
    for item, (key, value) in zip(stored, odd.items(), strict=True):
        where = Filter(metadata=((key, (value,)),))
        assert [found.id for found in index.list_items(10, where=where).items] == [item.id]
        assert [m.id for m in index.search(item.sdr, k=5, where=where)] == [item.id]
    assert index.list_items(10, where=Filter(metadata=(("space key", ("padded",)),))).total == 0
