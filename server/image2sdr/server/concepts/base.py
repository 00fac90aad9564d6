"""Where an image becomes concepts: the interface every concept provider implements.

Images arrive already decoded and checked against the limits (``imaging``), so
every provider rejects bad input the same way; a remote provider sends the
caller's original bytes (``DecodedImage.data``), the local one the pixels.
Providers work on batches: the local classifier runs one onnxruntime call per
batch and Clarifai takes up to 128 images per request.  Each image of a batch
succeeds or fails on its own (Clarifai's MIXED_STATUS), so a result is either a
list of concepts or the exception for that image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..imaging import DecodedImage

__all__ = ["Concept", "ConceptResult", "ConceptSource"]


@dataclass(frozen=True)
class Concept:
    name: str  # a word or phrase, lower case: "cat", "coffee mug", "no person"
    confidence: float  # in [0, 1]


ConceptResult = list[Concept] | Exception


@runtime_checkable
class ConceptSource(Protocol):
    @property
    def name(self) -> str:
        """Provider name, e.g. "local" or "clarifai"."""

    @property
    def model(self) -> str:
        """Model id and version, reported by Info."""

    @property
    def version(self) -> str:
        """Changes whenever the same image could get other concepts (reported by Info)."""

    @property
    def input_side(self) -> int | None:
        """Short side the provider needs; JPEGs may be decoded down to it (None: full size)."""

    @property
    def max_batch(self) -> int:
        """Most images one ``concepts`` call should be given."""

    def concepts(self, images: Sequence[DecodedImage], max_concepts: int, min_confidence: float) -> list[ConceptResult]:
        """Concepts for each image, strongest first, at most ``max_concepts``, each >= ``min_confidence``.

        A provider that knows several names for one concept gives them all, and they
        count once: the local roll-up's synonyms ("ball", "globule", "sphere" over one
        class) may take a list past ``max_concepts`` names.
        """
