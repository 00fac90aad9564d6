"""The ItemIndex contract: what the service relies on, run against every index implementation.

Each engine below opens a real index on real files. The IVF engine is trained
(it holds more items than ``ivf_train_min``) and probes every list, so its
answers must equal the brute-force oracle too; engines that are approximate by
design would loosen only the search assertions, never the rest.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from image2sdr.server.config import IndexConfig
from image2sdr.server.errors import InvalidInputError, InvalidSdrError, LimitExceededError, NotFoundError
from image2sdr.server.fingerprints import Fingerprint
from image2sdr.server.index import (
    SEMANTIC,
    VISUAL,
    DuplicateKind,
    DuplicateThresholds,
    IndexClosedError,
    InvalidIdError,
    Item,
    ItemIndex,
    MetadataTooLargeError,
    MilvusIndex,
    NoFingerprintError,
    NoSdrInSpaceError,
    OnDuplicate,
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


def _milvus_index(config: IndexConfig, uri: str, collection: str) -> Callable[[], ItemIndex]:
    # Session consistency: this process reads its own writes at once, as the contract
    # expects (Bounded, the default, may lag by a few seconds).
    milvus = config.milvus.model_copy(update={"uri": uri, "collection": collection, "consistency_level": "Session"})
    return lambda: MilvusIndex(config.model_copy(update={"backend": "milvus", "milvus": milvus}), SIZE)


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


MILVUS_ENGINES = ("milvus-embedded", "milvus-server")


@pytest.fixture(params=[*ENGINES, *MILVUS_ENGINES])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if request.param == "milvus-embedded":
        uri = str(tmp_path / "milvus.db")
        return Engine(request.param, _milvus_index(ENGINES["faiss-flat"], uri, "contract"))
    if request.param == "milvus-server":
        server = request.getfixturevalue("milvus_server")
        collection = f"contract_{request.node.name.split('[')[0][5:40]}_{next(_COLLECTIONS)}"
        return Engine(request.param, _milvus_index(ENGINES["faiss-flat"], server.uri, collection))
    return Engine(request.param, _sdr_index(ENGINES[request.param], tmp_path / "index"))


_COLLECTIONS = itertools.count()


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


def test_the_hamming_trap_overlap_not_hamming_decides(engine: Engine) -> None:
    """A short SDR is nearer by Hamming, a longer one shares more bits: overlap must win.

    Every engine searches Hamming codes (FAISS, Milvus's HAMMING); the padding of
    ``codes.py`` and the exact re-rank are what keep this order right.
    """
    query = Sdr.from_positions(range(40), SIZE)
    short = Sdr.from_positions(range(10), SIZE)  # overlap 10, hamming 30
    long = Sdr.from_positions(list(range(20)) + list(range(1000, 1080)), SIZE)  # overlap 20, hamming 100
    assert (
        np.bitwise_count(query.to_bits() ^ short.to_bits()).sum()
        < np.bitwise_count(query.to_bits() ^ long.to_bits()).sum()
    )
    opened = engine.open()
    try:
        opened.add("short", short)
        opened.add("long", long)
        assert pairs(opened.search(query, k=2)) == [("long", 20), ("short", 10)]
    finally:
        opened.close()


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


# -- appearance: fingerprints, duplicates, blends -----------------------------------------


def _fingerprint(seed: int, phash: int | None = None) -> Fingerprint:
    rng = np.random.default_rng(seed)
    bits = int(rng.integers(0, 1 << 63)) * 2 + int(rng.integers(0, 2)) if phash is None else phash
    return Fingerprint(hashlib.sha256(f"image-{seed}".encode()).hexdigest(), bits)


def _flip(phash: int, bits: int) -> int:
    for bit in range(bits):
        phash ^= 1 << (bit * 7)
    return phash


def _shifted(sdr: Sdr, keep: float, seed: int) -> Sdr:
    """An SDR keeping ``keep`` of ``sdr``'s bits, the rest moved elsewhere (a transformed copy's look)."""
    rng = np.random.default_rng(seed)
    kept = rng.choice(sdr.positions, round(keep * sdr.active), replace=False)
    others = np.setdiff1d(np.arange(SIZE), sdr.positions)
    moved = rng.choice(others, sdr.active - kept.size, replace=False)
    return Sdr.from_positions(np.sort(np.concatenate([kept, moved])), SIZE)


def _photo(item_id: str, seed: int, *, fingerprint: Fingerprint | None = None, look: Sdr | None = None) -> Item:
    rng = np.random.default_rng(seed)
    visual = look if look is not None else random_sdr(rng, 300)
    printed = fingerprint if fingerprint is not None else _fingerprint(seed)
    return Item(item_id, random_sdr(rng, 200), (("photo", 1.0),), {}, {VISUAL: visual}, printed)


@pytest.fixture
def photos(index: ItemIndex) -> list[Item]:
    """Forty photos with fingerprints and visual SDRs, stored beside BASE (which has neither)."""
    stored = [_photo(f"photo-{n}", 1000 + n) for n in range(40)]
    index.add_many(stored)
    return stored


def test_counts_per_space(index: ItemIndex, photos: list[Item]) -> None:
    assert index.count() == len(BASE) + 40
    assert index.count(SEMANTIC) == len(BASE) + 40 and index.count(VISUAL) == 40
    with pytest.raises(InvalidInputError):
        index.count("nowhere")


def test_copies_are_found_by_bytes_by_phash_and_by_look(index: ItemIndex, photos: list[Item]) -> None:
    original = photos[7]
    assert original.fingerprint is not None
    same = index.find_duplicates(original.fingerprint, original.spaces[VISUAL], k=5)
    assert [(d.id, d.kind, d.phash_distance) for d in same] == [(original.id, DuplicateKind.SAME_BYTES, 0)]
    assert same[0].visual_overlap == 300
    reencoded = _fingerprint(99, _flip(original.fingerprint.phash, 3))
    near = index.find_duplicates(reencoded, None, k=5)
    assert [(d.id, d.kind, d.phash_distance, d.visual_overlap) for d in near] == [
        (original.id, DuplicateKind.NEAR_EXACT, 3, -1)
    ]
    cropped = _shifted(original.spaces[VISUAL], 0.7, seed=5)
    moved = index.find_duplicates(_fingerprint(98), cropped, k=5)
    assert [(d.id, d.kind) for d in moved] == [(original.id, DuplicateKind.TRANSFORMED)]
    assert moved[0].visual_overlap == 210
    strict = DuplicateThresholds(max_phash_distance=2, min_visual_share=0.8)
    assert index.find_duplicates(reencoded, cropped, strict, k=5) == []
    assert index.find_duplicates(_fingerprint(97), random_sdr(np.random.default_rng(3), 300), k=5) == []
    for bad in (DuplicateThresholds(65, 0.5), DuplicateThresholds(-1, 0.5), DuplicateThresholds(4, 1.5)):
        with pytest.raises(InvalidInputError):
            index.find_duplicates(reencoded, cropped, bad)


def test_duplicates_of_a_stored_item_leave_it_out(index: ItemIndex, photos: list[Item]) -> None:
    original = photos[3]
    assert original.fingerprint is not None
    index.add_many([_photo("copy", 7, fingerprint=original.fingerprint, look=original.spaces[VISUAL])])
    item, found = index.duplicates_of(original.id)
    assert item.id == original.id and item.fingerprint == original.fingerprint
    assert [(d.id, d.kind) for d in found] == [("copy", DuplicateKind.SAME_BYTES)]
    with pytest.raises(NoFingerprintError):
        index.duplicates_of(BASE[0].id)  # added by SDR alone
    with pytest.raises(NotFoundError):
        index.duplicates_of("nobody")


def test_on_duplicate_skip_keep_and_replace(index: ItemIndex, photos: list[Item]) -> None:
    original = photos[11]
    assert original.fingerprint is not None
    again = _photo("upload-1", 11, fingerprint=original.fingerprint, look=original.spaces[VISUAL])
    twice = _photo("upload-2", 12, fingerprint=_fingerprint(12, _flip(_fingerprint(2024).phash, 1)))
    first = _photo("upload-3", 13, fingerprint=_fingerprint(2024))
    outcomes = index.add_many([again, first, twice], on_duplicate=OnDuplicate.SKIP)
    assert [(o.id, o.stored) for o in outcomes] == [("upload-1", False), ("upload-3", True), ("upload-2", False)]
    assert outcomes[0].duplicate is not None and outcomes[0].duplicate.id == original.id
    assert outcomes[2].duplicate is not None and outcomes[2].duplicate.id == "upload-3"  # found within the batch
    assert index.contains(["upload-1", "upload-2", "upload-3"]) == [False, False, True]
    kept = index.add_many([again])  # KEEP, the default: stored though a copy
    assert kept[0].stored and index.contains(["upload-1"]) == [True]
    replaced = index.add_many(
        [_photo("upload-4", 14, fingerprint=original.fingerprint)], on_duplicate=OnDuplicate.REPLACE
    )
    assert replaced[0].stored and set(replaced[0].replaced) == {original.id, "upload-1"}
    assert index.contains([original.id, "upload-1", "upload-4"]) == [False, False, True]
    plain = index.add_many([Item("no-image", BASE[0].sdr)], on_duplicate=OnDuplicate.SKIP)
    assert plain[0].stored  # no fingerprint: nothing to compare, stored


def test_concurrent_uploads_of_one_photo_store_one_under_skip(index: ItemIndex, photos: list[Item]) -> None:
    printed = _fingerprint(4242)
    uploads = [_photo(f"race-{n}", 500 + n, fingerprint=printed) for n in range(6)]
    start = threading.Barrier(len(uploads))
    results: list[bool] = []

    def upload(item: Item) -> None:
        start.wait()
        results.extend(outcome.stored for outcome in index.add_many([item], on_duplicate=OnDuplicate.SKIP))

    threads = [threading.Thread(target=upload, args=(item,)) for item in uploads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]
    assert sum(index.contains([item.id for item in uploads])) == 1


def _blend_oracle(items: list[Item], semantic: Sdr, visual: Sdr, weight: float, k: int) -> list[tuple[str, float]]:
    scored = []
    for order, item in enumerate(items):
        look = item.spaces.get(VISUAL)
        score = (1 - weight) * semantic.overlap(item.sdr) + weight * (visual.overlap(look) if look else 0)
        scored.append((item.id, score, order))
    scored.sort(key=lambda entry: (-entry[1], entry[2]))
    return [(item_id, score) for item_id, score, _ in scored[:k]]


def test_blended_search_is_the_exact_weighted_order(index: ItemIndex, photos: list[Item]) -> None:
    stored = BASE + photos
    for n, weight in enumerate((0.0, 0.3, 0.5, 1.0)):
        query = photos[n * 5]
        semantic, visual = BASE[n].sdr, _shifted(query.spaces[VISUAL], 0.5, seed=n)
        got = index.search_blend(semantic, visual, weight, k=12)
        assert [(m.id, m.score) for m in got] == _blend_oracle(stored, semantic, visual, weight, 12)
        assert all(set(m.overlaps) == {SEMANTIC, VISUAL} for m in got)
    by_id = index.search_blend(photos[2].sdr, photos[2].spaces[VISUAL], 0.5, k=5, exclude=photos[2].id)
    assert photos[2].id not in [m.id for m in by_id]
    for weight in (-0.1, 1.5, float("nan")):
        with pytest.raises(InvalidInputError):
            index.search_blend(photos[0].sdr, photos[0].spaces[VISUAL], weight, k=5)


def test_visual_search_and_its_neighbours(index: ItemIndex, photos: list[Item]) -> None:
    looks = [Item(p.id, p.spaces[VISUAL]) for p in photos]
    query = _shifted(photos[9].spaces[VISUAL], 0.6, seed=9)
    assert pairs(index.search(query, k=5, space=VISUAL)) == brute_force(looks, query, 5)
    _, near = index.neighbours(photos[9].id, k=4, space=VISUAL)
    assert pairs(near) == brute_force(looks, photos[9].spaces[VISUAL], 4, exclude=photos[9].id)
    with pytest.raises(NoSdrInSpaceError):
        index.neighbours(BASE[0].id, k=3, space=VISUAL)


def test_listing_pages_newest_first_and_survives_writes(index: ItemIndex) -> None:
    index.add("newest", BASE[0].sdr)
    first = index.list_items(100)
    assert first.total == len(BASE) + 1 and len(first.items) == 100
    assert [item.id for item in first.items[:2]] == ["newest", BASE[-1].id]
    index.add("after-the-first-page", BASE[1].sdr)  # newer than the listing: not shown again
    index.remove(BASE[-120].id)  # not yet listed: skipped
    seen = [item.id for item in first.items]
    token = first.next_page_token
    while token:
        page = index.list_items(100, token)
        seen += [item.id for item in page.items]
        token = page.next_page_token
    assert len(seen) == len(set(seen)) == len(BASE)  # BASE + newest - the removed one
    assert "after-the-first-page" not in seen and BASE[-120].id not in seen
    assert seen[-1] == BASE[0].id
    for bad in (0, -1, 10**9):
        with pytest.raises(InvalidInputError):
            index.list_items(bad)
    with pytest.raises(InvalidInputError):
        index.list_items(10, "not-a-token")


def test_an_sdr_heavier_than_the_padding_still_ranks_by_overlap(engine: Engine) -> None:
    """Codes are padded to equal weight up to equalize_bits (512); an 800-bit SDR is past it.

    Its Hamming distance overstates how far it is, so a search that trusted the
    Hamming order would rank the 40 light items sharing 30-31 bits above it.
    """
    query = Sdr.from_positions(range(100), SIZE)
    heavy = Sdr.from_positions(list(range(100)) + list(range(2000, 2700)), SIZE)
    opened = engine.open()
    try:
        lights = [Item(f"light-{n}", Sdr.from_positions(list(range(30 + n % 2)), SIZE)) for n in range(40)]
        opened.add_many([*lights, Item("heavy", heavy, spaces={VISUAL: heavy})])
        assert pairs(opened.search(query, k=1)) == [("heavy", 100)]
        blended = opened.search_blend(query, query, 0.5, k=1)
        assert [(match.id, match.score) for match in blended] == [("heavy", 100.0)]
    finally:
        opened.close()


def test_ties_beyond_the_first_candidates_still_go_to_the_earlier(engine: Engine) -> None:
    """200 identical items: far more ties than a first batch of candidates holds."""
    twin = Sdr.from_positions(range(0, 400, 2), SIZE)
    opened = engine.open()
    try:
        for start in range(0, 200, 50):  # four writes, so the order is the order added
            opened.add_many([Item(f"t{n:03d}", twin) for n in range(start, start + 50)])
        assert [match.id for match in opened.search(twin, k=3)] == ["t000", "t001", "t002"]
    finally:
        opened.close()


def test_a_page_token_out_of_range_is_refused(index: ItemIndex) -> None:
    for token in ("m9999999999999999999." + "0" * 32, "m1." + "0" * 32 + "\n", "l-1", "garbage"):
        with pytest.raises(InvalidInputError):
            index.list_items(10, token)


# -- thumbnails ------------------------------------------------------------------------


def _thumb(number: int, size: int = 600) -> bytes:
    """Distinct bytes standing in for a WebP (the index keeps them as given, never decoded)."""
    return hashlib.sha256(str(number).encode()).digest() * (size // 32) + bytes([number % 256])


def test_a_thumbnail_comes_back_only_through_thumbnails(index: ItemIndex) -> None:
    sdr = random_sdr(np.random.default_rng(7), 60)
    index.add_many([Item("pic", sdr, (("cat", 0.9),), thumbnail=_thumb(1)), Item("bare", sdr)])
    assert index.thumbnails(["pic", "bare", "unknown", BASE[0].id]) == {"pic": _thumb(1)}
    assert index.thumbnails([]) == {}
    assert index.thumbnails(["pic", "pic"]) == {"pic": _thumb(1)}
    # Reads of the item itself never carry it: searches and listings stay as lean as before.
    assert index.get("pic").thumbnail is None
    assert index.get("pic") == Item("pic", sdr, (("cat", 0.9),))
    assert all(match.item.thumbnail is None for match in index.search(sdr, k=3))
    assert all(item.thumbnail is None for item in index.list_items(5).items)


def test_a_replaced_item_keeps_only_the_thumbnail_of_its_last_add(index: ItemIndex) -> None:
    sdr = random_sdr(np.random.default_rng(8), 60)
    index.add_many([Item("pic", sdr, thumbnail=_thumb(1))])
    index.add_many([Item("pic", sdr, thumbnail=_thumb(2))])
    assert index.thumbnails(["pic"]) == {"pic": _thumb(2)}
    index.add("pic", sdr)  # added again without an image: drawn as its SDR from now on
    assert index.thumbnails(["pic"]) == {}
    index.add_many([Item("pic", sdr, thumbnail=_thumb(3)), Item("pic", sdr, thumbnail=_thumb(4))])
    assert index.thumbnails(["pic"]) == {"pic": _thumb(4)}  # the last occurrence of a repeated id


def test_a_removed_item_takes_its_thumbnail_with_it(index: ItemIndex) -> None:
    sdr = random_sdr(np.random.default_rng(9), 60)
    index.add_many([Item("pic", sdr, thumbnail=_thumb(1)), Item("other", sdr, thumbnail=_thumb(2))])
    index.remove("pic")
    assert index.thumbnails(["pic", "other"]) == {"other": _thumb(2)}
    index.add("pic", sdr)
    assert index.thumbnails(["pic"]) == {}


def test_a_duplicate_replaced_on_add_takes_its_thumbnail_with_it(index: ItemIndex) -> None:
    sdr = random_sdr(np.random.default_rng(10), 60)
    printed = Fingerprint("ab" * 32, 12345)
    index.add_many([Item("first", sdr, fingerprint=printed, thumbnail=_thumb(1))])
    (outcome,) = index.add_many(
        [Item("second", sdr, fingerprint=printed, thumbnail=_thumb(2))], on_duplicate=OnDuplicate.REPLACE
    )
    assert outcome.replaced == ("first",)
    assert index.thumbnails(["first", "second"]) == {"second": _thumb(2)}


def test_thumbnails_of_many_items_large_and_small_are_read_at_once_and_kept(engine: Engine) -> None:
    """1,500 ids: past one SQLite IN (...) chunk and one Milvus key chunk; one thumbnail of 200 kB."""
    sdr = random_sdr(np.random.default_rng(11), 40)
    items = [Item(f"many-{n:04d}", sdr, thumbnail=_thumb(n, 64) if n % 3 else None) for n in range(1500)]
    large = _thumb(7, 200_000)
    opened = engine.open()
    try:
        opened.add_many([*items, Item("large", sdr, thumbnail=large)])
        wanted = {item.id: item.thumbnail for item in items if item.thumbnail is not None}
        assert opened.thumbnails([item.id for item in items]) == wanted
        assert opened.thumbnails(["large"]) == {"large": large}
    finally:
        opened.close()
    reopened = engine.open()  # durable: read back from disk (or the server) by a new instance
    try:
        assert reopened.thumbnails(["many-0001", "many-0003", "large"]) == {"many-0001": _thumb(1, 64), "large": large}
    finally:
        reopened.close()


def test_a_thumbnail_that_is_not_bytes_or_too_large_is_refused(index: ItemIndex) -> None:
    sdr = random_sdr(np.random.default_rng(12), 40)
    for bad in ("text", bytearray(b"x"), bytes((1 << 20) + 1)):
        with pytest.raises(InvalidInputError) as caught:
            index.add_many([Item("bad", sdr, thumbnail=bad)])  # type: ignore[arg-type]
        assert caught.value.field == "thumbnail"
    assert index.contains(["bad"]) == [False]
    index.add_many([Item("empty", sdr, thumbnail=b"")])  # empty bytes: no thumbnail
    assert index.thumbnails(["empty"]) == {}
    with pytest.raises(InvalidIdError):
        index.thumbnails([""])
