"""Where term SDRs merge into one image SDR of fixed sparsity.

The 2018 prototype's rule, made deterministic and vectorised:

- every bit scores the sum of the weights of the term SDRs that contain it,
  where a term's weight is its concept's confidence raised to
  ``confidence_power`` (``concept_weight``; negative for a negative concept
  such as "no person", which so subtracts from that term's bits);
- with ``normalization="density"`` a term of n bits spreads its weight as
  ``confidence * w / n`` per bit, so a dense (common) word from a remote retina
  does not outweigh a sparse one; term SDRs of the local provider all have
  exactly w bits, for which both settings agree;
- the ``w = round(size * sparsity)`` best-scoring bits with a positive score
  are kept; among equal scores the winner is fixed by a seeded permutation of
  the bit positions (the prototype used ``Math.random``, so one image gave a
  different SDR on every call, which an HTM model cannot learn);
- when fewer than w bits score above zero, those bits are returned and the
  result says it is short; it is never padded with arbitrary bits.

Appearance (``sdr.visual_share``): the caller may hand over bits of the image's
visual SDR, strongest first.  They take the first ``m`` of the w places, and
the terms fill the other ``w - m`` by the rule above, skipping a bit the visual
SDR already took, so the result still has exactly w bits (or is short, when
the terms cannot fill their share).  With no visual bits the merge is the one
above, bit for bit.

Why a power below 1 (``sdr.confidence_power``, 0.25 by default): a classifier's
confidences fall off steeply, so with the confidence itself as weight one or two
concepts ("animal", "mammal") held nearly every bit and the rest of what the
classifier saw (fifty concepts, the specific ones at a few percent) counted for
nothing.  Flattened, every kept concept holds some bits and two photos of one
kind share more of them: same-kind precision@10 of neighbours 0.472 -> 0.57 on
``make bench-meaning`` (docs/benchmarks.md), and a mirrored copy keeps more of
its bits.  1 gives the weights of the releases before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from .sdr import Sdr

__all__ = ["MergeResult", "Merger", "WeightedSdr"]

# Scores are compared on a grid of 1e-6: float dust (a negative concept that
# cancels a positive one leaves 1e-17; sums taken in another order differ in
# the last bit) must neither win a bit nor break a tie differently elsewhere.
_SCALE = 1_000_000


@dataclass(frozen=True)
class WeightedSdr:
    sdr: Sdr
    weight: float  # the concept's confidence; negative for "no <term>"


@dataclass(frozen=True)
class MergeResult:
    sdr: Sdr
    short: bool  # fewer than the requested w bits scored above zero


class Merger:
    def __init__(
        self,
        size: int,
        dimensions: tuple[int, ...],
        seed: int,
        normalization: Literal["density", "none"] = "density",
        confidence_power: float = 1.0,
    ) -> None:
        if not 0.0 < confidence_power <= 1.0:
            raise ValueError(f"confidence_power must be in (0, 1], got {confidence_power}")
        self.size = size
        self.dimensions = dimensions
        self.normalization = normalization
        self.confidence_power = confidence_power
        # tie_key[bit]: higher wins among equal scores.  RandomState's stream is
        # frozen by numpy's compatibility policy, so every machine agrees.
        self._tie_key = np.random.RandomState(seed).permutation(size).astype(np.int64)

    def concept_weight(self, confidence: float) -> float:
        """The weight a concept's confidence (in [0, 1]) gives its term SDR in an image's merge."""
        return float(confidence**self.confidence_power) if confidence > 0.0 else 0.0

    def merge(
        self, terms: Sequence[WeightedSdr], active_bits: int, visual: npt.NDArray[np.integer] | None = None
    ) -> MergeResult:
        """The w = ``active_bits`` strongest bits of the terms; ``visual`` bits, if given, take places first."""
        positions, weights = self._flatten(terms, active_bits)
        scores = np.bincount(positions, weights=weights, minlength=self.size).astype(np.float64, copy=False)
        candidates = np.flatnonzero(scores >= 0.5 / _SCALE)
        if visual is not None and visual.size:
            return self._with_visual(candidates, scores, active_bits, np.asarray(visual, dtype=np.intp))
        if candidates.size <= active_bits:
            return MergeResult(Sdr.trusted(candidates, self.size, self.dimensions), candidates.size < active_bits)
        winners = self._top(candidates, scores[candidates], active_bits)
        return MergeResult(Sdr.trusted(np.sort(winners), self.size, self.dimensions), False)

    def _with_visual(
        self,
        candidates: npt.NDArray[np.intp],
        scores: npt.NDArray[np.float64],
        active_bits: int,
        visual: npt.NDArray[np.intp],
    ) -> MergeResult:
        taken = np.unique(visual)
        if taken.size != visual.size or taken.size > active_bits or taken[0] < 0 or taken[-1] >= self.size:
            raise ValueError(f"visual bits must be at most {active_bits} distinct positions in [0, {self.size})")
        # The terms' own ranking, less the bits appearance already holds.
        candidates = candidates[~np.isin(candidates, taken, assume_unique=True)]
        room = active_bits - taken.size
        if candidates.size <= room:
            chosen, short = candidates, candidates.size < room
        elif room == 0:  # visual_share 1: appearance holds every place
            chosen, short = candidates[:0], False
        else:
            chosen, short = self._top(candidates, scores[candidates], room), False
        return MergeResult(Sdr.trusted(np.union1d(taken, chosen), self.size, self.dimensions), short)

    def _flatten(
        self, terms: Sequence[WeightedSdr], active_bits: int
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        if not terms:
            return np.zeros(0, np.intp), np.zeros(0)
        counts = np.fromiter((term.sdr.active for term in terms), np.int64, len(terms))
        weights = np.fromiter((term.weight for term in terms), np.float64, len(terms))
        if self.normalization == "density":
            weights = weights * (active_bits / np.maximum(counts, 1))
        positions = np.concatenate([term.sdr.positions for term in terms]).astype(np.intp)
        return positions, np.repeat(weights, counts)

    def _top(
        self, candidates: npt.NDArray[np.intp], scores: npt.NDArray[np.float64], count: int
    ) -> npt.NDArray[np.intp]:
        # One integer key per bit, score first and tie-break second, so a single
        # partition (no sort) picks the winners: O(n) on the ~3000 candidates.
        keys = np.rint(scores * _SCALE).astype(np.int64) * self.size + self._tie_key[candidates]
        return candidates[np.argpartition(keys, keys.size - count)[keys.size - count :]]
