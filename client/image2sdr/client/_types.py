"""Plain values the client returns and takes; they know nothing of protobuf (see _convert.py)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ._concept_types import (
    ConceptBackground,
    ConceptFit,
    ConceptSuggestion,
    CustomConcept,
    StoredId,
)
from ._exceptions import Image2SdrError

__all__ = [
    "Concept",
    "ConceptBackground",
    "ConceptExample",
    "ConceptFit",
    "ConceptSuggestion",
    "CopyTransform",
    "CustomConcept",
    "Duplicate",
    "DuplicateKind",
    "DuplicateStage",
    "DuplicateThresholds",
    "EncodeItem",
    "Encoding",
    "Explanation",
    "Fingerprint",
    "ImageSource",
    "Info",
    "Item",
    "ItemError",
    "ItemPage",
    "Limits",
    "Match",
    "Matches",
    "OnDuplicate",
    "Provider",
    "Sdr",
    "Space",
    "StageTimings",
    "StoredId",
    "TermMatch",
    "TermOverlap",
]

ImageSource = bytes | str | os.PathLike[str]  # encoded image bytes, or the path of an image file
# A custom concept's example: an image (bytes, or a file's path) or a stored item.
ConceptExample = ImageSource | StoredId
# Where find_similar looks: what the picture shows, how it looks, or both weighted.
Space = Literal["semantic", "visual", "blend"]
# What an add does when the index holds a copy already: store anyway, store nothing, or replace the copies.
OnDuplicate = Literal["keep", "skip", "replace"]
# How a stored item copies an image, strongest first.
DuplicateKind = Literal["same_bytes", "near_exact", "transformed"]
# The cascade's stage that decided a copy ("" from a server before stages).
DuplicateStage = Literal["file_hash", "phash", "visual", "keypoints", ""]


@dataclass(frozen=True)
class Sdr:
    """A sparse distributed representation: ``size`` bits, the sorted positions of those on.

    It drops straight into htm.core: ``SDR(list(sdr.dimensions)).sparse = sdr.active``.
    """

    size: int
    dimensions: tuple[int, ...]
    active: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"an SDR needs at least one bit, got size {self.size}")
        if self.dimensions and math.prod(self.dimensions) != self.size:
            raise ValueError(f"dimensions {self.dimensions} do not multiply to size {self.size}")
        if any(b <= a for a, b in zip(self.active, self.active[1:], strict=False)):
            raise ValueError("active positions must be sorted and unique")
        if self.active and (self.active[0] < 0 or self.active[-1] >= self.size):
            raise ValueError(f"active positions must lie in [0, {self.size})")

    @property
    def sparsity(self) -> float:
        return len(self.active) / self.size

    def to_dense(self) -> list[int]:
        """All ``size`` bits as 0 and 1, row-major over ``dimensions``."""
        dense = [0] * self.size
        for position in self.active:
            dense[position] = 1
        return dense

    def overlap(self, other: Sdr) -> int:
        """How many active bits the two SDRs share."""
        if other.size != self.size:
            raise ValueError(f"cannot compare SDRs of {self.size} and {other.size} bits")
        return len(set(self.active).intersection(other.active))


@dataclass(frozen=True)
class Concept:
    name: str  # word or phrase: "cat", "coffee mug"
    confidence: float  # 0..1
    used: bool = True  # merged into the SDR
    skip_reason: str = ""  # why not, when used is False


@dataclass(frozen=True)
class StageTimings:
    decode_ms: float
    concepts_ms: float
    terms_ms: float
    merge_ms: float
    total_ms: float
    appearance_ms: float = 0.0  # fingerprint and visual SDR


@dataclass(frozen=True)
class Fingerprint:
    sha256: str  # hex digest of the image bytes as sent
    phash: int  # 64-bit perceptual hash as an unsigned integer

    @property
    def phash_hex(self) -> str:
        """The pHash as 16 hex digits, as imagehash prints it."""
        return f"{self.phash:016x}"


@dataclass(frozen=True)
class DuplicateThresholds:
    """What counts as a copy; None leaves a threshold to the server's default."""

    max_phash_distance: int | None = None  # 0..64: near-exact copies differ in at most this many pHash bits
    min_visual_share: float | None = None  # 0..1: transformed copies share at least this share of the visual bits


@dataclass(frozen=True)
class Duplicate:
    """A stored item that copies the image asked about: the strongest kind that applies, and how close it is."""

    id: str
    kind: DuplicateKind
    phash_distance: int  # pHash bits of 64 that differ; -1 when the stored item has no fingerprint
    visual_overlap: int  # visual active bits shared; -1 when either side has no visual SDR
    visual_share: float = 0.0  # visual_overlap as a share of the query's visual active bits
    concepts: tuple[Concept, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    stage: DuplicateStage = ""  # the stage that decided it
    inliers: int = -1  # keypoints one transform explains; -1 when keypoints were not compared
    transform: CopyTransform | None = None  # set when the keypoints decided it


@dataclass(frozen=True)
class CopyTransform:
    """How the stored picture maps onto the query, as the keypoints found it.

    ``crop`` is (left, top, right, bottom) of the stored picture the query shows, as
    fractions of its width and height: (0, 0, 1, 1) when all of it.
    """

    rotation_degrees: float  # counter-clockwise
    scale: float  # query size / stored size
    crop: tuple[float, float, float, float]
    mirrored: bool = False


@dataclass(frozen=True)
class Encoding:
    """One image encoded: its SDR and the concepts it was built from.

    With ``on_duplicate="skip"`` and a copy stored already, ``indexed`` is False and
    ``duplicate`` names the copy; with ``"replace"``, ``replaced`` lists the ids removed.
    """

    sdr: Sdr
    concepts: tuple[Concept, ...]
    request_id: str = ""
    short: bool = False  # fewer active bits than asked for: the concepts' term SDRs were too few
    indexed: bool = False  # stored in the index under the id it was sent with
    timings: StageTimings | None = None
    visual: Sdr | None = None  # how the image looks; None when the server's visual channel is off
    fingerprint: Fingerprint | None = None
    duplicate: Duplicate | None = None  # the stored copy found by on_duplicate "skip" or "replace"
    replaced: tuple[str, ...] = ()  # "replace": the ids of the copies removed
    # The custom concepts (define_concept) present in the image, confidence descending;
    # used: merged into the SDR (encode's merge_custom_concepts=True).
    custom_concepts: tuple[Concept, ...] = ()


@dataclass(frozen=True)
class EncodeItem:
    """One image of an ``encode_stream``, with what to store it under."""

    image: ImageSource
    request_id: str = ""  # empty: the client numbers the items "0", "1", ...
    add_to_index: str | None = None  # the id to store the result under
    metadata: Mapping[str, str] = field(default_factory=dict)  # stored with it
    on_duplicate: OnDuplicate = "keep"  # what to do when the index holds a copy of the image already

    def __post_init__(self) -> None:
        if self.metadata and self.add_to_index is None:
            raise ValueError("metadata is stored with an indexed item: set add_to_index too")


@dataclass(frozen=True)
class ItemError:
    """An ``encode_stream`` item that failed; the stream went on without it."""

    request_id: str
    error: Image2SdrError


@dataclass(frozen=True)
class TermOverlap:
    """How much of one query term a match holds: why a text or expression query matched it."""

    term: str
    overlap: int  # active bits the match shares with the term's SDR
    negated: bool = False  # a term the query excludes ("not X", Expression.none)


@dataclass(frozen=True)
class Match:
    id: str
    overlap: int  # active bits shared with the query in the space searched ("blend": the semantic overlap)
    concepts: tuple[Concept, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    scored_by: tuple[str, ...] = ()  # the space(s) whose overlap made the score: "semantic", "visual"
    semantic_overlap: int | None = None  # set when the semantic space scored the match
    visual_overlap: int | None = None  # set when the visual space scored the match
    score: float = 0.0  # what the answer is ranked by: the overlap, or the blended sum
    explanation: tuple[TermOverlap, ...] = ()  # text and expression queries: the terms, most shared first


class Matches(list[Match]):
    """``find_similar``'s answer: the matches, best first, and what the search could not see.

    ``skipped_without_visual``: for a "visual" or "blend" search, the stored items left
    out because they have no visual SDR (added by SDR alone, or stored before the
    server had visual SDRs).
    """

    def __init__(self, matches: Iterable[Match] = (), *, skipped_without_visual: int = 0) -> None:
        super().__init__(matches)
        self.skipped_without_visual = skipped_without_visual


@dataclass(frozen=True)
class Item:
    id: str
    sdr: Sdr
    concepts: tuple[Concept, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    visual: Sdr | None = None  # None: no visual SDR (added by SDR alone, or before visual SDRs existed)
    fingerprint: Fingerprint | None = None  # None: not added from an image
    # get_item only: WebP or JPEG bytes of the stored thumbnail; empty when there is none
    # (thumbnails off on the server, or not added from an image): draw its SDR instead.
    thumbnail: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class ItemPage:
    """One page of ``list_items``, newest first; ``next_page_token`` asks for the next ("": this was the last)."""

    items: tuple[Item, ...]
    next_page_token: str
    total: int  # items passing the filter (all stored items without one) when the page was read


@dataclass(frozen=True)
class TermMatch:
    term: str
    overlap: int  # active bits shared with the SDR asked about


@dataclass(frozen=True)
class Provider:
    name: str  # "local", "clarifai", "cortical"
    model: str
    version: str


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int
    max_image_bytes: int
    max_pixels: int
    min_image_side: int
    max_k: int
    stream_in_flight: int
    max_map_items: int = 0  # CreateMap: items one map may hold (0: a server from before maps)


@dataclass(frozen=True)
class Info:
    server_version: str
    size: int  # bits per SDR
    dimensions: tuple[int, ...]
    sparsity: float
    active_bits: int
    concepts: Provider
    terms: Provider
    index_kind: str
    index_size: int
    limits: Limits
    vocabulary_size: int
    visual: Provider | None = None  # the visual channel's model and projection version; None when it is off
    visual_share: float = 0.0  # the default share of an SDR's bits taken from the visual SDR
    duplicate_thresholds: DuplicateThresholds = DuplicateThresholds()  # the defaults, both set
    index_visual_size: int = 0  # stored items with a visual SDR
    custom_concepts: int = 0  # custom concepts defined (list_concepts)


@dataclass(frozen=True)
class Explanation:
    """Where an image's score for a target comes from: how much it falls when each region is hidden.

    The target is a concept the image has, a custom concept, or a stored item (the
    score is then the overlap of the two SDRs).  ``heat`` is ``rows`` x ``columns``
    cells, row-major from the top left, one cell per ``stride`` pixels of the image:
    the mean fall of the score over the grey ``patch``-pixel squares that covered it
    (negative: hiding it raised the score).  ``png`` is the heatmap over the image.
    """

    target: str
    score: float  # the target's score on the whole image (confidence, or overlap in bits)
    columns: int
    rows: int
    heat: tuple[float, ...]
    patch: int  # pixels, of the image as sent
    stride: int
    variants: int  # occluded images the server scored
    png: bytes = field(repr=False)
    elapsed_ms: float = 0.0

    def cell(self, row: int, column: int) -> float:
        """The heat of one cell."""
        if not (0 <= row < self.rows and 0 <= column < self.columns):
            raise IndexError(f"cell ({row}, {column}) is outside {self.rows} x {self.columns}")
        return self.heat[row * self.columns + column]

    def grid(self) -> list[list[float]]:
        """The heat as rows of cells, top to bottom."""
        return [list(self.heat[row * self.columns : (row + 1) * self.columns]) for row in range(self.rows)]

    def hottest(self) -> tuple[int, int]:
        """(row, column) of the cell whose hiding cost the most."""
        best = max(range(len(self.heat)), key=self.heat.__getitem__)
        return divmod(best, self.columns)


MapState = Literal["queued", "running", "done", "failed"]


@dataclass(frozen=True)
class MapCell:
    """Where one item landed on a map: column and row from the top left, 0-based."""

    id: str
    column: int
    row: int
    thumbnail: bool  # drawn from its thumbnail; False: drawn as its SDR


@dataclass(frozen=True)
class MapJob:
    """A map job as the server reports it: progress while it runs, cells and PNG once done.

    ``neighbourhood_kept``: the share of each item's 10 nearest items (by overlap)
    that landed within 2 cells of it, the map's own quality figure.  ``error`` is
    the failure a failed job reports, as the exception a call would have raised.
    """

    id: str
    state: MapState
    progress: float  # 0..1
    stage: str
    space: Space
    items: int
    columns: int = 0
    rows: int = 0
    cells: tuple[MapCell, ...] = ()
    png: bytes = field(default=b"", repr=False)
    cell_pixels: int = 0
    created_ms: int = 0
    elapsed_ms: float = 0.0
    neighbourhood_kept: float = 0.0
    skipped_without_visual: int = 0
    error: Exception | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")
