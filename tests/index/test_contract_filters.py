"""The ItemIndex contract for filters, listings and custom concepts, run against every engine.

The engines are those of ``conftest.py`` (FAISS flat and trained IVF,
milvus-lite, a real Milvus server). Every filtered answer is held against the
brute-force oracle over the items that pass: exact, the k best that pass, never
the survivors of an unfiltered top k.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from image2sdr.server.errors import NotFoundError
from image2sdr.server.index import SEMANTIC, VISUAL, ConceptCondition, Filter, Item, ItemIndex
from image2sdr.server.index.filters import passes
from image2sdr.server.sdr import Sdr
from tests.helpers.index import brute_force, clustered_items, pairs, passing, random_sdr
from tests.helpers.index_engines import Mirror, Stores

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


@pytest.fixture(scope="module")
def mirror(stores: Stores) -> Iterator[Mirror]:
    """This module's seeded index (CATALOGUE) and what it holds."""
    seeded = Mirror(stores.engine, stores.new(), CATALOGUE)
    yield seeded
    seeded.close()


@pytest.fixture
def index(mirror: Mirror) -> ItemIndex:
    return mirror.index


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
def test_filtered_search_is_the_k_best_that_pass(mirror: Mirror, name: str) -> None:
    where = FILTERS[name]
    allowed = passing(mirror.items, where)
    for item in CATALOGUE[:6]:
        assert pairs(mirror.index.search(item.sdr, k=10, where=where)) == brute_force(allowed, item.sdr, 10)
    query = CATALOGUE[9].sdr
    floor = brute_force(allowed, query, 3)[-1][1] if len(allowed) >= 3 else 1
    got = mirror.index.search(query, k=20, min_overlap=floor, where=where)
    assert pairs(got) == brute_force(allowed, query, 20, min_overlap=floor)
    assert all(passes(match.item, where) for match in got)


def test_a_filter_passing_only_items_beyond_the_unfiltered_top_k(mirror: Mirror) -> None:
    for item in CATALOGUE[:5]:
        where = _beyond_the_top(item.sdr, 10)
        got = pairs(mirror.index.search(item.sdr, k=10, where=where))
        assert got == brute_force(passing(mirror.items, where), item.sdr, 10)
        top = brute_force(mirror.items, item.sdr, 10)
        assert not {item_id for item_id, _ in got} & {item_id for item_id, _ in top}


def test_search_many_under_a_filter(mirror: Mirror) -> None:
    where = FILTERS["metadata and concepts"]
    queries = [item.sdr for item in CATALOGUE[20:26]]
    allowed = passing(mirror.items, where)
    assert [pairs(found) for found in mirror.index.search_many(queries, k=7, where=where)] == [
        brute_force(allowed, query, 7) for query in queries
    ]
    assert mirror.index.search_many([], k=3, where=where) == []


def test_an_empty_filter_filters_nothing(mirror: Mirror) -> None:
    query = CATALOGUE[3].sdr
    assert pairs(mirror.index.search(query, k=10, where=Filter())) == brute_force(mirror.items, query, 10)
    assert mirror.index.list_items(5, where=Filter()).total == len(mirror.items)


def test_a_filter_does_not_change_what_is_stored(mirror: Mirror) -> None:
    where = FILTERS["metadata and concepts"]
    for _ in range(2):
        mirror.index.search(CATALOGUE[0].sdr, k=5, where=where)
        mirror.index.list_items(5, where=where)
    assert mirror.index.count() == mirror.index.count(SEMANTIC) == len(mirror.items)
    assert dict(mirror.index.get(CATALOGUE[12].id).metadata) == dict(CATALOGUE[12].metadata)


def test_neighbours_under_a_filter(mirror: Mirror) -> None:
    where = FILTERS["a value set (OR within a key)"]
    for item in CATALOGUE[:4]:  # albums a, b, c, d: the item itself passes or not, it is left out either way
        found, matches = mirror.index.neighbours(item.id, k=8, where=where)
        assert found.id == item.id
        assert pairs(matches) == brute_force(passing(mirror.items, where), item.sdr, 8, exclude=item.id)
    _, none = mirror.index.neighbours(CATALOGUE[0].id, k=5, where=FILTERS["nothing"])
    assert none == []


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
def test_a_filtered_listing_is_newest_first_with_its_total(mirror: Mirror, name: str) -> None:
    where = FILTERS[name]
    allowed = [item.id for item in reversed(passing(mirror.items, where))]
    first = mirror.index.list_items(4, where=where)
    assert first.total == len(allowed)
    assert [item.id for item in first.items] == allowed[:4]
    assert bool(first.next_page_token) == (len(allowed) > 4)
    assert all(passes(item, where) for item in first.items)
    assert _list_all(mirror.index, where, 7) == allowed


def test_a_page_token_of_a_filter_continues_that_filter(mirror: Mirror) -> None:
    token = mirror.index.list_items(3, where=FILTERS["a tenth"]).next_page_token
    same = Filter(metadata=(("by", ("ann",)),))  # equal to "a tenth", built again
    allowed = [item.id for item in reversed(passing(mirror.items, same))]
    assert [item.id for item in mirror.index.list_items(3, token, where=same).items] == allowed[3:6]


# -- writes under filters (each test holds the index to the mirror of what it stores) -------------


def test_filters_follow_adds_replaces_and_removes(mirror: Mirror) -> None:
    where = FILTERS["a tenth"]
    query = CATALOGUE[0].sdr
    mirror.index.search(query, k=5, where=where)  # the filter has been answered once before the writes
    rng = np.random.default_rng(5)
    late = Item("late-ann", query, (("dog", 0.9),), {"by": "ann", "album": "a"})
    mirror.add_many([late, Item("late-bob", random_sdr(rng, 80), (), {"by": "bob"})])
    moved = CATALOGUE[10]  # by ann; replaced by an item that is not
    mirror.add_many([Item(moved.id, moved.sdr, moved.concepts, {"album": "b"})])
    mirror.remove(CATALOGUE[20].id)
    allowed = passing(mirror.items, where)
    assert pairs(mirror.index.search(query, k=12, where=where)) == brute_force(allowed, query, 12)
    assert mirror.index.list_items(50, where=where).total == len(allowed)
    tagged = Filter(concepts=(ConceptCondition("dog", 0.85),))
    assert "late-ann" in [match.id for match in mirror.index.search(query, k=3, where=tagged)]


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


def test_visual_and_blended_searches_under_a_filter(mirror: Mirror) -> None:
    photos = _photos(40)
    mirror.add_many(photos)
    index = mirror.index
    where = Filter(metadata=(("album", ("b", "c")),))
    allowed = passing(mirror.items, where)
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


def test_a_filtered_listing_pages_across_writes(mirror: Mirror) -> None:
    where = Filter(metadata=(("album", ("a", "b")),), concepts=(ConceptCondition("animal", 0.5),))
    allowed = [item.id for item in reversed(passing(mirror.items, where))]
    first = mirror.index.list_items(10, where=where)
    assert [item.id for item in first.items] == allowed[:10]
    newer = Item("newer", CATALOGUE[0].sdr, (("animal", 0.9),), {"album": "a"})
    mirror.add_many([newer])  # after the first page: not shown
    gone = allowed[30]
    mirror.remove(gone)  # not listed yet: skipped
    seen = [item.id for item in first.items]
    token = first.next_page_token
    while token:
        page = mirror.index.list_items(10, token, where=where)
        assert page.total == len(allowed)  # + newer - gone
        seen += [item.id for item in page.items]
        token = page.next_page_token
    assert seen == [item_id for item_id in allowed if item_id != gone]
    assert mirror.index.list_items(3, where=where).items[0].id == "newer"


def test_hostile_keys_and_values_match_exactly(mirror: Mirror) -> None:
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
    mirror.add_many(stored)
    mirror.add_many([Item("near-miss", random_sdr(rng, 60), (), {"like": "x", "percent%": "100%"})])
    for item, (key, value) in zip(stored, odd.items(), strict=True):
        where = Filter(metadata=((key, (value,)),))
        assert [found.id for found in mirror.index.list_items(10, where=where).items] == [item.id]
        assert [m.id for m in mirror.index.search(item.sdr, k=5, where=where)] == [item.id]
    assert mirror.index.list_items(10, where=Filter(metadata=(("space key", ("padded",)),))).total == 0


# -- custom concepts -----------------------------------------------------------------------


def test_concepts_are_stored_listed_redefined_removed_and_kept(mirror: Mirror) -> None:
    opened = mirror.index
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
    with pytest.raises(NotFoundError):
        opened.get_concept("never defined")
    big = '"' + "x" * 700_000 + '"'  # large documents are kept whole
    opened.put_concept("big", big)
    reopened = mirror.reopen()
    assert [(c.name, c.document) for c in reopened.list_concepts()] == [
        ("big", big),
        ("storefront", '{"sdr": [4], "threshold": 0.5}'),
        ("Ünïcode ✓", '{"note": "ünï"}'),
    ]
    assert reopened.get_concept("Ünïcode ✓").document == '{"note": "ünï"}'
