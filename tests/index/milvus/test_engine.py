"""What only the Milvus engine has to get right: versioned writes, listing without ORDER BY, a clean close.

Run on the embedded engine (milvus-lite, a real Milvus in a file); the contract
tests hold it to everything else the FAISS engine does.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from image2sdr.server.config import IndexConfig, MilvusConfig
from image2sdr.server.errors import InvalidInputError, NotFoundError, UpstreamError
from image2sdr.server.fingerprints import Fingerprint
from image2sdr.server.index import SEMANTIC, VISUAL, ConceptCondition, Filter, Item, Match, MilvusIndex, OnDuplicate
from image2sdr.server.index import milvus as milvus_module
from image2sdr.server.index.milvus import calls as calls_module
from image2sdr.server.index.milvus import listing as listing_module
from image2sdr.server.index.milvus import schema as schema_module
from image2sdr.server.index.milvus import search as search_module
from image2sdr.server.index.milvus import writes as writes_module
from image2sdr.server.sdr import Sdr
from tests.helpers.index import SIZE
from tests.helpers.milvus import drop_collections


def _config(path: Path) -> IndexConfig:
    return IndexConfig(backend="milvus", milvus=MilvusConfig(uri=str(path), consistency_level="Session"))


@pytest.fixture
def index(tmp_path: Path) -> Iterator[MilvusIndex]:
    opened = MilvusIndex(_config(tmp_path / "milvus.db"), SIZE)
    yield opened
    opened.close()


def test_a_write_failing_at_its_commit_leaves_stored_items_as_they_were(
    index: MilvusIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    semantic, visual = Sdr.from_positions(range(20), SIZE), Sdr.from_positions(range(100, 140), SIZE)
    index.add_many([Item("a", semantic, spaces={VISUAL: visual})])
    upsert = index.engine._upsert

    def failing_at_the_commit(name: str, rows: list[dict[str, object]]) -> None:
        if name == SEMANTIC:
            raise UpstreamError("Milvus unavailable (at the commit point, in this test)")
        upsert(name, rows)

    monkeypatch.setattr(index.engine, "_upsert", failing_at_the_commit)
    with pytest.raises(UpstreamError):
        index.add_many([Item("a", Sdr.from_positions(range(5), SIZE))])  # a replace without a visual SDR
    with pytest.raises(UpstreamError):
        index.add_many([Item("b", semantic, spaces={VISUAL: Sdr.from_positions(range(200, 240), SIZE)})])
    monkeypatch.undo()
    kept = index.get("a")
    assert (kept.sdr, kept.in_space(VISUAL)) == (semantic, visual)  # the old version, whole
    assert (index.count(), index.count(VISUAL)) == (1, 1)
    assert [
        (m.id, m.overlap) for m in index.search(Sdr.from_positions(range(200, 240), SIZE), min_overlap=1, space=VISUAL)
    ] == []
    index.add_many([Item("b", semantic, spaces={VISUAL: visual})])  # adding it again completes it
    assert index.get("b").in_space(VISUAL) == visual


def test_a_replace_drops_the_old_visual_version(index: MilvusIndex) -> None:
    semantic, visual = Sdr.from_positions(range(20), SIZE), Sdr.from_positions(range(100, 140), SIZE)
    index.add_many([Item("a", semantic, spaces={VISUAL: visual})])
    index.add("a", semantic)  # now without a visual SDR
    assert index.get("a").in_space(VISUAL) is None
    assert index.count(VISUAL) == 0
    assert index.search(visual, min_overlap=1, space=VISUAL) == []


def test_listing_finds_a_page_when_a_burst_outnumbers_one_query(
    index: MilvusIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More items in a moment than a query returns (16384 in Milvus; 20 here): no loop, none skipped."""
    monkeypatch.setattr(listing_module, "MAX_RESULTS", 20)
    burst = [Item(f"burst-{n:02d}", Sdr.from_positions([n], SIZE)) for n in range(50)]
    index.add_many(burst)
    index.add("newest", Sdr.from_positions([99], SIZE))
    seen: list[str] = []
    token = ""
    while True:
        page = index.list_items(7, token)
        seen += [item.id for item in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["newest", *[item.id for item in reversed(burst)]]


def test_close_releases_the_embedded_engine(tmp_path: Path) -> None:
    path = tmp_path / "milvus.db"
    first = MilvusIndex(_config(path), SIZE)
    first.add("kept", Sdr.from_positions([1, 2, 3], SIZE))
    first.close()
    # Another process can open the file now: milvus-lite allows one process per file.
    script = (
        "from image2sdr.server.config import IndexConfig, MilvusConfig\n"
        "from image2sdr.server.index import MilvusIndex\n"
        f"index = MilvusIndex(IndexConfig(backend='milvus', milvus=MilvusConfig(uri={str(path)!r})), {SIZE})\n"
        "print(index.contains(['kept'])[0]); index.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.strip() == "True", done.stderr[-2000:]


def test_the_embedded_engine_outlives_a_crash_of_milvus_lite(tmp_path: Path) -> None:
    """milvus-lite's process may die (it crashes now and then): the next call starts it again, nothing lost."""
    from milvus_lite.server_manager import server_manager_instance as lite  # noqa: PLC0415

    path = tmp_path / "milvus.db"
    milvus = MilvusConfig(uri=str(path), consistency_level="Session", retry_total_s=60.0)
    first = MilvusIndex(IndexConfig(backend="milvus", milvus=milvus), SIZE)
    other = MilvusIndex(IndexConfig(backend="milvus", milvus=milvus.model_copy(update={"collection": "other"})), SIZE)
    try:
        # No other process opens the file: one write lock for its engines makes SKIP exact there, near copies too.
        assert first.engine._write_lock is other.engine._write_lock
        kept = Sdr.from_positions([1, 2, 3], SIZE)
        first.add("kept", kept)
        other.add("theirs", kept)
        process = lite._servers[str(path.resolve())]._p
        process.kill()
        process.wait(timeout=30)
        assert first.contains(["kept", "never"]) == [True, False]
        assert [m.id for m in first.search(kept, 1)] == ["kept"]
        first.add("after", Sdr.from_positions([4, 5, 6], SIZE))
        assert other.contains(["theirs"]) == [True]  # the other engine on the file found the new process
        assert lite._servers[str(path.resolve())]._p.poll() is None
    finally:
        first.close()
        other.close()


# -- issue 13: filters, the layout migration, custom concepts ----------------------------------------

HOSTILE = (
    'say "hi"',
    "it's",
    "back\\slash",
    'back\\"quote',
    "new\nline",
    "tab\tbed",
    "ctrl\x01char",
    "a][b",
    'x" or true or "',
    "] or key != [",
    "slash/and~0",
    "é☃𝄞",
    "",
    " ",
)


@pytest.fixture(params=["embedded", "server"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., MilvusIndex]]:
    """Opens MilvusIndex instances on one collection set: milvus-lite, or the real server.

    The two differ exactly where filters are hard (what their expression parsers
    accept), so these tests run on both.
    """
    embedded = request.param == "embedded"
    uri = str(tmp_path / "milvus.db") if embedded else request.getfixturevalue("milvus_server").uri
    collection = f"m13_{request.node.name.split('[')[0][5:40]}_{next(_COLLECTIONS)}"
    opened: list[MilvusIndex] = []

    def open_index(max_metadata_bytes: int = 512) -> MilvusIndex:
        milvus = MilvusConfig(uri=uri, collection=collection, consistency_level="Session")
        config = IndexConfig(backend="milvus", milvus=milvus, max_metadata_bytes=max_metadata_bytes)
        index = MilvusIndex(config, SIZE)
        opened.append(index)
        return index

    yield open_index
    for index in opened:
        index.close()
    if not embedded:  # the server unloads what is dropped; collections left behind pile up in its memory
        drop_collections(uri, f"{collection}_")


_COLLECTIONS = itertools.count()


def _ids(matches: Sequence[Match]) -> list[str]:
    return [match.id for match in matches]


def _a_name(text: str) -> bool:
    """Whether the API stores ``text`` as a name (a metadata key or concept name): no Cc, Cf, Zl, Zp."""
    return bool(text) and not any(unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"} for char in text)


def test_hostile_keys_and_values_match_exactly_and_inject_nothing(engine: Callable[..., MilvusIndex]) -> None:
    index = engine()
    sdr = Sdr.from_positions(range(30), SIZE)
    for number, text in enumerate(HOSTILE):
        index.add(f"value-{number}", sdr, [(text, 0.75)] if _a_name(text) else [], {"k": text})
        if _a_name(text):
            index.add(f"key-{number}", sdr, (), {text: "v"})
    everyone = index.count()
    for number, text in enumerate(HOSTILE):
        assert _ids(index.search(sdr, k=50, where=Filter(metadata=(("k", (text,)),)))) == [f"value-{number}"], text
        if _a_name(text) and text.strip():  # a name check_concept_name accepts
            by_concept = Filter(concepts=(ConceptCondition(text, 0.75),))
            assert _ids(index.search(sdr, k=50, where=by_concept)) == [f"value-{number}"], text
        if _a_name(text):
            assert _ids(index.search(sdr, k=50, where=Filter(metadata=((text, ("v",)),)))) == [f"key-{number}"], text
    assert index.list_items(100, where=Filter(metadata=(("k", HOSTILE),))).total == len(HOSTILE)
    assert index.list_items(100, where=Filter(metadata=(("k", ('x" or true or "',)),))).total == 1
    assert index.count() == everyone  # nothing was written by a filter


def test_the_filter_index_of_the_largest_default_item_fits_and_a_larger_one_is_refused_whole(
    engine: Callable[..., MilvusIndex],
) -> None:
    """The server takes at most 65536 bytes of JSON per field: ~2000 tiny metadata pairs and 200 concepts fit."""
    index = engine(max_metadata_bytes=4096)  # the default
    keys = [chr(first) + chr(second) for first in range(65, 91) for second in range(65, 123)][:1365]
    metadata = dict.fromkeys(keys, "v")  # 4095 bytes: as many pairs as the default allows, nearly
    concepts = [(f"concept-{number:03d}", 0.5) for number in range(200)]
    sdr, visual = Sdr.from_positions(range(10), SIZE), Sdr.from_positions(range(50), SIZE)
    index.add_many([Item("full", sdr, tuple(concepts), metadata, {VISUAL: visual})])
    where = Filter(metadata=((keys[-1], ("v",)),), concepts=(ConceptCondition("concept-199", 0.5),))
    assert _ids(index.search(sdr, where=where)) == ["full"]
    too_long = tuple((f"{'long-term-' * 40}{number}", 0.5) for number in range(200))  # ~80 kB of terms
    with pytest.raises(InvalidInputError) as refused:
        index.add_many([Item("over", sdr, too_long, {}, {VISUAL: visual})])
    assert refused.value.field == "concepts"
    assert (index.count(), index.count(VISUAL), index.contains(["over"])) == (1, 1, [False])


def test_filtered_searches_are_the_best_passing_items_in_every_space(
    engine: Callable[..., MilvusIndex], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Semantic (filter in Milvus), visual with few passing (key restriction), visual broad (checked
    per candidate), and visual broad where the window proves nothing (searched again by key chunks)."""
    index = engine()
    items = _catalog(120)
    index.add_many(items)
    rare = Filter(metadata=(("shop", ("s3",)),), concepts=(ConceptCondition("dog", 0.5),))
    broad = Filter(metadata=(("shop", ("s0", "s1", "s2")),))
    probe = items[7]
    visual = probe.in_space(VISUAL)
    assert visual is not None
    plans = []
    for prefilter in (4096, 5):  # every visual filter restricted by keys; then the broad ones per candidate
        monkeypatch.setattr(search_module, "_PREFILTER_MAX", prefilter)
        for where in (rare, broad):
            plans.append(bool(index.engine._plan(VISUAL, where).fallback))
            for space, query in ((SEMANTIC, probe.sdr), (VISUAL, visual)):
                expected = _oracle(items, query, space, where, 10)
                assert [(m.id, m.overlap) for m in index.search(query, k=10, space=space, where=where)] == expected
                _, near = index.neighbours(probe.id, k=10, space=space, where=where)
                assert [(m.id, m.overlap) for m in near] == _oracle(items, query, space, where, 10, exclude=probe.id)
            blended = index.search_blend(probe.sdr, visual, 0.3, k=10, where=where)
            assert [m.id for m in blended] == _blend_oracle(items, (probe.sdr, visual), 0.3, where, 10)
    assert plans == [False, False, True, True]
    # A window of 8 candidates proves nothing here: the passing items are searched by key chunks.
    monkeypatch.setattr(search_module, "MAX_RESULTS", 8)
    far = Filter(metadata=(("shop", ("s3",)),))
    with caplog.at_level("INFO", logger=search_module.__name__):
        expected = _oracle(items, visual, VISUAL, far, 10)
        assert [(m.id, m.overlap) for m in index.search(visual, k=10, space=VISUAL, where=far)] == expected
        blended = index.search_blend(probe.sdr, visual, 0.5, k=5, where=far)
        assert [m.id for m in blended] == _blend_oracle(items, (probe.sdr, visual), 0.5, far, 5)
    assert sum("proved nothing within its window" in message for message in caplog.messages) == 2


def test_list_items_under_a_filter_pages_newest_first_with_tokens_bound_to_it(
    engine: Callable[..., MilvusIndex],
) -> None:
    index = engine()
    items = _catalog(40)
    for item in items:  # one at a time: each is newer than the last
        index.add_many([item])
    where = Filter(metadata=(("shop", ("s1", "s2")),))
    passing = [item.id for item in reversed(items) if item.metadata["shop"] in ("s1", "s2")]
    seen: list[str] = []
    token = ""
    while True:
        page = index.list_items(3, token, where=where)
        assert page.total == len(passing)
        seen += [item.id for item in page.items]
        token = page.next_page_token
        if not token:
            break
        token_of_this_filter = token
    assert seen == passing
    other = Filter(metadata=(("shop", ("s1",)),))
    for wrong in (other, None, Filter(metadata=(("shop", ("s2", "s1")),), concepts=(ConceptCondition("dog"),))):
        with pytest.raises(InvalidInputError) as refused:
            index.list_items(3, token_of_this_filter, where=wrong)
        assert refused.value.field == "page_token"
    same = Filter(metadata=(("shop", ("s2", "s1")),))  # the same filter, written in another order
    assert index.list_items(3, token_of_this_filter, where=same).items
    with pytest.raises(InvalidInputError) as refused:
        index.list_items(3, index.list_items(3).next_page_token, where=where)
    assert refused.value.field == "page_token"


def test_custom_concepts_are_durable_chunked_versioned_and_shared_by_replicas(
    engine: Callable[..., MilvusIndex],
) -> None:
    first = engine()
    big = json.dumps({"bits": list(range(40_000)), "name": "ü" * 5000})  # well over one 65535-byte VARCHAR
    stored = first.put_concept("storefront", big)
    assert (stored.name, stored.document) == ("storefront", big) and stored.updated_ms > 0
    first.put_concept('grid "shots"', '{"v": 1}')
    replaced = first.put_concept('grid "shots"', '{"v": 2}')
    second = first if first.embedded else engine()  # a replica: another client of the same collections
    assert second.get_concept("storefront") == stored
    assert second.get_concept('grid "shots"') == replaced
    assert [concept.name for concept in second.list_concepts()] == ['grid "shots"', "storefront"]
    second.remove_concept("storefront")
    with pytest.raises(NotFoundError) as missing:
        first.get_concept("storefront")
    assert missing.value.resource == "storefront"
    with pytest.raises(NotFoundError):
        first.remove_concept("storefront")
    assert [concept.document for concept in first.list_concepts()] == ['{"v": 2}']
    concepts = milvus_module.CONCEPTS
    for name, versions in (("storefront", 0), ('grid "shots"', 1)):  # a replaced concept keeps one version
        rows = first.engine._query(concepts, f'key == "{milvus_module.item_key(name)}"', ["seq"], level="Strong")
        assert len(rows) == versions


def test_an_index_of_the_previous_layout_is_migrated_in_place(
    engine: Callable[..., MilvusIndex], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows written as the release before the filter index wrote them open, keep everything, and filter."""
    old = engine()
    items = _catalog(30)
    with monkeypatch.context() as patch:  # the previous release's rows: concepts as terms and scores only
        patch.setattr(
            writes_module,
            "concepts_json",
            lambda concepts, metadata: {"terms": [t for t, _ in concepts], "scores": [s for _, s in concepts]},
        )
        old.add_many(items[:20])
        old.add_many(items[20:])
    before = {item.id: old.get(item.id) for item in items}
    listed = [item.id for item in old.list_items(100).items]
    where = Filter(metadata=(("shop", ("s1",)),), concepts=(ConceptCondition("dog", 0.5),))
    assert old.search(items[0].sdr, k=50, where=where) == []  # no filter index yet
    _drop_concepts_collection(old)  # the previous release had no concepts collection either
    old.close()

    with monkeypatch.context() as patch:
        patch.setattr(calls_module, "MAX_RESULTS", 8)  # the listing of keys to migrate splits by prefix
        patch.setattr(schema_module, "_MIGRATE_CHUNK", 7)
        new = engine()
    assert {item.id: new.get(item.id) for item in items} == before
    assert [item.id for item in new.list_items(100).items] == listed  # seqs kept: the same order
    assert new.count() == len(items) and new.count(VISUAL) == len(items)
    expected = _oracle(items, items[0].sdr, SEMANTIC, where, 50)
    assert [(m.id, m.overlap) for m in new.search(items[0].sdr, k=50, where=where)] == expected
    assert new.engine._query(SEMANTIC, f'concepts["v"] != {milvus_module.LAYOUT}', ["key"], limit=100) == []
    meta = new.engine._query(milvus_module.CONCEPTS, f'row == "{schema_module._META_ROW}"', ["seq", "text"])
    assert meta[0]["seq"] == milvus_module.LAYOUT and json.loads(meta[0]["text"])["migrated_items"] == len(items)
    new.put_concept("after", "{}")
    assert new.get_concept("after").document == "{}"
    # Claims on a photo's bytes (a release later) need nothing of the set: copies are screened as before.
    photo = Fingerprint("cd" * 32, 0x0123_4567_89AB_CDEF)
    kept = new.add_many([Item("photo", items[0].sdr, fingerprint=photo)], on_duplicate=OnDuplicate.SKIP)[0]
    again = new.add_many([Item("again", items[1].sdr, fingerprint=photo)], on_duplicate=OnDuplicate.SKIP)[0]
    assert kept.stored and not again.stored and again.duplicate is not None and again.duplicate.id == "photo"
    assert [concept.name for concept in new.list_concepts()] == ["after"]


# -- helpers --------------------------------------------------------------------------------------


def _catalog(count: int) -> list[Item]:
    """Items with semantic and visual SDRs, metadata from a few shops, and a dog in some."""
    rng = np.random.default_rng(13)
    items = []
    for number in range(count):
        semantic = Sdr.from_positions(np.sort(rng.choice(2000, int(rng.integers(20, 80)), replace=False)), SIZE)
        visual = Sdr.from_positions(np.sort(rng.choice(2000, int(rng.integers(20, 80)), replace=False)), SIZE)
        concepts = (("dog", round(float(rng.random()), 3)),) if number % 2 else (("cat", 0.9),)
        metadata = {"shop": f"s{number % 4}", "n": str(number)}
        items.append(Item(f"item-{number}", semantic, concepts, metadata, {VISUAL: visual}))
    return items


def _passing(item: Item, where: Filter) -> bool:
    if any(item.metadata.get(key) not in values for key, values in where.metadata):
        return False
    return all(any(t == c.name and s >= c.min_confidence for t, s in item.concepts) for c in where.concepts)


def _oracle(
    items: Sequence[Item], query: Sdr, space: str, where: Filter, k: int, *, exclude: str | None = None
) -> list[tuple[str, int]]:
    scored = []
    for order, item in enumerate(items):
        stored = item.in_space(space)
        if stored is not None and item.id != exclude and _passing(item, where):
            scored.append((-query.overlap(stored), order, item.id))
    return [(item_id, -negative) for negative, _, item_id in sorted(scored)[:k]]


def _blend_oracle(items: Sequence[Item], queries: tuple[Sdr, Sdr], weight: float, where: Filter, k: int) -> list[str]:
    semantic, visual = queries
    scored = []
    for order, item in enumerate(items):
        other = item.in_space(VISUAL)
        if other is not None and _passing(item, where):
            score = (1 - weight) * semantic.overlap(item.sdr) + weight * visual.overlap(other)
            scored.append((-score, order, item.id))
    return [item_id for _, _, item_id in sorted(scored)[:k]]


def _drop_concepts_collection(index: MilvusIndex) -> None:
    index.engine._client.drop_collection(index.engine._names[milvus_module.CONCEPTS])
