"""The weighted merge: weights, deterministic ties, negatives, short unions, density."""

from __future__ import annotations

import numpy as np
import pytest

from image2sdr.server.merge import Merger, WeightedSdr
from image2sdr.server.sdr import Sdr

SIZE = 16384
W = 328


def sdr(positions: np.ndarray | range | list[int]) -> Sdr:
    return Sdr.trusted(np.unique(np.asarray(list(positions))), SIZE)


def random_sdr(rng: np.random.Generator, bits: int = W) -> Sdr:
    return sdr(rng.choice(SIZE, bits, replace=False))


def reference_merge(terms: list[WeightedSdr], active: int, merger: Merger) -> set[int]:
    """Straightforward rule: per-bit sums, positive only, sort by (score, tie key)."""
    scores: dict[int, float] = {}
    for term in terms:
        weight = term.weight * (active / term.sdr.active if merger.normalization == "density" else 1.0)
        for bit in term.sdr.positions.tolist():
            scores[bit] = scores.get(bit, 0.0) + weight
    positive = [bit for bit, score in scores.items() if round(score * 1e6) > 0]
    ranked = sorted(positive, key=lambda bit: (-round(scores[bit] * 1e6), -int(merger._tie_key[bit])))
    return set(ranked[:active])


def test_higher_confidence_wins_and_overlaps_add_up() -> None:
    merger = Merger(SIZE, (128, 128), seed=1, normalization="none")
    strong, weak = sdr(range(0, W)), sdr(range(1000, 1000 + W))
    shared = sdr(range(5000, 5000 + 50))
    both_weak = sdr(list(range(2000, 2000 + W - 50)) + list(range(5000, 5050)))
    result = merger.merge([WeightedSdr(strong, 0.9), WeightedSdr(weak, 0.1)], W)
    assert result.sdr == strong and not result.short
    # .3 + .3 on the shared bits beats .5 on a third term's bits.
    result = merger.merge([WeightedSdr(shared, 0.3), WeightedSdr(both_weak, 0.3), WeightedSdr(weak, 0.5)], W)
    assert set(range(5000, 5050)) <= set(result.sdr.positions.tolist())


def test_matches_the_reference_rule_on_random_inputs() -> None:
    rng = np.random.default_rng(7)
    for normalization in ("none", "density"):
        merger = Merger(SIZE, (128, 128), seed=3, normalization=normalization)
        for _ in range(30):
            terms = [
                WeightedSdr(random_sdr(rng, int(rng.integers(50, 600))), round(float(rng.uniform(-0.3, 1.0)), 2))
                for _ in range(int(rng.integers(1, 12)))
            ]
            result = merger.merge(terms, W)
            assert set(result.sdr.positions.tolist()) == reference_merge(terms, W, merger)


def test_ties_are_deterministic_and_seeded() -> None:
    a, b = sdr(range(0, W)), sdr(range(W, 2 * W))  # 656 bits, all scoring 0.5
    terms = [WeightedSdr(a, 0.5), WeightedSdr(b, 0.5)]
    first = Merger(SIZE, (128, 128), seed=11).merge(terms, W).sdr
    again = Merger(SIZE, (128, 128), seed=11).merge(terms, W).sdr
    other = Merger(SIZE, (128, 128), seed=12).merge(terms, W).sdr
    assert first == again
    assert first.active == W
    assert first != other
    # Both terms get a share: the tie-break is a permutation, not "lowest index".
    chosen = first.positions
    assert 100 < int((chosen < W).sum()) < W - 100


def test_order_of_terms_does_not_matter() -> None:
    rng = np.random.default_rng(5)
    terms = [WeightedSdr(random_sdr(rng), w) for w in (0.9, 0.5, 0.5, 0.25, 0.25)]
    merger = Merger(SIZE, (128, 128), seed=2)
    assert merger.merge(terms, W).sdr == merger.merge(terms[::-1], W).sdr


def test_negative_concept_subtracts_from_its_terms_bits() -> None:
    merger = Merger(SIZE, (128, 128), seed=1, normalization="none")
    animal = sdr(range(0, W))
    person = sdr(range(200, 200 + W))  # shares bits 200..327 with animal
    outdoor = sdr(range(4000, 4000 + W))
    result = merger.merge([WeightedSdr(animal, 0.9), WeightedSdr(outdoor, 0.4), WeightedSdr(person, -0.8)], W)
    bits = set(result.sdr.positions.tolist())
    assert not bits & set(range(200, 328))  # 0.9 - 0.8 = 0.1 loses to outdoor's 0.4
    assert set(range(0, 200)) <= bits
    assert not bits & set(range(328, 200 + W))  # person-only bits score below zero


def test_negative_alone_gives_an_empty_short_sdr() -> None:
    merger = Merger(SIZE, (128, 128), seed=1)
    result = merger.merge([WeightedSdr(sdr(range(W)), -0.9)], W)
    assert result.sdr.active == 0 and result.short


def test_cancelled_bits_do_not_win() -> None:
    merger = Merger(SIZE, (128, 128), seed=1, normalization="none")
    term = sdr(range(W))
    result = merger.merge([WeightedSdr(term, 0.3), WeightedSdr(term, 0.1), WeightedSdr(term, -0.4)], W)
    assert result.sdr.active == 0 and result.short


def test_short_union_is_returned_as_is_and_flagged() -> None:
    merger = Merger(SIZE, (128, 128), seed=1)
    a, b = sdr(range(0, 100)), sdr(range(50, 150))
    result = merger.merge([WeightedSdr(a, 0.9), WeightedSdr(b, 0.2)], W)
    assert result.short
    assert result.sdr.positions.tolist() == list(range(150))  # never padded


def test_no_terms_gives_an_empty_short_sdr() -> None:
    result = Merger(SIZE, (128, 128), seed=1).merge([], W)
    assert result.sdr.active == 0 and result.short
    assert result.sdr.dimensions == (128, 128)


@pytest.mark.parametrize(("normalization", "winner"), [("none", "dense"), ("density", "sparse")])
def test_density_normalisation(normalization: str, winner: str) -> None:
    # A common word from a remote retina can carry 3x the bits of a rare one.
    dense, sparse = sdr(range(0, 1000)), sdr(range(2000, 2100))
    merger = Merger(SIZE, (128, 128), seed=1, normalization=normalization)  # type: ignore[arg-type]
    bits = set(merger.merge([WeightedSdr(dense, 0.6), WeightedSdr(sparse, 0.5)], W).sdr.positions.tolist())
    assert (set(range(2000, 2100)) <= bits) == (winner == "sparse")


def test_output_is_sorted_with_dimensions() -> None:
    rng = np.random.default_rng(9)
    result = Merger(SIZE, (128, 128), seed=1).merge([WeightedSdr(random_sdr(rng), 0.5) for _ in range(10)], W)
    positions = result.sdr.positions
    assert positions.size == W
    assert (np.diff(positions.astype(int)) > 0).all()
    assert result.sdr.dimensions == (128, 128)


# -- visual bits (sdr.visual_share) ---------------------------------------------------


def test_visual_bits_take_their_places_and_the_terms_fill_the_rest_in_their_order() -> None:
    rng = np.random.default_rng(11)
    merger = Merger(SIZE, (128, 128), seed=4)
    terms = [WeightedSdr(random_sdr(rng), w) for w in (0.9, 0.6, 0.3)]
    semantic = merger.merge(terms, W).sdr
    # Half of the visual bits collide with semantic winners: they count once, as visual bits.
    visual = np.concatenate([semantic.positions[:50], np.setdiff1d(np.arange(8000, 8100), semantic.positions)[:50]])
    result = merger.merge(terms, W, visual)
    bits = set(result.sdr.positions.tolist())
    assert result.sdr.active == W and not result.short
    assert set(visual.tolist()) <= bits
    rest = bits - set(visual.tolist())
    # The terms' part: their best W - 100 bits by the reference rule, once the visual bits are out of the running.
    remaining = [bit for bit in _ranked(terms, merger) if bit not in set(visual.tolist())]
    assert rest == set(remaining[: W - 100])


def _ranked(terms: list[WeightedSdr], merger: Merger) -> list[int]:
    """Every positive bit of a density-normalised merge, best first (the reference rule's order)."""
    scores: dict[int, float] = {}
    for term in terms:
        for bit in term.sdr.positions.tolist():
            scores[bit] = scores.get(bit, 0.0) + term.weight * W / term.sdr.active
    positive = [bit for bit, score in scores.items() if round(score * 1e6) > 0]
    return sorted(positive, key=lambda bit: (-round(scores[bit] * 1e6), -int(merger._tie_key[bit])))


def test_no_visual_bits_is_the_plain_merge() -> None:
    rng = np.random.default_rng(12)
    merger = Merger(SIZE, (128, 128), seed=4)
    terms = [WeightedSdr(random_sdr(rng), w) for w in (0.9, 0.6)]
    plain = merger.merge(terms, W)
    for empty in (None, np.zeros(0, np.uint32)):
        assert merger.merge(terms, W, empty) == plain


def test_visual_bits_alone_fill_every_place() -> None:
    merger = Merger(SIZE, (128, 128), seed=4)
    visual = np.arange(1000, 1000 + W, dtype=np.uint32)[::-1]  # strongest first: any order is accepted
    result = merger.merge([WeightedSdr(sdr(range(W)), 0.9)], W, visual)
    assert result.sdr.positions.tolist() == list(range(1000, 1000 + W)) and not result.short


def test_terms_short_of_their_share_make_a_short_sdr() -> None:
    merger = Merger(SIZE, (128, 128), seed=4)
    result = merger.merge([WeightedSdr(sdr(range(100)), 0.9)], W, np.arange(5000, 5100))
    assert result.short and result.sdr.active == 200  # 100 visual + the terms' 100, never padded


@pytest.mark.parametrize("visual", [np.array([5, 5]), np.arange(W + 1), np.array([-1]), np.array([SIZE])], ids=str)
def test_bad_visual_bits_are_refused(visual: np.ndarray) -> None:
    with pytest.raises(ValueError, match="visual bits"):
        Merger(SIZE, (128, 128), seed=4).merge([], W, visual)


def test_concept_weight_flattens_confidences_and_keeps_their_order() -> None:
    plain = Merger(SIZE, (128, 128), seed=1)
    flat = Merger(SIZE, (128, 128), seed=1, confidence_power=0.25)
    assert [plain.concept_weight(c) for c in (0.0, 0.01, 0.5, 1.0)] == [0.0, 0.01, 0.5, 1.0]
    weights = [flat.concept_weight(c) for c in (0.0, 0.0016, 0.0625, 1.0)]
    assert weights == pytest.approx([0.0, 0.2, 0.5, 1.0])
    # Three weak concepts that agree on 100 bits outweigh one strong concept only when flattened.
    strong, agreed = sdr(range(0, W)), list(range(8000, 8100))
    weak = [sdr(agreed + list(range(9000 + 300 * i, 9000 + 300 * i + W - 100))) for i in range(3)]
    for merger, wins in ((plain, False), (flat, True)):
        terms = [WeightedSdr(strong, merger.concept_weight(0.9))]
        terms += [WeightedSdr(term, merger.concept_weight(0.05)) for term in weak]
        kept = set(merger.merge(terms, W).sdr.positions.tolist())
        assert (set(agreed) <= kept) is wins


@pytest.mark.parametrize("power", [0.0, -1.0, 1.5, float("nan")])
def test_a_confidence_power_outside_0_1_is_refused(power: float) -> None:
    with pytest.raises(ValueError, match="confidence_power"):
        Merger(SIZE, (128, 128), seed=1, confidence_power=power)
