"""Synthetic SDRs clustered the way merged image SDRs are.

Each item is a weighted mixture of a few "term" prototypes (random SDRs at the
target sparsity, their bits in a fixed order of importance); a prototype with
weight share s contributes its first s * w bits, plus a little noise. Popular
prototypes (Zipf-like) are shared by many items, so neighbourhoods are dense
and overlaps tie often, as in a real collection. About one item in six is
"short" (fewer active bits), the case where Hamming and overlap orders differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["SdrBatch", "SyntheticSdrs"]


@dataclass(frozen=True)
class SdrBatch:
    positions: npt.NDArray[np.uint32]  # all items' sorted positions, concatenated
    lengths: npt.NDArray[np.int64]  # active bits per item

    def split(self) -> list[npt.NDArray[np.uint32]]:
        return np.split(self.positions, np.cumsum(self.lengths)[:-1]) if self.lengths.size else []


class SyntheticSdrs:
    def __init__(
        self,
        *,
        size: int = 16384,
        sparsity: float = 0.02,
        prototypes: int = 4000,
        max_mix: int = 5,
        noise: float = 0.03,
        seed: int = 7,
    ) -> None:
        self.size = size
        self.active = round(size * sparsity)
        self.max_mix = max_mix
        self.noise = noise
        rng = np.random.default_rng(seed)
        keys = rng.random((prototypes, size))
        # argpartition gives each prototype `active` distinct bits in random order.
        self.prototypes = np.argpartition(keys, self.active, axis=1)[:, : self.active].astype(np.int64)
        popularity = 1.0 / (np.arange(prototypes) + 20.0)
        self.popularity = popularity / popularity.sum()

    def batch(self, count: int, rng: np.random.Generator) -> SdrBatch:
        mix = rng.integers(2, self.max_mix + 1, size=count)
        chosen = rng.choice(self.prototypes.shape[0], size=(count, self.max_mix), p=self.popularity)
        share = rng.dirichlet(np.full(self.max_mix, 1.0), size=count)
        share[np.arange(self.max_mix)[None, :] >= mix[:, None]] = 0.0
        share /= share.sum(axis=1, keepdims=True)
        target = np.where(rng.random(count) < 0.17, rng.integers(40, self.active, size=count), self.active)
        bits = np.rint(share * (target * (1.0 - self.noise))[:, None]).astype(np.int64)
        take = np.arange(self.active)[None, None, :] < bits[:, :, None]
        rows, slots, cols = np.nonzero(take)
        pos = self.prototypes[chosen[rows, slots], cols]
        noise_count = np.rint(target * self.noise).astype(np.int64)
        noise_rows = np.repeat(np.arange(count), noise_count)
        noise_pos = rng.integers(0, self.size, size=noise_rows.size)
        keys = np.sort(np.concatenate([rows * self.size + pos, noise_rows * self.size + noise_pos]))
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]  # np.unique hashes: slower here
        lengths = np.bincount(keys // self.size, minlength=count).astype(np.int64)
        return SdrBatch((keys % self.size).astype(np.uint32), lengths)
