"""Plain values the client returns and takes; they know nothing of protobuf (see _convert.py)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._exceptions import Image2SdrError

__all__ = [
    "Concept",
    "EncodeItem",
    "Encoding",
    "ImageSource",
    "Info",
    "Item",
    "ItemError",
    "Limits",
    "Match",
    "Provider",
    "Sdr",
    "StageTimings",
    "TermMatch",
]

ImageSource = bytes | str | os.PathLike[str]  # encoded image bytes, or the path of an image file


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


@dataclass(frozen=True)
class Encoding:
    """One image encoded: its SDR and the concepts it was built from."""

    sdr: Sdr
    concepts: tuple[Concept, ...]
    request_id: str = ""
    short: bool = False  # fewer active bits than asked for: the concepts' term SDRs were too few
    indexed: bool = False  # stored in the index under the id it was sent with
    timings: StageTimings | None = None


@dataclass(frozen=True)
class EncodeItem:
    """One image of an ``encode_stream``, with what to store it under."""

    image: ImageSource
    request_id: str = ""  # empty: the client numbers the items "0", "1", ...
    add_to_index: str | None = None  # the id to store the result under
    metadata: Mapping[str, str] = field(default_factory=dict)  # stored with it

    def __post_init__(self) -> None:
        if self.metadata and self.add_to_index is None:
            raise ValueError("metadata is stored with an indexed item: set add_to_index too")


@dataclass(frozen=True)
class ItemError:
    """An ``encode_stream`` item that failed; the stream went on without it."""

    request_id: str
    error: Image2SdrError


@dataclass(frozen=True)
class Match:
    id: str
    overlap: int  # active bits shared with the query
    concepts: tuple[Concept, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Item:
    id: str
    sdr: Sdr
    concepts: tuple[Concept, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)


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
