"""``HtmSdr``: an SDR shaped like htm.core's, so HTM code takes the service's SDRs as its own.

htm.core's ``SDR`` (``from htm.bindings.sdr import SDR``) is read through four names:
``dimensions``, ``size``, ``sparse`` (the sorted flat indices of the active bits) and
``dense`` (uint8, shaped by ``dimensions``), with ``getOverlap``, ``getSum`` and
``getSparsity`` beside them.  ``HtmSdr`` has the same names over one buffer of uint32
indices, so code written for htm.core (or for brainblocks, whose input takes the sparse
indices) reads it unchanged.

Copies only where they cannot be avoided: a C-contiguous buffer of uint32 indices (an
``array.array("I")``, a numpy ``uint32`` array) is held as it is, and ``sparse`` and
``dense`` are read-only numpy views over this object's own buffers.  Without numpy the
value still works (``active``, ``sparse_view``, ``dense_view``, the overlaps); numpy is
the ``htm`` extra of image2sdr-client.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Protocol, cast

from ._types import Sdr

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["HtmSdr", "SdrLike"]

# The service's SDRs are 16384 bits on a 128 x 128 grid (Info.dimensions).
DEFAULT_DIMENSIONS = (128, 128)


class SdrLike(Protocol):
    """What ``HtmSdr.from_htm`` reads: an htm.core ``SDR``, or anything with the same two names."""

    @property
    def dimensions(self) -> Sequence[int]: ...

    @property
    def sparse(self) -> Any: ...


class HtmSdr:
    """A sparse distributed representation with htm.core's interface.

    ``HtmSdr([128, 128])`` is all zeros; ``HtmSdr([128, 128], sparse=[3, 70, 9000])`` or
    ``HtmSdr.from_sdr(encoding.sdr)`` has bits on.  ``sparse`` and ``dense`` can be set,
    as on htm.core's SDR (the new value is checked: in range, no repeats); the views
    handed out before stay as they were (each setting makes a new buffer).
    """

    __slots__ = ("_dense", "_sparse", "dimensions", "size")
    __hash__ = None  # type: ignore[assignment]  # mutable, as htm.core's SDR

    def __init__(self, dimensions: Iterable[int] = DEFAULT_DIMENSIONS, *, sparse: Any = ()) -> None:
        self.dimensions: tuple[int, ...] = _dimensions(dimensions)
        self.size: int = math.prod(self.dimensions)
        self._sparse: memoryview = _indices(sparse, self.size)
        self._dense: memoryview | None = None  # made on first use, then kept

    # -- conversions -------------------------------------------------------------------

    @classmethod
    def from_sdr(cls, sdr: Sdr) -> HtmSdr:
        """The client's ``Sdr`` (``Encoding.sdr``, ``Item.sdr``), on its own dimensions (128 x 128)."""
        return cls(sdr.dimensions or (sdr.size,), sparse=array("I", sdr.active))

    def to_sdr(self) -> Sdr:
        """The client's ``Sdr``: what ``find_similar(sdr=...)`` and ``similar_terms`` take."""
        return Sdr(self.size, self.dimensions, tuple(self._sparse))

    @classmethod
    def from_htm(cls, other: SdrLike) -> HtmSdr:
        """An htm.core ``SDR`` (or any object with ``dimensions`` and ``sparse``).

        Its indices are copied: htm.core's ``sparse`` is a view into the C++ object,
        which changes under it when the SDR is next set.
        """
        return cls(other.dimensions, sparse=array("I", (int(index) for index in other.sparse)))

    def to_htm(self) -> Any:
        """An htm.core ``SDR`` with the same bits (needs htm.core installed)."""
        from htm.bindings.sdr import SDR  # noqa: PLC0415 - optional, and on no registry reachable here

        sdr = SDR(list(self.dimensions))
        sdr.sparse = self.sparse
        return sdr

    @classmethod
    def from_dense(cls, dense: Any, dimensions: Iterable[int] | None = None) -> HtmSdr:
        """From 0/1 values: a nested list, a numpy array (its shape is the dimensions), or flat with ``dimensions``."""
        shape, flat = _flatten(dense)
        sdr = cls(shape if dimensions is None else dimensions)
        if len(flat) != sdr.size:
            raise ValueError(f"{len(flat)} dense values do not fill an SDR of {sdr.size} bits")
        sdr._sparse = _indices(array("I", (i for i, bit in enumerate(flat) if bit)), sdr.size)
        return sdr

    # -- htm.core's interface ------------------------------------------------------------

    @property
    def sparse(self) -> npt.NDArray[np.uint32]:
        """The active bits' flat indices, ascending: a read-only numpy view (no copy)."""
        return cast("npt.NDArray[np.uint32]", _numpy_view(self._sparse, (len(self._sparse),)))

    @sparse.setter
    def sparse(self, indices: Any) -> None:
        self._sparse = _indices(indices, self.size)
        self._dense = None

    @property
    def dense(self) -> npt.NDArray[np.uint8]:
        """Every bit, 0 or 1, as uint8 shaped by ``dimensions``: a read-only numpy view."""
        return cast("npt.NDArray[np.uint8]", _numpy_view(self.dense_view, self.dimensions))

    @dense.setter
    def dense(self, values: Any) -> None:
        shape, flat = _flatten(values)
        if len(flat) != self.size or (len(shape) > 1 and shape != self.dimensions):
            raise ValueError(f"dense values of shape {shape} do not fit dimensions {self.dimensions}")
        self.sparse = array("I", (i for i, bit in enumerate(flat) if bit))

    @property
    def coordinates(self) -> list[list[int]]:
        """The active bits as one list of indices per dimension (htm.core's ``coordinates``)."""
        strides = [math.prod(self.dimensions[axis + 1 :]) for axis in range(len(self.dimensions))]
        axes = zip(strides, self.dimensions, strict=True)
        return [[(index // stride) % side for index in self._sparse] for stride, side in axes]

    def getSum(self) -> int:  # htm.core's name
        """How many bits are on."""
        return len(self._sparse)

    def getSparsity(self) -> float:  # htm.core's name
        """The share of bits that are on."""
        return len(self._sparse) / self.size

    def getOverlap(self, other: HtmSdr | SdrLike) -> int:  # htm.core's name
        """How many active bits the two share (an htm.core SDR will do as ``other``)."""
        if math.prod(other.dimensions) != self.size:
            raise ValueError(f"cannot compare SDRs of {self.size} and {math.prod(other.dimensions)} bits")
        theirs = other._sparse if isinstance(other, HtmSdr) else (int(index) for index in other.sparse)
        return len(set(self._sparse).intersection(theirs))

    overlap = getOverlap

    def reshape(self, dimensions: Iterable[int]) -> HtmSdr:
        """The same bits on other dimensions of the same size (shares the index buffer)."""
        shape = _dimensions(dimensions)
        if math.prod(shape) != self.size:
            raise ValueError(f"dimensions {shape} do not hold {self.size} bits")
        return HtmSdr(shape, sparse=self._sparse)

    # -- without numpy -------------------------------------------------------------------

    @property
    def active(self) -> tuple[int, ...]:
        """The active bits' flat indices as Python ints (what ``Sdr.active`` holds)."""
        return tuple(self._sparse)

    @property
    def sparse_view(self) -> memoryview:
        """The indices as a read-only memoryview of uint32 (``numpy.asarray`` wraps it without a copy)."""
        return self._sparse

    @property
    def dense_view(self) -> memoryview:
        """Every bit as a read-only uint8 memoryview shaped by ``dimensions`` (``view[row, column]``)."""
        if self._dense is None:
            bits = bytearray(self.size)
            for index in self._sparse:
                bits[index] = 1
            self._dense = memoryview(bytes(bits)).cast("B", self.dimensions)
        return self._dense

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HtmSdr):
            return NotImplemented
        return self.dimensions == other.dimensions and self._sparse == other._sparse

    def __repr__(self) -> str:
        shown = ", ".join(map(str, self._sparse[:8])) + (", ..." if len(self._sparse) > 8 else "")
        return f"HtmSdr(dimensions={list(self.dimensions)}, sparse=[{shown}])"


def _dimensions(dimensions: Iterable[int]) -> tuple[int, ...]:
    shape = tuple(int(side) for side in dimensions)
    if not shape or any(side < 1 for side in shape):
        raise ValueError(f"dimensions must be one or more positive sides, got {list(shape)}")
    return shape


def _indices(indices: Any, size: int) -> memoryview:
    """Sorted, unique, in-range uint32 indices as a read-only memoryview; a uint32 buffer is not copied."""
    view = _uint32_buffer(indices)
    if view is None:
        values = sorted(int(index) for index in indices)
        if values and values[0] < 0:
            raise ValueError(f"sparse index {values[0]} is negative")
        view = memoryview(array("I", values)).toreadonly()
    elif any(b < a for a, b in pairwise(view)):
        view = memoryview(array("I", sorted(view))).toreadonly()  # htm.core sorts what it is given
    if any(b == a for a, b in pairwise(view)):
        raise ValueError("sparse indices must not repeat")
    if len(view) and view[-1] >= size:  # uint32: none is negative
        raise ValueError(f"sparse index {view[-1]} is outside an SDR of {size} bits")
    return view


def _uint32_buffer(indices: Any) -> memoryview | None:
    """A one-dimensional C-contiguous uint32 buffer as a read-only view of the same memory, or None."""
    try:
        view = memoryview(indices)
    except TypeError:
        return None
    if view.ndim != 1 or not view.c_contiguous or view.itemsize != 4 or view.format not in ("I", "=I", "<I"):
        return None
    return view.cast("B").cast("I").toreadonly()


def _flatten(values: Any) -> tuple[tuple[int, ...], list[int]]:
    """The shape and the row-major values of a nested sequence or an array."""
    if hasattr(values, "shape") and hasattr(values, "ravel"):  # a numpy array, without importing numpy
        return tuple(int(side) for side in values.shape), [int(v) for v in values.ravel()]
    if isinstance(values, memoryview):
        return tuple(values.shape or ()), [int(v) for v in values.cast("B").tolist()]
    rows = list(values)
    if rows and isinstance(rows[0], Iterable):
        shapes_and_values = [_flatten(row) for row in rows]
        inner = shapes_and_values[0][0]
        if any(shape != inner for shape, _ in shapes_and_values):
            raise ValueError("dense rows must all have the same shape")
        return (len(rows), *inner), [v for _, flat in shapes_and_values for v in flat]
    return (len(rows),), [int(v) for v in rows]


def _numpy_view(buffer: memoryview, shape: tuple[int, ...]) -> Any:
    try:
        import numpy  # noqa: PLC0415 - optional: the htm extra
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "HtmSdr.sparse and .dense are numpy views: pip install 'image2sdr-client[htm]' "
            "(sparse_view, dense_view and active work without numpy)"
        ) from exc
    return numpy.asarray(buffer).reshape(shape)  # the same memory, read-only as the buffer is
