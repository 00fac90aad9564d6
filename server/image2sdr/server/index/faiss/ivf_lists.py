"""An IndexBinaryIVF's lists as a search reads them: which to visit, all their entries scanned, or only the
passing ones gathered.

``best_lists`` ranks the lists for a query by the probe table (``kmeans.py``): the
expected overlap of the query with a member of each. ``IvfLists.scan`` has FAISS
scan the lists given per query, sharing one query's lists among the OpenMP threads
(FAISS parallelises IVF search over queries only); ``IvfLists.gathered`` reads only
the entries a filter lets through, over views of FAISS's own buffers.
"""

from __future__ import annotations

import faiss
import numpy as np
import numpy.typing as npt

from .backend import Codes
from .kmeans import PROBE_SCALE, ProbeTable
from .live import Labels, hammings, unique_nearest
from .selection import Allowed

__all__ = ["IvfLists", "best_lists"]

_PROBE_SUM_UINT16 = 65535 // PROBE_SCALE  # query bits whose scores fit a uint16 sum
_NO_IDS = np.zeros(0, dtype=np.int64)
_NO_CODES = np.zeros(0, dtype=np.uint8)


class IvfLists:
    """The lists of one IndexBinaryIVF whose items are each stored in ``copies`` lists."""

    def __init__(self, index: faiss.IndexBinaryIVF, code_size: int, copies: int) -> None:
        self.index = index
        self.code_size = code_size
        self.copies = copies
        # List number -> (labels, codes) viewing FAISS's buffers; a write drops the views of the lists it
        # touches (under the index's write lock), a search under the read lock makes them again.
        self._views: dict[int, tuple[Labels, Codes]] = {}

    def forget(self, numbers: list[int]) -> None:
        """Drop the views of lists whose buffers a write may move."""
        for number in numbers:
            self._views.pop(number, None)

    def forget_all(self) -> None:
        self._views.clear()

    def gathered(self, code: Codes, lists: Labels, allowed: Allowed) -> tuple[Labels, npt.NDArray[np.int64]]:
        """The passing entries of ``lists`` (each item once) and their Hamming distances to ``code``.

        The lists' labels are tested at once, and only the passing entries' codes are
        copied out, so a list costs a few microseconds plus its passing items, not a
        Hamming distance per entry as in a scan.
        """
        views = [view for view in self.views(lists) if view[0].size]
        if not views:
            return _NO_IDS, _NO_IDS
        sizes = np.fromiter((ids.size for ids, _ in views), dtype=np.int64, count=len(views))
        ids = np.concatenate([ids for ids, _ in views])
        chosen = np.flatnonzero(allowed.mask(ids))
        _, first = np.unique(ids[chosen], return_index=True)  # a spilled item comes once per list: one will do
        chosen = np.sort(chosen[first])  # list by list, as concatenated
        starts = np.concatenate(([0], np.cumsum(sizes)))
        owner = np.searchsorted(starts, chosen, side="right") - 1
        bounds = np.searchsorted(owner, np.arange(len(views) + 1))
        offsets = chosen - starts[owner]
        gathered = np.empty((chosen.size, self.code_size), dtype=np.uint8)
        for number in np.flatnonzero(np.diff(bounds)).tolist():
            low, high = int(bounds[number]), int(bounds[number + 1])
            np.take(views[number][1], offsets[low:high], axis=0, out=gathered[low:high])
        return ids[chosen], hammings(code[None, :], gathered)[0]

    def views(self, numbers: Labels) -> list[tuple[Labels, Codes]]:
        """Each list's labels and codes as arrays over FAISS's own buffers (no copy), kept until the list changes."""
        views = []
        invlists = self.index.invlists
        for number in numbers.tolist():
            view = self._views.get(number)
            if view is None:
                size = invlists.list_size(number)
                ids = faiss.rev_swig_ptr(invlists.get_ids(number), size).view(np.int64) if size else _NO_IDS
                width = self.code_size
                codes = faiss.rev_swig_ptr(invlists.get_codes(number), size * width) if size else _NO_CODES
                view = (ids, codes.reshape(size, width))
                self._views[number] = view
            views.append(view)
        return views

    def scan(self, codes: Codes, fetch: int, probes: Labels) -> tuple[npt.NDArray[np.int64], Labels]:
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
        # IndexBinaryIVF takes no IDSelector: dead labels are dropped in LiveLabels.rank.
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
        return unique_nearest(
            distances.reshape(count, parts * found).astype(np.int64), labels.reshape(count, parts * found), fetch
        )


def best_lists(probe_table: ProbeTable, query: npt.NDArray[np.uint32], nprobe: int) -> Labels:
    """The ``nprobe`` lists whose members share the most bits with ``query`` on average, best first."""
    dtype = np.uint16 if query.size <= _PROBE_SUM_UINT16 else np.uint32
    scores = probe_table[query].sum(axis=0, dtype=dtype)
    if nprobe < scores.size:
        best = np.argpartition(scores, scores.size - nprobe)[scores.size - nprobe :]
    else:
        best = np.arange(scores.size)
    return best[np.argsort(-scores[best].astype(np.int64), kind="stable")].astype(np.int64)
