"""Snapshots leave the request path: written piecewise in the background, consistent, waited for on close."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from image2sdr.server.config import IndexConfig
from image2sdr.server.index import SEMANTIC, SdrIndex
from image2sdr.server.index.codes import pack_codes
from image2sdr.server.index.faiss import backend as backend_module
from image2sdr.server.index.faiss import flat as flat_module
from image2sdr.server.index.faiss import ivf as ivf_module
from image2sdr.server.index.faiss import snapshot as snapshot_module
from image2sdr.server.index.faiss.ivf import IvfBackend
from image2sdr.server.index.faiss.snapshot import SnapshotKey, load_snapshot, write_snapshot
from tests.helpers.index import brute_force, clustered_items, pairs, semantic_backend

EXACT = IndexConfig()
IVF = IndexConfig(kind="ivf", ivf_nlist=8, ivf_nprobe=8, ivf_train_min=200, ivf_train_sample=400)
DEADLINE_S = 60.0  # only ever reached when something hangs


@pytest.mark.parametrize("config", [EXACT, IVF], ids=["flat", "ivf"])
def test_a_snapshot_holds_the_state_at_its_freeze_whatever_happens_between_chunks(
    tmp_path: Path, config: IndexConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adds (that grow and move FAISS's buffers) and removals between chunks do not leak into the snapshot."""
    for module in (backend_module, flat_module, ivf_module):
        monkeypatch.setattr(module, "CHUNK_BYTES", 4096)  # many chunks, so many chances to interleave
    items = clustered_items(400, seed=31)
    late = clustered_items(2000, seed=32, prefix="late")
    with SdrIndex(tmp_path / "index", config.model_copy(update={"snapshot_every": 0})) as index:
        index.add_many(items)
        backend = semantic_backend(index)
        assert isinstance(backend, IvfBackend) == (config.kind == "ivf")
        queries = [item.sdr for item in items[:20]]
        positions = np.concatenate([query.positions for query in queries])
        lengths = np.array([query.active for query in queries], dtype=np.int64)
        exclude = np.full(len(queries), -1, dtype=np.int64)

        def answers(of: object) -> list[list[tuple[int, int]]]:
            hits = of.search(positions, lengths, 10, 0, exclude)  # type: ignore[attr-defined]
            return [list(zip(h.labels.tolist(), h.overlaps.tolist(), strict=True)) for h in hits]

        before = answers(backend)
        frozen = backend.freeze()
        label = [10**6]
        chunks = [0]

        @contextmanager
        def meddling() -> Iterator[None]:
            """Stands in for the index's read lock: between two chunks, a writer gets in."""
            chunks[0] += 1
            batch = late[(chunks[0] * 7) % 1900 :][:40]
            labels = np.arange(label[0], label[0] + len(batch), dtype=np.int64)
            label[0] += len(batch)
            bits = np.concatenate([item.sdr.positions for item in batch])
            counts = np.array([item.sdr.active for item in batch], dtype=np.int64)
            backend.add(labels, pack_codes(bits, counts, 16384, config.equalize_bits, pad=True), counts)
            backend.remove(np.array([chunks[0]], dtype=np.int64))  # an early label dies
            yield

        key = SnapshotKey.of("store", 1, SEMANTIC, backend.layout, config)
        path = tmp_path / "piecewise.snapshot"
        write_snapshot(path, key, frozen, meddling)
        assert chunks[0] > 10
        assert answers(backend) != before  # the live backend did change meanwhile
        loaded = load_snapshot(path, key, config)
        assert loaded is not None and loaded.live_count == 400
        assert answers(loaded) == before


def _blocking_writes(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make the next snapshot stop at its first chunk until released: (started, release)."""
    started, release = threading.Event(), threading.Event()
    write = snapshot_module._ChecksumWriter.write

    def held(self: snapshot_module._ChecksumWriter, data: bytes) -> None:
        if not release.is_set():
            started.set()
            assert release.wait(DEADLINE_S), "the test never released the snapshot"
        write(self, data)

    monkeypatch.setattr(snapshot_module._ChecksumWriter, "write", held)
    return started, release


def _in_thread(work: object) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def test_adds_and_searches_go_on_while_a_snapshot_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The add that crosses snapshot_every returns at once; later adds, removes and searches too."""
    items = clustered_items(300, seed=33)
    started, release = _blocking_writes(monkeypatch)
    index = SdrIndex(tmp_path, EXACT.model_copy(update={"snapshot_every": 1}))
    try:
        index.add_many(items[:100])  # one change: the background thread starts a snapshot
        assert started.wait(DEADLINE_S)
        done = threading.Event()

        def writes_and_reads() -> None:
            for item in items[100:200]:
                index.add(item.id, item.sdr)
            index.remove(items[0].id)
            assert pairs(index.search(items[150].sdr, k=5)) == brute_force(items[1:200], items[150].sdr, 5)
            done.set()

        worker = _in_thread(writes_and_reads)
        assert done.wait(DEADLINE_S), "a write or a search waited for the snapshot"
        worker.join()
    finally:
        release.set()
        caplog.set_level(logging.INFO)
        index.close()
    with SdrIndex(tmp_path, EXACT) as index:
        assert "snapshot loaded" in caplog.text
        assert index.count() == 199


def test_close_waits_for_a_running_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = clustered_items(120, seed=34)
    started, release = _blocking_writes(monkeypatch)
    index = SdrIndex(tmp_path, EXACT.model_copy(update={"snapshot_every": 1}))
    index.add_many(items[:60])
    assert started.wait(DEADLINE_S)
    index.add_many(items[60:])  # after the freeze: the final snapshot on close must hold these
    closed = threading.Event()
    closer = _in_thread(lambda: (index.close(), closed.set()))
    assert not closed.wait(0.5), "close() returned while a snapshot was still being written"
    release.set()
    closer.join(DEADLINE_S)
    assert closed.is_set()
    assert not list(tmp_path.glob("*.tmp-*"))
    with SdrIndex(tmp_path, EXACT) as index:
        assert index.count() == 120
        assert pairs(index.search(items[100].sdr, k=4)) == brute_force(items, items[100].sdr, 4)
