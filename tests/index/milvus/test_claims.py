"""Two replicas (two engines on one collection set of the real server) adding the same photo at once under SKIP."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from image2sdr.server.fingerprints import Fingerprint
from image2sdr.server.index import DuplicateKind, Item, MilvusIndex, OnDuplicate
from image2sdr.server.index.engine import CopyQuery
from image2sdr.server.index.milvus import CONCEPTS
from image2sdr.server.index.milvus.claims import CLAIM_KEY
from image2sdr.server.index.milvus.expressions import NO_MARK
from image2sdr.server.index.values import AddOutcome
from image2sdr.server.sdr import Sdr
from tests.helpers.index import SIZE

TIMEOUT = 60


@pytest.fixture(scope="module")
def replicas(shared: MilvusIndex) -> Iterator[tuple[MilvusIndex, MilvusIndex]]:
    """Two indexes on one collection set, as two service replicas have (each its own write lock)."""
    second = MilvusIndex(shared.config, SIZE)
    yield shared, second
    second.close()


def _photo(number: int) -> Fingerprint:
    """Bytes of their own, and a pHash far from every other photo's (no near copy of another round's)."""
    return Fingerprint(f"{number:064x}", (0x9E37_79B9_7F4A_7C15 * (number + 1)) % 2**64)


def _item(item_id: str, photo: Fingerprint, number: int) -> Item:
    return Item(item_id, Sdr.from_positions([number, 5000, 6000 + number], SIZE), fingerprint=photo)


def _adding(
    index: MilvusIndex, item: Item, start: Callable[[], object], out: queue.Queue[AddOutcome]
) -> threading.Thread:
    def add() -> None:
        start()
        out.put(index.add_many([item], on_duplicate=OnDuplicate.SKIP)[0])

    thread = threading.Thread(target=add)
    thread.start()
    return thread


def _claims(index: MilvusIndex, photo: Fingerprint) -> list[dict[str, object]]:
    expression = f'key == "{CLAIM_KEY}" and name == "{photo.sha256}"'
    return index.engine._query(CONCEPTS, expression, ["row", "seq", "part"], level="Strong")


def test_the_same_bytes_racing_through_two_replicas_under_skip_are_stored_once(
    replicas: tuple[MilvusIndex, MilvusIndex],
) -> None:
    first, second = replicas
    photo = _photo(0)  # one round (~2 s): the next test holds the race open; bench_milvus_replicas repeats it
    barrier = threading.Barrier(2)
    outcomes: queue.Queue[AddOutcome] = queue.Queue()
    threads = [
        _adding(index, _item(f"race-{side}", photo, side), barrier.wait, outcomes)
        for side, index in enumerate((first, second))
    ]
    for thread in threads:
        thread.join(TIMEOUT)
    kept, skipped = sorted((outcomes.get_nowait() for _ in threads), key=lambda outcome: not outcome.stored)
    assert (kept.stored, skipped.stored) == (True, False)
    assert skipped.duplicate is not None and skipped.duplicate.id == kept.id
    assert skipped.duplicate.kind is DuplicateKind.SAME_BYTES
    assert first.contains([kept.id, skipped.id]) == [True, False]
    assert _claims(first, photo) == []  # released once decided


def test_an_add_waits_for_the_earlier_claim_on_its_bytes_and_then_finds_that_item(
    replicas: tuple[MilvusIndex, MilvusIndex], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first replica is held between its look for copies and its write; the second must wait for it."""
    first, second = replicas
    photo = _photo(100)
    looked, go = threading.Event(), threading.Event()
    look = first.engine._strong_copies

    def held(query: CopyQuery) -> list[Item]:
        found = look(query)
        looked.set()
        go.wait(TIMEOUT)
        return found

    monkeypatch.setattr(first.engine, "_strong_copies", held)
    outcomes: queue.Queue[AddOutcome] = queue.Queue()
    earlier = _adding(first, _item("first", photo, 1), lambda: None, outcomes)
    assert looked.wait(TIMEOUT)
    later = _adding(second, _item("second", photo, 2), lambda: None, outcomes)
    deadline = time.monotonic() + TIMEOUT  # until the second's claim is in, stamped (a condition, not a delay)
    while not (len(rows := _claims(first, photo)) == 2 and all(int(str(row["seq"])) for row in rows)):
        assert time.monotonic() < deadline, f"the second replica never claimed the photo: {rows}"
    go.set()
    earlier.join(TIMEOUT)
    later.join(TIMEOUT)
    told = {outcome.id: outcome for outcome in (outcomes.get_nowait(), outcomes.get_nowait())}
    assert told["first"].stored and not told["second"].stored
    assert told["second"].duplicate is not None and told["second"].duplicate.id == "first"


def test_a_claim_left_by_a_dead_replica_expires_and_one_left_by_this_replica_is_ignored(
    replicas: tuple[MilvusIndex, MilvusIndex],
) -> None:
    first, second = replicas
    photo = _photo(200)
    now = time.time_ns() // 1_000_000
    row = {"key": CLAIM_KEY, "name": photo.sha256, "parts": 0, "text": "", "code": NO_MARK}
    dead = {**row, "row": f"{CLAIM_KEY}.{photo.sha256}.dead", "seq": 0, "part": now - 1}  # expired, never stamped
    second.engine._claimant = "0badc0de"  # as if its release of an earlier claim had failed:
    left = {**row, "row": f"{CLAIM_KEY}.{photo.sha256}.0badc0de0000", "seq": 1, "part": now + 600_000}
    first.engine._upsert(CONCEPTS, [dead, left])
    assert photo.sha256 not in {concept.name for concept in first.list_concepts()}  # claims are no concepts
    assert second.add_many([_item("after", photo, 3)], on_duplicate=OnDuplicate.SKIP)[0].stored
    assert _claims(first, photo) == []  # both dropped by the add that met them
