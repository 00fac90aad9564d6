"""The SDR value: a fixed size and the sorted positions of its active bits.

Positions are kept as a read-only ``uint32`` numpy array, sorted and unique, so
an ``Sdr`` drops straight into htm.core (``SDR(dimensions).sparse = positions``)
and into a FAISS binary code (``to_bits``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import InvalidSdrError

__all__ = ["Sdr"]

Positions = npt.NDArray[np.uint32]


@dataclass(frozen=True, eq=False)
class Sdr:
    size: int
    positions: Positions
    dimensions: tuple[int, ...] = ()

    @classmethod
    def from_positions(
        cls,
        positions: Iterable[int] | npt.NDArray[np.integer],
        size: int,
        dimensions: tuple[int, ...] = (),
    ) -> Sdr:
        """Validate caller-supplied positions: in range, strictly increasing."""
        array = np.asarray(positions if isinstance(positions, np.ndarray) else list(positions))
        if array.ndim != 1:
            raise InvalidSdrError("SDR positions must be a flat list of integers", field="positions")
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise InvalidSdrError("SDR positions must be integers", field="positions")
        array = array.astype(np.int64, copy=False)
        if array.size and (array[0] < 0 or array[-1] >= size or array.min() < 0 or array.max() >= size):
            raise InvalidSdrError(f"SDR positions must lie in [0, {size})", field="positions")
        if array.size > 1:
            steps = np.diff(array)
            if (steps == 0).any():
                raise InvalidSdrError("SDR positions contain duplicates", field="positions")
            if (steps < 0).any():
                raise InvalidSdrError("SDR positions must be sorted ascending", field="positions")
        return cls.trusted(array.astype(np.uint32), size, dimensions)

    @classmethod
    def trusted(cls, positions: npt.NDArray[np.integer], size: int, dimensions: tuple[int, ...] = ()) -> Sdr:
        """Wrap positions the core produced itself (already sorted and unique)."""
        array = np.ascontiguousarray(positions, dtype=np.uint32)
        array.flags.writeable = False
        return cls(size=size, positions=array, dimensions=dimensions or (size,))

    @property
    def active(self) -> int:
        return int(self.positions.size)

    @property
    def sparsity(self) -> float:
        return self.active / self.size

    def overlap(self, other: Sdr) -> int:
        return int(np.intersect1d(self.positions, other.positions, assume_unique=True).size)

    def to_dense(self) -> npt.NDArray[np.bool_]:
        dense = np.zeros(self.size, dtype=np.bool_)
        dense[self.positions] = True
        return dense

    def to_bits(self) -> npt.NDArray[np.uint8]:
        """Packed little-endian bit code (bit i of byte j = position 8j + i), FAISS layout."""
        return np.packbits(self.to_dense(), bitorder="little")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sdr):
            return NotImplemented
        return self.size == other.size and np.array_equal(self.positions, other.positions)

    def __hash__(self) -> int:
        return hash((self.size, self.positions.tobytes()))

    def __repr__(self) -> str:
        return f"Sdr(size={self.size}, active={self.active})"
