"""The index's values: what goes in (``Item``), what comes out (``Match``, ``Duplicate``,
``ItemPage``...), and what a search or a listing is asked (``Filter``).

An item carries one SDR per named *space*. ``semantic`` (what the picture
shows: its concepts' term SDRs merged) is always there; ``visual`` (how it
looks: the classifier's pooled feature projected to an SDR) is there when the
item was added from an image. Each space is searched on its own, or both at
once with a blend weight.

An item added from an image also keeps its fingerprint (SHA-256 of the bytes,
64-bit pHash), so copies of it can be found: the same bytes, a near-exact copy
(pHash within a few bits) or a transformed one (resized, cropped, mirrored:
visual overlap above a threshold).

An item added from an image may also carry a small thumbnail (WebP or JPEG
bytes, ``thumbnails.py``), kept beside it and read apart (``thumbnails``):
searches and listings never carry it.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..fingerprints import Fingerprint
from ..keypoints import ImageKeypoints, Transform
from ..sdr import Sdr

__all__ = [
    "SEMANTIC",
    "VISUAL",
    "AddOutcome",
    "ConceptCondition",
    "Duplicate",
    "DuplicateKind",
    "DuplicateStage",
    "DuplicateThresholds",
    "Filter",
    "Item",
    "ItemPage",
    "Match",
    "OnDuplicate",
    "StoredConcept",
    "StoredItem",
]

SEMANTIC = "semantic"
VISUAL = "visual"
_EMPTY: Mapping[str, str] = types.MappingProxyType({})
_NO_SPACES: Mapping[str, Sdr] = types.MappingProxyType({})


@dataclass(frozen=True)
class Item:
    """One stored item. ``sdr`` is its SDR in the semantic space; ``spaces`` holds any others by name."""

    id: str
    sdr: Sdr
    concepts: tuple[tuple[str, float], ...] = ()
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    spaces: Mapping[str, Sdr] = field(default_factory=lambda: _NO_SPACES)
    fingerprint: Fingerprint | None = None  # None: added by SDR alone, without an image
    # Given on add (None: none kept); items read back leave it None: ``ItemIndex.thumbnails`` reads it.
    thumbnail: bytes | None = field(default=None, compare=False, repr=False)
    # Given on add (None: none kept; ``keypoints.py``); items read back leave it None: ``ItemIndex.keypoints``.
    keypoints: ImageKeypoints | None = field(default=None, compare=False, repr=False)

    def in_space(self, space: str) -> Sdr | None:
        """This item's SDR in ``space``, or None when it has none there."""
        return self.sdr if space == SEMANTIC else self.spaces.get(space)


@dataclass(frozen=True)
class Match:
    """One search result: the stored item and how many active bits it shares with the query.

    ``overlap`` is the overlap in the space searched. A blended search also fills
    ``overlaps`` (per space that scored the match) and ``score`` (the weighted sum
    it was ranked by); a single-space search leaves ``overlaps`` with that one
    space and ``score`` equal to ``overlap``.
    """

    id: str
    overlap: int
    item: Item
    overlaps: Mapping[str, int] = field(default_factory=lambda: types.MappingProxyType({}))
    score: float = 0.0


class DuplicateKind(enum.Enum):
    """How a stored item copies the query image, strongest first."""

    SAME_BYTES = "same_bytes"  # identical SHA-256
    NEAR_EXACT = "near_exact"  # pHash within max_phash_distance bits
    TRANSFORMED = "transformed"  # visual overlap at least min_visual_share of the query's active bits


class DuplicateStage(enum.Enum):
    """The stage of the cascade that decided a copy (``duplicates.py``)."""

    FILE_HASH = "file_hash"  # the same SHA-256: nothing else asked
    PHASH = "phash"  # the pHash within the distance, judged without keypoints (either side has none)
    VISUAL = "visual"  # the visual share reached, judged without keypoints
    KEYPOINTS = "keypoints"  # one geometric transform explains enough matched keypoints (either way)


@dataclass(frozen=True)
class DuplicateThresholds:
    max_phash_distance: int  # bits of 64; a near-exact copy differs in at most this many
    min_visual_share: float  # in [0, 1]; a transformed copy shares at least this share of the visual bits


@dataclass(frozen=True)
class Duplicate:
    """A stored item that copies the query: the strongest kind that applies, and how close it is."""

    id: str
    kind: DuplicateKind
    phash_distance: int  # bits; -1 when the stored item has no fingerprint
    visual_overlap: int  # active bits shared in the visual space; -1 when either side has no visual SDR
    item: Item
    stage: DuplicateStage = DuplicateStage.VISUAL  # the stage that decided it
    inliers: int = -1  # keypoints one transform explains; -1 when they were not compared
    transform: Transform | None = None  # stored picture -> query, when the keypoints decided


class OnDuplicate(enum.Enum):
    """What an add does when the index already holds a duplicate of the item."""

    KEEP = "keep"  # store it anyway (no check: the behaviour before duplicates existed)
    SKIP = "skip"  # store nothing; the outcome names the duplicate
    REPLACE = "replace"  # remove the duplicate(s), store the new item


@dataclass(frozen=True)
class ConceptCondition:
    """Items whose stored concepts include ``name`` (exactly, as stored) with at least ``min_confidence``."""

    name: str
    min_confidence: float = 0.0


@dataclass(frozen=True)
class Filter:
    """What an item must satisfy to be searched or listed: every condition holds (AND).

    ``metadata`` pairs a key with the values allowed for it: the item's metadata
    has the key, with one of those values (one value: ``key = value``). ``concepts``
    names stored concepts the item must have, each at its minimum confidence.
    Answers under a filter are the best items that pass it, not the survivors of
    an unfiltered top k. Validated by ``filters.check_filter``.
    """

    metadata: tuple[tuple[str, tuple[str, ...]], ...] = ()
    concepts: tuple[ConceptCondition, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.metadata and not self.concepts


@dataclass(frozen=True)
class StoredConcept:
    """A custom concept as the index keeps it: its name and an opaque JSON document.

    The index stores and returns the document unchanged; what it means (the
    concept's SDRs, threshold, scale) is ``custom_concepts.py``'s business.
    """

    name: str
    document: str
    updated_ms: int = 0  # when it was last (re)defined, Unix milliseconds; set by the index


@dataclass(frozen=True)
class ItemPage:
    """One page of a listing, newest first; pass ``next_page_token`` back for the next (empty: no more)."""

    items: tuple[Item, ...]
    next_page_token: str
    total: int  # items stored when the page was read


@dataclass(frozen=True)
class AddOutcome:
    """What ``add_many`` did with one item (in the order given)."""

    id: str
    stored: bool
    duplicate: Duplicate | None = None  # the best duplicate found, under SKIP or REPLACE
    replaced: tuple[str, ...] = ()  # ids removed under REPLACE


@dataclass(frozen=True)
class StoredItem:
    """One item as validated for storage (``validation.ItemRules.prepare``): what an engine writes."""

    id: str
    sdrs: Mapping[str, npt.NDArray[np.uint32]]  # positions by space; semantic always present
    concepts: tuple[tuple[str, float], ...]
    metadata: Mapping[str, str]
    fingerprint: Fingerprint | None = None
    thumbnail: bytes | None = None  # WebP or JPEG bytes; None: keep none
    keypoints: ImageKeypoints | None = None  # what is stored is ``keypoints.to_blob()``; None: keep none

    def as_item(self, sdr_size: int) -> Item:
        """The item as a read gives it back (no thumbnail: ``thumbnails`` reads those)."""
        spaces = {name: Sdr.trusted(positions, sdr_size) for name, positions in self.sdrs.items() if name != SEMANTIC}
        return Item(
            self.id,
            Sdr.trusted(self.sdrs[SEMANTIC], sdr_size),
            self.concepts,
            types.MappingProxyType(dict(self.metadata)),
            types.MappingProxyType(spaces),
            self.fingerprint,
        )
