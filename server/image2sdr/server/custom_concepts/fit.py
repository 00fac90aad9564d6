"""Fitting a custom concept to its examples: its bits, its space weights, its threshold and scale.

A caller names a concept ("storefront") and gives example images: at least three
that show it, and any number that do not.  The service encodes them (or reads them
from the index) and hands their SDRs here as ``Example`` values; ``define`` returns a
``CustomConcept``, which the index keeps as the JSON of ``document.to_document`` and
Encode scores every image against (``scoring.ConceptSet``, all concepts in one sparse product).

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

*Background.*  Twenty negatives never show the tail of a collection of thousands, so the
library also hands ``define`` up to 2,000 stored items (less the examples) as
unlabelled background: presumed negatives, though some show the concept.  In the bits
they weigh ``BACKGROUND_SHARE`` (1/4) against the explicit negatives' 3/4.  With at
least ``background.MIN_BACKGROUND`` of them they move the threshold: to the threshold of
best estimated F1 on them (a PU estimate of the concept's prevalence there) where that
is lower than the examples' rule (``background``'s docstring has the method and why the
lower; the scale stays the examples').  ``FitReport.background`` keeps what the
definition flags of the stored collection and a bound on how precise it is there.

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

import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from ..errors import InvalidInputError
from ..index.filters import check_concept_name
from ..index.values import SEMANTIC
from ..sdr import Sdr
from .background import background_scores, on_background, space_scores
from .concept import MIN_POSITIVES, SPACES, ConceptBits, CustomConcept, Example, Fit, FitReport

__all__ = ["background_scores", "define", "space_scores"]  # the first and last from .background, as before

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
# The background's weight against the explicit negatives when both shape the bits: light,
# because it holds some of the concept too (an exact fraction: the bits' scores stay exact).
BACKGROUND_SHARE = Fraction(1, 4)


def define(
    name: str,
    positives: Sequence[Example],
    negatives: Sequence[Example] = (),
    *,
    active_bits: int,
    sdr_size: int,
    background: Sequence[Example] = (),
) -> CustomConcept:
    """A concept from its examples; see the module docstring for how.

    ``background``: unlabelled stored items (most of them are not the concept): presumed
    negatives, weighted ``BACKGROUND_SHARE`` against the explicit ones in the bits, and
    the collection the threshold is set on (see "Background" above).
    """
    check_concept_name(name, "name")
    if not 0 < active_bits <= sdr_size:
        raise InvalidInputError(f"active_bits must lie in (0, {sdr_size}], got {active_bits}", field="active_bits")
    _check_examples(positives, "positives", sdr_size)
    _check_examples(negatives, "negatives", sdr_size)
    _check_examples(background, "background", sdr_size)
    if len(positives) < MIN_POSITIVES:
        raise InvalidInputError(
            f"a concept needs at least {MIN_POSITIVES} positive examples, got {len(positives)}", field="positives"
        )
    examples = list(positives) + list(negatives)
    spaces = tuple(space for space in SPACES if all(e.space(space) is not None for e in examples))
    tallies = {space: _Tally.of(positives, negatives, background, space, sdr_size) for space in spaces}
    bits = {space: tally.select(active_bits) for space, tally in tallies.items()}
    chance = active_bits / sdr_size
    fits, report = _fit_all(tallies, active_bits, chance, bits, background)
    return CustomConcept(name, types.MappingProxyType(bits), fits, report, active_bits)


# -- examples -> bits ------------------------------------------------------------------


@dataclass(frozen=True)
class _Tally:
    """How many positives, negatives and background items hold each bit of one space."""

    positions: tuple[list[npt.NDArray[np.uint32]], list[npt.NDArray[np.uint32]]]  # each example's bits
    positive: npt.NDArray[np.int64]  # (size,)
    negative: npt.NDArray[np.int64]
    size: int
    background: npt.NDArray[np.int64]  # background items holding each bit (those with this space)
    n_background: int

    @classmethod
    def of(
        cls,
        positives: Sequence[Example],
        negatives: Sequence[Example],
        background: Sequence[Example],
        space: str,
        size: int,
    ) -> _Tally:
        pos = [_sdr(e, space).positions for e in positives]
        neg = [_sdr(e, space).positions for e in negatives]
        held = [sdr.positions for e in background if (sdr := e.space(space)) is not None]
        return cls((pos, neg), _count(pos, size), _count(neg, size), size, _count(held, size), len(held))

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
        tallies = (positive, negative, self.background)
        return _select(tallies, (n_pos, n_neg, self.n_background), active_bits, self.size)


def _select(
    tallies: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]],
    counts: tuple[int, int, int],
    active_bits: int,
    size: int,
) -> ConceptBits:
    """The ``active_bits`` best bits of one space from the positives', negatives' and background's tallies."""
    positive, negative, background = tallies
    candidates = np.flatnonzero(positive >= MIN_SUPPORT)
    held = positive[candidates]
    numerator, denominator = _rarity(held, negative[candidates], background[candidates], counts)
    keep = numerator > 0
    candidates, held, numerator = candidates[keep], held[keep], numerator[keep]
    # Highest score first; then the bit more positives hold; then the lower position.
    order = np.lexsort((candidates, -held, -numerator))[:active_bits]
    chosen = candidates[order]
    weights = numerator[order] / denominator
    ascending = np.argsort(chosen)
    return ConceptBits(Sdr.trusted(chosen[ascending], size), np.array(weights[ascending], dtype=np.float64))


def _rarity(
    held: npt.NDArray[np.int64],
    negative: npt.NDArray[np.int64],
    background: npt.NDArray[np.int64],
    counts: tuple[int, int, int],
) -> tuple[npt.NDArray[np.int64], int]:
    """Each bit's share among positives minus its (weighted) share among the presumed negatives.

    As an exact integer fraction (numerator, denominator), so ties are real ties on every
    machine: the explicit negatives weigh ``1 - BACKGROUND_SHARE``, the background the rest
    (all of it without explicit negatives); without either, the share among the positives.
    """
    n_pos, n_neg, n_bg = counts
    whole, part = BACKGROUND_SHARE.denominator, BACKGROUND_SHARE.numerator
    if n_neg and n_bg:
        numerator = (
            whole * held * n_neg * n_bg - (whole - part) * negative * n_pos * n_bg - part * background * n_pos * n_neg
        )
        return numerator, whole * n_pos * n_neg * n_bg
    if n_neg:
        return held * n_neg - negative * n_pos, n_pos * n_neg
    if n_bg:
        return held * n_bg - background * n_pos, n_pos * n_bg
    return held, n_pos  # nothing to be rare among: the bits most of the positives share


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
    tallies: Mapping[str, _Tally],
    active_bits: int,
    chance: float,
    bits: Mapping[str, ConceptBits],
    background: Sequence[Example],
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
    fits, estimate = on_background(fits, positive, bits, background)
    full = fits[0]
    n_pos, n_neg = tallies[SEMANTIC].counts
    report = FitReport(
        n_pos,
        n_neg,
        tuple(sorted(full.score(column.tolist()) for column in positive.T)),
        tuple(sorted(full.score(column.tolist()) for column in negative.T)),
        full.threshold,
        types.MappingProxyType({space: b.sdr.active for space, b in bits.items()}),
        estimate,
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
