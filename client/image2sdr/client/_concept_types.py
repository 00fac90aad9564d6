"""The values of custom concepts: their examples, their fit, what they do on the stored collection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._types import Sdr

__all__ = ["ConceptBackground", "ConceptFit", "ConceptSuggestion", "CustomConcept", "StoredId"]


@dataclass(frozen=True)
class StoredId:
    """A stored item used as a custom concept's example (a ``str`` example is an image file's path)."""

    id: str


@dataclass(frozen=True)
class ConceptFit:
    """How well a custom concept tells its own examples apart, each left out of it in turn."""

    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class ConceptBackground:
    """What a custom concept does on the stored collection it was defined against (unlabelled items)."""

    items: int  # stored items scored
    flagged: float  # the share of them it says yes to
    precision: float  # estimated share of those that show it: an upper bound, close only when it separates well
    recall: float  # the positives' share at the threshold, each scored leave-one-out
    prevalence: float  # estimated share of the collection that shows it


@dataclass(frozen=True)
class ConceptSuggestion:
    """A stored item the concept was least sure of: label it, then define the concept again with it by id."""

    id: str
    confidence: float


@dataclass(frozen=True)
class CustomConcept:
    """A concept taught by examples: an SDR of the bits common among the positives, rare among the negatives.

    An image's score, in [0, 1], is the (weighted) share of the concept's bits its SDRs
    hold; its confidence is ``1 / (1 + exp(-(score - threshold) / scale))``, 0.5 at the
    threshold.
    """

    name: str
    sdr: Sdr  # in the semantic space
    visual: Sdr | None  # in the visual space; None when an example had no visual SDR
    threshold: float  # the score at which the concept is present
    scale: float
    positives: int  # examples given
    negatives: int
    fit: ConceptFit  # leave-one-out on the examples
    updated_ms: int  # when it was (re)defined, Unix milliseconds
    background: ConceptBackground | None = None  # on the stored collection; None: too few items stored
    suggestions: tuple[ConceptSuggestion, ...] = ()  # least sure first: label these to refine it
    # The stored items given as examples (images given are not kept): define it again with
    # these plus the labelled suggestions to refine it.
    positive_ids: tuple[str, ...] = ()
    negative_ids: tuple[str, ...] = ()
