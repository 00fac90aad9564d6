"""Helpers shared by the index tests: deterministic SDRs, a brute-force overlap oracle, what a filter passes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from image2sdr.server.index import SEMANTIC, Filter, Item, Match, SdrIndex
from image2sdr.server.index.faiss.flat import FlatBackend
from image2sdr.server.index.faiss.ivf import IvfBackend
from image2sdr.server.index.filters import passes
from image2sdr.server.sdr import Sdr

SIZE = 16384


def random_sdr(rng: np.random.Generator, active: int, size: int = SIZE) -> Sdr:
    return Sdr.from_positions(np.sort(rng.choice(size, active, replace=False)), size)


def clustered_items(count: int, seed: int, prefix: str = "item", size: int = SIZE) -> list[Item]:
    """Items drawn around a few prototypes, with varied weights (some short, some heavy)."""
    rng = np.random.default_rng(seed)
    prototypes = [rng.choice(size, 400, replace=False) for _ in range(8)]
    items = []
    for number in range(count):
        base = prototypes[number % len(prototypes)]
        keep = base[: rng.integers(20, 400)]
        noise = rng.choice(size, rng.integers(0, 60), replace=False)
        positions = np.unique(np.concatenate([keep, noise]))
        items.append(
            Item(f"{prefix}-{number}", Sdr.from_positions(positions, size), (("term", 0.5),), {"n": str(number)})
        )
    return items


def brute_force(
    items: Sequence[Item], query: Sdr, k: int, min_overlap: int = 0, exclude: str | None = None
) -> list[tuple[str, int]]:
    """Top-k by true overlap; ties by position in ``items`` (= insertion order)."""
    scored = [
        (item.id, query.overlap(item.sdr), order)
        for order, item in enumerate(items)
        if item.id != exclude and query.overlap(item.sdr) >= min_overlap
    ]
    scored.sort(key=lambda entry: (-entry[1], entry[2]))
    return [(item_id, overlap) for item_id, overlap, _ in scored[:k]]


def pairs(matches: Sequence[Match]) -> list[tuple[str, int]]:
    return [(match.id, match.overlap) for match in matches]


def semantic_backend(index: SdrIndex) -> FlatBackend | IvfBackend:
    """The FAISS backend behind an index's semantic space (tests look inside it)."""
    backend = index.engine.backends.backend(SEMANTIC)
    assert isinstance(backend, (FlatBackend, IvfBackend))
    return backend


def passing(items: Sequence[Item], where: Filter) -> list[Item]:
    """The items ``where`` lets through, in order (``filters.passes`` spells out what a filter means)."""
    return [item for item in items if passes(item, where)]
