"""Candidates of copies, and blended searches, over the FAISS backends (the caller holds the read lock).

Copies are found by three tests (same SHA-256 in the store, pHash within the
distance in ``phashes.py``, visual overlap above the floor in the visual
backend); ``duplicates.py`` judges them. A blend takes candidates from each
space's own search and scores every one exactly in both.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping

import numpy as np

from ...config import IndexConfig
from ...sdr import Sdr
from ..duplicates import visual_floor
from ..engine import CopyQuery
from ..values import SEMANTIC, VISUAL, Item, Match
from .backend import Backend
from .phashes import PhashTable
from .selection import Allowed
from .store import Row, SqliteStore

__all__ = ["blend", "copy_labels"]

BLEND_DEPTH = 2048  # candidates per space a blended search examines at most


def copy_labels(
    store: SqliteStore, phashes: PhashTable, looks: Backend | None, query: CopyQuery, *, exclude: int
) -> set[int]:
    """Labels of the stored items that may copy the image: by bytes, by pHash, by look (``exclude`` left out)."""
    labels: set[int] = set()
    fingerprint, visual = query.fingerprint, query.visual
    if fingerprint is not None:
        labels.update(store.labels_by_sha256(fingerprint.sha256))
        near, _ = phashes.near(fingerprint.phash, query.limits.max_phash_distance)
        labels.update(near.tolist())
    if looks is not None and visual is not None and visual.active:
        hits = looks.search(
            visual.positions,
            np.array([visual.active], dtype=np.int64),
            query.k + len(labels),
            visual_floor(visual, query.limits),
            np.array([exclude], dtype=np.int64),
        )[0]
        labels.update(hits.labels.tolist())
        if query.verify:  # the nearest by look, below the share too: the keypoints judge them
            nearest = looks.search(
                visual.positions,
                np.array([visual.active], dtype=np.int64),
                query.verify,
                1,
                np.array([exclude], dtype=np.int64),
            )[0]
            labels.update(nearest.labels.tolist())
    labels.discard(exclude)
    return labels


def blend(
    backends: Mapping[str, Backend],
    store: SqliteStore,
    item_of: Callable[[Row], Item],
    queries: Mapping[str, Sdr],
    *,
    weight: float,
    k: int,
    exclude: int,
    allowed: Mapping[str, Allowed | None],
    config: IndexConfig,
) -> list[Match]:
    """Top k by ``(1 - weight) * semantic + weight * visual`` overlap, each candidate scored exactly.

    An item found in neither list scores at most ``(1 - weight) * s' + weight * v'``
    (the last overlap each list returned), so once the k-th score found is above
    that bound the answer is proven; otherwise both lists grow, up to
    ``BLEND_DEPTH`` candidates each, after which the answer is the best of those
    seen. Items without a visual SDR count 0 there.
    """
    fetch = max(k * config.candidate_factor, k + config.candidate_margin)
    passing = allowed[SEMANTIC]
    total = passing.count if passing is not None else backends[SEMANTIC].live_count
    # When the two spaces disagree (an item near in one is average in the other), the
    # proof may need most of the collection; past this depth the answer is the best
    # of the candidates seen, each scored exactly.
    deepest = max(BLEND_DEPTH, 4 * fetch)
    while True:
        candidates: set[int] = set()
        bound = 0.0
        for space, query in queries.items():
            share = weight if space == VISUAL else 1.0 - weight
            hits = backends[space].search(
                query.positions,
                np.array([query.active], dtype=np.int64),
                fetch,
                0,
                np.array([exclude], dtype=np.int64),
                allowed=allowed[space],
            )[0]
            candidates.update(hits.labels.tolist())
            if hits.labels.size >= fetch:  # the list may have left out items scoring up to its last
                bound += share * int(hits.overlaps[-1])
        rows = store.rows_by_label(sorted(candidates))
        scored = sorted(
            (_blend_match(row, item_of(row), queries, weight) for row in rows.values()),
            key=lambda pair: (-pair[0].score, pair[1]),
        )
        best = [match for match, _ in scored[:k]]
        # Strictly above: an unseen item tying the bound could win the tie on its label.
        if (len(best) >= k and best[-1].score > bound) or fetch >= min(total, deepest):
            return best
        fetch *= 4


def _blend_match(row: Row, item: Item, queries: Mapping[str, Sdr], weight: float) -> tuple[Match, int]:
    overlaps = {}
    for space, query in queries.items():
        positions = row.sdrs.get(space)
        overlaps[space] = (
            0 if positions is None else int(np.intersect1d(query.positions, positions, assume_unique=True).size)
        )
    score = (1.0 - weight) * overlaps[SEMANTIC] + weight * overlaps[VISUAL]
    return Match(row.id, overlaps[SEMANTIC], item, types.MappingProxyType(overlaps), score), row.label
