"""The IVF backend's lists: k-means in SDR space, and the probe table that ranks the lists for a query.

Trained on a sample of the stored SDRs when a space first reaches ``ivf_train_min``
items, and again when it has grown ``ivf_retrain_growth`` times (``spaces.py``).
"""

from __future__ import annotations

import faiss
import numpy as np
import numpy.typing as npt

from ..codes import pack_codes
from .backend import Codes, Layout

__all__ = ["PROBE_SCALE", "ProbeTable", "sdr_kmeans"]

ProbeTable = npt.NDArray[np.uint8]
PROBE_SCALE = 127  # probe table entries: a bit's frequency within a list, times this (uint8)


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
