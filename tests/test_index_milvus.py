"""What only the Milvus engine has to get right: versioned writes, listing without ORDER BY, a clean close.

Run on the embedded engine (milvus-lite, a real Milvus in a file); the contract
tests hold it to everything else the FAISS engine does.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from image2sdr.server.config import IndexConfig, MilvusConfig
from image2sdr.server.errors import UpstreamError
from image2sdr.server.index import SEMANTIC, VISUAL, Item, MilvusIndex
from image2sdr.server.index import milvus as milvus_module
from image2sdr.server.sdr import Sdr

from .index_helpers import SIZE


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
    upsert = index._upsert

    def failing_at_the_commit(name: str, rows: list[dict[str, object]]) -> None:
        if name == SEMANTIC:
            raise UpstreamError("Milvus unavailable (at the commit point, in this test)")
        upsert(name, rows)

    monkeypatch.setattr(index, "_upsert", failing_at_the_commit)
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
    monkeypatch.setattr(milvus_module, "MAX_RESULTS", 20)
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
