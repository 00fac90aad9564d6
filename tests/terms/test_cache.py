"""The term cache: real diskcache files, restarts, corruption, foreign pickles, processes."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import diskcache
import numpy as np
import pytest

from image2sdr.server.config import CacheConfig, Config
from image2sdr.server.sdr import Sdr
from image2sdr.server.terms.base import TermSource
from image2sdr.server.terms.cache import CachedTermSource, TermCache, decode_record, encode_record
from image2sdr.server.terms.local import LocalTermSource

SIZE = 16384


class Counting:
    """The real local provider, counting the terms it is asked to compute."""

    def __init__(self, source: TermSource) -> None:
        self.source = source
        self.asked: list[str] = []
        self.name, self.model, self.version, self.size = source.name, source.model, source.version, source.size

    def term_sdrs(self, terms: Sequence[str]) -> list[Sdr | None]:
        self.asked.extend(terms)
        return self.source.term_sdrs(terms)


@pytest.fixture(scope="module")
def local(models_dir: Path) -> LocalTermSource:
    config = Config(models_dir=models_dir)
    return LocalTermSource(models_dir, config.terms.local, config.sdr)


def cached(local: LocalTermSource, directory: Path) -> tuple[CachedTermSource, Counting]:
    counting = Counting(local)
    return CachedTermSource(counting, TermCache(directory, CacheConfig())), counting  # type: ignore[arg-type]


def test_record_round_trip() -> None:
    sdr = Sdr.trusted(np.arange(0, 16384, 50), SIZE)
    assert decode_record(encode_record(sdr, SIZE), SIZE) == sdr
    assert decode_record(encode_record(None, SIZE), SIZE) is None  # a known-unknown term


@pytest.mark.parametrize(
    "damage",
    [
        lambda r: r[:-1],  # truncated
        lambda r: r[:10] + bytes([r[10] ^ 0xFF]) + r[11:],  # a flipped byte: CRC mismatch
        lambda r: b"XYZ" + r[3:],  # another format
        lambda r: b"",
    ],
)
def test_damaged_records_are_misses(damage) -> None:  # type: ignore[no-untyped-def]
    record = encode_record(Sdr.trusted(np.arange(328), SIZE), SIZE)
    assert decode_record(damage(record), SIZE) is TermCache.MISS


def test_record_of_another_size_is_a_miss() -> None:
    record = encode_record(Sdr.trusted(np.arange(328), SIZE), SIZE)
    assert decode_record(record, 4096) is TermCache.MISS


def test_second_lookup_comes_from_the_cache(local: LocalTermSource, tmp_path: Path) -> None:
    source, counting = cached(local, tmp_path)
    first = source.term_sdrs(["cat", "coffee mug", "cat"])
    again = source.term_sdrs(["coffee mug", "cat"])
    assert counting.asked == ["cat", "coffee mug"]  # each distinct term computed once
    assert first[0] == first[2] == again[1]
    assert first[1] == again[0]


def test_survives_a_restart(local: LocalTermSource, tmp_path: Path) -> None:
    source, _ = cached(local, tmp_path)
    before = source.term_sdrs(["tiger", "hard hat"])
    source.cache.close()
    reopened, counting = cached(local, tmp_path)
    assert reopened.term_sdrs(["tiger", "hard hat"]) == before
    assert counting.asked == []


def test_corrupt_entry_is_recomputed_and_rewritten(local: LocalTermSource, tmp_path: Path) -> None:
    source, counting = cached(local, tmp_path)
    (good,) = source.term_sdrs(["zebra"])
    key = TermCache.key(local, "zebra")
    source.cache.close()
    raw = diskcache.Cache(str(tmp_path))
    raw.set(key, b"\x00garbage")
    raw.close()
    reopened, counting = cached(local, tmp_path)
    assert reopened.term_sdrs(["zebra"]) == [good]
    assert counting.asked == ["zebra"]
    reopened.cache.close()
    # The rewrite repaired the entry: a third process reads it without recomputing.
    third, counting = cached(local, tmp_path)
    assert third.term_sdrs(["zebra"]) == [good] and counting.asked == []


class _Tripwire:
    """Unpickling this would create a file: proof that a pickle was executed."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (Path(self.target),))


def test_foreign_pickle_is_never_unpickled(local: LocalTermSource, tmp_path: Path) -> None:
    tripwire = tmp_path / "unpickled"
    key = TermCache.key(local, "giraffe")
    raw = diskcache.Cache(str(tmp_path / "cache"))
    raw.set(key, _Tripwire(str(tripwire)))  # stored by diskcache's default pickling Disk
    raw.close()
    assert not tripwire.exists()
    source, counting = cached(local, tmp_path / "cache")
    (sdr,) = source.term_sdrs(["giraffe"])
    assert sdr is not None and sdr.active == 328
    assert counting.asked == ["giraffe"]
    assert not tripwire.exists()
    # The tripwire is live: loading that pickle would have created the file.
    pickle.loads(pickle.dumps(_Tripwire(str(tripwire))))
    assert tripwire.exists()


def test_keys_separate_provider_versions(local: LocalTermSource) -> None:
    key = TermCache.key(local, "cat")
    assert local.name in key and local.version in key and str(SIZE) in key and key.endswith("cat")


def test_size_limit_is_enforced(local: LocalTermSource, tmp_path: Path) -> None:
    cache = TermCache(tmp_path, CacheConfig(size_limit=64 * 1024, memory_items=0))
    sdr = Sdr.trusted(np.arange(328), SIZE)
    for i in range(2000):
        cache.put(f"k{i}", sdr, SIZE)
    cache._disk.cull()
    assert cache._disk.volume() <= 64 * 1024 * 4  # sqlite pages make it approximate
    assert len(cache) < 2000


_WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from image2sdr.server.config import CacheConfig
    from image2sdr.server.sdr import Sdr
    from image2sdr.server.terms.cache import TermCache
    cache = TermCache(Path(sys.argv[1]), CacheConfig(memory_items=0))
    me, other = int(sys.argv[2]), 1 - int(sys.argv[2])
    for i in range(300):
        cache.put(f"w{me}-{i}", Sdr.trusted(np.arange(i, i + 328), 16384), 16384)
        got = cache.get(f"w{other}-{i // 2}", 16384)
        if got is not TermCache.MISS and got.positions[0] != i // 2:
            sys.exit(f"read a wrong record for w{other}-{i // 2}")
    print("ok")
    """
)


def test_processes_share_one_directory_safely(tmp_path: Path) -> None:
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), str(n)], stdout=subprocess.PIPE, text=True)
        for n in (0, 1)
    ]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0]
    assert all(out.strip() == "ok" for out in outputs)
    cache = TermCache(tmp_path, CacheConfig(memory_items=0))
    for me in (0, 1):
        for i in (0, 150, 299):
            got = cache.get(f"w{me}-{i}", SIZE)
            assert isinstance(got, Sdr) and int(got.positions[0]) == i
