"""What the encoder takes and gives: per-request options, each concept's use, stage timings, the encoding."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..fingerprints import Fingerprint
from ..keypoints import ImageKeypoints
from ..merge import WeightedSdr
from ..sdr import Sdr
from ..thumbnails import Thumbnail

__all__ = ["ConceptUse", "EncodeOptions", "Encoding", "Outcome", "StageTimings"]


@dataclass(frozen=True)
class EncodeOptions:
    """Per-request overrides; None takes the configured value."""

    max_concepts: int | None = None
    min_confidence: float | None = None
    sparsity: float | None = None
    visual_share: float | None = None  # share of the SDR's active bits taken from the visual SDR
    # Internal (not in the proto): the encoding will be stored, so make its thumbnail
    # (index.thumbnails). The service sets it for add_to_index; nothing else needs one.
    thumbnail: bool = False
    # Internal too: make the image's keypoints (keypoints.py) although it is not stored (a FindDuplicates query).
    keypoints: bool = False


@dataclass(frozen=True)
class ConceptUse:
    name: str
    confidence: float
    used: bool
    reason: str = ""  # why a concept was skipped; empty when used
    label: bool = False  # reported and stored but never merged, beside max_concepts (the nsfw/sfw pair)


@dataclass(frozen=True)
class StageTimings:
    """Milliseconds per stage; batch-wide stages are shared out evenly per image."""

    decode_ms: float = 0.0  # with the classifier's input made from the pixels (on the decode threads)
    concepts_ms: float = 0.0
    terms_ms: float = 0.0
    merge_ms: float = 0.0
    appearance_ms: float = 0.0  # fingerprint and visual SDR projection (the feature comes with the concepts)


@dataclass(frozen=True)
class Encoding:
    sdr: Sdr
    concepts: tuple[ConceptUse, ...]  # as found, strongest first
    short: bool  # the term SDRs' union held fewer than w bits
    timings: StageTimings = field(default_factory=StageTimings)
    visual: Sdr | None = None  # how the image looks (None: visual.enabled is off, or no image)
    fingerprint: Fingerprint | None = None  # SHA-256 and pHash of the image (None: no image)
    custom: tuple[ConceptUse, ...] = ()  # custom concepts found (concept_library); used: merged into sdr
    # What the merge took, so that more terms (custom concepts) can be merged in later: ``with_terms``.
    merged: tuple[WeightedSdr, ...] = field(default=(), compare=False, repr=False)
    visual_bits: npt.NDArray[np.uint32] | None = field(default=None, compare=False, repr=False)
    active_bits: int = field(default=0, compare=False, repr=False)
    # For the index; its WebP or JPEG bytes are made when first read (None: index.thumbnails is 0,
    # or no image, or the encoding is not to be stored).
    thumbnail: Thumbnail | None = field(default=None, compare=False, repr=False)
    # The image's keypoints, when it is stored or a copy query (EncodeOptions.thumbnail, .keypoints).
    keypoints: ImageKeypoints | None = field(default=None, compare=False, repr=False)

    @property
    def used(self) -> tuple[ConceptUse, ...]:
        return tuple(c for c in self.concepts if c.used)

    @property
    def skipped(self) -> tuple[ConceptUse, ...]:
        return tuple(c for c in self.concepts if not c.used)

    @property
    def labels(self) -> tuple[ConceptUse, ...]:
        """Concepts reported and stored but not merged (concepts.nsfw's pair)."""
        return tuple(c for c in self.concepts if c.label)

    def stored_concepts(self, max_concepts: int) -> tuple[tuple[str, float], ...]:
        """What an add stores as the item's concepts: those merged (the provider's, then custom ones),
        then the labels if all fit in ``max_concepts`` (index.max_concepts).

        The labels come on top of the provider's max_concepts, and a concept may come
        with several names (the local roll-up's synonyms), so an item could pass the
        index's limit: then the labels are left out, and then the provider's weakest
        names, rather than fail the add.
        """
        custom = tuple((c.name, c.confidence) for c in self.custom if c.used)
        found = tuple((c.name, c.confidence) for c in self.used)[: max(max_concepts - len(custom), 0)]
        merged = found + custom
        labels = tuple((c.name, c.confidence) for c in self.labels)
        return merged + labels if len(merged) + len(labels) <= max_concepts else merged


# One image's result in a batch: its encoding, or what went wrong with it alone.
# Core errors say what the caller did wrong; anything else is the server's fault.
Outcome = Encoding | Exception
