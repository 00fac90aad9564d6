"""The approximate backend: FAISS IndexBinaryIVF over SDR k-means lists.

The lists to scan are chosen by a probe table, not by FAISS's own quantizer:
per list, how often each SDR bit is active among its members (from the k-means
sample). A list's score for a query is the sum of those frequencies over the
query's active bits, i.e. the expected overlap of the query with a member of
that list; it ranks lists far better than the overlap with the binary
centroid, for about the same cost. A single query's lists are split across the
OpenMP threads (FAISS parallelises IVF search over queries only).

Two measures for the queries IVF finds hard. Merged SDRs are mixtures of terms,
so an item's neighbours need not share its dominant term, and they spread over
many lists. Each item is therefore stored in its ``ivf_lists_per_item`` nearest
lists (spilling; results are de-duplicated), and a query whose k-th best overlap
in its first ``ivf_nprobe`` lists is a small share of its own active bits (a
diffuse neighbourhood) goes on to scan up to ``ivf_nprobe_wide`` lists.

Candidates are ranked by exact overlap (``live.py``); unlike the flat backend,
the answer is not proven complete: items in lists not scanned are not seen.

IndexBinaryIVF takes no IDSelector, so a filtered search (``allowed``: the live
labels passing a filter) picks one of three ways by how many pass, each
measured by ``benchmarks/bench_filters.py``:

- few (at most ``EXACT_PER_LIST`` per list): their SDRs are read from the store
  and every one is scored: exact, and cheaper than visiting every list;
- a small share (below ``GATHER_BELOW``): the lists are visited best first and
  only the passing entries' codes are gathered and counted, so the lists a
  narrow filter needs (many: its best items are spread wide) cost little each;
- a large share: the usual scan, the lists and candidates widened by the
  share that passes, the others dropped in ``LiveLabels.rank`` as dead ones are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import faiss
import numpy as np
import numpy.typing as npt
from faiss.contrib import ivf_tools

from ...config import IndexConfig
from .backend import (
    CHUNK_BYTES,
    Backend,
    Codes,
    Frozen,
    IvfState,
    Layout,
    QueryBatch,
    ReadBytes,
    copy_bytes,
    read_array,
)
from .ivf_lists import IvfLists, best_lists
from .kmeans import PROBE_SCALE, ProbeTable, sdr_kmeans
from .live import Hits, Labels, LiveLabels, best, empty_hits, overlaps_of, unique_nearest
from .selection import Allowed

__all__ = ["EXACT_PER_LIST", "GATHER_BELOW", "PROBE_SCALE", "IvfBackend", "sdr_kmeans"]

# FAISS's helper for IndexBinaryIVF.add_core: codes into lists chosen by the caller.
add_preassigned: Callable[[faiss.IndexBinaryIVF, Codes, Labels, Labels], None] = ivf_tools.add_preassigned
_GROWTH = 4  # k' multiplier between rounds
# The ways of a filtered search and where each takes over, measured at 1M items (nlist 4096) by
# bench_filters.py; p50 / recall@10 there:
# Passing items per list up to which they are scored exactly from the store (~4 us each to read)
# rather than gathered: a gathering search of a filter this narrow visits every list (~5 us each).
# 0.1 %: exact 4.6 ms / 1.0, gather 15.5 ms; 0.3 %: 12.6 vs 21.1 ms; 1 %: 37.1 vs 21.6 ms.
EXACT_PER_LIST = 1.0
# Share of the live items passing below which lists are gathered, not scanned: 10 % gather
# 13.4 ms / 0.945, scan 25.5 ms / 0.993; 20 %: 23.5 ms / 0.956 vs 11.7 ms / 0.985.
GATHER_BELOW = 0.15
# Passing entries a gathering search reads first (the lists it visits follow from the share that
# passes); a query whose k-th overlap found there is below GATHER_DIFFUSE of its active bits (a
# diffuse neighbourhood: its best passing items lie spread over many lists) visits GATHER_WIDEN times
# as many. 5 %: 6000 gave 0.965 over 100 queries, 8000 0.971 at the same p50 (~9 ms).
GATHER_ITEMS = 8000
GATHER_WIDEN = 4.0
GATHER_DIFFUSE = 0.3
# A scan under a filter passing share s visits s ** -SCAN_WIDEN times the lists (and fetches 1 / s
# times the candidates). 50 %: 1.0 gave 0.953, 1.25 0.957, 1.5 0.960 at the same p50.
SCAN_WIDEN = 1.25


class IvfBackend(Backend):
    """Codes spilled into their nearest k-means lists; lists picked per query by the probe table."""

    def __init__(
        self,
        layout: Layout,
        config: IndexConfig,
        centroids: Codes,
        probe_table: ProbeTable,
        *,
        copies: int,
        trained_for: int,
        live: LiveLabels | None = None,
    ) -> None:
        nlist = int(centroids.shape[0])
        if probe_table.shape != (layout.sdr_size, nlist) or not 1 <= copies <= nlist:
            raise ValueError("the probe table or the copies per item do not fit the lists")
        self.layout = layout
        self.config = config
        self.nlist = nlist
        self.centroids = centroids
        self.probe_table = probe_table
        self.copies = copies
        self._trained_for = max(trained_for, 1)
        self.live = live if live is not None else LiveLabels(layout.max_weight, layout.equalize_bits)
        self.quantizer = faiss.IndexBinaryFlat(layout.bits)
        self.quantizer.add(centroids)
        self.index = faiss.IndexBinaryIVF(self.quantizer, layout.bits, nlist)
        self.index.is_trained = True  # centroids are given; FAISS's float k-means is skipped
        self.index.nprobe = min(config.ivf_nprobe, nlist)
        self.lists = IvfLists(self.index, layout.code_size, copies)

    @classmethod
    def train(
        cls,
        layout: Layout,
        config: IndexConfig,
        positions: npt.NDArray[np.uint32],
        lengths: npt.NDArray[np.int64],
        live_total: int,
    ) -> IvfBackend:
        """An empty IVF backend whose lists are SDR k-means clusters of the sample."""
        nlist = min(config.ivf_nlist, int(lengths.size))
        centroids, probe_table = sdr_kmeans(positions, lengths, layout, nlist, config.ivf_train_iterations)
        copies = min(config.ivf_lists_per_item, nlist)
        return cls(layout, config, centroids, probe_table, copies=copies, trained_for=live_total)

    @classmethod
    def from_snapshot(cls, layout: Layout, config: IndexConfig, state: IvfState, read: ReadBytes) -> IvfBackend:
        weights = read_array(read, "<i4", state.labels)
        live = LiveLabels.restore(layout.max_weight, layout.equalize_bits, weights)
        centroids = read_array(read, "u1", state.nlist * layout.code_size).reshape(state.nlist, layout.code_size)
        table = read_array(read, "u1", layout.sdr_size * state.nlist).reshape(layout.sdr_size, state.nlist)
        backend = cls(
            layout,
            config,
            centroids.astype(np.uint8),
            table.astype(np.uint8),
            copies=state.copies,
            trained_for=state.trained_for,
            live=live,
        )
        sizes = read_array(read, "<i8", state.nlist).astype(np.int64)
        if int(sizes.sum()) != state.entries or (sizes < 0).any():
            raise ValueError("IVF list sizes do not add up to the entries")
        labels = read_array(read, "<i8", state.entries).astype(np.int64)
        assignment = np.repeat(np.arange(state.nlist, dtype=np.int64), sizes)
        per_chunk = max(1, CHUNK_BYTES // layout.code_size)
        for start in range(0, state.entries, per_chunk):
            count = min(per_chunk, state.entries - start)
            codes = read_array(read, "u1", count * layout.code_size).reshape(count, layout.code_size)
            add_preassigned(backend.index, codes, assignment[start : start + count], labels[start : start + count])
        if state.entries % state.copies or backend.entries < live.count:
            raise ValueError("the IVF lists hold fewer items than the live labels")
        return backend

    # -- state ------------------------------------------------------------------

    @property
    def trained_for(self) -> int:
        return self._trained_for

    @property
    def entries(self) -> int:
        """Items in FAISS, live or dead (each spilled item counted once)."""
        return int(self.index.ntotal) // self.copies

    # -- mutation -----------------------------------------------------------------

    def add(self, labels: Labels, codes: Codes, lengths: npt.NDArray[np.int64]) -> None:
        """Store each item in its ``copies`` nearest lists (IndexBinaryIVF.add stores it in one)."""
        if labels.size == 0:
            return
        codes = np.ascontiguousarray(codes)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        _, lists = self.quantizer.search(codes, self.copies)
        self.lists.forget(np.unique(lists).tolist())  # their buffers may move: views of them go
        for column in range(self.copies):
            add_preassigned(self.index, codes, np.ascontiguousarray(lists[:, column]), labels)
        self.live.add(labels, lengths)

    def compact(self) -> int:
        self.lists.forget_all()  # every list may shrink or move
        return self.live.drop_dead(self.index, self.entries)

    def freeze(self) -> Frozen:
        invlists = self.index.invlists
        sizes = np.array([invlists.list_size(number) for number in range(self.nlist)], dtype=np.int64)
        state = IvfState("ivf", self.live.size, self.nlist, self.copies, self._trained_for, int(sizes.sum()))
        return Frozen(state, self._chunks(self.live.weights_copy(), sizes))

    def _chunks(self, weights: npt.NDArray[np.int32], sizes: npt.NDArray[np.int64]) -> Iterator[bytes]:
        yield from copy_bytes(weights.astype("<i4", copy=False))
        yield from copy_bytes(self.centroids)
        yield from copy_bytes(self.probe_table)
        yield sizes.astype("<i8").tobytes()
        yield from self._lists(sizes, ids=True)
        yield from self._lists(sizes, ids=False)

    def _lists(self, sizes: npt.NDArray[np.int64], *, ids: bool) -> Iterator[bytes]:
        """Each list's first ``sizes[l]`` labels (or codes): what it held at the freeze; later adds come after."""
        width = 8 if ids else self.layout.code_size
        parts: list[bytes] = []
        gathered = 0
        for number, size in enumerate(sizes.tolist()):
            if size:
                invlists = self.index.invlists  # fetched per list: an add may have moved its buffers
                if ids:
                    part = faiss.rev_swig_ptr(invlists.get_ids(number), size).astype("<i8")
                else:
                    part = faiss.rev_swig_ptr(invlists.get_codes(number), size * width)
                parts.append(part.tobytes())
                gathered += size * width
            if gathered >= CHUNK_BYTES:
                yield b"".join(parts)
                parts, gathered = [], 0
        if parts:
            yield b"".join(parts)

    # -- search ---------------------------------------------------------------------

    def _search(self, batch: QueryBatch, k: int, min_overlap: int, allowed: Allowed | None) -> list[Hits]:
        codes, lengths, exclude, count = batch.codes, batch.lengths, batch.exclude, batch.count
        queries = np.split(batch.positions, np.cumsum(lengths)[:-1])  # per query, for the list choice
        way = self.strategy(allowed) if allowed is not None else "scan"
        if allowed is not None and way == "exact":
            return self._exact(queries, k, min_overlap, exclude, allowed)
        if allowed is not None and way == "gather":
            return [
                self._gather(codes[q], queries[q], k, min_overlap, exclude=int(exclude[q]), allowed=allowed)
                for q in range(count)
            ]
        passes = allowed.mask if allowed is not None else None
        share = allowed.fraction if allowed is not None else 1.0
        answers: list[Hits | None] = [None] * count
        pending = np.arange(count)
        fetch = self._first_fetch(k, share, exclude)
        while pending.size:
            fetch = min(fetch, max(self.entries, 1))
            distances, labels = self._knn(
                codes[pending], fetch, [queries[q] for q in pending], k, exclude[pending], passes=passes, share=share
            )
            retry: list[int] = []
            for row, query in enumerate(pending):
                weight = int(lengths[query])
                hits, floor = self.live.rank(
                    distances[row], labels[row], weight, k, min_overlap, exclude=int(exclude[query]), passes=passes
                )
                if self._settled(hits, distances[row], labels[row], weight, k=k, floor=floor, fetch=fetch):
                    answers[query] = hits
                else:
                    retry.append(int(query))
            pending = np.array(retry, dtype=np.int64)
            fetch *= _GROWTH
        return [answer if answer is not None else empty_hits() for answer in answers]

    def strategy(self, allowed: Allowed) -> str:
        """How a search under ``allowed`` runs: "exact" (few pass), "gather" (a small share) or "scan"."""
        if allowed.count <= EXACT_PER_LIST * self.nlist:
            return "exact"
        return "gather" if allowed.fraction < GATHER_BELOW else "scan"

    def _exact(
        self, queries: list[npt.NDArray[np.uint32]], k: int, min_overlap: int, exclude: Labels, allowed: Allowed
    ) -> list[Hits]:
        """Every passing item scored, its SDR read from the store: exact, for the few a narrow filter lets through."""
        labels, positions, lengths = allowed.read_sdrs(allowed.labels().tolist())
        answers = []
        for number, query in enumerate(queries):
            overlaps = overlaps_of(query, positions, lengths, self.layout.sdr_size)
            kept = labels != exclude[number]
            answers.append(best(labels[kept], overlaps[kept], k, min_overlap)[0])
        return answers

    def _gather(
        self, code: Codes, query: npt.NDArray[np.uint32], k: int, min_overlap: int, *, exclude: int, allowed: Allowed
    ) -> Hits:
        """The lists best first, only their passing entries counted: a narrow filter's items lie in many lists.

        First as many lists as hold ``GATHER_ITEMS`` passing entries (at least
        ``ivf_nprobe_wide``); when the k-th overlap found there is below ``GATHER_DIFFUSE``
        of the query's bits (a diffuse neighbourhood, as in an unfiltered search), on to
        ``GATHER_WIDEN`` times as many.
        """
        per_list = max(allowed.count * self.copies / self.nlist, 1e-9)
        first = min(max(math.ceil(GATHER_ITEMS / per_list), self.config.ivf_nprobe_wide), self.nlist)
        wide = min(math.ceil(first * GATHER_WIDEN), self.nlist) if self.config.ivf_widen_below > 0 else first
        probes = best_lists(self.probe_table, query, wide)
        labels, distances = self.lists.gathered(code, probes[:first], allowed)
        hits, kth = self.live.rank(distances, labels, int(query.size), k, min_overlap, exclude=exclude)
        if wide == first or kth >= GATHER_DIFFUSE * query.size:
            return hits
        more_labels, more_distances = self.lists.gathered(code, probes[first:], allowed)
        labels, at = np.unique(np.concatenate([labels, more_labels]), return_index=True)  # spilled across both
        distances = np.concatenate([distances, more_distances])[at]
        return self.live.rank(distances, labels, int(query.size), k, min_overlap, exclude=exclude)[0]

    def _settled(
        self,
        hits: Hits,
        distances: npt.NDArray[np.int64],
        labels: Labels,
        query_weight: int,
        *,
        k: int,
        floor: int,
        fetch: int,
    ) -> bool:
        """Approximate: stop once k live answers are in hand; look further only when dead or
        excluded labels crowded them out (or the bound proves nothing further can enter)."""
        bound_twice = self._bound_twice(distances, labels, query_weight, fetch)
        return bound_twice is None or hits.labels.size >= k or bound_twice < 2 * floor

    def _knn(
        self,
        codes: Codes,
        fetch: int,
        queries: list[npt.NDArray[np.uint32]],
        k: int,
        exclude: Labels,
        *,
        passes: Callable[[Labels], npt.NDArray[np.bool_]] | None = None,
        share: float = 1.0,
    ) -> tuple[npt.NDArray[np.int64], Labels]:
        """Scan each query's best ``ivf_nprobe`` lists; a diffuse query's next ones up to ``ivf_nprobe_wide``.

        Under a filter passing ``share`` of the items, both breadths grow by ``1 / share``:
        the lists then hold about as many passing items as an unfiltered search sees.
        """
        breadth = share**-SCAN_WIDEN
        first = min(math.ceil(self.config.ivf_nprobe * breadth), self.nlist)
        wide = math.ceil(self.config.ivf_nprobe_wide * breadth)
        widest = min(wide, self.nlist) if self.config.ivf_widen_below > 0 else first
        widest = max(widest, first)
        probes = np.stack([best_lists(self.probe_table, query, widest) for query in queries])  # best list first
        distances, labels = self._scan(codes, fetch, probes[:, :first])
        if widest == first:
            return distances, labels
        diffuse = [
            row
            for row, query in enumerate(queries)
            if self._diffuse(distances[row], labels[row], int(query.size), k, int(exclude[row]), passes=passes)
        ]
        if diffuse:
            more_distances, more_labels = self._scan(codes[diffuse], fetch, probes[diffuse, first:])
            merged = unique_nearest(
                np.concatenate([distances[diffuse], more_distances], axis=1),
                np.concatenate([labels[diffuse], more_labels], axis=1),
                fetch,
            )
            distances[diffuse], labels[diffuse] = merged
        return distances, labels

    def _diffuse(
        self,
        distances: npt.NDArray[np.int64],
        labels: Labels,
        query_weight: int,
        k: int,
        exclude: int,
        *,
        passes: Callable[[Labels], npt.NDArray[np.bool_]] | None = None,
    ) -> bool:
        """Whether the k-th overlap found is below ``ivf_widen_below`` of the query's active bits."""
        _, kth = self.live.rank(distances, labels, query_weight, k, 0, exclude=exclude, passes=passes)
        return kth < self.config.ivf_widen_below * query_weight

    def _scan(self, codes: Codes, fetch: int, probes: Labels) -> tuple[npt.NDArray[np.int64], Labels]:
        """The lists' scan (``IvfLists.scan``), through the backend so a test can count the lists scanned."""
        return self.lists.scan(codes, fetch, probes)
