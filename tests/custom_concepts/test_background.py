"""The stored collection as background: the threshold moved there, and what is reported (custom_concepts/background.py).

Scores are set exactly: the concept is 100 equally weighted bits, and an item holding k
of them scores k / 100.  The stored collection is 20 members of the concept among 180
strangers; what differs between the tests is where the examples put the threshold.
"""

from __future__ import annotations

import numpy as np
import pytest

from image2sdr.server.custom_concepts import ConceptBits, Example, Fit
from image2sdr.server.custom_concepts.background import MIN_BACKGROUND, background_scores, on_background
from image2sdr.server.sdr import Sdr

SIZE = 16384
CONCEPT = np.arange(100)
BITS = {"semantic": ConceptBits(Sdr.from_positions(CONCEPT, SIZE), np.ones(100))}


def item(held: int, salt: int) -> Example:
    """An item holding ``held`` of the concept's bits, and others of its own."""
    own = 100 + 50 * salt + np.arange(100 - held)  # its own bits (overlapping others' does not matter)
    return Example(Sdr.from_positions(np.concatenate([CONCEPT[:held], own]), SIZE))


def collection(members: int = 20, strangers: int = 180) -> list[Example]:
    """Members score 0.50-0.59, strangers 0.00-0.09."""
    return [item(50 + n % 10, n) for n in range(members)] + [item(n % 10, members + n) for n in range(strangers)]


def fit(threshold: float) -> Fit:
    return Fit(("semantic",), (1.0,), threshold, 0.05)


def test_scores_are_the_share_of_the_concept_held() -> None:
    rows, scores = background_scores(BITS, fit(0.5), [item(55, 0), item(3, 1)])
    assert rows.tolist() == [0, 1] and scores == pytest.approx([0.55, 0.03])


def test_examples_more_alike_than_the_members_keep_their_own_lower_threshold() -> None:
    # The examples score 0.80-0.89 left out: the PU bound finds almost no stored item like them
    # and would put the threshold among them, above every member; the examples' rule (0.45) stays.
    loo = np.array([[0.80 + 0.01 * n for n in range(10)]])
    (moved,), estimate = on_background([fit(0.45)], loo, BITS, collection())
    assert moved.threshold == 0.45
    assert estimate is not None and estimate.items == 200 and estimate.flagged == pytest.approx(0.1)
    assert estimate.recall == 1.0


def test_a_threshold_the_examples_put_too_high_comes_down_to_the_members() -> None:
    # Near-miss negatives raised the examples' rule to 0.70; the positives score like the
    # members (0.50-0.59): the background's best estimated F1 is at the members' lowest score.
    loo = np.array([[0.50 + 0.01 * n for n in range(10)]])
    (moved,), estimate = on_background([fit(0.70)], loo, BITS, collection())
    assert moved.threshold == pytest.approx(0.50)
    assert moved.scale == 0.05  # the examples' scale stays
    assert estimate is not None and estimate.flagged == pytest.approx(0.1) and estimate.recall == 1.0
    assert estimate.prevalence == pytest.approx(0.1) and estimate.precision == pytest.approx(1.0)


def test_too_small_a_background_leaves_the_fit_as_it_was() -> None:
    loo = np.array([[0.50 + 0.01 * n for n in range(10)]])
    small = collection(members=5, strangers=MIN_BACKGROUND - 6)
    (moved,), estimate = on_background([fit(0.70)], loo, BITS, small)
    assert moved == fit(0.70) and estimate is None
