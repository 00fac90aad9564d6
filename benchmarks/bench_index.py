"""Benchmark of the SDR index (``make bench-index``): figures printed, nothing asserted.

On N synthetic SDRs (default 1,000,000 of 16384 bits at 2 %, clustered: mixtures
of a few thousand term-like prototypes, see ``synthetic_sdrs.py``):
bulk add rate, RAM per stored SDR, exact top-10 latency (single, batched)
beside a plain IndexBinaryFlat Hamming search on the same SDRs, reopen and
rebuild times; then IVF latency (p50/p90/p99/mean, batched) and recall@10 against
the exact overlap answer, at the configured breadth and a few others, with each
item in two lists (the default) and, for comparison, in one.

    python benchmarks/bench_index.py            # 1M, about 25 minutes, several GB of RAM
    python benchmarks/bench_index.py --n 20000  # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_sdrs import SdrBatch, SyntheticSdrs

from image2sdr.server.config import IndexConfig
from image2sdr.server.fingerprints import Fingerprint
from image2sdr.server.index import SEMANTIC, VISUAL, Item, SdrIndex
from image2sdr.server.index.codes import pack_codes
from image2sdr.server.index.faiss import snapshot as snapshot_module
from image2sdr.server.index.faiss import snapshot_file
from image2sdr.server.index.faiss.backend import Backend
from image2sdr.server.sdr import Sdr

SIZE = 16384
SNAPSHOT = snapshot_file(SEMANTIC)
CHUNK = 20_000
K = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="stored SDRs (default 1,000,000)")
    # 1000, not 100: recall@10 is a mean of per-query recalls in steps of 0.1, and a
    # few queries deep inside a popular cluster score low at any breadth, so 100
    # queries swing the mean by +-0.02 from one draw to the next.
    parser.add_argument("--queries", type=int, default=1000, help="queries per latency and recall figure")
    parser.add_argument("--dir", type=Path, default=None, help="index directory (default: a temp dir, deleted)")
    parser.add_argument("--skip-ivf", action="store_true", help="leave out the approximate index")
    parser.add_argument("--skip-visual", action="store_true", help="leave out the two-space (visual) figures")
    parser.add_argument("--child", choices=["reopen", "rebuild"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir)
        return
    directory = args.dir or Path(tempfile.mkdtemp(prefix="bench-index-"))
    try:
        run(args, directory)
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)


def run(args: argparse.Namespace, directory: Path) -> None:
    print(
        f"SDR index benchmark: N={args.n:,} SDRs of {SIZE} bits, ~2 % active, clustered; "
        f"{args.queries} queries, top-{K}; FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads"
    )
    generator = SyntheticSdrs(size=SIZE)
    queries = batch_sdrs(generator.batch(args.queries, np.random.default_rng(999)))
    exact_config = IndexConfig(snapshot_every=0)

    plain = faiss.IndexBinaryFlat(SIZE)
    rng = np.random.default_rng(1)
    add_seconds = 0.0
    with SdrIndex(directory, exact_config, SIZE) as index:
        for start in range(0, args.n, CHUNK):
            batch = generator.batch(min(CHUNK, args.n - start), rng)
            items = [Item(f"img-{start + n:07d}", sdr) for n, sdr in enumerate(batch_sdrs(batch))]
            began = time.perf_counter()
            index.add_many(items)
            add_seconds += time.perf_counter() - began
            plain.add(pack_codes(batch.positions, batch.lengths, SIZE, 0, pad=False)[:, : SIZE // 8])
        print(
            f"bulk add (exact, SQLite store included): {args.n / add_seconds:,.0f} SDRs/s "
            f"({add_seconds:.1f} s for {args.n:,})"
        )
        exact_answers = measure_exact(index, plain, queries)
        del plain
        measure_adds_during_snapshot(index, generator)
        stored = index.count()  # the bulk load plus the single adds
        began = time.perf_counter()
    # close() writes the snapshot
    print(
        f"snapshot write on close: {time.perf_counter() - began:.1f} s "
        f"({(directory / SNAPSHOT).stat().st_size / 2**30:.2f} GiB)"
    )
    reopened = run_child("reopen", directory)
    print(
        f"reopen (snapshot load): {reopened['seconds']:.1f} s; RAM per stored SDR "
        f"{reopened['rss_bytes'] / stored / 1000:.2f} KB over {stored:,} items "
        f"({reopened['rss_bytes'] / 2**20:,.0f} MiB RSS growth)"
    )
    rebuilt = run_child("rebuild", directory)
    print(
        f"rebuild from the store (exact, no snapshot): {rebuilt['build_seconds']:.1f} s "
        f"(+ {rebuilt['close_seconds']:.1f} s writing the new snapshot, off the request path)"
    )
    if not args.skip_ivf:
        measure_ivf(directory, queries, exact_answers)
    if not args.skip_visual:
        measure_visual(args.n, args.queries)


def measure_exact(index: SdrIndex, plain: faiss.IndexBinaryFlat, queries: list[Sdr]) -> list[list[tuple[str, int]]]:
    single = []
    answers = []
    for query in queries:
        began = time.perf_counter()
        answers.append([(m.id, m.overlap) for m in index.search(query, K)])
        single.append(time.perf_counter() - began)
    began = time.perf_counter()
    index.search_many(queries, K)
    batched = len(queries) / (time.perf_counter() - began)
    print(
        f"exact top-{K} by overlap: single p50 {ms(np.median(single))} p99 {ms(np.percentile(single, 99))}; "
        f"batched {batched:,.1f} queries/s"
    )
    codes = [query.to_bits() for query in queries]
    plain_single = []
    for code in codes:
        began = time.perf_counter()
        plain.search(code[None, :], K)
        plain_single.append(time.perf_counter() - began)
    began = time.perf_counter()
    plain.search(np.stack(codes), K)
    plain_batched = len(codes) / (time.perf_counter() - began)
    print(
        f"plain IndexBinaryFlat top-{K} by Hamming (baseline, same run): single p50 {ms(np.median(plain_single))} "
        f"p99 {ms(np.percentile(plain_single, 99))}; batched {plain_batched:,.1f} queries/s"
    )
    return answers


def measure_ivf(directory: Path, queries: list[Sdr], exact: list[list[tuple[str, int]]]) -> None:
    configured = IndexConfig(kind="ivf", snapshot_every=0)
    # (label, search settings) tried on the configured index without retraining.
    variants: list[tuple[str, dict[str, object]]] = [
        ("configured", {}),
        (f"fixed nprobe={configured.ivf_nprobe}", {"ivf_widen_below": 0.0}),
        ("fixed nprobe=64", {"ivf_nprobe": 64, "ivf_nprobe_wide": 64, "ivf_widen_below": 0.0}),
        ("fixed nprobe=128", {"ivf_nprobe": 128, "ivf_nprobe_wide": 128, "ivf_widen_below": 0.0}),
        (f"widen to {configured.ivf_nprobe_wide // 2}", {"ivf_nprobe_wide": configured.ivf_nprobe_wide // 2}),
        (f"widen to {configured.ivf_nprobe_wide * 2}", {"ivf_nprobe_wide": configured.ivf_nprobe_wide * 2}),
    ]
    measure_ivf_build(directory, configured, queries, exact, variants)
    # The same without spilling, to show what storing each item twice buys.
    single = configured.model_copy(update={"ivf_lists_per_item": 1})
    measure_ivf_build(directory, single, queries, exact, variants[:1] + variants[3:4])


def measure_ivf_build(
    directory: Path,
    config: IndexConfig,
    queries: list[Sdr],
    exact: list[list[tuple[str, int]]],
    variants: list[tuple[str, dict[str, object]]],
) -> None:
    began = time.perf_counter()
    with SdrIndex(directory, config, SIZE) as index:
        print(
            f"IVF, {config.ivf_lists_per_item} list(s) per item: built from the store "
            f"(k-means nlist={config.ivf_nlist}, then add) in {time.perf_counter() - began:.1f} s incl. its snapshot"
        )
        backend = semantic(index)
        for label, update in variants:
            # Benchmark only: vary the search breadth without retraining.
            backend.config = config.model_copy(update=update)  # type: ignore[attr-defined]
            measure_ivf_search(index, label, queries, exact)
        backend.config = config  # type: ignore[attr-defined]


def measure_ivf_search(index: SdrIndex, label: str, queries: list[Sdr], exact: list[list[tuple[str, int]]]) -> None:
    backend = semantic(index)
    settings = backend.config  # type: ignore[attr-defined]
    diffuse = backend._diffuse  # type: ignore[attr-defined]
    wide = False  # whether the current query widened (in any retry round)

    def watching(*args: object, **kwargs: object) -> bool:
        nonlocal wide
        answer = diffuse(*args, **kwargs)  # type: ignore[arg-type]
        wide = wide or answer
        return answer

    backend._diffuse = watching  # type: ignore[attr-defined]
    latencies, recalls, widened = [], [], 0
    try:
        for query, truth in zip(queries, exact, strict=True):
            wide = False
            began = time.perf_counter()
            got = index.search(query, K)
            latencies.append(time.perf_counter() - began)
            widened += wide
            kth = truth[-1][1] if truth else 0
            recalls.append(sum(m.overlap >= kth for m in got) / max(len(truth), 1))
    finally:
        del backend._diffuse  # type: ignore[attr-defined]
    began = time.perf_counter()
    index.search_many(queries, K)
    batched = len(queries) / (time.perf_counter() - began)
    breadth = (
        f"nprobe {settings.ivf_nprobe}, widen below {settings.ivf_widen_below:.2f} to {settings.ivf_nprobe_wide} "
        f"({widened / len(queries):.0%} widened)"
        if settings.ivf_widen_below > 0
        else f"nprobe {settings.ivf_nprobe}"
    )
    print(
        f"  {label:<22} {breadth}: p50 {ms(np.median(latencies))} p90 {ms(np.percentile(latencies, 90))} "
        f"p99 {ms(np.percentile(latencies, 99))} mean {ms(np.mean(latencies))}; batched {batched:,.0f} queries/s; "
        f"recall@{K} {np.mean(recalls):.3f} +- {1.96 * np.std(recalls) / np.sqrt(len(recalls)):.3f} "
        "(95 % CI; vs exact overlap, ties counted)"
    )


def child(mode: str, directory: Path) -> None:
    """Run in a fresh process, so RSS growth is the index's alone."""
    if mode == "rebuild":
        (directory / SNAPSHOT).unlink()
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("image2sdr").addHandler(handler)
    logging.getLogger("image2sdr").setLevel(logging.INFO)
    before = rss()
    began = time.perf_counter()
    index = SdrIndex(directory, IndexConfig(snapshot_every=0), SIZE)
    seconds = time.perf_counter() - began
    grown = rss() - before
    began = time.perf_counter()
    index.close()
    closing = time.perf_counter() - began
    pattern = r"rebuilt from the store: \w+, \d+ items in ([\d.]+) s"
    build = next((float(m) for line in messages for m in re.findall(pattern, line)), 0.0)
    print(json.dumps({"seconds": seconds, "rss_bytes": grown, "build_seconds": build, "close_seconds": closing}))


def measure_adds_during_snapshot(index: SdrIndex, generator: SyntheticSdrs) -> None:
    """Single adds, one after another, while another thread writes the snapshot; then as many without one."""
    sdrs = batch_sdrs(generator.batch(4096, np.random.default_rng(7)))
    written = threading.Event()
    snapshot_seconds = [0.0]

    def write() -> None:
        began = time.perf_counter()
        index.snapshot()  # what the background thread runs once snapshot_every changes pile up
        snapshot_seconds[0] = time.perf_counter() - began
        written.set()

    held: list[float] = []  # how long each chunk kept the lock (what a writer can wait for)
    guarded = snapshot_module._guarded

    def timed(chunks: Iterator[bytes], guard: snapshot_module.Guard) -> Iterator[bytes]:
        def timing_guard() -> AbstractContextManager[object]:
            return _Timed(guard(), held)

        return guarded(chunks, timing_guard)

    during: list[float] = []
    snapshot_module._guarded = timed
    writer = threading.Thread(target=write)
    try:
        writer.start()
        while not written.is_set():
            began = time.perf_counter()
            index.add(f"during-{len(during)}", sdrs[len(during) % len(sdrs)])
            during.append(time.perf_counter() - began)
        writer.join()
    finally:
        snapshot_module._guarded = guarded
    quiet: list[float] = []
    for number in range(len(during)):
        began = time.perf_counter()
        index.add(f"quiet-{number}", sdrs[number % len(sdrs)])
        quiet.append(time.perf_counter() - began)
    print(
        f"single adds while a snapshot is written ({snapshot_seconds[0]:.1f} s, {len(during):,} adds): "
        f"p50 {ms(np.median(during))} p99 {ms(np.percentile(during, 99))} longest {ms(max(during))}; "
        f"with no snapshot: p50 {ms(np.median(quiet))} p99 {ms(np.percentile(quiet, 99))} longest {ms(max(quiet))}; "
        f"the lock was held for {len(held):,} chunks, longest {ms(max(held))} (what an add can wait for)"
    )


class _Timed:
    """A context manager that records how long the one it wraps was held."""

    def __init__(self, inner: AbstractContextManager[object], into: list[float]) -> None:
        self.inner, self.into = inner, into

    def __enter__(self) -> object:
        entered = self.inner.__enter__()
        self.began = time.perf_counter()
        return entered

    def __exit__(self, *exc: object) -> None:
        self.into.append(time.perf_counter() - self.began)
        self.inner.__exit__(*exc)  # type: ignore[arg-type]


def semantic(index: SdrIndex) -> Backend:
    return index.engine.backends.backend(SEMANTIC)


def run_child(mode: str, directory: Path) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--dir", str(directory)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def rss() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def batch_sdrs(batch: SdrBatch) -> list[Sdr]:
    return [Sdr.trusted(positions, SIZE) for positions in batch.split()]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def measure_visual(n: int, queries_count: int) -> None:
    """Items carrying a semantic SDR, a visual SDR and a fingerprint: bulk add, VISUAL, BLEND, duplicates."""
    directory = Path(tempfile.mkdtemp(prefix="bench-index-visual-"))
    try:
        semantic_sdrs, visual_sdrs = SyntheticSdrs(size=SIZE), SyntheticSdrs(size=SIZE, seed=11)
        rng = np.random.default_rng(5)
        phashes = rng.integers(0, 1 << 63, size=n, dtype=np.int64).astype(np.uint64) * np.uint64(2)
        add_seconds = 0.0
        with SdrIndex(directory, IndexConfig(snapshot_every=0), SIZE) as index:
            for start in range(0, n, CHUNK):
                count = min(CHUNK, n - start)
                meanings = batch_sdrs(semantic_sdrs.batch(count, rng))
                looks = batch_sdrs(visual_sdrs.batch(count, rng))
                items = [
                    Item(
                        f"img-{start + j:07d}",
                        meanings[j],
                        spaces={VISUAL: looks[j]},
                        fingerprint=Fingerprint(f"{start + j:064x}", int(phashes[start + j])),
                    )
                    for j in range(count)
                ]
                began = time.perf_counter()
                index.add_many(items)
                add_seconds += time.perf_counter() - began
            print(
                f"VISUAL: bulk add of items with two SDRs and a fingerprint: {n / add_seconds:,.0f} items/s "
                f"({add_seconds:.1f} s for {n:,})"
            )
            # "More like this one": stored items' own pairs of SDRs, whose two spaces agree as an image's do.
            stored = [index.get(f"img-{j * (n // 200):07d}") for j in range(min(200, n))]
            meanings = [item.sdr for item in stored]
            looks = [item.spaces[VISUAL] for item in stored]
            timed = {
                "VISUAL top-10 (exact)": lambda i: index.search(looks[i], K, space=VISUAL),
                "BLEND top-10, weight 0.5 (exact)": lambda i: index.search_blend(
                    meanings[i], looks[i], 0.5, K, exclude=stored[i].id
                ),
                "FindDuplicates (bytes, pHash, look)": lambda i: index.find_duplicates(
                    stored[i].fingerprint, looks[i], k=K
                ),
            }
            for label, call in timed.items():
                latencies = []
                for i in range(len(stored)):
                    began = time.perf_counter()
                    call(i)
                    latencies.append(time.perf_counter() - began)
                print(
                    f"  {label:<38} p50 {ms(np.median(latencies))} p99 {ms(np.percentile(latencies, 99))} "
                    f"({len(latencies)} queries)"
                )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
