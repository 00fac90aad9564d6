"""Filtered search and search by tag on the FAISS index (``make bench-filters``): figures printed, nothing asserted.

N synthetic SDRs (default 1,000,000; ``synthetic_sdrs.py``, as ``bench_index.py``), each with
metadata drawn independently of its SDR (the hard case: the best items that pass are spread
over the whole collection) and a few concepts:

    half        "0" or "1"             a filter on one value passes 50 %
    twentieth   "0" .. "19"            5 % per value
    thousandth  "0" .. "999"           0.1 % per value
    concepts    ("dog", c) on 10 %, c uniform in [0, 1] (dog >= 0.5: 5 %), two of 1000 other names

Printed:

- bulk add rate with those filter rows (``item_meta``, ``item_concepts``) in the same transactions,
  and at 100k what they cost: the same items bare, and with metadata but without the rows;
- per index kind (exact: IndexBinaryFlat; ivf: IndexBinaryIVF, defaults) and selectivity (50 %,
  5 %, 0.1 % and a sweep between): the strategy the index chose, the first query's latency (the
  condition read from SQLite into the cache), then top-10 p50/p99 and recall@10 against the exact
  filtered answer (the exact kind's: proven exact, and the two exact strategies must agree);
- the crossover behind each choice: every strategy forced at each selectivity of the sweep;
- search by tag: ``list_items(10, where=dog >= 0.5)`` with its exact total, cold and warm.

    make bench-filters                 # 1M: ~20 minutes on 2 cores (5 of them the IVF build); ~5 GB of RAM
    make bench-filters N=50000         # a quick look
    python benchmarks/bench_filters.py --n 200000 --kinds exact --queries 100
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_sdrs import SyntheticSdrs

from image2sdr.server.config import IndexConfig
from image2sdr.server.index import SEMANTIC, ConceptCondition, Filter, Item, Match, SdrIndex
from image2sdr.server.index.faiss import flat as flat_module
from image2sdr.server.index.faiss import ivf as ivf_module
from image2sdr.server.index.faiss import store as store_module
from image2sdr.server.index.faiss.backend import Backend
from image2sdr.server.sdr import Sdr

SIZE = 16384
CHUNK = 20_000
K = 10
TAG = Filter(concepts=(ConceptCondition("dog", 0.5),))


def _values(key: str, count: int, first: int = 0) -> Filter:
    return Filter(metadata=((key, tuple(str(value) for value in range(first, first + count))),))


# (label, filter, expected share): the three of the issue, then the sweep between them.
GOALS = [
    ("50 %", _values("half", 1, first=1), 0.5),
    ("5 %", _values("twentieth", 1, first=7), 0.05),
    ("0.1 %", _values("thousandth", 1, first=42), 0.001),
]
SWEEP = [
    ("0.3 %", _values("thousandth", 3), 0.003),
    ("1 %", _values("thousandth", 10), 0.01),
    ("3 %", _values("thousandth", 30), 0.03),
    ("10 %", _values("twentieth", 2), 0.10),
    ("20 %", _values("twentieth", 4), 0.20),
    ("30 %", _values("twentieth", 6), 0.30),
    ("dog >= 0.5", TAG, 0.05),
]
# Forced strategies: kind -> (name, module constants set, shares worth timing: (lowest, highest))
FORCED: dict[str, list[tuple[str, dict[str, float], tuple[float, float]]]] = {
    "exact": [
        ("prefilter", {"PREFILTER_BELOW": math.inf}, (0.0, 0.10)),
        ("selector", {"PREFILTER_BELOW": 0.0, "SCAN_ABOVE": math.inf}, (0.0, 1.0)),
        ("scan", {"PREFILTER_BELOW": 0.0, "SCAN_ABOVE": 0.0}, (0.03, 1.0)),
    ],
    "ivf": [
        ("exact", {"EXACT_PER_LIST": math.inf}, (0.0, 0.03)),
        ("gather", {"EXACT_PER_LIST": 0, "GATHER_BELOW": math.inf}, (0.0, 0.30)),
        ("scan", {"EXACT_PER_LIST": 0, "GATHER_BELOW": 0.0}, (0.03, 1.0)),
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="stored SDRs (default 1,000,000)")
    parser.add_argument("--queries", type=int, default=300, help="queries per figure (default 300)")
    parser.add_argument("--kinds", default="exact,ivf", help="index kinds to measure (default exact,ivf)")
    parser.add_argument("--dir", type=Path, default=None, help="index directory (kept; reused when it holds N items)")
    parser.add_argument("--no-sweep", action="store_true", help="leave out the sweep and the forced strategies")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="benchmark only: MODULE.CONSTANT=value (flat or ivf), e.g. ivf.GATHER_ITEMS=8000",
    )
    args = parser.parse_args()
    for setting in args.set:
        name, _, value = setting.partition("=")
        module, _, constant = name.partition(".")
        setattr({"flat": flat_module, "ivf": ivf_module}[module], constant, float(value))
    directory = args.dir or Path(tempfile.mkdtemp(prefix="bench-filters-"))
    try:
        run(args, directory)
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)


def run(args: argparse.Namespace, directory: Path) -> None:
    print(
        f"Filtered search benchmark: N={args.n:,} SDRs of {SIZE} bits, ~2 % active, clustered; metadata and concepts "
        f"independent of the SDRs; {args.queries} queries, top-{K}; FAISS {faiss.__version__}, "
        f"{faiss.omp_get_max_threads()} threads"
    )
    generator = SyntheticSdrs(size=SIZE)
    queries = [Sdr.trusted(p, SIZE) for p in generator.batch(args.queries, np.random.default_rng(999)).split()]
    build(directory, args.n, generator)
    measure_add_cost(min(args.n, 100_000), generator)
    truth: dict[str, list[list[tuple[str, int]]]] = {}
    for kind in args.kinds.split(","):
        config = IndexConfig(kind="ivf" if kind == "ivf" else "exact", snapshot_every=0)
        began = time.perf_counter()
        with SdrIndex(directory, config, SIZE, spaces=(SEMANTIC,)) as index:
            print(f"\n{kind}: opened in {time.perf_counter() - began:.1f} s ({type(semantic(index)).__name__})")
            if kind == "exact":
                measure_tags(index)  # first, so that its first call reads the tag from the store
            measure(index, kind, queries, truth, sweep=not args.no_sweep)


def build(directory: Path, n: int, generator: SyntheticSdrs) -> None:
    """Store N items with metadata and concepts, unless the directory holds them already."""
    config = IndexConfig(snapshot_every=0)
    with SdrIndex(directory, config, SIZE, spaces=(SEMANTIC,)) as index:
        if index.count() == n:
            print(f"reusing the {n:,} items stored in {directory}")
            return
        if index.count():
            raise SystemExit(f"{directory} holds {index.count():,} items, not {n:,}: give another --dir")
        rng = np.random.default_rng(1)
        seconds = 0.0
        for start in range(0, n, CHUNK):
            count = min(CHUNK, n - start)
            items = list(catalogue(start, count, generator, rng))
            began = time.perf_counter()
            index.add_many(items)
            seconds += time.perf_counter() - began
        print(
            f"bulk add with 3 metadata pairs and ~2.1 concepts per item (filter rows in the same transaction): "
            f"{n / seconds:,.0f} items/s ({seconds:.1f} s)"
        )


def measure_add_cost(n: int, generator: SyntheticSdrs) -> None:
    """What the filter rows cost an add: the same items bare, with their metadata and concepts, and with
    them but no filter rows (each in a fresh index)."""
    rates = {}
    for variant in ("bare", "filter rows", "no filter rows"):
        directory = Path(tempfile.mkdtemp(prefix="bench-filters-add-"))
        saved = store_module._filter_rows
        if variant == "no filter rows":  # benchmark only: the store as it was before schema 4
            store_module._filter_rows = lambda *_: ([], [])  # type: ignore[assignment]
        try:
            with SdrIndex(directory, IndexConfig(snapshot_every=0), SIZE, spaces=(SEMANTIC,)) as index:
                rng, seconds = np.random.default_rng(3), 0.0
                for start in range(0, n, CHUNK):
                    items = list(catalogue(start, min(CHUNK, n - start), generator, rng))
                    if variant == "bare":
                        items = [Item(item.id, item.sdr) for item in items]
                    began = time.perf_counter()
                    index.add_many(items)
                    seconds += time.perf_counter() - began
            rates[variant] = n / seconds
        finally:
            store_module._filter_rows = saved
            shutil.rmtree(directory, ignore_errors=True)
    print(
        f"bulk add of {n:,} items (fresh index): no metadata or concepts {rates['bare']:,.0f}/s; with them "
        f"{rates['filter rows']:,.0f}/s; with them but without the filter rows (the store before schema 4) "
        f"{rates['no filter rows']:,.0f}/s"
    )


def catalogue(start: int, count: int, generator: SyntheticSdrs, rng: np.random.Generator) -> Iterator[Item]:
    batch = generator.batch(count, rng)
    half, twentieth, thousandth = (
        rng.integers(2, size=count),
        rng.integers(20, size=count),
        rng.integers(1000, size=count),
    )
    dog, confidence = rng.random(count) < 0.1, np.round(rng.random(count), 3)
    others, scores = rng.integers(1000, size=(count, 2)), np.round(rng.random((count, 2)), 3)
    for n, positions in enumerate(batch.split()):
        concepts = [(f"c{others[n, 0]}", float(scores[n, 0])), (f"c{others[n, 1]}", float(scores[n, 1]))]
        if dog[n]:
            concepts.insert(0, ("dog", float(confidence[n])))
        metadata = {"half": str(half[n]), "twentieth": str(twentieth[n]), "thousandth": str(thousandth[n])}
        yield Item(f"img-{start + n:07d}", Sdr.trusted(positions, SIZE), tuple(concepts), metadata)


def measure(
    index: SdrIndex, kind: str, queries: list[Sdr], truth: dict[str, list[list[tuple[str, int]]]], *, sweep: bool
) -> None:
    print(f"{'filter':<12} {'passing':>9} {'strategy':<10} {'first query':>12} {'p50':>9} {'p99':>9}  recall@{K}")
    cases = GOALS + (SWEEP if sweep else [])
    for label, where, _ in cases:
        first = timed(partial(index.search, queries[0], K, where=where))  # the condition read into the cache
        allowed = passing(index, where)
        latencies, answers = run_queries(index, queries, where)
        if kind == "exact" and label not in truth:
            truth[label] = answers
        print(
            f"{label:<12} {allowed.count:>9,} {semantic(index).strategy(allowed):<10} {ms(first):>12} "
            f"{ms(np.median(latencies)):>9} {ms(np.percentile(latencies, 99)):>9}  {recall(answers, truth.get(label))}"
        )
    if sweep:
        print(f"crossover ({kind}): every strategy forced, p50 / recall@{K}")
        for label, where, share in GOALS + SWEEP[:-1]:
            cells = []
            for name, patch, (lowest, highest) in FORCED[kind]:
                if not lowest <= share <= highest:
                    cells.append(f"{name} -")
                    continue
                with patched(flat_module if kind == "exact" else ivf_module, patch):
                    latencies, answers = run_queries(index, queries[: max(len(queries) // 3, 20)], where)
                reference = truth.get(label)
                agreement = recall(answers, reference[: len(answers)] if reference else None)
                cells.append(f"{name} {ms(np.median(latencies))} / {agreement}")
            print(f"  {label:<8} " + "   ".join(cells))


def measure_tags(index: SdrIndex) -> None:
    """Search by tag: the first page of dog >= 0.5, with its total; then twenty pages on."""
    first = timed(lambda: index.list_items(10, where=TAG))
    warm = [timed(lambda: index.list_items(10, where=TAG)) for _ in range(300)]
    page = index.list_items(10, where=TAG)
    onwards = []
    for _ in range(20):
        began = time.perf_counter()
        page = index.list_items(10, page.next_page_token, where=TAG)
        onwards.append(time.perf_counter() - began)
    by_other = Filter(concepts=(ConceptCondition("c42", 0.3),))
    other_first = timed(lambda: index.list_items(10, where=by_other))
    print(
        f"search by tag, list_items(10, where=dog >= 0.5), total {page.total:,}: first (read into the cache) "
        f"{ms(first)}; then p50 {ms(np.median(warm))} p99 {ms(np.percentile(warm, 99))}; pages 2-21 p50 "
        f"{ms(np.median(onwards))}; another tag (c42 >= 0.3, {index.list_items(1, where=by_other).total:,} items) "
        f"first {ms(other_first)}"
    )


def run_queries(index: SdrIndex, queries: list[Sdr], where: Filter) -> tuple[list[float], list[list[tuple[str, int]]]]:
    latencies, answers = [], []
    for query in queries:
        began = time.perf_counter()
        found = index.search(query, K, where=where)
        latencies.append(time.perf_counter() - began)
        answers.append(pairs(found))
    return latencies, answers


def recall(answers: list[list[tuple[str, int]]], truth: list[list[tuple[str, int]]] | None) -> str:
    """Mean recall@K, ties at the K-th overlap counted (as bench_index.py); "-" without a reference."""
    if truth is None:
        return "-"
    scores = []
    for got, exact in zip(answers, truth, strict=True):
        kth = exact[-1][1] if exact else 0
        scores.append(sum(overlap >= kth for _, overlap in got) / max(len(exact), 1))
    spread = 1.96 * np.std(scores) / np.sqrt(len(scores))
    return f"{np.mean(scores):.3f} +- {spread:.3f}"


def passing(index: SdrIndex, where: Filter):  # type: ignore[no-untyped-def]
    with index.engine._lock.read():  # benchmark only: the set a search under `where` is given
        return index.engine._passing(where, SEMANTIC)


@contextmanager
def patched(module: object, values: dict[str, float]) -> Iterator[None]:
    """Benchmark only: module constants set for a while (the backends read them per search)."""
    saved = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def semantic(index: SdrIndex) -> Backend:
    return index.engine.backends.backend(SEMANTIC)


def pairs(matches: list[Match]) -> list[tuple[str, int]]:
    return [(match.id, match.overlap) for match in matches]


def timed(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


if __name__ == "__main__":
    main()
