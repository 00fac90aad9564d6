"""Nothing acknowledged is lost: SIGKILL during adds and during snapshot writes; bad snapshots."""

from __future__ import annotations

import logging
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from image2sdr.server.config import IndexConfig
from image2sdr.server.index import SEMANTIC, Item, SdrIndex
from image2sdr.server.index.faiss import snapshot as snapshot_module
from image2sdr.server.index.faiss import snapshot_file
from tests.helpers.index import brute_force, clustered_items, pairs
from tests.helpers.index_child_writer import child_sdr

CHILD = Path(__file__).resolve().parents[2] / "helpers" / "index_child_writer.py"
LOAD = snapshot_module._load
REPO = Path(__file__).resolve().parents[3]


class Child:
    """The writer child, its stdout drained on a thread into a queue."""

    def __init__(self, directory: Path, start: int, snapshot_every: int) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "server"), str(REPO)]))
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), str(directory), str(start), str(snapshot_every)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.acked: list[int] = []
        self._drain_thread = threading.Thread(target=self._drain, daemon=True)
        self._drain_thread.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def wait_for(self, wanted: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            self._note(line)
            if line == wanted:
                return
        raise TimeoutError(wanted)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._drain_thread.join(timeout=30)  # ends at EOF: everything flushed before the kill is read
        assert self.process.stdout is not None
        self.process.stdout.close()
        while not self.lines.empty():
            self._note(self.lines.get())

    def _note(self, line: str) -> None:
        if line.startswith("ACK "):
            self.acked.append(int(line.split()[1]))


def check_store_and_index_agree(directory: Path, acked: list[int], preloaded: Sequence[Item] = ()) -> None:
    with SdrIndex(directory, IndexConfig()) as index:
        for number in acked:
            assert index.get(f"item-{number}").sdr == child_sdr(number), number
        stored = list(preloaded) + [
            index.get(f"item-{n}") for n in range(max(acked, default=-1) + 2) if _exists(index, f"item-{n}")
        ]
        assert index.count() == len(stored) >= len(acked)
        rng = random.Random(len(acked))
        queries = [child_sdr(n) for n in rng.sample(acked, min(10, len(acked)))] + [i.sdr for i in preloaded[:5]]
        for query in queries:
            assert pairs(index.search(query, k=5)) == brute_force(stored, query, 5)


def _exists(index: SdrIndex, item_id: str) -> bool:
    try:
        index.get(item_id)
    except Exception:
        return False
    return True


@pytest.mark.slow
def test_kill_during_adds_loses_no_acknowledged_item(tmp_path: Path) -> None:
    rng = random.Random(11)
    acked: list[int] = []
    for _ in range(3):
        child = Child(tmp_path, start=max(acked, default=-1) + 1, snapshot_every=0)
        child.wait_for("READY")
        time.sleep(rng.uniform(0.3, 1.2))  # not a wait: a random moment to kill the child at
        child.kill()
        assert child.acked, "the child acknowledged nothing before the kill"
        acked += child.acked
        check_store_and_index_agree(tmp_path, acked)


@pytest.mark.slow
def test_kill_during_snapshot_write(tmp_path: Path) -> None:
    # A few thousand items first, so a snapshot takes long enough to be hit.
    preloaded = clustered_items(3000, seed=12, prefix="pre")
    with SdrIndex(tmp_path, IndexConfig()) as index:
        index.add_many(preloaded)
    rng = random.Random(12)
    acked: list[int] = []
    hit_mid_write = 0
    for _ in range(8):
        child = Child(tmp_path, start=max(acked, default=-1) + 1, snapshot_every=5)
        child.wait_for("SNAP-BEGIN")
        time.sleep(rng.uniform(0.0, 0.01))  # not a wait: a random moment inside the snapshot write
        child.kill()
        acked += child.acked
        hit_mid_write += any(tmp_path.glob(f"{snapshot_file(SEMANTIC)}.tmp-*"))
        check_store_and_index_agree(tmp_path, acked, preloaded)
        assert not any(tmp_path.glob(f"{snapshot_file(SEMANTIC)}.tmp-*"))  # reopening cleaned up
        if hit_mid_write >= 2:
            break
    assert hit_mid_write, "no kill landed inside a snapshot write"


def _build(directory: Path, count: int = 500) -> list[Item]:
    items = clustered_items(count, seed=13)
    with SdrIndex(directory, IndexConfig()) as index:
        index.add_many(items)
    return items


def _never_load_semantic(file: object, header: snapshot_module.SnapshotHeader, config: object) -> object:
    """Only the semantic snapshot is damaged below; the visual one may load."""
    if header.key.space == SEMANTIC:
        raise AssertionError("a bad snapshot was handed to FAISS")
    return LOAD(file, header, config)  # type: ignore[arg-type]


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
def test_damaged_snapshot_is_rebuilt_not_loaded(
    tmp_path: Path, damage: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    items = _build(tmp_path)
    path = tmp_path / snapshot_file(SEMANTIC)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 3] ^= 0x10
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    path.write_bytes(bytes(data))
    with monkeypatch.context() as patch:
        patch.setattr(snapshot_module, "_load", _never_load_semantic)
        caplog.set_level(logging.INFO)
        with SdrIndex(tmp_path, IndexConfig()) as index:
            assert "rebuilt from the store" in caplog.text
            assert index.count() == len(items)
            for item in items[:5]:
                assert pairs(index.search(item.sdr, k=8)) == brute_force(items, item.sdr, 8)
    caplog.clear()
    with SdrIndex(tmp_path, IndexConfig()) as index:  # the rebuild wrote a good snapshot again
        assert "snapshot loaded" in caplog.text and index.count() == len(items)


def test_stale_snapshot_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    items = _build(tmp_path)
    path = tmp_path / snapshot_file(SEMANTIC)
    old = path.read_bytes()
    extra = clustered_items(50, seed=14, prefix="late")
    with SdrIndex(tmp_path, IndexConfig()) as index:
        index.add_many(extra)
        index.remove(items[0].id)
    path.write_bytes(old)  # as if the process died before snapshotting these changes
    caplog.set_level(logging.INFO)
    with SdrIndex(tmp_path, IndexConfig()) as index:
        assert "stale" in caplog.text
        live = items[1:] + extra
        assert index.count() == len(live)
        assert pairs(index.search(extra[0].sdr, k=10)) == brute_force(live, extra[0].sdr, 10)


def test_snapshot_of_another_layout_or_kind_is_not_loaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    items = _build(tmp_path, 300)
    caplog.set_level(logging.INFO)
    with SdrIndex(tmp_path, IndexConfig(equalize_bits=128)) as index:
        assert "stale" in caplog.text
        assert pairs(index.search(items[1].sdr, k=5)) == brute_force(items, items[1].sdr, 5)
