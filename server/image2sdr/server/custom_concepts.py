"""Custom concepts: a notion taught by a handful of example images, kept as SDRs, with no training run.

A caller names a concept ("storefront") and gives example images: at least three
that show it, and any number that do not.  The service encodes them (or reads them
from the index) and hands their SDRs here as ``Example`` values; ``define`` returns a
``CustomConcept``, which the index keeps as the JSON of ``to_document`` and Encode
scores every image against (``ConceptSet``, all concepts in one sparse product).

Method
------
*The concept's SDR, per space.*  In the semantic space, and in the visual space when
every example has a visual SDR, each bit scores its share among the positives minus
its share among the negatives (exact integer fractions, so ties are ties on every
machine).  The concept's SDR is the ``active_bits`` best bits (the configured
sparsity) among those at least two positives hold and that score above zero, each
with its score as weight; fewer when fewer qualify.  Ties go to the bit more
positives hold, then to the lower position, so the same examples in any order give
the same concept, document byte for byte.  Without negatives, a bit's score is its
share among the positives.

*An image's score* in a space is the weighted share of the concept's bits its SDR
holds (1: all of them, 0: none; an unrelated random SDR holds about the sparsity).
The spaces' scores are combined with per-concept shares, fitted (below) from
semantic:visual = 1:0, 3:1, 1:1, 1:3, 0:1 (equal shares without negatives).

*Leave-one-out.*  Each positive is scored against the concept built without it, and
so is each negative (they shape the bits too).  On these scores: the shares are the
ones whose combined scores separate positives from negatives best (d': gap of the
means over the pooled spread; equal shares win a tie).  Then the positives and
negatives are taken as two normal classes with one pooled variance, and a concept is
*present* where the posterior P(concept | score) passes 0.5 under a prior of
``PRIOR`` = 0.1 (a concept is expected on about one image in ten).  For such classes
the posterior is exactly ``logistic((score - threshold) / scale)``, with
scale = variance / (mean_pos - mean_neg) and the threshold past the midpoint of the
means by scale * ln 9: that is the confidence Encode reports, 0.5 at the threshold.
When the negatives score as high as the positives, the concept is present only
beyond every example's score, and ``FitReport`` (LOO precision, recall, F1 and the
scores themselves) shows the recall lost.  An image without a visual SDR (the visual
channel off) is scored by a second fit on the semantic space alone.

Why: the positives' shared bits are what the issue asks for, and they carry the
classifier's feature through the projection (``appearance``), so the same examples
and the same SDRs serve FindSimilar by concept name.  The threshold rule was chosen
by ``make bench-concepts`` (labelled openclipart drawings, held-out images, 18
concepts, 20 random negatives): the best balanced accuracy on the examples (the
widest-gap cut) and the midpoint of the classes flag 14-19 % of unrelated images,
because 20 negatives never show the tail of thousands; the prior of 0.1 flags 2-3 %,
F1 0.27 (10 positives) and 0.21 (5) against 0.16 and 0.16.  Fitted shares beat equal
ones (F1 0.27 vs 0.19 with 10 positives, 0.21 vs 0.15 with 5): on drawings the visual
SDR carries most concepts, the semantic one a few (clocks, road vehicles, music).

Without negatives the threshold has nothing to stand on: an unrelated image is
taken to score the chance overlap, and the concept then flags 60 % of unrelated
images (measured).  A caller with no negatives should draw some from its collection
(random stored items are what the benchmark's negatives are).

Scoring every concept for one image costs about 0.2 ms for 100 concepts and 0.6 ms
for 1000 (``ConceptSet``; one ``CustomConcept`` at a time, 100 take 4.5 ms); a
definition from 10 + 20 examples about 6 ms, from 200 + 200 about 0.2 s (the
leave-one-out builds 400 concepts per space).

Scores assume the image's SDRs have the sparsity the concept was defined at (the
configured one): an SDR with twice the bits holds more of the concept's.
"""

from __future__ import annotations

import json
import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse

from .errors import Image2SdrError, InvalidInputError, InvalidSdrError
from .index.checks import check_concept_name
from .index.protocol import SEMANTIC, VISUAL
from .sdr import Sdr

__all__ = [
    "DOCUMENT_VERSION",
    "MIN_POSITIVES",
    "ConceptBits",
    "ConceptDocumentError",
    "ConceptSet",
    "CustomConcept",
    "Example",
    "Fit",
    "FitReport",
    "define",
]

DOCUMENT_VERSION = 1
MIN_POSITIVES = 3
SPACES = (SEMANTIC, VISUAL)  # in the order they are combined and stored
# A bit joins the concept only when at least this many positives hold it: one example's
# own bits say nothing about the notion.
MIN_SUPPORT = 2
# The share of images a custom concept is expected to show, before their scores are read:
# it puts the threshold past the midpoint of the classes (see _threshold).  Measured by
# make bench-concepts: 0.5 (the midpoint) flags 14-15 % of unrelated images, 0.1 2-3 %.
PRIOR = 0.1
_PRIOR_ODDS = math.log((1.0 - PRIOR) / PRIOR)
# Scores lie in [0, 1].  The logistic's scale never goes below MIN_SCALE (examples that
# all score alike would make a step); classes closer than MIN_GAP are not told apart.
MIN_SCALE = 0.02
MIN_GAP = 0.01


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
class FitReport:
    """How the concept sorts its own examples, each scored leave-one-out (against the concept made without it)."""

    positives: int
    negatives: int
    positive_scores: tuple[float, ...]  # sorted ascending
    negative_scores: tuple[float, ...]  # sorted ascending; empty when no negatives were given
    threshold: float
    bits: Mapping[str, int]  # concept bits per space

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

    Compared by identity, like ``CustomConcept``: compare concepts by ``to_document()``.
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

    def to_document(self) -> str:
        """The JSON the index stores (versioned; read back by ``from_document``)."""
        document = {
            "version": DOCUMENT_VERSION,
            "sdr_size": self.bits[SEMANTIC].sdr.size,
            "active_bits": self.active_bits,
            "spaces": {
                space: {"positions": bits.sdr.positions.tolist(), "weights": bits.weights.tolist()}
                for space, bits in self.bits.items()
            },
            "fits": [
                {
                    "spaces": list(fit.spaces),
                    "weights": list(fit.weights),
                    "threshold": fit.threshold,
                    "scale": fit.scale,
                }
                for fit in self.fits
            ],
            "report": {
                "positives": self.report.positives,
                "negatives": self.report.negatives,
                "positive_scores": list(self.report.positive_scores),
                "negative_scores": list(self.report.negative_scores),
            },
        }
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def from_document(cls, name: str, document: str, sdr_size: int) -> CustomConcept:
        """Read a stored concept; ConceptDocumentError if it is of another version, another SDR size, or damaged."""
        try:
            raw = json.loads(document)
        except (TypeError, ValueError) as exc:
            raise ConceptDocumentError(f"concept {name!r}: the stored document is not JSON ({exc})") from None
        if not isinstance(raw, dict) or "version" not in raw:
            raise ConceptDocumentError(f"concept {name!r}: the stored document has no version")
        if raw["version"] != DOCUMENT_VERSION:
            raise ConceptDocumentError(
                f"concept {name!r} was stored as document version {raw['version']!r}; this release reads "
                f"version {DOCUMENT_VERSION}: define it again"
            )
        try:
            return _read(name, raw, sdr_size)
        except ConceptDocumentError:
            raise
        except (KeyError, TypeError, ValueError, InvalidSdrError) as exc:
            raise ConceptDocumentError(f"concept {name!r}: the stored document is damaged ({exc!r})") from None


def define(
    name: str, positives: Sequence[Example], negatives: Sequence[Example] = (), *, active_bits: int, sdr_size: int
) -> CustomConcept:
    """A concept from its examples; see the module docstring for how."""
    check_concept_name(name, "name")
    if not 0 < active_bits <= sdr_size:
        raise InvalidInputError(f"active_bits must lie in (0, {sdr_size}], got {active_bits}", field="active_bits")
    _check_examples(positives, "positives", sdr_size)
    _check_examples(negatives, "negatives", sdr_size)
    if len(positives) < MIN_POSITIVES:
        raise InvalidInputError(
            f"a concept needs at least {MIN_POSITIVES} positive examples, got {len(positives)}", field="positives"
        )
    examples = list(positives) + list(negatives)
    spaces = tuple(space for space in SPACES if all(e.space(space) is not None for e in examples))
    tallies = {space: _Tally.of(positives, negatives, space, sdr_size) for space in spaces}
    bits = {space: tally.select(active_bits) for space, tally in tallies.items()}
    chance = active_bits / sdr_size
    fits, report = _fit_all(tallies, active_bits, chance, bits)
    return CustomConcept(name, types.MappingProxyType(bits), fits, report, active_bits)


# -- examples -> bits ------------------------------------------------------------------


@dataclass(frozen=True)
class _Tally:
    """How many positives and negatives hold each bit of one space."""

    positions: tuple[list[npt.NDArray[np.uint32]], list[npt.NDArray[np.uint32]]]  # each example's bits
    positive: npt.NDArray[np.int64]  # (size,)
    negative: npt.NDArray[np.int64]
    size: int

    @classmethod
    def of(cls, positives: Sequence[Example], negatives: Sequence[Example], space: str, size: int) -> _Tally:
        pos = [_sdr(e, space).positions for e in positives]
        neg = [_sdr(e, space).positions for e in negatives]
        return cls((pos, neg), _count(pos, size), _count(neg, size), size)

    @property
    def counts(self) -> tuple[int, int]:
        return len(self.positions[0]), len(self.positions[1])

    def select(self, active_bits: int, *, without: tuple[int, int] | None = None) -> ConceptBits:
        """The concept bits; ``without`` = (0, i) leaves positive i out, (1, j) negative j."""
        positive, negative = self.positive, self.negative
        n_pos, n_neg = self.counts
        if without is not None:
            kind, row = without
            bits = self.positions[kind][row]
            if kind == 0:
                positive, n_pos = positive.copy(), n_pos - 1
                positive[bits] -= 1
            else:
                negative, n_neg = negative.copy(), n_neg - 1
                negative[bits] -= 1
        return _select((positive, negative), (n_pos, n_neg), active_bits, self.size)


def _select(
    tallies: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]], counts: tuple[int, int], active_bits: int, size: int
) -> ConceptBits:
    """The ``active_bits`` best bits of one space from the positives' and negatives' tallies."""
    positive, negative = tallies
    n_pos, n_neg = counts
    # score = share among positives - share among negatives, as an exact integer fraction
    # (c_pos * n_neg - c_neg * n_pos) / (n_pos * n_neg): ties are real ties, on every machine.
    candidates = np.flatnonzero(positive >= MIN_SUPPORT)
    held = positive[candidates]
    if n_neg:
        numerator = held * n_neg - negative[candidates] * n_pos
        denominator = n_pos * n_neg
    else:  # nothing to be rare among: the bits most of the positives share
        numerator, denominator = held, n_pos
    keep = numerator > 0
    candidates, held, numerator = candidates[keep], held[keep], numerator[keep]
    # Highest score first; then the bit more positives hold; then the lower position.
    order = np.lexsort((candidates, -held, -numerator))[:active_bits]
    chosen = candidates[order]
    weights = numerator[order] / denominator
    ascending = np.argsort(chosen)
    return ConceptBits(Sdr.trusted(chosen[ascending], size), np.array(weights[ascending], dtype=np.float64))


def _count(rows: list[npt.NDArray[np.uint32]], size: int) -> npt.NDArray[np.int64]:
    if not rows:
        return np.zeros(size, dtype=np.int64)
    return np.bincount(np.concatenate(rows).astype(np.intp), minlength=size).astype(np.int64)


def _sdr(example: Example, space: str) -> Sdr:
    sdr = example.space(space)
    if sdr is None:  # spaces are chosen as those every example has
        raise RuntimeError(f"example without a {space} SDR")
    return sdr


def _check_examples(examples: Sequence[Example], field: str, sdr_size: int) -> None:
    for number, example in enumerate(examples):
        if not isinstance(example, Example):
            raise InvalidInputError(f"{field}[{number}] is not an Example", field=f"{field}[{number}]")
        for space in SPACES:
            sdr = example.space(space)
            if space == SEMANTIC and not isinstance(sdr, Sdr):
                raise InvalidInputError(f"{field}[{number}] has no semantic SDR", field=f"{field}[{number}]")
            if sdr is not None and (not isinstance(sdr, Sdr) or sdr.size != sdr_size):
                raise InvalidInputError(
                    f"{field}[{number}].{space} is not an SDR of {sdr_size} bits", field=f"{field}[{number}]"
                )


# -- leave-one-out fit ---------------------------------------------------------------------


def _fit_all(
    tallies: Mapping[str, _Tally], active_bits: int, chance: float, bits: Mapping[str, ConceptBits]
) -> tuple[tuple[Fit, ...], FitReport]:
    """Fits for every space together, then for the semantic space alone (an image without a visual SDR)."""
    spaces = tuple(tallies)
    loo = [_loo_scores(tally, active_bits) for tally in tallies.values()]
    # (spaces, examples) per class, columns in a canonical order: the fit's sums then do not
    # depend on the order the examples came in, down to the last bit.
    positive = _canonical(np.array([scores[0] for scores in loo]))
    negative = _canonical(np.array([scores[1] for scores in loo]).reshape(len(spaces), -1))
    fits = [_fit(spaces, positive, negative, chance)]
    if len(spaces) > 1:
        fits.append(_fit(spaces[:1], positive[:1], negative[:1], chance))
    full = fits[0]
    n_pos, n_neg = tallies[SEMANTIC].counts
    report = FitReport(
        n_pos,
        n_neg,
        tuple(sorted(full.score(column.tolist()) for column in positive.T)),
        tuple(sorted(full.score(column.tolist()) for column in negative.T)),
        full.threshold,
        types.MappingProxyType({space: b.sdr.active for space, b in bits.items()}),
    )
    return tuple(fits), report


def _canonical(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The columns (examples) sorted by their scores, the first space first."""
    if scores.shape[1] == 0:
        return scores
    return scores[:, np.lexsort(scores[::-1])]


def _loo_scores(tally: _Tally, active_bits: int) -> tuple[list[float], list[float]]:
    """Each example's score against the concept built without it (in example order)."""
    n_pos, n_neg = tally.counts
    found: tuple[list[float], list[float]] = ([], [])
    for kind, count in ((0, n_pos), (1, n_neg)):
        for row in range(count):
            concept = tally.select(active_bits, without=(kind, row))
            example = Sdr.trusted(tally.positions[kind][row], tally.size)
            found[kind].append(concept.score(example))
    return found


# Visual shares tried when a concept has both spaces; equal shares win a tie.
_VISUAL_SHARES = (0.5, 0.25, 0.75, 0.0, 1.0)


def _weights(positive: npt.NDArray[np.float64], negative: npt.NDArray[np.float64]) -> tuple[float, ...]:
    """The spaces' shares that best separate the LOO scores (d'); equal shares without negatives."""
    if positive.shape[0] == 1:
        return (1.0,)
    if negative.shape[1] < 2:
        return (0.5, 0.5)
    best, best_separation = (0.5, 0.5), -math.inf
    for share in _VISUAL_SHARES:
        weights = np.array([1.0 - share, share])
        separation = _separation(weights @ positive, weights @ negative)
        if separation > best_separation + 1e-12:
            best, best_separation = (1.0 - share, share), separation
    return best


def _separation(positive: npt.NDArray[np.float64], negative: npt.NDArray[np.float64]) -> float:
    """d': the gap between the mean scores in units of their pooled spread."""
    spread = math.sqrt((float(positive.var()) + float(negative.var())) / 2) + 1e-6
    return (float(positive.mean()) - float(negative.mean())) / spread


def _fit(
    spaces: tuple[str, ...], positive: npt.NDArray[np.float64], negative: npt.NDArray[np.float64], chance: float
) -> Fit:
    """The space weights, threshold and scale from the LOO scores, (spaces, examples) per class."""
    weights = _weights(positive, negative)
    combined = np.asarray(weights)
    threshold, scale = _threshold(combined @ positive, combined @ negative, chance)
    return Fit(spaces, weights, threshold, scale)


def _threshold(
    positive: npt.NDArray[np.float64], negative: npt.NDArray[np.float64], chance: float
) -> tuple[float, float]:
    """Where the posterior P(concept | score) crosses 0.5, and the scale of the logistic it follows.

    Two normal classes of one (pooled) variance: the posterior is exactly
    logistic((score - threshold) / scale) with scale = variance / (mean_pos - mean_neg)
    and the threshold past the midpoint of the means by scale * ln((1 - PRIOR) / PRIOR).
    Without negatives, an unrelated image is taken to score the chance overlap, with the
    positives' spread.
    """
    mean_pos = float(positive.mean())
    if negative.size:
        mean_neg, variance = float(negative.mean()), (float(positive.var()) + float(negative.var())) / 2
    else:
        mean_neg, variance = chance, float(positive.var())
    gap = mean_pos - mean_neg
    if gap < MIN_GAP:
        # The examples do not tell the concept apart (the negatives score as high): present
        # only beyond every example's score, and the fit report shows the recall lost.
        highest = max(float(positive.max()), float(negative.max()) if negative.size else chance)
        return highest + MIN_SCALE * _PRIOR_ODDS, MIN_SCALE
    scale = max(variance / gap, MIN_SCALE)
    return (mean_pos + mean_neg) / 2 + scale * _PRIOR_ODDS, scale


def _logistic(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)


# -- documents ---------------------------------------------------------------------------


def _read(name: str, raw: dict[str, Any], sdr_size: int) -> CustomConcept:
    if raw["sdr_size"] != sdr_size:
        raise ConceptDocumentError(
            f"concept {name!r} was defined for SDRs of {raw['sdr_size']} bits; this server makes {sdr_size}: "
            "define it again"
        )
    spaces = raw["spaces"]
    if not isinstance(spaces, dict) or SEMANTIC not in spaces or not set(spaces) <= set(SPACES):
        raise ValueError(f"spaces must hold {SEMANTIC!r} and only {SPACES}")
    bits: dict[str, ConceptBits] = {}
    for space in SPACES:
        if space in spaces:
            positions = spaces[space]["positions"]
            weights = np.array(spaces[space]["weights"], dtype=np.float64)
            sdr = Sdr.from_positions(positions, sdr_size)
            if weights.shape != (sdr.active,) or not np.isfinite(weights).all() or (weights <= 0).any():
                raise ValueError(f"{space} weights must be one positive number per position")
            bits[space] = ConceptBits(sdr, weights)
    fits = tuple(_read_fit(fit, tuple(bits)) for fit in raw["fits"])
    expected = [tuple(bits)] + ([(SEMANTIC,)] if len(bits) > 1 else [])
    if [fit.spaces for fit in fits] != expected:
        raise ValueError(f"the fits must be for the spaces {expected}")
    report = raw["report"]
    positive = tuple(float(s) for s in report["positive_scores"])
    negative = tuple(float(s) for s in report["negative_scores"])
    if len(positive) != int(report["positives"]) or len(negative) != int(report["negatives"]):
        raise ValueError("the report's scores do not match its counts")
    active_bits = int(raw["active_bits"])
    counts = types.MappingProxyType({space: b.sdr.active for space, b in bits.items()})
    fit_report = FitReport(len(positive), len(negative), positive, negative, fits[0].threshold, counts)
    return CustomConcept(name, types.MappingProxyType(bits), fits, fit_report, active_bits)


def _read_fit(raw: dict[str, Any], spaces: tuple[str, ...]) -> Fit:
    subset = tuple(raw["spaces"])
    weights = tuple(float(weight) for weight in raw["weights"])
    threshold, scale = float(raw["threshold"]), float(raw["scale"])
    if not subset or not set(subset) <= set(spaces) or subset[0] != SEMANTIC:
        raise ValueError(f"a fit's spaces must be some of {spaces}, the semantic first")
    if len(weights) != len(subset) or not all(0.0 <= w <= 1.0 for w in weights) or abs(sum(weights) - 1) > 1e-9:
        raise ValueError("a fit's weights are one share in [0, 1] per space, summing to 1")
    if not math.isfinite(threshold) or not math.isfinite(scale) or scale <= 0:
        raise ValueError("a fit's threshold must be finite and its scale positive")
    return Fit(subset, weights, threshold, scale)


# -- many concepts at once (Encode) ---------------------------------------------------------


class ConceptSet:
    """Every custom concept, scored against one image in one sparse product per space (Encode's hot path).

    Gives the same scores and confidences as each ``CustomConcept`` alone, up to float rounding.
    """

    def __init__(self, concepts: Sequence[CustomConcept], sdr_size: int) -> None:
        self.concepts = tuple(concepts)
        self.size = sdr_size
        self._matrices = {space: self._matrix(space) for space in SPACES}
        # Per concept: the fit over every space it has (used when the image has them all) and
        # the semantic fit (an image without a visual SDR).
        full = [concept.fits[0] for concept in self.concepts]
        alone = [concept.fits[-1] for concept in self.concepts]
        self._visual_share = np.array([_share(fit, VISUAL) for fit in full])
        self._full = _fit_arrays(full)
        self._alone = _fit_arrays(alone)

    def _matrix(self, space: str) -> sparse.csr_matrix:
        """(size, concepts): each concept's bit weights in its column, normalised to sum to 1."""
        rows, columns, values = [], [], []
        for column, concept in enumerate(self.concepts):
            bits = concept.bits.get(space)
            if bits is not None and bits.sdr.active:
                rows.append(bits.sdr.positions.astype(np.intp))
                columns.append(np.full(bits.sdr.active, column, dtype=np.intp))
                values.append(bits.weights / bits.weights.sum())
        shape = (self.size, len(self.concepts))
        if not rows:
            return sparse.csr_matrix(shape)
        return sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))), shape=shape)

    def scores(self, sdrs: Mapping[str, Sdr]) -> npt.NDArray[np.float64]:
        """Each concept's score for one image (as ``CustomConcept.score``), in order."""
        row: npt.NDArray[np.float64] = self.scores_many([sdrs])[0]
        return row

    def confidences(self, sdrs: Mapping[str, Sdr]) -> list[tuple[str, float]]:
        """(name, confidence) of every concept for one image, in order."""
        values = self.confidences_many([sdrs])[0]
        return [(concept.name, float(value)) for concept, value in zip(self.concepts, values, strict=True)]

    def scores_many(self, images: Sequence[Mapping[str, Sdr]]) -> npt.NDArray[np.float64]:
        """(images, concepts): every concept's score for each image (a batch, or stored items)."""
        semantic = self._space_scores(SEMANTIC, [image.get(SEMANTIC) for image in images])
        seen = [row for row, image in enumerate(images) if isinstance(image.get(VISUAL), Sdr)]
        if seen:
            visual = self._space_scores(VISUAL, [images[row].get(VISUAL) for row in seen])
            share = self._visual_share
            semantic[seen] = (1.0 - share) * semantic[seen] + share * visual
        return semantic

    def confidences_many(self, images: Sequence[Mapping[str, Sdr]]) -> npt.NDArray[np.float64]:
        """(images, concepts): every concept's confidence for each image."""
        scores = self.scores_many(images)
        seen = np.array([isinstance(image.get(VISUAL), Sdr) for image in images], dtype=bool)[:, None]
        threshold = np.where(seen, self._full[0], self._alone[0])
        scale = np.where(seen, self._full[1], self._alone[1])
        exponent = np.clip(-(scores - threshold) / scale, -700.0, 700.0)
        return np.asarray(1.0 / (1.0 + np.exp(exponent)), dtype=np.float64)

    def _space_scores(self, space: str, sdrs: Sequence[Sdr | None]) -> npt.NDArray[np.float64]:
        """(len(sdrs), concepts): the images' SDRs as one sparse matrix, times the concepts' weights."""
        for sdr in sdrs:
            if not isinstance(sdr, Sdr) or sdr.size != self.size:
                raise InvalidInputError(f"the image's {space} SDR must have {self.size} bits", field=space)
        checked = [sdr for sdr in sdrs if isinstance(sdr, Sdr)]
        pointers = np.zeros(len(checked) + 1, dtype=np.int64)
        np.cumsum([sdr.active for sdr in checked], out=pointers[1:])
        columns = np.concatenate([sdr.positions for sdr in checked]) if checked else np.zeros(0, np.uint32)
        images = sparse.csr_matrix(
            (np.ones(columns.size), columns.astype(np.intp), pointers), shape=(len(checked), self.size)
        )
        return np.asarray((images @ self._matrices[space]).toarray(), dtype=np.float64)


def _share(fit: Fit, space: str) -> float:
    return fit.weights[fit.spaces.index(space)] if space in fit.spaces else 0.0


def _fit_arrays(fits: Sequence[Fit]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    return np.array([fit.threshold for fit in fits]), np.array([fit.scale for fit in fits])
