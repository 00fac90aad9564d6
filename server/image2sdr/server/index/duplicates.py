"""The duplicate rules: what copies an image (and as what), their order, and what an add does with copies.

Engines only find *candidates* (items sharing the SHA-256, pHashes within the
distance, visual SDRs above the share); every candidate is judged here, so both
engines classify and order copies the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..fingerprints import Fingerprint, phash_distance
from ..sdr import Sdr
from .values import VISUAL, AddOutcome, Duplicate, DuplicateKind, DuplicateThresholds, Item, OnDuplicate, StoredItem

__all__ = ["Candidates", "compare", "duplicate_order", "rank", "screen", "visual_floor"]

# Stored items that may copy an image (fingerprint, visual SDR): what an engine finds, unjudged.
Candidates = Callable[[Fingerprint, Sdr | None], list[Item]]


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
    return None if kind is None else Duplicate(other.id, kind, distance, overlap, other)


def rank(
    fingerprint: Fingerprint | None,
    visual: Sdr | None,
    candidates: Sequence[Item],
    limits: DuplicateThresholds,
    k: int,
) -> list[Duplicate]:
    """The ``k`` best copies among ``candidates``, each once under its strongest kind."""
    found = (compare(fingerprint, visual, candidate, limits) for candidate in candidates)
    return sorted((duplicate for duplicate in found if duplicate is not None), key=duplicate_order)[:k]


def duplicate_order(duplicate: Duplicate) -> tuple[int, int, int, str]:
    """Strongest kind first; then nearest pHash, then most visual bits shared; then by id."""
    kinds = list(DuplicateKind)
    distance = duplicate.phash_distance if duplicate.phash_distance >= 0 else 65
    return kinds.index(duplicate.kind), distance, -duplicate.visual_overlap, duplicate.id


def screen(
    prepared: Sequence[StoredItem],
    policy: OnDuplicate,
    limits: DuplicateThresholds,
    stored_copies: Callable[[Fingerprint, Sdr | None], list[Duplicate]],
    sdr_size: int,
) -> tuple[list[AddOutcome], list[str]]:
    """What an add does with each item under ``policy``: (outcomes, ids to delete).

    ``stored_copies(fingerprint, visual)`` finds copies among the stored items; each
    item is also held against the ones accepted before it in the same batch.
    """
    if policy is OnDuplicate.KEEP:
        return [AddOutcome(item.id, stored=True) for item in prepared], []
    outcomes: list[AddOutcome] = []
    removed: list[str] = []
    accepted: list[StoredItem] = []
    for item in prepared:
        found = _copies_of(item, accepted, limits, stored_copies, sdr_size)
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


def _copies_of(
    item: StoredItem,
    accepted: Sequence[StoredItem],
    limits: DuplicateThresholds,
    stored_copies: Callable[[Fingerprint, Sdr | None], list[Duplicate]],
    sdr_size: int,
) -> list[Duplicate]:
    """Copies of one new item among the stored items and the ones accepted before it in its batch."""
    if item.fingerprint is None:
        return []
    visual = item.sdrs.get(VISUAL)
    query = Sdr.trusted(visual, sdr_size) if visual is not None else None
    found = stored_copies(item.fingerprint, query)
    for other in accepted:
        duplicate = compare(item.fingerprint, query, other.as_item(sdr_size), limits)
        if duplicate is not None:
            found.append(duplicate)
    return sorted(found, key=duplicate_order)
