"""What an explanation scores: one number per image, from any provider treated as a black box.

* ``ConceptTarget``: the confidence the concept provider gives one concept
  (local, Clarifai, the nsfw pair: whatever ``ConceptSource`` the encoder has).
  Occluded images are asked for a wide list at no floor, so a concept that
  falls out of the top N scores 0 rather than going missing.
* ``custom_target``: a custom concept's confidence on the image's encoding.
* ``like_target``: the overlap of the image's SDR (semantic or visual) with a
  stored item's SDR in that space.

The last two go through the encoder's batch path, which takes encoded bytes;
so does a remote concept provider.  ``needs_bytes`` says so, and the explainer
then gives every occluded image its PNG bytes too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from ..concepts.base import Concept, ConceptResult, ConceptSource
from ..concepts.local import LocalConceptSource
from ..custom_concepts import ConceptLibrary
from ..encoder import EncodeOptions, Encoder, Encoding
from ..errors import Image2SdrError, InvalidInputError, NoSdrInSpaceError, UpstreamError
from ..imaging import DecodedImage
from ..index.item_index import ItemIndex
from ..index.values import SEMANTIC, VISUAL
from ..sdr import Sdr

__all__ = ["WIDE", "ConceptTarget", "EncodingTarget", "Target", "custom_target", "like_target", "sends_bytes"]

T = TypeVar("T")

WIDE = 200  # concepts asked of each occluded image (the most a provider gives: MaxConcepts)


class Target(Protocol):
    @property
    def name(self) -> str:
        """What is explained: the concept, custom concept or item id."""

    @property
    def batch(self) -> int:
        """Images per scoring call."""

    @property
    def needs_bytes(self) -> bool:
        """Whether images must carry encoded bytes (``DecodedImage.data``), not only pixels."""

    def scores(self, images: Sequence[DecodedImage]) -> npt.NDArray[np.float64]:
        """One score per image; a failure of any image fails the explanation."""


def sends_bytes(source: ConceptSource) -> bool:
    """Whether a concept provider reads the caller's bytes (a remote one) rather than the pixels."""
    declared = getattr(source, "sends_bytes", None)
    return declared if isinstance(declared, bool) else not isinstance(source, LocalConceptSource)


@dataclass(frozen=True)
class ConceptTarget:
    source: ConceptSource
    name: str

    @classmethod
    def checked(
        cls, source: ConceptSource, name: str, image: DecodedImage, max_concepts: int, min_confidence: float
    ) -> ConceptTarget:
        """The target, once the image is known to have the concept as Encode names it (else INVALID_ARGUMENT)."""
        wanted = name.strip().lower()
        (found,) = _raised(source.concepts([image], max_concepts, min_confidence))
        names = [concept.name for concept in found]
        if wanted not in names:
            raise InvalidInputError(
                f"the image has no concept {name!r}; it has: {', '.join(names) or 'none'}", field="concept"
            )
        return cls(source, wanted)

    @property
    def batch(self) -> int:
        return self.source.max_batch

    @property
    def needs_bytes(self) -> bool:
        return sends_bytes(self.source)

    def scores(self, images: Sequence[DecodedImage]) -> npt.NDArray[np.float64]:
        found = _raised(self.source.concepts(images, WIDE, 0.0))
        return np.array([next((c.confidence for c in concepts if c.name == self.name), 0.0) for concepts in found])


@dataclass(frozen=True)
class EncodingTarget:
    """A score read from each image's encoding (the encoder's batch path: bytes in)."""

    encoder: Encoder
    name: str
    options: EncodeOptions | None
    score: Callable[[Encoding], float]

    @property
    def batch(self) -> int:
        return self.encoder.concept_source.max_batch

    @property
    def needs_bytes(self) -> bool:
        return True

    def scores(self, images: Sequence[DecodedImage]) -> npt.NDArray[np.float64]:
        outcomes = self.encoder.encode_batch([image.data for image in images], self.options)
        return np.array([self.score(_raised_one(outcome)) for outcome in outcomes], dtype=np.float64)


def custom_target(
    encoder: Encoder, library: ConceptLibrary, name: str, options: EncodeOptions | None
) -> EncodingTarget:
    """A custom concept's confidence on each image (unknown name: ConceptNotFoundError)."""
    concept = library.get(name, "custom_concept").concept

    def confidence(encoding: Encoding) -> float:
        return concept.confidence(_spaces(encoding))

    return EncodingTarget(encoder, name, options, confidence)


def like_target(
    encoder: Encoder, index: ItemIndex, item_id: str, space: str, options: EncodeOptions | None
) -> EncodingTarget:
    """The overlap of each image's SDR in ``space`` with a stored item's (unknown id: NotFoundError)."""
    if space == VISUAL and encoder.appearance is None:
        raise InvalidInputError("this server's visual channel is off: explain in SPACE_SEMANTIC", field="space")
    try:
        stored = index.get(item_id).in_space(space)
    except InvalidInputError as exc:  # an id no item could have
        exc.field = "like"
        raise
    if stored is None:
        raise NoSdrInSpaceError(f"item {item_id!r} has no {space} SDR (added without an image)", field="like")
    held: Sdr = stored

    def overlap(encoding: Encoding) -> float:
        sdr = encoding.sdr if space == SEMANTIC else encoding.visual
        return float(held.overlap(sdr)) if sdr is not None else 0.0

    return EncodingTarget(encoder, item_id, options, overlap)


def _spaces(encoding: Encoding) -> Mapping[str, Sdr]:
    return {SEMANTIC: encoding.sdr} if encoding.visual is None else {SEMANTIC: encoding.sdr, VISUAL: encoding.visual}


def _raised(results: Sequence[ConceptResult]) -> list[list[Concept]]:
    return [_raised_one(result) for result in results]


def _raised_one(outcome: T | Exception) -> T:
    """The value, or the image's error raised: an explanation needs every one of its images."""
    if not isinstance(outcome, Exception):
        return outcome
    if isinstance(outcome, (Image2SdrError, MemoryError)):
        raise outcome
    raise UpstreamError(f"concept provider failed: {outcome}") from outcome
