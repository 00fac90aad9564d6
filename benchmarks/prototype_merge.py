"""A straight Python port of the 2018 prototype's merge, kept only as a baseline.

The Node.js original (``_mergeWeightedSdrs``) scores bits in a dict, builds the
union with a linear ``includes`` check, visits the union in random order and
insertion-sorts each bit into a list of at most w winners.  The port keeps the
algorithm as it was; only ``Math.random`` becomes a seeded ``random.Random`` so
runs can be compared.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def prototype_merge(
    weighted: Sequence[tuple[Sequence[int], float]], size: int, sparsity: float, rng: random.Random
) -> list[int]:
    scores: dict[int, float] = {}
    union: list[int] = []
    for positions, weight in weighted:
        for bit in positions:
            scores[bit] = scores.get(bit, 0.0) + weight
            if bit not in union:
                union.append(bit)
    order = list(range(len(union)))
    rng.shuffle(order)  # the prototype's random tie-breaker
    max_bits = min(round(size * sparsity), len(union))
    sdr: list[int] = []
    for i in range(len(union)):
        candidate = union[order[i]]
        for j in range(max_bits):
            if j >= len(sdr) or scores[candidate] > scores[sdr[j]]:
                sdr.insert(j, candidate)
                del sdr[max_bits:]
                break
    return sorted(sdr)
