"""The index on Milvus beside FAISS (``make bench-index BACKEND=milvus``): figures printed, nothing asserted.

Starts a real standalone Milvus 2.3.5 server (``make milvus-server``; ``tests/helpers/milvus.py``)
in a temp dir and, for each size N (default 100,000 and 1,000,000 synthetic SDRs of 16384 bits
at 2 %, clustered, the same SDRs as ``bench_index.py``; 200 held-out queries drawn the same way):

- FAISS exact (``SdrIndex``, SQLite store included): add rate, single-query top-10 p50/p99. Its
  answers are the exact overlap answer every recall figure is measured against (checked against
  a plain numpy scan on a few queries).
- FAISS IVF (``SdrIndex`` kind="ivf", defaults; trained once N >= ivf_train_min): the same.
- Milvus BIN_FLAT through ``MilvusIndex`` (consistency Bounded): add rate, then, once count()
  is N, p50/p99 and recall@10; again after a flush, once every row is in a sealed segment.
  RSS of the milvus process.

At the smallest size only, the representation question of issue 12: BIN_IVF_FLAT (nlist 1024,
HAMMING, the same padded codes, raw pymilvus) with exact re-rank of the top k*2+32 at nprobe
8/32/128; sparse vectors (one entry per active bit, IP = overlap), which the 2.3.5 server
refuses (the error is printed) and milvus-lite 2.5.1 (embedded) runs.

Recall@10 = |returned ∩ exact top 10| / 10, ties at the 10th overlap counted as correct; the
overlaps are recomputed here from the generated SDRs, not taken from the backend's answer.
Milvus at a size is skipped when the add rate measured at the size before projects its load
beyond --max-load-minutes (default 40).

    make bench-index BACKEND=milvus              # 100k and 1M: ~30 min; the milvus process peaks near 12 GiB
    python benchmarks/bench_milvus.py --quick    # 20,000 SDRs, a few minutes
    python benchmarks/bench_milvus.py --sizes 50000 --profile   # cProfile of MilvusIndex.add_many too
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import re
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.helpers.milvus

from pymilvus import DataType, MilvusClient
from synthetic_sdrs import SyntheticSdrs

from image2sdr.server.config import IndexConfig, MilvusConfig
from image2sdr.server.index import SEMANTIC, Item, Match, MilvusIndex, SdrIndex
from image2sdr.server.index.codes import code_size, pack_codes
from image2sdr.server.sdr import Sdr
from tests.helpers.milvus import MilvusServer

SIZE = 16384
CHUNK = 20_000  # SDRs generated per call, as bench_index.py (so the same rng gives the same SDRs)
K = 10
FETCH = K * 2 + 32  # candidates re-ranked exactly, as MilvusIndex fetches with the default config
IVF_NLIST = 1024
IVF_NPROBES = (8, 32, 128)
WAIT_S = 900.0  # longest wait for Milvus to show every row (count, sealed segments, index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="stored SDRs per round, comma-separated")
    parser.add_argument("--quick", action="store_true", help="20,000 SDRs only")
    parser.add_argument("--queries", type=int, default=200, help="held-out queries per latency and recall figure")
    parser.add_argument("--batch", type=int, default=1000, help="items per add_many call (every backend)")
    parser.add_argument("--max-load-minutes", type=float, default=40.0, help="skip a Milvus load projected longer")
    parser.add_argument("--profile", action="store_true", help="cProfile MilvusIndex.add_many at each size")
    args = parser.parse_args()
    sizes = [20_000] if args.quick else sorted(int(n.replace("_", "")) for n in args.sizes.split(","))
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows through tee
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # refusals measured here are printed, not logged

    def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop_on_sigterm)  # so the finally below stops the Milvus server
    directory = Path(tempfile.mkdtemp(prefix="bench-milvus-"))
    server = MilvusServer(directory / "milvus" / "data")
    try:
        began = time.perf_counter()
        server.start()
        client = MilvusClient(uri=server.uri, timeout=60)
        print(
            f"Milvus backend benchmark: Milvus server {client.get_server_version()} at {server.uri} "
            f"(started in {time.perf_counter() - began:.1f} s), FAISS {faiss.__version__}, "
            f"{faiss.omp_get_max_threads()} threads; sizes {', '.join(f'{n:,}' for n in sizes)}; "
            f"{args.queries} queries, top-{K}, add batches of {args.batch:,}"
        )
        run(args, sizes, server, client, directory)
    except Exception:
        log = directory / "milvus" / "milvus-server.log"
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print("milvus-server.log, last lines:\n  " + "\n  ".join(tail), file=sys.stderr)
        raise
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


# -- the data ---------------------------------------------------------------------


@dataclass
class Corpus:
    """N synthetic SDRs, their positions concatenated (about 1.3 KB per SDR)."""

    positions: npt.NDArray[np.uint32]
    offsets: npt.NDArray[np.int64]  # N + 1

    @classmethod
    def generate(cls, generator: SyntheticSdrs, count: int) -> Corpus:
        rng = np.random.default_rng(1)  # bench_index.py's seed and chunking: the same SDRs
        positions, lengths = [], []
        for start in range(0, count, CHUNK):
            batch = generator.batch(min(CHUNK, count - start), rng)
            positions.append(batch.positions)
            lengths.append(batch.lengths)
        offsets = np.concatenate(([0], np.cumsum(np.concatenate(lengths)))).astype(np.int64)
        return cls(np.concatenate(positions), offsets)

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    def sdr(self, n: int) -> npt.NDArray[np.uint32]:
        return self.positions[self.offsets[n] : self.offsets[n + 1]]

    def items(self, start: int, stop: int) -> list[Item]:
        return [Item(item_id(n), Sdr.trusted(self.sdr(n), SIZE)) for n in range(start, stop)]

    def codes(self, start: int, stop: int, equalize_bits: int) -> npt.NDArray[np.uint8]:
        """Stored codes (padded to equal weight), as both FAISS and MilvusIndex store them."""
        lengths = np.diff(self.offsets[start : stop + 1])
        chunk = self.positions[self.offsets[start] : self.offsets[stop]]
        return pack_codes(chunk, lengths, SIZE, equalize_bits, pad=True)

    def overlap(self, query: Sdr, n: int) -> int:
        return int(np.intersect1d(query.positions, self.sdr(n), assume_unique=True).size)

    def scan(self, query: Sdr) -> npt.NDArray[np.int64]:
        """Every item's overlap with ``query``, by brute force (the check on FAISS's exact answer)."""
        dense = np.zeros(SIZE, dtype=np.int16)  # int16: 2 bytes per stored position while gathered
        dense[query.positions] = 1
        return np.add.reduceat(dense[self.positions], self.offsets[:-1]).astype(np.int64)


def item_id(n: int) -> str:
    return f"img-{n:07d}"


def item_number(identifier: str) -> int:
    return int(identifier[4:])


@dataclass
class Truth:
    """The exact top-k per query: the k-th overlap is what a returned item must reach to count."""

    kth: list[int]

    def recalls(self, corpus: Corpus, queries: Sequence[Sdr], answers: Sequence[Sequence[int]]) -> list[float]:
        return [
            sum(corpus.overlap(query, n) >= kth for n in found[:K]) / K
            for query, kth, found in zip(queries, self.kth, answers, strict=True)
        ]


# -- the figures --------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    add_rate: float | None = None
    latencies: list[float] = field(default_factory=list)
    recalls: list[float] = field(default_factory=list)
    rss: str = "-"
    note: str = ""

    def cells(self) -> list[str]:
        rate = f"{self.add_rate:,.0f}" if self.add_rate else "-"
        if not self.latencies:
            return [self.backend, rate, "-", "-", "-", self.rss]
        p50, p99 = np.median(self.latencies) * 1000, np.percentile(self.latencies, 99) * 1000
        spread = 1.96 * np.std(self.recalls) / np.sqrt(len(self.recalls))
        recall = f"{np.mean(self.recalls):.3f} ± {spread:.3f}"
        return [self.backend, rate, f"{p50:.2f}", f"{p99:.2f}", recall, self.rss]


def print_table(title: str, rows: Sequence[Row]) -> None:
    header = ["backend", "add/s", "p50 ms", "p99 ms", f"recall@{K} (95 % CI)", "milvus RSS"]
    table = [header, *(row.cells() for row in rows)]
    widths = [max(len(line[c]) for line in table) for c in range(len(header))]
    print(f"\n{title}")
    for number, line in enumerate(table):
        print("  " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if number == 0:
            print("  " + "-+-".join("-" * width for width in widths))
    for row in rows:
        if row.note:
            print(f"  {row.backend}: {row.note}")


def timed_searches(queries: Sequence[Sdr], search: Callable[[Sdr], list[int]]) -> tuple[list[float], list[list[int]]]:
    """One query per call, one after another: (seconds per call, item numbers returned)."""
    latencies, answers = [], []
    for query in queries:
        began = time.perf_counter()
        found = search(query)
        latencies.append(time.perf_counter() - began)
        answers.append(found)
    return latencies, answers


def summary(row: Row) -> str:
    cells = row.cells()
    added = f"add {cells[1]}/s, " if row.add_rate else ""
    return f"{added}p50 {cells[2]} ms, p99 {cells[3]} ms, recall@{K} {cells[4]}"


# -- one size ---------------------------------------------------------------------


def run(
    args: argparse.Namespace, sizes: Sequence[int], server: MilvusServer, client: MilvusClient, directory: Path
) -> None:
    generator = SyntheticSdrs(size=SIZE)
    batch = generator.batch(args.queries, np.random.default_rng(999))  # held out: bench_index.py's query seed
    queries = [Sdr.trusted(positions, SIZE) for positions in batch.split()]
    milvus_rate: float | None = None  # the add rate measured at the size before
    for number, count in enumerate(sizes):
        print(f"\n== N = {count:,} ==")
        began = time.perf_counter()
        corpus = Corpus.generate(generator, count)
        gib = corpus.positions.nbytes / 2**30
        print(f"generated {count:,} SDRs in {time.perf_counter() - began:.1f} s ({gib:.2f} GiB of positions)")
        rows: list[Row] = []
        truth, exact = measure_faiss_exact(corpus, queries, args.batch, directory / f"exact-{count}")
        rows.append(exact)
        rows.append(measure_faiss_ivf(corpus, queries, truth, args.batch, directory / f"ivf-{count}"))
        projected = count / milvus_rate / 60 if milvus_rate else 0.0
        if projected > args.max_load_minutes:
            print(
                f"Milvus skipped at {count:,}: {milvus_rate:,.0f} adds/s at the size before projects "
                f"{projected:.0f} minutes of loading, beyond --max-load-minutes {args.max_load_minutes:g}"
            )
        else:
            milvus_rows = measure_milvus(corpus, queries, truth, args=args, server=server, client=client)
            milvus_rate = milvus_rows[0].add_rate
            rows += milvus_rows
        if number == 0:
            rows += measure_representations(
                corpus, queries, truth, batch=args.batch, client=client, directory=directory
            )
        print_table(f"N = {count:,}: top-{K} by overlap, single queries one after another", rows)
        del corpus


def measure_faiss_exact(corpus: Corpus, queries: Sequence[Sdr], batch: int, directory: Path) -> tuple[Truth, Row]:
    row = Row("FAISS exact (SdrIndex)", note="add rate includes the SQLite store (synchronous FULL, commit per batch)")
    with SdrIndex(directory, IndexConfig(snapshot_every=0), SIZE, (SEMANTIC,)) as index:
        row.add_rate = add_all(corpus, batch, index.add_many)
        latencies, answers = timed_searches(queries, lambda query: numbers(index.search(query, K)))
        kth = [min(corpus.overlap(query, n) for n in found) for query, found in zip(queries, answers, strict=True)]
    truth = Truth(kth)
    shutil.rmtree(directory, ignore_errors=True)  # close() wrote a snapshot; the disk is wanted later
    checked = min(10, len(queries))
    wrong = 0
    for query, tenth in zip(queries[:checked], truth.kth[:checked], strict=True):
        overlaps = corpus.scan(query)
        wrong += int(np.sort(overlaps)[-K] != tenth)
    print(
        f"the exact answer: the 10th overlap of FAISS exact equals a numpy scan's on "
        f"{checked - wrong} of {checked} queries checked"
    )
    row.latencies, row.recalls = latencies, truth.recalls(corpus, queries, answers)
    print(f"FAISS exact: {summary(row)}")
    return truth, row


def measure_faiss_ivf(corpus: Corpus, queries: Sequence[Sdr], truth: Truth, batch: int, directory: Path) -> Row:
    config = IndexConfig(kind="ivf", snapshot_every=0)
    trained = len(corpus) >= config.ivf_train_min
    label = f"FAISS IVF (nlist {config.ivf_nlist}, nprobe {config.ivf_nprobe}->{config.ivf_nprobe_wide})"
    row = Row(
        label if trained else "FAISS IVF (untrained: exact)",
        note=(
            f"add rate includes k-means training (at {config.ivf_train_min:,} items, then on each "
            f"{config.ivf_retrain_growth:g}x growth) and the SQLite store"
            if trained
            else f"below ivf_train_min = {config.ivf_train_min:,} items the IVF index searches exactly"
        ),
    )
    with SdrIndex(directory, config, SIZE, (SEMANTIC,)) as index:
        row.add_rate = add_all(corpus, batch, index.add_many)
        row.latencies, answers = timed_searches(queries, lambda query: numbers(index.search(query, K)))
    shutil.rmtree(directory, ignore_errors=True)
    row.recalls = truth.recalls(corpus, queries, answers)
    print(f"FAISS IVF: {summary(row)}")
    return row


def add_all(corpus: Corpus, batch: int, add_many: Callable[[list[Item]], object]) -> float:
    """Items per second through ``add_many``, building the Items outside the clock."""
    return len(corpus) / sum(add_times(corpus, batch, add_many))


def add_times(corpus: Corpus, batch: int, add_many: Callable[[list[Item]], object]) -> list[float]:
    """Seconds per ``add_many`` call, in order."""
    seconds = []
    for start in range(0, len(corpus), batch):
        items = corpus.items(start, min(start + batch, len(corpus)))
        began = time.perf_counter()
        add_many(items)
        seconds.append(time.perf_counter() - began)
    return seconds


class CallTimes:
    """The Milvus requests a MilvusIndex makes (retries included), timed by kind. Benchmark only."""

    def __init__(self, index: MilvusIndex) -> None:
        self.times: dict[str, list[float]] = {}
        call = index.engine._call

        def timed(what: str, request: Callable[[float], Any], **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return call(what, request, **kwargs)
            finally:
                self.times.setdefault(what, []).append(time.perf_counter() - began)

        index.engine._call = timed  # type: ignore[method-assign]

    def clear(self) -> None:
        self.times.clear()

    def report(self, operations: int, per: str) -> str:
        parts = [
            f"{what} x{len(times) / operations:.2f} {sum(times) / operations * 1000:.1f} ms "
            f"(p50 {np.median(times) * 1000:.1f}, max {max(times) * 1000:.1f})"
            for what, times in sorted(self.times.items(), key=lambda pair: -sum(pair[1]))
        ]
        return f"Milvus requests per {per}: " + "; ".join(parts)


def numbers(matches: Sequence[Match]) -> list[int]:
    return [item_number(match.id) for match in matches]


def measure_milvus(
    corpus: Corpus,
    queries: Sequence[Sdr],
    truth: Truth,
    *,
    args: argparse.Namespace,
    server: MilvusServer,
    client: MilvusClient,
) -> list[Row]:
    count = len(corpus)
    prefix = f"bench_{count}"
    config = IndexConfig(backend="milvus", milvus=MilvusConfig(uri=server.uri, collection=prefix))
    collection = f"{prefix}_{SEMANTIC}"
    loaded = Row("Milvus BIN_FLAT (MilvusIndex)")
    sealed = Row("Milvus BIN_FLAT, all sealed")
    index = MilvusIndex(config, SIZE, (SEMANTIC,))  # the semantic and pHash collections; no visual space
    profile = cProfile.Profile() if args.profile else None
    try:
        calls = CallTimes(index)
        if profile is not None:
            profile.enable()
        seconds = add_times(corpus, args.batch, index.add_many)
        if profile is not None:
            profile.disable()
        loaded.add_rate = count / sum(seconds)
        tenth = max(len(seconds) // 10, 1)
        print(
            f"Milvus: {count:,} adds through MilvusIndex.add_many at {loaded.add_rate:,.0f}/s "
            f"({args.batch * tenth / sum(seconds[:tenth]):,.0f}/s over the first tenth of the batches, "
            f"{args.batch * tenth / sum(seconds[-tenth:]):,.0f}/s over the last); {calls.report(len(seconds), 'batch')}"
        )
        waited = wait_for(lambda: index.count() == count, "count() to reach N")
        share, indexed = loaded_share(client, collection, count), loaded_share(client, collection, count, True)
        print(
            f"Milvus: count() = {count:,} (Bounded) {waited:.1f} s after the last add; the query node holds "
            f"{share:.0%} of the rows in sealed segments ({indexed:.0%} with their index), the rest in growing ones"
        )
        loaded.note = (
            f"searched as loaded: {share:.0%} of the rows in sealed segments ({indexed:.0%} indexed), "
            "the rest in growing segments"
        )

        def search(query: Sdr) -> list[int]:
            return numbers(index.search(query, K))

        calls.clear()
        loaded.latencies, answers = timed_searches(queries, search)
        loaded.recalls = truth.recalls(corpus, queries, answers)
        loaded.rss = milvus_rss(server)
        print(f"Milvus: {calls.report(len(queries), 'search')}")
        check_overlaps(index, corpus, queries)
        print(f"Milvus as loaded: {summary(loaded)}; milvus RSS {loaded.rss}")

        began = time.perf_counter()
        client.flush(collection)
        flushed = time.perf_counter() - began
        # Sealed only: a 2.3.5 query node never lists a BIN_FLAT index on a loaded segment (it scans the raw codes).
        waited = wait_for(lambda: loaded_share(client, collection, count) >= 1.0, "every row sealed")
        print(f"Milvus: flush {flushed:.1f} s, then {waited:.1f} s until the query node had every row sealed")
        calls.clear()
        sealed.latencies, answers = timed_searches(queries, search)
        sealed.recalls = truth.recalls(corpus, queries, answers)
        sealed.rss = milvus_rss(server)
        print(f"Milvus: {calls.report(len(queries), 'search')}")
        sealed.note = "after a flush, every row in sealed segments"
        print(f"Milvus all sealed: {summary(sealed)}; milvus RSS {sealed.rss}")
    finally:
        index.close()
        for name in client.list_collections():
            if name.startswith(f"{prefix}_"):
                client.drop_collection(name)
    if profile is not None:
        print_profile(profile)
    return [loaded, sealed]


def check_overlaps(index: MilvusIndex, corpus: Corpus, queries: Sequence[Sdr]) -> None:
    """Whether the overlaps MilvusIndex reports are the real ones, in order (a few queries)."""
    wrong = 0
    for query in queries[:20]:
        matches = index.search(query, K)
        real = [corpus.overlap(query, item_number(m.id)) for m in matches]
        wrong += int(real != [m.overlap for m in matches] or real != sorted(real, reverse=True))
    if wrong:
        print(f"Milvus: on {wrong} of 20 queries the overlaps MilvusIndex reported were not the real ones, in order")


def loaded_share(client: MilvusClient, collection: str, count: int, indexed: bool = False) -> float:
    """Share of the rows in sealed segments a query node has loaded (``indexed``: with their index).

    A sealed segment is loaded first without its index, searched by brute force, and
    swapped for the indexed one once the index node has built it (seconds later).
    """
    segments = client.list_loaded_segments(collection)
    return sum(int(segment.num_rows) for segment in segments if segment.index_id or not indexed) / count


def wait_for(condition: Callable[[], bool], what: str) -> float:
    began = time.perf_counter()
    while not condition():
        if time.perf_counter() - began > WAIT_S:
            raise RuntimeError(f"Milvus: no {what} within {WAIT_S:.0f} s")
        time.sleep(0.5)
    return time.perf_counter() - began


def milvus_rss(server: MilvusServer) -> str:
    """VmRSS (VmHWM: the peak so far) of the ``milvus`` process milvus-server runs (its wrapper is Python)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            if not command[0].endswith(b"/bin/milvus") or str(server.data_dir).encode() not in command[0]:
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue
        now, peak = (int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) for key in ("VmRSS", "VmHWM"))  # type: ignore[union-attr]
        return f"{now / 2**20:.2f} GiB (peak {peak / 2**20:.2f})"
    return "?"


def print_profile(profile: cProfile.Profile) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    shown = r"milvus\.py|prepare\.py|entity_helper|_channel\.py:\d+\(_blocking\)"
    stats.sort_stats("cumulative").print_stats(shown, 18)
    print("cProfile of MilvusIndex.add_many (cumulative):")
    for line in out.getvalue().splitlines():
        if line.strip() and not line.startswith(("   Ordered", "   List")):
            print(f"  {line}")


# -- the representation question (smallest size) --------------------------------------


def measure_representations(
    corpus: Corpus, queries: Sequence[Sdr], truth: Truth, *, batch: int, client: MilvusClient, directory: Path
) -> list[Row]:
    rows = measure_bin_ivf(corpus, queries, truth, batch, client)
    refuse_sparse_on_server(client)
    rows.append(measure_sparse_lite(corpus, queries, truth, batch, directory / "lite" / "sparse.db"))
    return rows


def measure_bin_ivf(
    corpus: Corpus, queries: Sequence[Sdr], truth: Truth, batch: int, client: MilvusClient
) -> list[Row]:
    """BIN_IVF_FLAT on the padded codes (raw pymilvus), the top FETCH re-ranked by exact overlap here."""
    count = len(corpus)
    equalize = IndexConfig().equalize_bits
    collection = "bench_bin_ivf"
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("code", DataType.BINARY_VECTOR, dim=code_size(SIZE, equalize) * 8)
    params = client.prepare_index_params()
    params.add_index(field_name="code", index_type="BIN_IVF_FLAT", metric_type="HAMMING", params={"nlist": IVF_NLIST})
    client.create_collection(collection, schema=schema, index_params=params, consistency_level="Bounded")
    rows = []
    try:
        seconds = 0.0
        for start in range(0, count, batch):
            stop = min(start + batch, count)
            codes = corpus.codes(start, stop, equalize)
            data = [{"id": n, "code": codes[n - start].tobytes()} for n in range(start, stop)]
            began = time.perf_counter()
            client.insert(collection, data)
            seconds += time.perf_counter() - began
        rate = count / seconds
        began = time.perf_counter()
        client.flush(collection)
        waited = wait_for(lambda: loaded_share(client, collection, count, True) >= 1.0, "every row sealed, indexed")
        described = client.describe_index(collection, "code")
        print(
            f"BIN_IVF_FLAT (raw insert, no upsert): {rate:,.0f} inserts/s; flush, index build and hand-off "
            f"{time.perf_counter() - began:.1f} s (waited {waited:.1f} s); index rows "
            f"{described.get('indexed_rows')}/{described.get('total_rows')}"
        )
        for nprobe in IVF_NPROBES:
            params_search = {"metric_type": "HAMMING", "params": {"nprobe": nprobe}}

            def search(query: Sdr, params_search: dict[str, Any] = params_search) -> list[int]:
                code = pack_codes(query.positions, np.array([query.active]), SIZE, equalize, pad=False)[0]
                hits = client.search(
                    collection, data=[code.tobytes()], limit=FETCH, anns_field="code", search_params=params_search
                )[0]
                found = [int(hit["id"]) for hit in hits]
                overlaps = [corpus.overlap(query, n) for n in found]
                order = sorted(range(len(found)), key=lambda i: -overlaps[i])
                return [found[i] for i in order[:K]]

            row = Row(f"Milvus BIN_IVF_FLAT nlist {IVF_NLIST}, nprobe {nprobe}")
            row.add_rate = rate if nprobe == IVF_NPROBES[0] else None
            row.latencies, answers = timed_searches(queries, search)
            row.recalls = truth.recalls(corpus, queries, answers)
            print(f"BIN_IVF_FLAT nprobe {nprobe}: {summary(row)}")
            rows.append(row)
        rows[0].note = (
            f"raw pymilvus, all rows sealed and indexed; top {FETCH} by HAMMING re-ranked by exact overlap "
            "here (latency: the search call and the re-rank, SDRs read locally, not from Milvus)"
        )
    finally:
        client.drop_collection(collection)
    return rows


def sparse_schema() -> tuple[Any, Any]:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("bits", DataType.SPARSE_FLOAT_VECTOR)
    params = MilvusClient.prepare_index_params()
    params.add_index(field_name="bits", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    return schema, params


def sparse_rows(corpus: Corpus, start: int, stop: int) -> list[dict[str, Any]]:
    return [{"id": n, "bits": dict.fromkeys(corpus.sdr(n).tolist(), 1.0)} for n in range(start, stop)]


def refuse_sparse_on_server(client: MilvusClient) -> None:
    """SPARSE_FLOAT_VECTOR came with Milvus 2.4: show what the 2.3.5 server says to it."""
    collection = "bench_sparse"
    schema, params = sparse_schema()
    try:
        client.create_collection(collection, schema=schema, index_params=params)
        print("sparse vectors on the Milvus server: the collection and its SPARSE_INVERTED_INDEX were created")
    except Exception as exc:
        print(f"sparse vectors on the Milvus server: create_collection (with SPARSE_INVERTED_INDEX) refused: {exc}")
        if client.has_collection(collection):  # the schema went in, only the index was refused: try a row
            try:
                client.insert(collection, [{"id": 0, "bits": {3: 1.0}}])
                print("  ... yet an insert into the schema-only collection was accepted")
            except Exception as insert_exc:
                print(f"  the schema alone was accepted; an insert into it is refused too: {insert_exc}")
    finally:
        if client.has_collection(collection):
            client.drop_collection(collection)


def measure_sparse_lite(corpus: Corpus, queries: Sequence[Sdr], truth: Truth, batch: int, path: Path) -> Row:
    """One entry per active bit, value 1.0: inner product = overlap exactly (milvus-lite, in this machine)."""
    row = Row("milvus-lite 2.5.1 sparse IP (embedded)")
    count = len(corpus)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # milvus-lite 2.5 imports pkg_resources, which warns
        lite = MilvusClient(uri=str(path))
    collection = "bench_sparse"
    try:
        schema, params = sparse_schema()
        lite.create_collection(collection, schema=schema, index_params=params, consistency_level="Bounded")
        seconds = 0.0
        for start in range(0, count, batch):
            rows = sparse_rows(corpus, start, min(start + batch, count))
            began = time.perf_counter()
            lite.insert(collection, rows)
            seconds += time.perf_counter() - began
        row.add_rate = count / seconds
        waited = wait_for(
            lambda: int(lite.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"]) == count,
            "count to reach N",
        )

        def search(query: Sdr) -> list[int]:
            hits = lite.search(
                collection,
                data=[dict.fromkeys(query.positions.tolist(), 1.0)],
                limit=K,
                anns_field="bits",
                search_params={"metric_type": "IP"},
            )[0]
            return [int(hit["id"]) for hit in hits]

        row.latencies, answers = timed_searches(queries, search)
        row.recalls = truth.recalls(corpus, queries, answers)
        row.note = (
            f"raw pymilvus on milvus-lite; top {K} by IP (= overlap) as Milvus ranks them, no re-rank; "
            f"count reached N {waited:.1f} s after the last insert"
        )
        print(f"milvus-lite sparse: {summary(row)}")
    except Exception as exc:
        row.note = f"refused: {exc}"
        print(f"milvus-lite sparse: refused: {exc}")
    finally:
        lite.close()
    return row


if __name__ == "__main__":
    main()
