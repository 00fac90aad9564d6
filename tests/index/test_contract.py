"""What every engine must do: store, read back, search exactly, find copies, blend, list, keep thumbnails.

Run against each engine (``conftest.py``): FAISS flat and trained IVF, milvus-lite,
a real Milvus server. Each module seeds one index per engine and the tests share
it; a test that writes uses its own ids, through the ``Mirror``, so every answer
is held to the brute-force oracle over what is stored. The IVF engine is trained
(it holds more items than ``ivf_train_min``) and probes every list, so its answers
must equal the oracle too. What every engine refuses is tested once, above them
(``test_item_index.py``).
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from image2sdr.server import keypoints
from image2sdr.server.errors import InvalidInputError, NotFoundError
from image2sdr.server.fingerprints import Fingerprint
from image2sdr.server.index import (
    SEMANTIC,
    VISUAL,
    DuplicateKind,
    DuplicateStage,
    DuplicateThresholds,
    Item,
    ItemIndex,
    NoFingerprintError,
    NoSdrInSpaceError,
    OnDuplicate,
    SdrIndex,
)
from image2sdr.server.index.faiss.ivf import IvfBackend
from image2sdr.server.index.milvus.keypoints import POINTS
from image2sdr.server.sdr import Sdr
from tests.helpers.images import sample_photo
from tests.helpers.index import SIZE, brute_force, clustered_items, pairs, random_sdr, semantic_backend
from tests.helpers.index_engines import Mirror, Stores

BASE = clustered_items(260, seed=41, prefix="base")  # above the IVF engine's ivf_train_min


def _fingerprint(seed: int, phash: int | None = None) -> Fingerprint:
    rng = np.random.default_rng(seed)
    bits = int(rng.integers(0, 1 << 63)) * 2 + int(rng.integers(0, 2)) if phash is None else phash
    return Fingerprint(hashlib.sha256(f"image-{seed}".encode()).hexdigest(), bits)


def _photo(item_id: str, seed: int, *, fingerprint: Fingerprint | None = None, look: Sdr | None = None) -> Item:
    rng = np.random.default_rng(seed)
    visual = look if look is not None else random_sdr(rng, 300)
    printed = fingerprint if fingerprint is not None else _fingerprint(seed)
    return Item(item_id, random_sdr(rng, 200), (("photo", 1.0),), {}, {VISUAL: visual}, printed)


PHOTOS = [_photo(f"photo-{n}", 1000 + n) for n in range(40)]  # fingerprints and visual SDRs; BASE has neither


@pytest.fixture(scope="module")
def mirror(stores: Stores) -> Iterator[Mirror]:
    """This module's seeded index (BASE, then PHOTOS) and what it holds."""
    seeded = Mirror(stores.engine, stores.new(), [*BASE, *PHOTOS])
    if stores.engine == "faiss-ivf":  # the contract is run on the trained structure, not on its flat start
        assert isinstance(seeded.index, SdrIndex) and isinstance(semantic_backend(seeded.index), IvfBackend)
    yield seeded
    seeded.close()


@pytest.fixture
def index(mirror: Mirror) -> ItemIndex:
    return mirror.index


def test_an_item_comes_back_as_it_was_added(mirror: Mirror) -> None:
    before = mirror.index.count()
    sdr = random_sdr(np.random.default_rng(1), 60)
    mirror.index.add("fresh", sdr, [("cat", 0.93), ("animal", 0.97)], {"album": "summer", "by": "ann"})
    mirror.items.append(Item("fresh", sdr, (("cat", 0.93), ("animal", 0.97)), {"album": "summer", "by": "ann"}))
    item = mirror.index.get("fresh")
    assert (item.id, item.sdr, item.concepts) == ("fresh", sdr, (("cat", 0.93), ("animal", 0.97)))
    assert dict(item.metadata) == {"album": "summer", "by": "ann"}
    assert item.in_space(SEMANTIC) == sdr and item.spaces == {} and item.fingerprint is None
    assert mirror.index.count() == before + 1
    assert mirror.index.spaces[0] == SEMANTIC
    with pytest.raises(NotFoundError):
        mirror.index.get("nobody")


def test_search_ranks_by_exact_overlap_ties_to_the_earlier(mirror: Mirror) -> None:
    index, stored = mirror.index, mirror.items
    for item in BASE[:12]:
        assert pairs(index.search(item.sdr, k=10)) == brute_force(stored, item.sdr, 10)
    query = BASE[3].sdr
    floor = brute_force(stored, query, 5)[-1][1]
    assert pairs(index.search(query, k=50, min_overlap=floor)) == brute_force(stored, query, 50, min_overlap=floor)
    queries = [item.sdr for item in BASE[20:30]]
    assert [pairs(m) for m in index.search_many(queries, k=7)] == [pairs(index.search(q, k=7)) for q in queries]
    assert index.search_many([], k=3) == []


def test_the_hamming_trap_overlap_not_hamming_decides(mirror: Mirror) -> None:
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
    mirror.add_many([Item("trap-short", short)])
    mirror.add_many([Item("trap-long", long)])
    assert pairs(mirror.index.search(query, k=2))[:2] == [("trap-long", 20), ("trap-short", 10)]
    assert pairs(mirror.index.search(query, k=5)) == brute_force(mirror.items, query, 5)


def test_a_replaced_item_is_one_item_ranked_as_added_last(mirror: Mirror) -> None:
    twin = random_sdr(np.random.default_rng(21), 300)
    mirror.add_many([Item("twin-a", twin)])
    mirror.add_many([Item("twin-b", twin)])
    before = mirror.index.count()
    mirror.add_many([Item("twin-a", twin, (("again", 1.0),))])  # replace: same SDR, now added after twin-b
    assert mirror.index.count() == before
    assert [m.id for m in mirror.index.search(twin, k=2)] == ["twin-b", "twin-a"]
    assert mirror.index.get("twin-a").concepts == (("again", 1.0),)


def test_a_batch_is_stored_whole_and_keeps_the_last_of_a_repeated_id(mirror: Mirror) -> None:
    rng = np.random.default_rng(2)
    batch = [Item(f"batch-{n}", random_sdr(rng, 50)) for n in range(3)]
    last = random_sdr(rng, 70)
    before = mirror.index.count()
    mirror.add_many([*batch, Item("batch-0", last)])
    assert mirror.index.count() == before + 3
    assert mirror.index.get("batch-0").sdr == last
    assert pairs(mirror.index.search(last, k=3)) == brute_force(mirror.items, last, 3)


def test_removed_items_are_gone_and_unknown_ones_not_found(mirror: Mirror) -> None:
    doomed = clustered_items(12, seed=43, prefix="doomed")
    mirror.add_many(doomed)
    before = mirror.index.count()
    for item in doomed:
        mirror.remove(item.id)
    assert mirror.index.count() == before - len(doomed)
    for item in doomed[:5]:
        with pytest.raises(NotFoundError):
            mirror.index.get(item.id)
        assert pairs(mirror.index.search(item.sdr, k=10)) == brute_force(mirror.items, item.sdr, 10)
    with pytest.raises(NotFoundError):
        mirror.index.remove(doomed[0].id)


def test_contains_answers_many_ids_in_order(index: ItemIndex) -> None:
    ids = [BASE[7].id, "missing", BASE[0].id, "also missing", BASE[7].id]
    assert index.contains(ids) == [True, False, True, False, True]
    assert index.contains([]) == []


def test_neighbours_leave_the_item_out(mirror: Mirror) -> None:
    item, matches = mirror.index.neighbours(BASE[9].id, k=6)
    assert item.id == BASE[9].id and item.sdr == BASE[9].sdr
    assert pairs(matches) == brute_force(mirror.items, BASE[9].sdr, 6, exclude=BASE[9].id)
    with pytest.raises(NotFoundError):
        mirror.index.neighbours("nobody", k=3)


def test_everything_acknowledged_is_there_after_a_reopen(mirror: Mirror) -> None:
    mirror.add_many([Item("late", BASE[2].sdr, (("late", 0.5),), {"when": "now"})])
    mirror.add_many([Item("gone", BASE[3].sdr)])
    mirror.remove("gone")
    mirror.index.put_concept("kept concept", '{"v": 1}')
    mirror.add_many([Item("pictured", BASE[4].sdr, thumbnail=_thumb(5, 200_000))])
    expected = [pairs(mirror.index.search(item.sdr, k=8)) for item in BASE[:10]]
    count = mirror.index.count()
    again = mirror.reopen()
    assert again.count() == count
    assert again.contains(["gone", "late"]) == [False, True]
    assert dict(again.get("late").metadata) == {"when": "now"}
    assert [pairs(again.search(item.sdr, k=8)) for item in BASE[:10]] == expected
    assert again.get_concept("kept concept").document == '{"v": 1}'
    assert again.thumbnails(["pictured", "late"]) == {"pictured": _thumb(5, 200_000)}
    again.remove_concept("kept concept")


# -- appearance: fingerprints, duplicates, blends -----------------------------------------


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


def test_counts_per_space(mirror: Mirror) -> None:
    looks = sum(VISUAL in item.spaces for item in mirror.items)
    assert mirror.index.count() == mirror.index.count(SEMANTIC) == len(mirror.items)
    assert mirror.index.count(VISUAL) == looks >= len(PHOTOS)


def test_copies_are_found_by_bytes_by_phash_and_by_look(index: ItemIndex) -> None:
    original = PHOTOS[7]
    assert original.fingerprint is not None
    same = index.find_duplicates(original.fingerprint, original.spaces[VISUAL], k=5)
    assert [(d.id, d.kind, d.phash_distance) for d in same] == [(original.id, DuplicateKind.SAME_BYTES, 0)]
    assert same[0].visual_overlap == 300 and same[0].item.fingerprint == original.fingerprint
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
    assert index.find_duplicates(original.fingerprint, None, k=5, exclude=original.id) == []


def test_duplicates_of_a_stored_item_leave_it_out(mirror: Mirror) -> None:
    original = PHOTOS[3]
    assert original.fingerprint is not None
    mirror.add_many([_photo("copy-of-3", 7, fingerprint=original.fingerprint, look=original.spaces[VISUAL])])
    item, found = mirror.index.duplicates_of(original.id)
    assert item.id == original.id and item.fingerprint == original.fingerprint
    assert [(d.id, d.kind) for d in found] == [("copy-of-3", DuplicateKind.SAME_BYTES)]
    with pytest.raises(NoFingerprintError):
        mirror.index.duplicates_of(BASE[0].id)  # added by SDR alone
    with pytest.raises(NotFoundError):
        mirror.index.duplicates_of("nobody")


def test_on_duplicate_skip_keep_and_replace(mirror: Mirror) -> None:
    original = PHOTOS[11]
    assert original.fingerprint is not None
    again = _photo("upload-1", 11, fingerprint=original.fingerprint, look=original.spaces[VISUAL])
    twice = _photo("upload-2", 12, fingerprint=_fingerprint(12, _flip(_fingerprint(2024).phash, 1)))
    first = _photo("upload-3", 13, fingerprint=_fingerprint(2024))
    outcomes = mirror.add_many([again, first, twice], on_duplicate=OnDuplicate.SKIP)
    assert [(o.id, o.stored) for o in outcomes] == [("upload-1", False), ("upload-3", True), ("upload-2", False)]
    assert outcomes[0].duplicate is not None and outcomes[0].duplicate.id == original.id
    assert outcomes[2].duplicate is not None and outcomes[2].duplicate.id == "upload-3"  # found within the batch
    assert mirror.index.contains(["upload-1", "upload-2", "upload-3"]) == [False, False, True]
    kept = mirror.add_many([again])  # KEEP, the default: stored though a copy
    assert kept[0].stored and mirror.index.contains(["upload-1"]) == [True]
    replaced = mirror.add_many(
        [_photo("upload-4", 14, fingerprint=original.fingerprint)], on_duplicate=OnDuplicate.REPLACE
    )
    assert replaced[0].stored and set(replaced[0].replaced) == {original.id, "upload-1"}
    assert mirror.index.contains([original.id, "upload-1", "upload-4"]) == [False, False, True]
    plain = mirror.add_many([Item("no-image", BASE[0].sdr)], on_duplicate=OnDuplicate.SKIP)
    assert plain[0].stored  # no fingerprint: nothing to compare, stored
    mirror.add_many([original])  # back, for the tests after this one (now the newest)


def test_concurrent_uploads_of_one_photo_store_one_under_skip(mirror: Mirror) -> None:
    printed = _fingerprint(4242)
    uploads = [_photo(f"race-{n}", 500 + n, fingerprint=printed) for n in range(6)]
    start = threading.Barrier(len(uploads))
    results: list[bool] = []

    def upload(item: Item) -> None:
        start.wait()
        results.extend(outcome.stored for outcome in mirror.index.add_many([item], on_duplicate=OnDuplicate.SKIP))

    threads = [threading.Thread(target=upload, args=(item,)) for item in uploads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]
    present = mirror.index.contains([item.id for item in uploads])
    assert sum(present) == 1
    mirror.items.append(next(item for item, there in zip(uploads, present, strict=True) if there))


def _blend_oracle(items: list[Item], semantic: Sdr, visual: Sdr, weight: float, k: int) -> list[tuple[str, float]]:
    scored = []
    for order, item in enumerate(items):
        look = item.spaces.get(VISUAL)
        score = (1 - weight) * semantic.overlap(item.sdr) + weight * (visual.overlap(look) if look else 0)
        scored.append((item.id, score, order))
    scored.sort(key=lambda entry: (-entry[1], entry[2]))
    return [(item_id, score) for item_id, score, _ in scored[:k]]


def test_blended_search_is_the_exact_weighted_order(mirror: Mirror) -> None:
    index = mirror.index
    for n, weight in enumerate((0.0, 0.3, 0.5, 1.0)):
        query = PHOTOS[n * 5]
        semantic, visual = BASE[n].sdr, _shifted(query.spaces[VISUAL], 0.5, seed=n)
        got = index.search_blend(semantic, visual, weight, k=12)
        assert [(m.id, m.score) for m in got] == _blend_oracle(mirror.items, semantic, visual, weight, 12)
        assert all(set(m.overlaps) == {SEMANTIC, VISUAL} for m in got)
    by_id = index.search_blend(PHOTOS[2].sdr, PHOTOS[2].spaces[VISUAL], 0.5, k=5, exclude=PHOTOS[2].id)
    assert PHOTOS[2].id not in [m.id for m in by_id]


def test_visual_search_and_its_neighbours(mirror: Mirror) -> None:
    looks = [Item(item.id, item.spaces[VISUAL]) for item in mirror.items if VISUAL in item.spaces]
    query = _shifted(PHOTOS[9].spaces[VISUAL], 0.6, seed=9)
    assert pairs(mirror.index.search(query, k=5, space=VISUAL)) == brute_force(looks, query, 5)
    _, near = mirror.index.neighbours(PHOTOS[9].id, k=4, space=VISUAL)
    assert pairs(near) == brute_force(looks, PHOTOS[9].spaces[VISUAL], 4, exclude=PHOTOS[9].id)
    with pytest.raises(NoSdrInSpaceError):
        mirror.index.neighbours(BASE[0].id, k=3, space=VISUAL)


def _list_all(index: ItemIndex, page_size: int, token: str = "") -> list[str]:
    seen: list[str] = []
    while True:
        page = index.list_items(page_size, token)
        seen += [item.id for item in page.items]
        token = page.next_page_token
        if not token:
            return seen


def test_listing_pages_newest_first_and_survives_writes(mirror: Mirror) -> None:
    mirror.add_many([Item("listed-old", BASE[0].sdr)])
    mirror.add_many([Item("newest", BASE[0].sdr)])
    first = mirror.index.list_items(100)
    assert first.total == len(mirror.items) and len(first.items) == 100
    newest_first = [item.id for item in reversed(mirror.items)]
    assert [item.id for item in first.items] == newest_first[:100]
    mirror.index.add("after-the-first-page", BASE[1].sdr)  # newer than the listing: not shown again
    mirror.items.append(Item("after-the-first-page", BASE[1].sdr))
    gone = newest_first[150]
    mirror.remove(gone)  # not yet listed: skipped
    seen = [item.id for item in first.items] + _list_all(mirror.index, 100, first.next_page_token)
    assert seen == [item_id for item_id in newest_first if item_id != gone]
    assert _list_all(mirror.index, 1000) == [item.id for item in reversed(mirror.items)]


def test_a_page_token_out_of_range_is_refused(index: ItemIndex) -> None:
    for token in ("m9999999999999999999." + "0" * 32, "m1." + "0" * 32 + "\n", "l-1", "l" + "9" * 20, "garbage"):
        with pytest.raises(InvalidInputError) as refused:
            index.list_items(10, token)
        assert refused.value.field == "page_token"


def test_an_sdr_heavier_than_the_padding_still_ranks_by_overlap(mirror: Mirror) -> None:
    """Codes are padded to equal weight up to equalize_bits (512); an 800-bit SDR is past it.

    Its Hamming distance overstates how far it is, so a search that trusted the
    Hamming order would rank the 40 light items sharing 30-31 bits above it.
    """
    if mirror.engine == "faiss-ivf":
        pytest.skip("trained IVF is approximate past the padding; before training it is the flat engine")
    query = Sdr.from_positions(range(100), SIZE)
    heavy = Sdr.from_positions(list(range(100)) + list(range(2000, 2700)), SIZE)
    lights = [Item(f"light-{n}", Sdr.from_positions(list(range(30 + n % 2)), SIZE)) for n in range(40)]
    mirror.add_many([*lights, Item("heavy", heavy, spaces={VISUAL: heavy})])
    assert pairs(mirror.index.search(query, k=1)) == [("heavy", 100)]
    assert pairs(mirror.index.search(query, k=20)) == brute_force(mirror.items, query, 20)
    blended = mirror.index.search_blend(query, query, 0.5, k=1)
    assert [(match.id, match.score) for match in blended] == [("heavy", 100.0)]


def test_ties_beyond_the_first_candidates_still_go_to_the_earlier(mirror: Mirror) -> None:
    """200 identical items: far more ties than a first batch of candidates holds."""
    twin = Sdr.from_positions(range(5000, 5400, 2), SIZE)
    for start in range(0, 200, 50):  # four writes, so the order is the order added
        mirror.add_many([Item(f"t{n:03d}", twin) for n in range(start, start + 50)])
    assert [match.id for match in mirror.index.search(twin, k=3)] == ["t000", "t001", "t002"]


# -- thumbnails ------------------------------------------------------------------------


def _thumb(number: int, size: int = 600) -> bytes:
    """Distinct bytes standing in for a WebP (the index keeps them as given, never decoded)."""
    return hashlib.sha256(str(number).encode()).digest() * (size // 32) + bytes([number % 256])


def test_a_thumbnail_comes_back_only_through_thumbnails(mirror: Mirror) -> None:
    sdr = random_sdr(np.random.default_rng(7), 60)
    mirror.add_many([Item("pic", sdr, (("cat", 0.9),), thumbnail=_thumb(1)), Item("bare", sdr)])
    index = mirror.index
    assert index.thumbnails(["pic", "bare", "unknown", BASE[0].id]) == {"pic": _thumb(1)}
    assert index.thumbnails([]) == {}
    assert index.thumbnails(["pic", "pic"]) == {"pic": _thumb(1)}
    # Reads of the item itself never carry it: searches and listings stay as lean as before.
    assert index.get("pic").thumbnail is None
    assert index.get("pic") == Item("pic", sdr, (("cat", 0.9),))
    assert all(match.item.thumbnail is None for match in index.search(sdr, k=3))
    assert all(item.thumbnail is None for item in index.list_items(5).items)
    mirror.add_many([Item("empty", sdr, thumbnail=b"")])  # empty bytes: no thumbnail
    assert index.thumbnails(["empty"]) == {}


def test_a_replaced_item_keeps_only_the_thumbnail_of_its_last_add(mirror: Mirror) -> None:
    sdr = random_sdr(np.random.default_rng(8), 60)
    mirror.add_many([Item("pic2", sdr, thumbnail=_thumb(1))])
    mirror.add_many([Item("pic2", sdr, thumbnail=_thumb(2))])
    assert mirror.index.thumbnails(["pic2"]) == {"pic2": _thumb(2)}
    mirror.add_many([Item("pic2", sdr)])  # added again without an image: drawn as its SDR from now on
    assert mirror.index.thumbnails(["pic2"]) == {}
    mirror.add_many([Item("pic2", sdr, thumbnail=_thumb(3)), Item("pic2", sdr, thumbnail=_thumb(4))])
    assert mirror.index.thumbnails(["pic2"]) == {"pic2": _thumb(4)}  # the last occurrence of a repeated id


def test_a_removed_item_takes_its_thumbnail_with_it(mirror: Mirror) -> None:
    sdr = random_sdr(np.random.default_rng(9), 60)
    mirror.add_many([Item("pic3", sdr, thumbnail=_thumb(1)), Item("other3", sdr, thumbnail=_thumb(2))])
    mirror.remove("pic3")
    assert mirror.index.thumbnails(["pic3", "other3"]) == {"other3": _thumb(2)}
    mirror.add_many([Item("pic3", sdr)])
    assert mirror.index.thumbnails(["pic3"]) == {}


def test_a_duplicate_replaced_on_add_takes_its_thumbnail_with_it(mirror: Mirror) -> None:
    sdr = random_sdr(np.random.default_rng(10), 60)
    printed = Fingerprint("ab" * 32, 12345)
    mirror.add_many([Item("first", sdr, fingerprint=printed, thumbnail=_thumb(1))])
    (outcome,) = mirror.add_many(
        [Item("second", sdr, fingerprint=printed, thumbnail=_thumb(2))], on_duplicate=OnDuplicate.REPLACE
    )
    assert outcome.replaced == ("first",)
    assert mirror.index.thumbnails(["first", "second"]) == {"second": _thumb(2)}


def test_thumbnails_of_many_items_large_and_small_are_read_at_once(mirror: Mirror) -> None:
    """1,500 ids: past one SQLite IN (...) chunk and one Milvus key chunk; one thumbnail of 200 kB."""
    sdr = random_sdr(np.random.default_rng(11), 40)
    items = [Item(f"many-{n:04d}", sdr, thumbnail=_thumb(n, 64) if n % 3 else None) for n in range(1500)]
    large = _thumb(7, 200_000)
    mirror.add_many([*items, Item("large", sdr, thumbnail=large)])
    wanted = {item.id: item.thumbnail for item in items if item.thumbnail is not None}
    assert mirror.index.thumbnails([item.id for item in items]) == wanted
    assert mirror.index.thumbnails(["large"]) == {"large": large}


@pytest.fixture(scope="module")
def photo_points() -> tuple[keypoints.ImageKeypoints, keypoints.ImageKeypoints, keypoints.ImageKeypoints]:
    """Keypoints of a real photo, of its copy turned a quarter, and of another photo."""
    found = []
    for name, turn in (("chelsea", None), ("chelsea", Image.Transpose.ROTATE_90), ("coffee", None)):
        with Image.open(io.BytesIO(sample_photo(name))) as image:
            rgb = image.convert("RGB")
        found.append(keypoints.extract(rgb if turn is None else rgb.transpose(turn)))
    return found[0], found[1], found[2]


def test_keypoints_decide_copies_both_ways_and_follow_their_item(
    mirror: Mirror, photo_points: tuple[keypoints.ImageKeypoints, ...]
) -> None:
    original, turned, other = photo_points
    look = random_sdr(np.random.default_rng(12), 300)
    mirror.add_many([replace(_photo("kp-orig", 2000, look=look), keypoints=original)])
    index = mirror.index
    assert index.engine.keypoints(["kp-orig", PHOTOS[0].id]) == {"kp-orig": original.to_blob()}
    assert index.get("kp-orig").keypoints is None  # reads never carry them

    dim = _shifted(look, 0.2, seed=6)  # a look below the share: the thresholds alone miss it
    assert index.find_duplicates(_fingerprint(2001), dim, k=5) == []
    (found,) = index.find_duplicates(_fingerprint(2001), dim, k=5, points=turned)
    assert (found.id, found.kind, found.stage) == ("kp-orig", DuplicateKind.TRANSFORMED, DuplicateStage.KEYPOINTS)
    assert found.inliers >= keypoints.MIN_INLIERS and found.transform is not None
    assert found.transform.rotation_degrees == pytest.approx(90, abs=2)

    # The same look, another picture: the thresholds pass it, the keypoints do not.
    assert [d.stage for d in index.find_duplicates(_fingerprint(2002), look, k=5)] == [DuplicateStage.VISUAL]
    assert index.find_duplicates(_fingerprint(2002), look, k=5, points=other) == []

    mirror.remove("kp-orig")
    assert index.engine.keypoints(["kp-orig"]) == {}
    if mirror.engine == "milvus-embedded":  # a set from before keypoints gains `points` with its first ones
        mirror.add_many([replace(_photo("kp-again", 2003, look=look), keypoints=original)])
        index.engine._client.drop_collection(index.engine._names[POINTS])
        index = mirror.reopen()
        assert index.engine.keypoints(["kp-again"]) == {}  # judged the old way until added again with them
        assert [d.stage for d in index.find_duplicates(_fingerprint(2002), look, k=5, points=other)] == [
            DuplicateStage.VISUAL
        ]
        mirror.add_many([replace(_photo("kp-again", 2003, look=look), keypoints=original)])
        assert index.engine.keypoints(["kp-again"]) == {"kp-again": original.to_blob()}
        mirror.add_many([_photo("kp-again", 2003, look=look)])  # a new version without: the old ones are not read
        assert index.engine.keypoints(["kp-again"]) == {}
