"""The exact backend: FAISS IndexBinaryFlat, every answer checked, not hoped for.

An item FAISS did not return has ``hamming' >= d_last`` (the largest distance
returned), hence ``overlap <= (|a| + W_max - d_last) / 2``; if that bound is
below the k-th overlap found (or below ``min_overlap``), nothing outside can
enter the top k. Otherwise more candidates are fetched, finally by one range
search.

A filtered search (``allowed``: the live labels passing a filter) is exact the
same way, in one of three ways by the share that passes (crossovers measured by
``benchmarks/bench_filters.py``):

- below ``PREFILTER_BELOW``: their codes are gathered by label (the id map is in
  label order) and every one is scored, which skips the visit of every entry
  that even a selector pays for;
- up to ``SCAN_ABOVE``: FAISS scans under an ``IDSelectorBitmap`` of them, so
  items that do not pass are never candidates and the bound holds among those
  that do;
- above: the unfiltered scan, more candidates fetched, those that do not pass
  dropped when ranking; the bound covers every unseen item, passing or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import faiss
import numpy as np
import numpy.typing as npt

from ...config import IndexConfig
from .backend import (
    CHUNK_BYTES,
    Backend,
    Codes,
    FlatState,
    Frozen,
    Layout,
    QueryBatch,
    ReadBytes,
    copy_bytes,
    read_array,
)
from .live import Hits, Labels, LiveLabels, empty_hits, hammings
from .selection import Allowed

__all__ = ["PREFILTER_BELOW", "SCAN_ABOVE", "FlatBackend"]

_RANGE_AFTER = 16384  # past this many candidates, one range search instead of growing k' again
_GROWTH = 4  # k' multiplier between rounds
# Score the passing items directly when fewer than this share of the entries pass; scan
# under a selector above. A selector still visits every entry (~4 ms per 1M), a direct
# score costs a gather and a popcount per passing item (~1.2 us): even at ~1 % (1M items,
# bench_filters.py: 11.8 vs 11.3 ms; 4.6 vs 10.8 ms at 0.3 %, 31.5 vs 20.9 ms at 3 %).
PREFILTER_BELOW = 0.01
# Above this share, scan the live items (the selector FAISS already checks) and drop the others when
# ranking: a selector letting a random half through costs more than the whole scan (its branches
# mispredict). At 1M: 72 vs 86 ms at 20 %, 146 vs 87 ms at 50 %.
SCAN_ABOVE = 0.3


class FlatBackend(Backend):
    """Codes in an IndexBinaryFlat under an id map; exact top-k by overlap."""

    def __init__(self, layout: Layout, config: IndexConfig, live: LiveLabels | None = None) -> None:
        self.layout = layout
        self.config = config
        self._flat = faiss.IndexBinaryFlat(layout.bits)  # its codes buffer is read for snapshots
        self.index = faiss.IndexBinaryIDMap(self._flat)
        self.live = live if live is not None else LiveLabels(layout.max_weight, layout.equalize_bits)
        self._in_label_order = True  # the id map ascends: labels are found by bisection

    @classmethod
    def from_snapshot(cls, layout: Layout, config: IndexConfig, state: FlatState, read: ReadBytes) -> FlatBackend:
        weights = read_array(read, "<i4", state.labels)
        backend = cls(layout, config, LiveLabels.restore(layout.max_weight, layout.equalize_bits, weights))
        backend._fill(read, state.entries)
        if backend.entries < backend.live.count:
            raise ValueError("the flat section holds fewer items than the live labels")
        return backend

    def _fill(self, read: ReadBytes, entries: int) -> None:
        """Read ``entries`` labels, then their codes, straight into FAISS's buffers, sized once.

        Adding chunk by chunk would grow the buffers by doubling (copying them over
        and over) and adding all at once would hold the codes twice; this holds them once.
        """
        ids = self.index.id_map
        ids.resize(entries)
        if entries:
            faiss.rev_swig_ptr(ids.data(), entries)[:] = np.frombuffer(read(entries * 8), dtype="<i8")
        size = entries * self.layout.code_size
        codes = self._flat.xb  # type: ignore[attr-defined]  # FAISS stubs omit xb
        codes.resize(size)
        if size:
            target = faiss.rev_swig_ptr(codes.data(), size)
            for start in range(0, size, CHUNK_BYTES):
                stop = min(start + CHUNK_BYTES, size)
                target[start:stop] = np.frombuffer(read(stop - start), dtype=np.uint8)
        self._flat.ntotal = entries
        self.index.ntotal = entries
        stored = self._ids()
        self._in_label_order = bool(stored.size < 2 or (np.diff(stored) > 0).all())

    # -- state ------------------------------------------------------------------

    @property
    def trained_for(self) -> int:
        return 0

    @property
    def entries(self) -> int:
        """Items in FAISS, live or dead."""
        return int(self.index.ntotal)

    # -- mutation -----------------------------------------------------------------

    def add(self, labels: Labels, codes: Codes, lengths: npt.NDArray[np.int64]) -> None:
        if labels.size == 0:
            return
        if self._in_label_order:  # the store hands out ascending labels; anything else loses the bisection
            last = int(self.index.id_map.at(self.entries - 1)) if self.entries else -1
            self._in_label_order = int(labels[0]) > last and bool((np.diff(labels) > 0).all())
        self.index.add_with_ids(codes, labels)
        self.live.add(labels, lengths)

    def compact(self) -> int:
        return self.live.drop_dead(self.index, self.entries)

    def freeze(self) -> Frozen:
        state = FlatState("flat", self.live.size, self.entries)
        return Frozen(state, self._chunks(self.live.weights_copy(), state.entries))

    def _chunks(self, weights: npt.NDArray[np.int32], entries: int) -> Iterator[bytes]:
        yield from copy_bytes(weights.astype("<i4", copy=False))
        start = 0
        for count in _pieces(entries, CHUNK_BYTES // 8):
            # Fetched again per chunk: an add since the last one may have moved the buffer.
            ids = faiss.rev_swig_ptr(self.index.id_map.data(), start + count)
            yield ids[start:].astype("<i8").tobytes()
            start += count
        per_chunk = max(1, CHUNK_BYTES // self.layout.code_size)
        start = 0
        for count in _pieces(entries, per_chunk):
            buffer = self._flat.xb.data()  # type: ignore[attr-defined]  # FAISS stubs omit xb
            codes = faiss.rev_swig_ptr(buffer, (start + count) * self.layout.code_size)
            yield codes[start * self.layout.code_size :].tobytes()
            start += count

    # -- search ---------------------------------------------------------------------

    def _search(self, batch: QueryBatch, k: int, min_overlap: int, allowed: Allowed | None) -> list[Hits]:
        codes, lengths, exclude, count = batch.codes, batch.lengths, batch.exclude, batch.count
        way = self.strategy(allowed) if allowed is not None else "scan"
        if allowed is not None and way == "prefilter":
            return self._score(codes, lengths, k, min_overlap, exclude=exclude, labels=allowed.labels())
        # Under a selector the allowed labels (live ones) replace the live ones; a scan keeps the
        # live selector and drops what does not pass in rank, fetching as many more as pass fewer.
        params: faiss.SearchParameters | None = None
        passes: Callable[[Labels], npt.NDArray[np.bool_]] | None = None
        share = 1.0
        if allowed is not None and way == "selector":
            params = faiss.SearchParameters(sel=allowed.selector())  # type: ignore[call-arg]  # kwargs: faiss init
        elif allowed is not None:
            passes, share = allowed.mask, allowed.fraction
        answers: list[Hits | None] = [None] * count
        floors = np.full(count, min_overlap, dtype=np.int64)  # best known lower bound on the k-th overlap
        pending = np.arange(count)
        fetch = self._first_fetch(k, share, exclude)
        while pending.size:
            if fetch > _RANGE_AFTER:
                for query in pending:
                    answers[query] = self._range(
                        codes[query],
                        int(lengths[query]),
                        k,
                        min_overlap,
                        floor=int(floors[query]),
                        exclude=int(exclude[query]),
                        params=params,
                        passes=passes,
                    )
                break
            fetch = min(fetch, max(self.entries, 1))
            distances, labels = self.index.search(
                codes[pending], fetch, params=params if params is not None else self.live.search_parameters()
            )
            retry: list[int] = []
            for row, query in enumerate(pending):
                weight = int(lengths[query])
                hits, floor = self.live.rank(
                    distances[row].astype(np.int64),
                    labels[row],
                    weight,
                    k,
                    min_overlap,
                    exclude=int(exclude[query]),
                    passes=passes,
                )
                if self._settled(distances[row], labels[row], weight, floor=floor, fetch=fetch):
                    answers[query] = hits
                else:
                    floors[query] = floor
                    retry.append(int(query))
            pending = np.array(retry, dtype=np.int64)
            fetch *= _GROWTH
        return [answer if answer is not None else empty_hits() for answer in answers]

    def strategy(self, allowed: Allowed) -> str:
        """How a search under ``allowed`` runs: "prefilter" (each passing item scored), "selector" (a scan
        of the passing ones) or "scan" (of the live ones, the others dropped)."""
        if self._in_label_order and allowed.count < PREFILTER_BELOW * max(self.entries, 1):
            return "prefilter"
        return "scan" if allowed.fraction >= SCAN_ABOVE else "selector"

    def _score(
        self, codes: Codes, lengths: npt.NDArray[np.int64], k: int, min_overlap: int, *, exclude: Labels, labels: Labels
    ) -> list[Hits]:
        """Each query against every one of ``labels`` (live), exactly: their codes gathered by label, then counted."""
        ids = self._ids()
        at = np.minimum(np.searchsorted(ids, labels), max(ids.size - 1, 0))
        if ids.size == 0 or not (ids[at] == labels).all():
            raise RuntimeError("a live label is missing from the flat index")  # the store and FAISS disagree
        gathered = self._codes()[at]
        distances = hammings(codes, gathered)
        return [
            self.live.rank(distances[row], labels, int(lengths[row]), k, min_overlap, exclude=int(exclude[row]))[0]
            for row in range(int(lengths.size))
        ]

    def _ids(self) -> Labels:
        """The id map as an array (a view: valid until the next write)."""
        return faiss.rev_swig_ptr(self.index.id_map.data(), self.entries).view(np.int64)

    def _codes(self) -> Codes:
        """The stored codes, one row per entry (a view: valid until the next write)."""
        size = self.entries * self.layout.code_size
        buffer = faiss.rev_swig_ptr(self._flat.xb.data(), size)  # type: ignore[attr-defined]  # FAISS stubs omit xb
        return buffer.reshape(self.entries, self.layout.code_size)

    def _settled(
        self, distances: npt.NDArray[np.int32], labels: Labels, query_weight: int, *, floor: int, fetch: int
    ) -> bool:
        """Exact: nothing FAISS did not return can reach the k-th overlap found."""
        bound_twice = self._bound_twice(distances, labels, query_weight, fetch)
        return bound_twice is None or bound_twice < 2 * floor

    def _range(
        self,
        code: Codes,
        query_weight: int,
        k: int,
        min_overlap: int,
        *,
        floor: int,
        exclude: int,
        params: faiss.SearchParameters | None,
        passes: Callable[[Labels], npt.NDArray[np.bool_]] | None,
    ) -> Hits:
        """Every item that could reach ``floor``, by one range search."""
        radius = query_weight + self.live.max_weight() - 2 * max(floor, 0) + 1  # FAISS keeps d < radius
        params = params if params is not None else self.live.search_parameters()
        _, distances, labels = self.index.range_search(code[None, :], radius, params=params)
        hits, _ = self.live.rank(
            distances.astype(np.int64), labels, query_weight, k, min_overlap, exclude=exclude, passes=passes
        )
        return hits


def _pieces(total: int, per_piece: int) -> Iterator[int]:
    """Sizes of consecutive pieces of at most ``per_piece`` that add up to ``total``."""
    for start in range(0, total, per_piece):
        yield min(per_piece, total - start)
