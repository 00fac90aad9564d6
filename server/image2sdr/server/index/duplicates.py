"""The duplicate rules: what copies an image (and as what), their order, and what an add does with copies.

Engines only find *candidates* (items sharing the SHA-256, pHashes within the
distance, visual SDRs above the share, and the ``VERIFY`` nearest by look whatever
their share); every candidate is judged here, so both engines classify and order
copies the same way.

The cascade: the same bytes are a copy, decided by the file hash alone.  Every
other candidate whose keypoints are stored, up to ``VERIFY`` of them (those the
pHash and the visual SDR rate best), is verified geometrically when the query has
keypoints too (``keypoints.verify``): a transform that explains enough matches is
a copy whatever the thresholds said (a rotated or heavily cropped copy), and no
such transform is no copy although the thresholds passed (a look-alike: the same
scene, another shot).  A candidate without keypoints (stored before they existed,
or by SDR alone), or beyond the ``VERIFY`` best, is judged by the thresholds as
before.  A query without its mirror image's keypoints (a stored item asked by id)
only confirms: its failed verification says nothing of a mirrored copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from .. import keypoints
from ..fingerprints import Fingerprint, phash_distance
from ..keypoints import ImageKeypoints, Keypoints
from ..sdr import Sdr
from .values import (
    VISUAL,
    AddOutcome,
    Duplicate,
    DuplicateKind,
    DuplicateStage,
    DuplicateThresholds,
    Item,
    OnDuplicate,
    StoredItem,
)

__all__ = [
    "VERIFY",
    "Candidates",
    "StoredKeypoints",
    "compare",
    "duplicate_order",
    "judge",
    "rank",
    "screen",
    "to_verify",
    "visual_floor",
]

# Candidates verified by keypoints per query, at most: the cost is per candidate (about 1 ms), not per item.
VERIFY = 16

# Stored items that may copy an image (fingerprint, visual SDR): what an engine finds, unjudged.
Candidates = Callable[[Fingerprint, Sdr | None], list[Item]]
# The stored keypoints of these ids (those without are absent): ``Engine.keypoints``, read back.
StoredKeypoints = Callable[[Sequence[str]], dict[str, Keypoints]]


def visual_floor(visual: Sdr, limits: DuplicateThresholds) -> int:
    """The fewest visual bits a transformed copy of ``visual`` shares with it (at least 1)."""
    return max(1, math.ceil(limits.min_visual_share * visual.active))


def compare(
    fingerprint: Fingerprint | None, visual: Sdr | None, other: Item, limits: DuplicateThresholds
) -> Duplicate | None:
    """Whether ``other`` copies the query, and as what (the strongest kind that applies)."""
    distance = -1
    if fingerprint is not None and other.fingerprint is not None:
        distance = phash_distance(fingerprint.phash, other.fingerprint.phash)
    overlap = -1
    look = other.spaces.get(VISUAL)
    if visual is not None and look is not None:
        overlap = int(np.intersect1d(visual.positions, look.positions, assume_unique=True).size)
    kind: DuplicateKind | None = None
    if fingerprint is not None and other.fingerprint is not None and fingerprint.sha256 == other.fingerprint.sha256:
        kind = DuplicateKind.SAME_BYTES
    elif 0 <= distance <= limits.max_phash_distance:
        kind = DuplicateKind.NEAR_EXACT
    elif visual is not None and visual.active and overlap >= visual_floor(visual, limits):
        kind = DuplicateKind.TRANSFORMED
    if kind is None:
        return None
    stage = {DuplicateKind.SAME_BYTES: DuplicateStage.FILE_HASH, DuplicateKind.NEAR_EXACT: DuplicateStage.PHASH}
    return Duplicate(other.id, kind, distance, overlap, other, stage.get(kind, DuplicateStage.VISUAL))


def rank(
    fingerprint: Fingerprint | None,
    visual: Sdr | None,
    candidates: Sequence[Item],
    limits: DuplicateThresholds,
    k: int,
    *,
    points: ImageKeypoints | None = None,
    stored_points: StoredKeypoints | None = None,
) -> list[Duplicate]:
    """The ``k`` best copies among ``candidates``, each once under its strongest kind (the cascade above)."""
    judged = judge(fingerprint, visual, candidates, limits, points=points, stored_points=stored_points)
    return sorted((duplicate for duplicate in judged if duplicate is not None), key=duplicate_order)[:k]


def judge(
    fingerprint: Fingerprint | None,
    visual: Sdr | None,
    candidates: Sequence[Item],
    limits: DuplicateThresholds,
    *,
    points: ImageKeypoints | None,
    stored_points: StoredKeypoints | None,
) -> list[Duplicate | None]:
    """Each candidate's verdict, in order: the thresholds' first, then the keypoints' for the ``VERIFY`` best."""
    loose = replace(limits, min_visual_share=0.0)  # distances and overlaps of every candidate, kind or not
    scored = [compare(fingerprint, visual, candidate, loose) for candidate in candidates]
    verdicts = [compare(fingerprint, visual, candidate, limits) for candidate in candidates]
    if points is None or stored_points is None or not candidates:
        return verdicts
    chosen = to_verify(scored, verdicts)
    stored = stored_points([candidates[row].id for row in chosen]) if chosen else {}
    for row in chosen:
        theirs = stored.get(candidates[row].id)
        score = scored[row]
        if theirs is None or score is None or len(theirs) < keypoints.MIN_INLIERS:
            continue  # nothing to verify with: judged by the thresholds
        verdict = keypoints.verify(points, theirs)
        if verdict.copy:
            kind = verdicts[row].kind if verdicts[row] is not None else DuplicateKind.TRANSFORMED  # type: ignore[union-attr]
            verdicts[row] = replace(
                score, kind=kind, stage=DuplicateStage.KEYPOINTS, inliers=verdict.inliers, transform=verdict.transform
            )
        elif points.can_mirror:  # a look-alike the thresholds let through
            verdicts[row] = None
    return verdicts


def to_verify(scored: Sequence[Duplicate | None], verdicts: Sequence[Duplicate | None]) -> list[int]:
    """Rows to verify: not the same bytes; up to ``VERIFY``, nearest pHash first, then most visual bits shared."""
    rows = [row for row, score in enumerate(scored) if score is not None and score.kind is not DuplicateKind.SAME_BYTES]
    rows.sort(key=lambda row: (verdicts[row] is None, duplicate_order(scored[row])))  # type: ignore[arg-type]
    return rows[:VERIFY]


def duplicate_order(duplicate: Duplicate) -> tuple[int, int, int, str]:
    """Strongest kind first; then nearest pHash, then most visual bits shared; then by id."""
    kinds = list(DuplicateKind)
    distance = duplicate.phash_distance if duplicate.phash_distance >= 0 else 65
    return kinds.index(duplicate.kind), distance, -duplicate.visual_overlap, duplicate.id


def screen(
    prepared: Sequence[StoredItem],
    policy: OnDuplicate,
    limits: DuplicateThresholds,
    stored_copies: Callable[[Fingerprint, Sdr | None, ImageKeypoints | None], list[Duplicate]],
    sdr_size: int,
) -> tuple[list[AddOutcome], list[str]]:
    """What an add does with each item under ``policy``: (outcomes, ids to delete).

    ``stored_copies(fingerprint, visual, keypoints)`` finds copies among the stored
    items; each item is also held against the ones accepted before it in the same batch.
    """
    if policy is OnDuplicate.KEEP:
        return [AddOutcome(item.id, stored=True) for item in prepared], []
    outcomes: list[AddOutcome] = []
    removed: list[str] = []
    accepted: list[StoredItem] = []
    batch = _BatchKeypoints()
    for item in prepared:
        found = _copies_of(item, accepted, limits, stored_copies, sdr_size, batch=batch)
        if not found:
            outcomes.append(AddOutcome(item.id, stored=True))
            accepted.append(item)
        elif policy is OnDuplicate.SKIP:
            outcomes.append(AddOutcome(item.id, stored=False, duplicate=found[0]))
        else:  # REPLACE: the copies go, this one is stored
            gone = tuple(duplicate.id for duplicate in found if duplicate.id != item.id)
            removed.extend(gone)
            accepted = [other for other in accepted if other.id not in gone]
            outcomes = [
                AddOutcome(o.id, stored=False, duplicate=o.duplicate) if o.stored and o.id in gone else o
                for o in outcomes
            ]
            outcomes.append(AddOutcome(item.id, stored=True, duplicate=found[0], replaced=gone))
            accepted.append(item)
    return outcomes, removed


class _BatchKeypoints:
    """The keypoints of a batch's items as they will be stored (read back from the blob, once each)."""

    def __init__(self) -> None:
        self._found: dict[int, Keypoints | None] = {}

    def of(self, items: Sequence[StoredItem]) -> StoredKeypoints:
        by_id = {item.id: self._stored(item) for item in items}
        return lambda ids: {i: found for i in ids if (found := by_id.get(i)) is not None}

    def _stored(self, item: StoredItem) -> Keypoints | None:
        if item.keypoints is None:
            return None
        if id(item) not in self._found:
            self._found[id(item)] = keypoints.from_blob(item.keypoints.to_blob())
        return self._found[id(item)]


def _copies_of(
    item: StoredItem,
    accepted: Sequence[StoredItem],
    limits: DuplicateThresholds,
    stored_copies: Callable[[Fingerprint, Sdr | None, ImageKeypoints | None], list[Duplicate]],
    sdr_size: int,
    *,
    batch: _BatchKeypoints,
) -> list[Duplicate]:
    """Copies of one new item among the stored items and the ones accepted before it in its batch."""
    if item.fingerprint is None:
        return []
    visual = item.sdrs.get(VISUAL)
    query = Sdr.trusted(visual, sdr_size) if visual is not None else None
    found = stored_copies(item.fingerprint, query, item.keypoints)
    earlier = [other.as_item(sdr_size) for other in accepted]
    judged = judge(item.fingerprint, query, earlier, limits, points=item.keypoints, stored_points=batch.of(accepted))
    found.extend(duplicate for duplicate in judged if duplicate is not None)
    return sorted(found, key=duplicate_order)
