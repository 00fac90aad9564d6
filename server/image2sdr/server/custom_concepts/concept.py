"""A custom concept as a value: its bits per space, its fits, how it scores one image.

``fit.define`` makes one from examples, ``document`` stores and reads it, ``scoring.ConceptSet``
scores many at once; see ``fit`` for the method.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..errors import Image2SdrError, InvalidInputError
from ..index.values import SEMANTIC, VISUAL
from ..sdr import Sdr

__all__ = [
    "MIN_POSITIVES",
    "SPACES",
    "BackgroundEstimate",
    "ConceptBits",
    "ConceptDocumentError",
    "CustomConcept",
    "Example",
    "Fit",
    "FitReport",
]

MIN_POSITIVES = 3
SPACES = (SEMANTIC, VISUAL)  # in the order they are combined and stored


class ConceptDocumentError(Image2SdrError):
    """A stored concept this release cannot read: another document version, or a damaged one."""


@dataclass(frozen=True)
class Example:
    """One example image's SDRs: semantic always; visual when the image was encoded with the visual channel."""

    semantic: Sdr
    visual: Sdr | None = None

    def space(self, name: str) -> Sdr | None:
        return self.semantic if name == SEMANTIC else self.visual


@dataclass(frozen=True)
class Fit:
    """Where a concept's score turns into "present", and how fast confidence rises around it."""

    spaces: tuple[str, ...]  # the spaces this fit combines (an image may lack one the concept has)
    weights: tuple[float, ...]  # each space's share of the score, summing to 1
    threshold: float
    scale: float

    def score(self, scores: Sequence[float]) -> float:
        return sum(weight * score for weight, score in zip(self.weights, scores, strict=True))

    def confidence(self, score: float) -> float:
        return _logistic((score - self.threshold) / self.scale)


@dataclass(frozen=True)
class BackgroundEstimate:
    """What the concept does on the stored collection it was fitted against (``background``)."""

    items: int  # stored items scored (presumed negatives, unlabelled)
    flagged: float  # the share of them it says yes to
    precision: float  # estimated share of those that show it: an upper bound (prevalence is one)
    recall: float  # the positives' share at the threshold, each scored leave-one-out
    prevalence: float  # estimated share of the collection that shows it


@dataclass(frozen=True)
class FitReport:
    """How the concept sorts its own examples, each scored leave-one-out (against the concept made without it)."""

    positives: int
    negatives: int
    positive_scores: tuple[float, ...]  # sorted ascending
    negative_scores: tuple[float, ...]  # sorted ascending; empty when no negatives were given
    threshold: float
    bits: Mapping[str, int]  # concept bits per space
    background: BackgroundEstimate | None = None  # None: fitted on the examples alone

    @property
    def true_positives(self) -> int:
        return sum(score >= self.threshold for score in self.positive_scores)

    @property
    def false_positives(self) -> int:
        return sum(score >= self.threshold for score in self.negative_scores)

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.positives if self.positives else 0.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


@dataclass(frozen=True, eq=False)
class ConceptBits:
    """A concept's SDR in one space, with each bit's weight (its positives-minus-negatives share).

    Compared by identity, like ``CustomConcept``: compare concepts by ``document.to_document``.
    """

    sdr: Sdr
    weights: npt.NDArray[np.float64]  # aligned with sdr.positions, all > 0; read-only

    def __post_init__(self) -> None:
        self.weights.flags.writeable = False

    def score(self, sdr: Sdr) -> float:
        """The weighted share of the concept's bits that ``sdr`` holds, in [0, 1]."""
        held = np.isin(self.sdr.positions, sdr.positions, assume_unique=True)
        total = float(self.weights.sum())
        return float(self.weights[held].sum()) / total if total > 0 else 0.0


@dataclass(frozen=True, eq=False)
class CustomConcept:
    """A defined concept: its SDR per space, how an image's scores combine, and where it is present."""

    name: str
    bits: Mapping[str, ConceptBits]  # by space: semantic always, visual when every example had it
    fits: tuple[Fit, ...]  # the first combines every space; then one per fewer spaces an image may have
    report: FitReport
    active_bits: int
    # Stored items it was least sure of when defined (id, confidence), to be labelled and
    # given back as examples: refinement.  Filled by the library, which knows the ids.
    suggestions: tuple[tuple[str, float], ...] = ()
    # The stored items given as examples, by id (images given are not kept): a refinement
    # defines the concept again with these plus the labelled suggestions.  Filled by the library.
    positive_ids: tuple[str, ...] = ()
    negative_ids: tuple[str, ...] = ()

    @property
    def sdrs(self) -> Mapping[str, Sdr]:
        return types.MappingProxyType({space: bits.sdr for space, bits in self.bits.items()})

    @property
    def spaces(self) -> tuple[str, ...]:
        return tuple(self.bits)

    @property
    def threshold(self) -> float:
        return self.fits[0].threshold

    @property
    def scale(self) -> float:
        return self.fits[0].scale

    @property
    def positives(self) -> int:
        return self.report.positives

    @property
    def negatives(self) -> int:
        return self.report.negatives

    def fit_for(self, sdrs: Mapping[str, Sdr]) -> Fit:
        """The fit for the spaces an image has (the semantic space must be among them)."""
        if not isinstance(sdrs.get(SEMANTIC), Sdr):
            raise InvalidInputError("a custom concept scores an image by its semantic SDR", field=SEMANTIC)
        have = tuple(space for space in self.spaces if isinstance(sdrs.get(space), Sdr))
        for fit in self.fits:
            if fit.spaces == have:
                return fit
        raise ConceptDocumentError(f"concept {self.name!r} has no fit for the spaces {have}")

    def score(self, sdrs: Mapping[str, Sdr]) -> float:
        """The image's score in [0, 1]: its spaces' scores, weighted as fitted."""
        fit = self.fit_for(sdrs)
        return fit.score([self.bits[space].score(sdrs[space]) for space in fit.spaces])

    def confidence(self, sdrs: Mapping[str, Sdr]) -> float:
        """logistic((score - threshold) / scale): 0.5 at the threshold."""
        return self.fit_for(sdrs).confidence(self.score(sdrs))

    def present(self, sdrs: Mapping[str, Sdr]) -> bool:
        return self.score(sdrs) >= self.fit_for(sdrs).threshold


def _logistic(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)
