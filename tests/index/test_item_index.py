"""What ``ItemIndex`` refuses, once for every engine: bad ids, metadata, SDRs, k, spaces, filters,
thresholds, page tokens, blend weights, thumbnails and concepts; a closed index; nothing changed by a refusal.

The rules live above the engines (``validation``, ``filters``, ``paging``,
``duplicates``), so they are held here against one cheap engine (FAISS flat);
``test_contract.py`` holds every engine to what it stores and finds.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from image2sdr.server.config import IndexConfig
from image2sdr.server.errors import InvalidInputError, InvalidSdrError, LimitExceededError, NotFoundError
from image2sdr.server.index import (
    DuplicateThresholds,
    Filter,
    IdTooLongError,
    IndexClosedError,
    InvalidIdError,
    Item,
    MetadataTooLargeError,
    SdrIndex,
    TooManyConceptsError,
)
from image2sdr.server.index.values import ConceptCondition
from image2sdr.server.sdr import Sdr
from tests.helpers.index import SIZE, brute_force, clustered_items, pairs, random_sdr

CONFIG = IndexConfig(max_id_length=64, max_metadata_bytes=256, max_concepts=8)
ITEMS = [
    Item(item.id, item.sdr, (("dog", 0.5),), {"album": "ab"[number % 2], **({"by": "ann"} if number % 5 else {})})
    for number, item in enumerate(clustered_items(60, seed=51, prefix="it"))
]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdrIndex]:
    with SdrIndex(tmp_path_factory.mktemp("item-index"), CONFIG) as opened:
        opened.add_many(ITEMS)
        opened.put_concept("kept", '{"v": 1}')
        yield opened


def _unchanged(index: SdrIndex) -> None:
    """A refusal stores nothing and leaves every answer as it was."""
    assert index.count() == len(ITEMS)
    assert pairs(index.search(ITEMS[4].sdr, k=5)) == brute_force(ITEMS, ITEMS[4].sdr, 5)
    assert index.list_items(3).items[0].id == ITEMS[-1].id
    assert [(c.name, c.document) for c in index.list_concepts()] == [("kept", '{"v": 1}')]


def test_the_package_exports_what_it_names() -> None:
    from image2sdr.server import index as package  # noqa: PLC0415

    for name in package.__all__:
        assert hasattr(package, name)


def test_bad_searches_are_refused(index: SdrIndex) -> None:
    query = ITEMS[0].sdr
    for k in (0, -1, 10**9, 2.5, True):
        with pytest.raises(InvalidInputError) as refused:
            index.search(query, k=k)  # type: ignore[arg-type]
        assert refused.value.field == "k"
    with pytest.raises(InvalidInputError) as refused:
        index.search(query, k=3, min_overlap=-1)
    assert refused.value.field == "min_overlap"
    with pytest.raises(InvalidInputError) as refused:
        index.search(query, k=3, space="nowhere")
    assert refused.value.field == "space"
    with pytest.raises(InvalidSdrError):
        index.search(Sdr.from_positions([1, 2], 1024), k=3)
    with pytest.raises(InvalidSdrError) as refused:
        index.search_many([query, Sdr(SIZE, np.array([5, 3], dtype=np.uint32))], k=3)
    assert refused.value.field == "queries[1]"
    with pytest.raises(InvalidInputError):
        index.neighbours(ITEMS[0].id, k=0)
    with pytest.raises(InvalidInputError):
        index.count("nowhere")
    _unchanged(index)


def test_a_batch_with_one_bad_item_stores_none(index: SdrIndex) -> None:
    rng = np.random.default_rng(2)
    good = [Item(f"new-{n}", random_sdr(rng, 50)) for n in range(3)]
    bad_items: list[tuple[type[Exception], Item]] = [
        (InvalidIdError, Item("", random_sdr(rng, 50))),
        (MetadataTooLargeError, Item("big", random_sdr(rng, 50), metadata={"k": "v" * 300})),
        (InvalidSdrError, Item("unsorted", Sdr(SIZE, np.array([5, 3], dtype=np.uint32)))),
        (InvalidInputError, Item("smell", random_sdr(rng, 50), spaces={"smell": random_sdr(rng, 50)})),
        (InvalidInputError, Item("nan", random_sdr(rng, 50), (("a", math.nan),))),
        (LimitExceededError, Item("many", random_sdr(rng, 50), tuple(("a", 1.0) for _ in range(9)))),
    ]
    for error, bad in bad_items:
        with pytest.raises(error):
            index.add_many([*good, bad])
    assert index.contains([item.id for item in good]) == [False, False, False]
    _unchanged(index)


def test_bad_input_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    good = Sdr.from_positions([1, 2, 3], SIZE)
    with SdrIndex(tmp_path, IndexConfig(max_id_length=10, max_metadata_bytes=20, max_concepts=2)) as index:
        index.add("keep", good)
        cases: list[tuple[type[Exception], dict[str, object]]] = [
            (InvalidSdrError, {"sdr": Sdr.from_positions([1], 1024)}),  # wrong size
            (InvalidSdrError, {"sdr": Sdr(SIZE, np.array([5, 3], dtype=np.uint32))}),  # unsorted
            (InvalidSdrError, {"sdr": Sdr(SIZE, np.array([3, 3], dtype=np.uint32))}),  # duplicated
            (InvalidSdrError, {"sdr": Sdr(SIZE, np.array([SIZE], dtype=np.uint32))}),  # out of range
            (InvalidIdError, {"item_id": ""}),
            (InvalidIdError, {"item_id": "   "}),
            (IdTooLongError, {"item_id": "x" * 11}),
            (MetadataTooLargeError, {"metadata": {"k": "v" * 30}}),
            (InvalidInputError, {"metadata": {"k": 1}}),
            (TooManyConceptsError, {"concepts": [("a", 1.0)] * 3}),
            (InvalidInputError, {"concepts": [("a", float("nan"))]}),
        ]
        for error, change in cases:
            arguments: dict[str, object] = {"item_id": "new", "sdr": good, **change}
            with pytest.raises(error):
                index.add(**arguments)  # type: ignore[arg-type]
        for bad_positions in ([5, 3], [3, 3], [SIZE], [-1]):
            with pytest.raises(InvalidSdrError):
                Sdr.from_positions(bad_positions, SIZE)
        for k in (0, -1, 1001, 2.5, True):
            with pytest.raises(InvalidInputError) as caught:
                index.search(good, k=k)  # type: ignore[arg-type]
            assert caught.value.field == "k"
        with pytest.raises(InvalidInputError):
            index.search(good, min_overlap=-1)
        with pytest.raises(InvalidSdrError):
            index.search(Sdr.from_positions([1], 1024))
        with pytest.raises(NotFoundError):
            index.get("unknown")
        assert issubclass(IdTooLongError, InvalidInputError)  # a malformed argument (INVALID_ARGUMENT)
        assert index.count() == 1 and pairs(index.search(good, k=5)) == [("keep", 3)]  # unchanged, serving


def test_check_item_refuses_what_add_would(index: SdrIndex) -> None:
    index.check_item("ok", {"a": "b"})
    for bad_id in ("", "   ", "x" * 65, "nul\x00", 7):
        with pytest.raises(InvalidIdError) as refused:
            index.check_item(bad_id)  # type: ignore[arg-type]
        assert refused.value.field == "id"
    with pytest.raises(LimitExceededError):
        index.check_item("ok", {"k": "v" * 300})
    with pytest.raises(InvalidIdError):
        index.contains(["fine", ""])
    with pytest.raises(InvalidIdError):
        index.thumbnails([""])
    for call in (index.get, index.remove, index.neighbours, index.duplicates_of):
        with pytest.raises(InvalidIdError):
            call("")
    _unchanged(index)


def test_bad_thresholds_and_blend_weights_are_refused(index: SdrIndex) -> None:
    query = ITEMS[0].sdr
    fields = ("max_phash_distance", "max_phash_distance", "min_visual_share", "min_visual_share")
    bad = (DuplicateThresholds(65, 0.5), DuplicateThresholds(-1, 0.5), DuplicateThresholds(4, 1.5))
    for thresholds, field in zip((*bad, DuplicateThresholds(4, True)), fields, strict=True):  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError) as refused:
            index.find_duplicates(None, query, thresholds)
        assert refused.value.field == field
        with pytest.raises(InvalidInputError):
            index.add_many([Item("x", query)], thresholds=thresholds)
    for weight in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(InvalidInputError) as refused:
            index.search_blend(query, query, weight, k=5)  # type: ignore[arg-type]
        assert refused.value.field == "blend_weight"
    _unchanged(index)


def test_a_thumbnail_that_is_not_bytes_or_too_large_is_refused(index: SdrIndex) -> None:
    sdr = random_sdr(np.random.default_rng(12), 40)
    for bad in ("text", bytearray(b"x"), bytes((1 << 20) + 1)):
        with pytest.raises(InvalidInputError) as caught:
            index.add_many([Item("bad", sdr, thumbnail=bad)])  # type: ignore[arg-type]
        assert caught.value.field == "thumbnail"
    assert index.contains(["bad"]) == [False]
    _unchanged(index)


def test_bad_page_sizes_and_tokens_are_refused(index: SdrIndex) -> None:
    for bad in (0, -1, 10**9, 1.5):
        with pytest.raises(InvalidInputError) as refused:
            index.list_items(bad)  # type: ignore[arg-type]
        assert refused.value.field == "page_size"
    tenth, half = Filter(metadata=(("by", ("ann",)),)), Filter(metadata=(("album", ("a",)),))
    token = index.list_items(3, where=tenth).next_page_token
    unfiltered = index.list_items(3).next_page_token
    assert token and unfiltered
    for given, where in ((token, half), (token, None), (unfiltered, tenth), ("not-a-token", None), (12, None)):
        with pytest.raises(InvalidInputError) as refused:
            index.list_items(3, given, where=where)  # type: ignore[arg-type]
        assert refused.value.field == "page_token"
    for bad in ("garbage", "l12.nothex", token + "0", "l-1." + token.split(".")[-1], "." + token.split(".")[-1]):
        with pytest.raises(InvalidInputError) as refused:
            index.list_items(3, bad, where=tenth)
        assert refused.value.field == "page_token"
    _unchanged(index)


def test_bad_concepts_are_refused_and_change_nothing(index: SdrIndex) -> None:
    too_big = "x" * ((1 << 20) + 1)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: index.put_concept("kept", too_big), "document"),
        (lambda: index.put_concept("kept", 12), "document"),  # type: ignore[arg-type]
        (lambda: index.put_concept("kept", "\ud800"), "document"),  # not encodable text
        (lambda: index.put_concept("", "{}"), "name"),
        (lambda: index.put_concept("   ", "{}"), "name"),
        (lambda: index.put_concept("x" * 201, "{}"), "name"),
        (lambda: index.put_concept("tab\there", "{}"), "name"),
        (lambda: index.get_concept(""), "name"),
        (lambda: index.remove_concept("x" * 201), "name"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidInputError) as refused:
            call()
        assert refused.value.field == field
    _unchanged(index)


BAD_FILTERS: dict[str, tuple[object, str]] = {
    "a reserved key": (Filter(metadata=(("_x", ("1",)),)), "filter.metadata[0].key"),
    "an over-long key": (Filter(metadata=(("k" * 257, ("1",)),)), "filter.metadata[0].key"),
    "an empty key": (Filter(metadata=(("", ("1",)),)), "filter.metadata[0].key"),
    "the same key twice": (Filter(metadata=(("a", ("1",)), ("a", ("2",)))), "filter.metadata[1].key"),
    "a value that is not a string": (Filter(metadata=(("album", ("a", 3)),)), "filter.metadata[0].values"),  # type: ignore[arg-type]
    "no values": (Filter(metadata=(("album", ()),)), "filter.metadata[0].values"),
    "a value longer than any stored": (Filter(metadata=(("album", ("v" * 300,)),)), "filter.metadata[0].values"),
    "values not in a tuple": (Filter(metadata=(("album", "a"),)), "filter.metadata[0].values"),  # type: ignore[arg-type]
    "too many values": (Filter(metadata=(("album", tuple(map(str, range(1025)))),)), "filter.metadata[0].values"),
    "too many conditions": (Filter(metadata=tuple((f"k{n}", ("v",)) for n in range(33))), "filter"),
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
def test_a_bad_filter_is_refused_with_its_field_and_changes_nothing(index: SdrIndex, name: str) -> None:
    where, field = BAD_FILTERS[name]
    item = ITEMS[4]
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
    _unchanged(index)


def test_a_closed_index_says_so(tmp_path: Path) -> None:
    opened = SdrIndex(tmp_path, CONFIG)
    opened.add("one", Sdr.from_positions([1, 2, 3], SIZE))
    opened.close()
    opened.close()  # twice is harmless
    assert not opened.available()
    calls: list[Callable[[], object]] = [
        lambda: opened.get("one"),
        lambda: opened.search(Sdr.from_positions([1, 2], SIZE)),
        lambda: opened.add("two", Sdr.from_positions([4], SIZE)),
        lambda: opened.remove("one"),
        opened.count,
        lambda: opened.contains(["one"]),
        lambda: opened.thumbnails(["one"]),
        lambda: opened.list_items(5),
        opened.list_concepts,
        opened.snapshot,
    ]
    for call in calls:
        with pytest.raises(IndexClosedError):
            call()


def test_close_waits_for_the_calls_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that passed the gate finishes on an open engine; calls after close() began are refused."""
    opened = SdrIndex(tmp_path, CONFIG)
    opened.add("one", Sdr.from_positions([1, 2, 3], SIZE))
    inside, release = threading.Event(), threading.Event()
    get = opened.engine.get

    def held(item_id: str) -> object:
        inside.set()
        assert release.wait(60), "the test never released the call"
        return get(item_id)

    monkeypatch.setattr(opened.engine, "get", held)
    answers: list[object] = []
    reader = threading.Thread(target=lambda: answers.append(opened.get("one")))
    reader.start()
    assert inside.wait(60)
    closer = threading.Thread(target=opened.close)
    closer.start()
    gate = opened._gate
    with gate._condition:  # close() has shut the gate: it now waits for the reader
        assert gate._condition.wait_for(lambda: gate._shut, timeout=60)
    with pytest.raises(IndexClosedError):
        opened.count()
    release.set()
    reader.join(60)
    closer.join(60)
    assert [getattr(answer, "id", None) for answer in answers] == ["one"]
