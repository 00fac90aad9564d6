"""The FAISS acceleration structure: candidates by Hamming, answers by exact overlap.

FAISS finds candidates by Hamming distance over the padded codes of
``codes.py``; each candidate's overlap follows exactly from its distance and its
stored weight ``W``: ``overlap = (|a| + W - hamming') / 2``. Results are ordered
by overlap (descending), ties by label (ascending: the item added, or last
replaced, earlier comes first).

For the exact kind the answer is checked, not hoped for: an item FAISS did not
return has ``hamming' >= d_last`` (the largest distance returned), hence
``overlap <= (|a| + W_max - d_last) / 2``; if that bound is below the k-th
overlap found (or below ``min_overlap``), nothing outside can enter the
top k. Otherwise more candidates are fetched, finally by a range search.

For the IVF kind the lists to scan are chosen by a probe table, not by FAISS's
own quantizer: per list, how often each SDR bit is active among its members
(from the k-means sample). A list's score for a query is the sum of those
frequencies over the query's active bits, i.e. the expected overlap of the query
with a member of that list; it ranks lists far better than the overlap with
the binary centroid, for about the same cost. A single query's lists are split
across the OpenMP threads (FAISS parallelises IVF search over queries only).

Two measures for the queries IVF finds hard. Merged SDRs are mixtures of terms,
so an item's neighbours need not share its dominant term, and they spread over
many lists. Each item is therefore stored in its ``ivf_lists_per_item`` nearest
lists (spilling; results are de-duplicated), and a query whose k-th best overlap
in its first ``ivf_nprobe`` lists is a small share of its own active bits (a
diffuse neighbourhood) goes on to scan up to ``ivf_nprobe_wide`` lists.

Removal: labels are marked dead in a bitmap, excluded from results at once, and
physically dropped from FAISS in one pass once they pile up (``compact``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np
import numpy.typing as npt

from ..config import IndexConfig
from .codes import code_size, pack_codes, stored_weights

__all__ = ["FaissIndex", "Hits", "Layout"]

logger = logging.getLogger(__name__)

Labels = npt.NDArray[np.int64]
Codes = npt.NDArray[np.uint8]
ProbeTable = npt.NDArray[np.uint8]
_RANGE_AFTER = 16384  # exact search switches from growing k' to one range search past this
_GROWTH = 4  # k' multiplier between rounds
PROBE_SCALE = 127  # probe table entries: a bit's frequency within a list, times this (uint8)
_PROBE_SUM_UINT16 = 65535 // PROBE_SCALE  # query bits whose scores fit a uint16 sum


@dataclass(frozen=True)
class Layout:
    """How SDRs become FAISS codes; a snapshot with another layout is not loaded."""

    sdr_size: int
    equalize_bits: int

    @property
    def code_size(self) -> int:
        return code_size(self.sdr_size, self.equalize_bits)

    @property
    def bits(self) -> int:
        return self.code_size * 8

    @property
    def max_weight(self) -> int:
        return max(self.sdr_size, self.equalize_bits)


@dataclass(frozen=True)
class Hits:
    """One query's answer: labels and overlaps, best first."""

    labels: Labels
    overlaps: npt.NDArray[np.int64]


class FaissIndex:
    """A FAISS binary index plus what exact re-ranking needs, per label.

    Not thread-safe for mutation: ``SdrIndex`` serialises writers against
    readers. Per item it keeps the code (inside FAISS), one int64 id (FAISS's id
    map), an int32 weight and one bit of liveness; ids, concepts and metadata
    stay in SQLite.
    """

    def __init__(self, layout: Layout, config: IndexConfig) -> None:
        self.layout = layout
        self.config = config
        self.index: faiss.IndexBinary = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(layout.bits))
        self.ivf_trained_at = 0  # live items when IVF was trained; 0 = flat (exact) structure
        self.nlist = 0  # IVF lists, when IVF
        self.probe_table: ProbeTable | None = None  # (sdr_size, nlist) uint8, when IVF
        self.copies = 1  # IVF lists each item is stored in (spilling); 1 for flat
        self._weights = np.full(0, -1, dtype=np.int32)  # by label; -1 = not live
        self._live = np.zeros(0, dtype=np.uint8)  # by label, FAISS IDSelectorBitmap layout
        self._histogram = np.zeros(layout.max_weight + 1, dtype=np.int64)  # live items per weight
        self.live_count = 0

    # -- state ---------------------------------------------------------------

    @property
    def is_ivf(self) -> bool:
        return self.ivf_trained_at > 0

    @property
    def indexed(self) -> int:
        """Items in FAISS, live or dead (each spilled item counted once)."""
        return int(self.index.ntotal) // self.copies

    @property
    def tombstones(self) -> int:
        return self.indexed - self.live_count

    def needs_compaction(self) -> bool:
        dead = self.tombstones
        return dead >= self.config.compact_min and dead > self.config.compact_ratio * self.indexed

    def needs_training(self) -> bool:
        """IVF wanted and either never trained yet, or trained on a much smaller collection."""
        if self.config.kind != "ivf" or self.live_count < self.config.ivf_train_min:
            return False
        return not self.is_ivf or self.live_count >= self.config.ivf_retrain_growth * self.ivf_trained_at

    def arrays(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]]:
        """(weights by label, liveness bitmap) for the snapshot."""
        return self._weights, self._live

    def restore_arrays(self, weights: npt.NDArray[np.int32], live: npt.NDArray[np.uint8]) -> None:
        self._weights = np.array(weights, dtype=np.int32)
        self._live = np.array(live, dtype=np.uint8)
        alive = self._weights[self._weights >= 0]
        self._histogram = np.bincount(alive, minlength=self.layout.max_weight + 1).astype(np.int64)
        self.live_count = int(alive.size)

    # -- mutation ------------------------------------------------------------

    def add(self, labels: Labels, codes: Codes, lengths: npt.NDArray[np.int64]) -> None:
        """Index new labels (never seen before: the store never reuses one)."""
        if labels.size == 0:
            return
        self._grow(int(labels.max()) + 1)
        weights = stored_weights(lengths, self.layout.equalize_bits)
        if self.copies > 1:
            self._add_spilled(labels, codes)
        else:
            self.index.add_with_ids(codes, labels)
        self._weights[labels] = weights
        np.bitwise_or.at(self._live, labels >> 3, np.left_shift(1, labels & 7).astype(np.uint8))
        self._histogram += np.bincount(weights, minlength=self._histogram.size)
        self.live_count += int(labels.size)

    def _add_spilled(self, labels: Labels, codes: Codes) -> None:
        """Store each item in its ``copies`` nearest lists (IndexBinaryIVF.add stores it in one)."""
        quantizer = self.index.quantizer  # type: ignore[attr-defined]  # an IndexBinaryIVF here
        codes = np.ascontiguousarray(codes)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        _, lists = quantizer.search(codes, self.copies)
        for column in range(self.copies):
            assigned = np.ascontiguousarray(lists[:, column])
            self.index.add_core(  # type: ignore[attr-defined]
                int(labels.size), faiss.swig_ptr(codes), faiss.swig_ptr(labels), faiss.swig_ptr(assigned)
            )

    def remove(self, labels: Labels) -> None:
        """Mark labels dead; searches skip them from now on."""
        labels = labels[(labels >= 0) & (labels < self._weights.size)]
        labels = labels[self._weights[labels] >= 0]
        if labels.size == 0:
            return
        self._histogram -= np.bincount(self._weights[labels], minlength=self._histogram.size)
        self._weights[labels] = -1
        np.bitwise_and.at(self._live, labels >> 3, np.invert(np.left_shift(1, labels & 7).astype(np.uint8)))
        self.live_count -= int(labels.size)

    def compact(self) -> int:
        """Drop dead labels from FAISS in one pass over the index; how many went."""
        dead = self.tombstones
        if dead:
            live = self._live_selector()  # held here: IDSelectorNot keeps only a raw pointer to it
            entries = int(self.index.remove_ids(faiss.IDSelectorNot(live)))
            logger.info("index compacted: %d removed items dropped from FAISS", entries // self.copies)
        return dead

    def train(self, positions: npt.NDArray[np.uint32], lengths: npt.NDArray[np.int64], live_total: int) -> None:
        """Switch an empty index to IVF over SDR k-means centroids of the sample."""
        if self.index.ntotal:
            raise ValueError("train an empty index, then add")
        nlist = min(self.config.ivf_nlist, int(lengths.size))
        centroids, probe_table = sdr_kmeans(positions, lengths, self.layout, nlist, self.config.ivf_train_iterations)
        quantizer = faiss.IndexBinaryFlat(self.layout.bits)
        quantizer.add(centroids)
        index = faiss.IndexBinaryIVF(quantizer, self.layout.bits, nlist)  # keeps a reference to quantizer
        index.is_trained = True  # centroids are given; FAISS's float k-means is skipped
        index.nprobe = min(self.config.ivf_nprobe, nlist)
        self.index = index
        self.nlist = nlist
        self.probe_table = probe_table
        self.copies = min(self.config.ivf_lists_per_item, nlist)
        self.ivf_trained_at = max(live_total, 1)

    def _grow(self, size: int) -> None:
        if size <= self._weights.size:
            return
        capacity = max(size, 2 * self._weights.size, 1024)
        capacity = (capacity + 7) // 8 * 8
        weights = np.full(capacity, -1, dtype=np.int32)
        weights[: self._weights.size] = self._weights
        live = np.zeros(capacity // 8, dtype=np.uint8)
        live[: self._live.size] = self._live
        self._weights, self._live = weights, live

    def _live_selector(self) -> faiss.IDSelectorBitmap:
        # FAISS keeps a raw pointer to the liveness bitmap: the selector holds the array.
        selector = faiss.IDSelectorBitmap(self._live.size * 8, faiss.swig_ptr(self._live))
        selector.referenced_objects = [self._live]  # type: ignore[attr-defined]  # FAISS's own keep-alive slot
        return selector

    def _params(self) -> faiss.SearchParameters:
        """Search parameters that let only live labels through.

        Built with ``sel=``, the form FAISS documents to keep the selector referenced
        by the parameters for as long as they live.
        """
        return faiss.SearchParameters(sel=self._live_selector())  # type: ignore[call-arg]  # kwargs: faiss Python init

    # -- search --------------------------------------------------------------

    def search(
        self,
        positions: npt.NDArray[np.uint32],
        lengths: npt.NDArray[np.int64],
        k: int,
        min_overlap: int,
        exclude: Labels,
    ) -> list[Hits]:
        """Top-k by overlap for each query; ``exclude[i]`` (or -1) is left out of answer i."""
        codes = pack_codes(positions, lengths, self.layout.sdr_size, self.layout.equalize_bits, pad=False)
        count = int(lengths.size)
        queries = np.split(positions, np.cumsum(lengths)[:-1])  # per query, for IVF list choice
        answers: list[Hits | None] = [None] * count
        floors = np.full(count, min_overlap, dtype=np.int64)  # best known lower bound on the k-th overlap
        pending = np.arange(count)
        fetch = max(k * self.config.candidate_factor, k + self.config.candidate_margin) + int(
            exclude.max(initial=-1) >= 0
        )
        while pending.size:
            if not self.is_ivf and fetch > _RANGE_AFTER:
                for query in pending:
                    answers[query] = self._range(
                        codes[query],
                        int(lengths[query]),
                        k,
                        min_overlap,
                        floor=int(floors[query]),
                        exclude=int(exclude[query]),
                    )
                break
            fetch = min(fetch, max(self.indexed, 1))
            distances, labels = self._knn(
                codes[pending], fetch, [queries[query] for query in pending], k, exclude[pending]
            )
            retry: list[int] = []
            for row, query in enumerate(pending):
                weight = int(lengths[query])
                hits, floor = self._rank(
                    distances[row], labels[row], weight, k, min_overlap, exclude=int(exclude[query])
                )
                if self._settled(hits, distances[row], labels[row], weight, k=k, floor=floor, fetch=fetch):
                    answers[query] = hits
                else:
                    floors[query] = floor
                    retry.append(int(query))
            pending = np.array(retry, dtype=np.int64)
            fetch *= _GROWTH
        return [answer if answer is not None else _empty() for answer in answers]

    def _knn(
        self, codes: Codes, fetch: int, queries: list[npt.NDArray[np.uint32]], k: int, exclude: Labels
    ) -> tuple[npt.NDArray[np.int64], Labels]:
        if self.is_ivf:
            return self._ivf_knn(codes, fetch, queries, k, exclude)
        params = self._params()
        return self._call(lambda: self.index.search(codes, fetch, params=params))

    def _ivf_knn(
        self, codes: Codes, fetch: int, queries: list[npt.NDArray[np.uint32]], k: int, exclude: Labels
    ) -> tuple[npt.NDArray[np.int64], Labels]:
        """Scan each query's best ``ivf_nprobe`` lists; a diffuse query's next ones up to ``ivf_nprobe_wide``."""
        first = min(self.config.ivf_nprobe, self.nlist)
        widest = min(self.config.ivf_nprobe_wide, self.nlist) if self.config.ivf_widen_below > 0 else first
        widest = max(widest, first)
        probes = np.stack([self._probes(query, widest) for query in queries])  # best list first
        distances, labels = self._scan(codes, fetch, probes[:, :first])
        if widest == first:
            return distances, labels
        diffuse = [
            row
            for row, query in enumerate(queries)
            if self._diffuse(distances[row], labels[row], int(query.size), k, int(exclude[row]))
        ]
        if diffuse:
            more_distances, more_labels = self._scan(codes[diffuse], fetch, probes[diffuse, first:])
            merged = _unique(
                np.concatenate([distances[diffuse], more_distances], axis=1),
                np.concatenate([labels[diffuse], more_labels], axis=1),
                fetch,
            )
            distances[diffuse], labels[diffuse] = merged
        return distances, labels

    def _diffuse(
        self, distances: npt.NDArray[np.int64], labels: Labels, query_weight: int, k: int, exclude: int
    ) -> bool:
        """Whether the k-th overlap found is below ``ivf_widen_below`` of the query's active bits."""
        _, kth = self._rank(distances, labels, query_weight, k, 0, exclude=exclude)
        return kth < self.config.ivf_widen_below * query_weight

    def _scan(self, codes: Codes, fetch: int, probes: Labels) -> tuple[npt.NDArray[np.int64], Labels]:
        """IVF search of the given lists per query; fewer queries than threads share out their lists."""
        count, nprobe = probes.shape
        found = fetch * self.copies  # a spilled item can come back once per list it is in
        parts = max(1, min(faiss.omp_get_max_threads() // count, nprobe))
        per_part = -(-nprobe // parts)
        if parts > 1:
            # Query i becomes rows i*parts .. i*parts+parts-1, each with its own share
            # of the lists (-1 = nothing; FAISS skips it); their results are merged below.
            padded = np.full((count, parts * per_part), -1, dtype=np.int64)
            padded[:, :nprobe] = probes
            probes = padded.reshape(count * parts, per_part)
            codes = np.repeat(codes, parts, axis=0)
        rows = count * parts
        codes = np.ascontiguousarray(codes)
        probes = np.ascontiguousarray(probes, dtype=np.int64)
        coarse = np.zeros(probes.shape, dtype=np.int32)  # not used by binary Hamming scanning
        distances = np.empty((rows, found), dtype=np.int32)
        labels = np.empty((rows, found), dtype=np.int64)
        params = faiss.SearchParametersIVF()
        params.nprobe = per_part
        # IndexBinaryIVF takes no IDSelector: dead labels are dropped in _rank.
        self.index.search_preassigned_c(  # type: ignore[attr-defined]
            rows,
            faiss.swig_ptr(codes),
            found,
            faiss.swig_ptr(probes),
            faiss.swig_ptr(coarse),
            faiss.swig_ptr(distances),
            faiss.swig_ptr(labels),
            False,
            params,
        )
        if parts == 1 and self.copies == 1:
            return distances.astype(np.int64), labels
        return _unique(
            distances.reshape(count, parts * found).astype(np.int64), labels.reshape(count, parts * found), fetch
        )

    def _probes(self, query: npt.NDArray[np.uint32], nprobe: int) -> Labels:
        """The ``nprobe`` lists whose members share the most bits with ``query`` on average, best first."""
        assert self.probe_table is not None
        dtype = np.uint16 if query.size <= _PROBE_SUM_UINT16 else np.uint32
        scores = self.probe_table[query].sum(axis=0, dtype=dtype)
        if nprobe < scores.size:
            best = np.argpartition(scores, scores.size - nprobe)[scores.size - nprobe :]
        else:
            best = np.arange(scores.size)
        return best[np.argsort(-scores[best].astype(np.int64), kind="stable")].astype(np.int64)

    @staticmethod
    def _call(search: Callable[[], tuple[npt.NDArray[np.int32], Labels]]) -> tuple[npt.NDArray[np.int64], Labels]:
        distances, labels = search()
        return distances.astype(np.int64), labels

    def _rank(
        self,
        distances: npt.NDArray[np.int64],
        labels: Labels,
        query_weight: int,
        k: int,
        min_overlap: int,
        *,
        exclude: int,
    ) -> tuple[Hits, int]:
        """Exact overlaps of the live candidates, best first; and the k-th overlap (or min_overlap)."""
        valid = labels >= 0
        labels, distances = labels[valid], distances[valid]
        weights = self._weights[labels]
        keep = (weights >= 0) & (labels != exclude)
        labels, distances, weights = labels[keep], distances[keep], weights[keep]
        overlaps = (query_weight + weights.astype(np.int64) - distances) // 2
        order = np.lexsort((labels, -overlaps))
        labels, overlaps = labels[order], overlaps[order]
        passing = overlaps >= min_overlap
        labels, overlaps = labels[passing][:k], overlaps[passing][:k]
        floor = int(overlaps[k - 1]) if overlaps.size >= k else min_overlap
        return Hits(labels, overlaps), floor

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
        """Whether the answer is final: exact (bound below the floor) or, for IVF, complete enough."""
        returned = int((labels >= 0).sum())
        if returned < fetch or fetch >= self.indexed:
            return True  # FAISS had nothing more to give (in the probed lists, for IVF)
        bound_twice = query_weight + self._max_weight() - int(distances[returned - 1])
        if self.is_ivf:
            # Approximate: stop once k live answers are in hand; look further only
            # when dead or excluded labels crowded them out.
            return hits.labels.size >= k or bound_twice < 2 * floor
        return bound_twice < 2 * floor

    def _range(self, code: Codes, query_weight: int, k: int, min_overlap: int, *, floor: int, exclude: int) -> Hits:
        """Exact fallback: every item that could reach ``floor``, by one range search."""
        radius = query_weight + self._max_weight() - 2 * max(floor, 0) + 1  # FAISS keeps d < radius
        params = self._params()
        _, distances, labels = self.index.range_search(code[None, :], radius, params=params)
        hits, _ = self._rank(distances.astype(np.int64), labels, query_weight, k, min_overlap, exclude=exclude)
        return hits

    def _max_weight(self) -> int:
        nonzero = np.flatnonzero(self._histogram)
        return int(nonzero[-1]) if nonzero.size else 0


def _unique(distances: npt.NDArray[np.int64], labels: Labels, fetch: int) -> tuple[npt.NDArray[np.int64], Labels]:
    """Per row, the ``fetch`` nearest distinct labels (-1 pads); a spilled item may come twice.

    Sorting by (distance, label) puts an item's copies side by side: they share
    their code, hence their distance. Empty slots (-1) carry FAISS's largest
    distance and so sort last.
    """
    order = np.lexsort((labels, distances), axis=-1)
    distances = np.take_along_axis(distances, order, axis=1)
    labels = np.take_along_axis(labels, order, axis=1)
    repeat = np.zeros(labels.shape, dtype=bool)
    repeat[:, 1:] = (labels[:, 1:] == labels[:, :-1]) & (labels[:, 1:] >= 0)
    distances[repeat] = np.iinfo(np.int32).max
    labels[repeat] = -1
    keep = np.argsort(repeat, axis=1, kind="stable")[:, :fetch]  # distinct ones first, order kept
    return np.take_along_axis(distances, keep, axis=1), np.take_along_axis(labels, keep, axis=1)


def _empty() -> Hits:
    return Hits(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


def sdr_kmeans(
    positions: npt.NDArray[np.uint32], lengths: npt.NDArray[np.int64], layout: Layout, nlist: int, iterations: int
) -> tuple[Codes, ProbeTable]:
    """k-means in SDR space: assign by overlap (FAISS), centroid = the cluster's most frequent bits.

    FAISS's own IndexBinaryIVF training runs float k-means on the unpacked bits
    (16k dimensions), far too slow here, and its centroids binarised at 0.5 are
    nearly empty for 2 %-sparse data; a centroid that is itself an SDR of the
    typical weight fits the overlap metric and costs one bincount per round.

    Returns the centroids (padded codes, as FAISS assigns items by them) and the
    probe table: for each SDR bit and list, the share of the list's sample
    members with that bit active, times ``PROBE_SCALE``, after a last
    assignment to the final centroids. It counts each member in its nearest
    list only, though spilling also stores it in the next: the table describes
    each list's core members.
    """
    rng = np.random.default_rng(20240601)
    codes = pack_codes(positions, lengths, layout.sdr_size, layout.equalize_bits, pad=True)
    weight = max(int(np.median(lengths)), 1)
    rows = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    centroids = codes[rng.choice(lengths.size, nlist, replace=False)]
    for round_ in range(iterations + 1):
        quantizer = faiss.IndexBinaryFlat(layout.bits)
        quantizer.add(centroids)
        _, assigned = quantizer.search(codes, 1)
        cluster = assigned[:, 0]
        counts = np.bincount(cluster[rows] * layout.sdr_size + positions, minlength=nlist * layout.sdr_size)
        counts = counts.reshape(nlist, layout.sdr_size)
        members = np.bincount(cluster, minlength=nlist)
        if round_ == iterations:
            return centroids, _probe_table(counts, members)
        top = np.sort(np.argpartition(-counts, weight - 1, axis=1)[:, :weight], axis=1).astype(np.uint32)
        del counts
        widths = np.full(nlist, weight, dtype=np.int64)
        fresh = pack_codes(top.reshape(-1), widths, layout.sdr_size, layout.equalize_bits, pad=True)
        empty = members == 0
        fresh[empty] = codes[rng.choice(lengths.size, int(empty.sum()), replace=False)]  # reseed empty lists
        centroids = fresh
    raise AssertionError("unreachable: the last round returns")


def _probe_table(counts: npt.NDArray[np.int64], members: npt.NDArray[np.int64]) -> ProbeTable:
    """(sdr_size, nlist) uint8: each bit's share of each list's members, times PROBE_SCALE."""
    nlist, sdr_size = counts.shape
    table = np.empty((sdr_size, nlist), dtype=np.uint8)
    scale = PROBE_SCALE / np.maximum(members, 1).astype(np.float64)
    step = 512  # lists at a time, to bound the float temporaries
    for first in range(0, nlist, step):
        part = counts[first : first + step] * scale[first : first + step, None]
        table[:, first : first + step] = np.rint(part).T
    return table
