"""How an image looks, as an SDR: the classifier's pooled feature, projected.

The concepts say what a picture shows; two different tabby photos get nearly
the same semantic SDR.  The classifier's pooled feature (1280-d for
EfficientNet-Lite0, the vector its last layer reads) says how this picture
looks, and the cosine between two such vectors finds a resized, cropped,
mirrored or brightened copy of a photo among a thousand others.  This module
turns the feature into a *visual SDR* of the configured size and sparsity
(16384 bits, 328 active) whose overlap follows that cosine.

Method
------
Each of the ``size`` units reads ``FAN_IN`` = 64 inputs of the unit-length
feature, chosen at random, with standard normal weights: a *very sparse*
Gaussian random projection (Li, Hastie and Church, 2006: about sqrt(1280)
inputs per unit keep the distances of the dense projection).  The ``active``
strongest units win (k-winners-take-all), as for term SDRs
(``terms/projection.py``).  Overlap then grows with the cosine of the two
features, as it does for the dense Gaussian directions, but the wiring is 12 MB
instead of 168 MB of float64 directions, and one image costs about 0.5 ms
instead of 1.1 ms in a batch of 16, and 0.8 ms instead of 5.2 ms alone.

What we measured (``make bench-visual``: 37 real photos from packages, four
alterations of each plus a 90 degree rotation, 1000 openclipart drawings as
distractors; rho is Spearman's between SDR overlap and feature cosine over
135,981 pairs of 522 images; R@1: the original is the single best match of
its altered copy among all 1037; mean +- sd over seeds 0-2):

==========================================  =============  ===============  ============  ==================
projection                                  rho            R@1 (4 alter.)   R@1 rotate    us/image batch/alone
==========================================  =============  ===============  ============  ==================
dense Gaussian + k-WTA (terms' method)      0.874 +- .005  1.00             0.96 +- .02   1083 / 5180
... centred (scikit-image photos' mean)     0.790 +- .009  1.00             0.92 +- .05   1058 / 5736
... centred and standardised                0.583 +- .004  0.68 - 0.99      0.60 +- .02   1088 / 5542
sparse Gaussian, 32 inputs/unit             0.881 +- .007  0.99 - 1.00      0.86 +- .00   357 / 469
**sparse Gaussian, 64 inputs/unit**         0.882 +- .008  1.00             0.89 +- .03   475 / 820
sparse Gaussian, 128 inputs/unit            0.879 +- .004  1.00             0.91 +- .03   739 / 1502
FlyHash (16 inputs/unit, weights 1)         0.780 +- .007  1.00             0.87 +- .02   272 / 336
FlyHash on centred features                 0.804 +- .006  1.00             0.88 +- .04   270 / 332
==========================================  =============  ===============  ============  ==================

With the configured seed (20261201) the service's own visual SDR reads rho 0.890,
R@1 1.00 on each of the four alterations and 0.95 on the rotation; a copy
shares 232 of its 328 bits with its original on average, the best other image 59.

The feature is non-negative (ReLU6, pooled), but its mean direction does not
swamp it: photos of different scenes have cosines of 0.1-0.3.  Centring on a
fixed image set only moved the SDR away from the cosine it should follow, and
standardising by the per-dimension spread of 18 photos amplified dimensions
that are nearly always zero.  FlyHash reads the feature less faithfully than
signed weights do.  So the projection needs no statistics file, only a seed.
The dense projection found 1-3 more of the 37 rotated copies (rotation is not
a goal; the feature itself finds 0.95), at twice the time in a batch, six
times alone, and 14 times the memory.

Determinism
-----------
The wiring comes from ``np.random.RandomState(seed)`` (numpy keeps that stream
fixed across versions) in float64.  Activations are a sparse matrix product in
float64 whose sums run in a fixed order (scipy's CSR loops, no BLAS), so a
batch and a single image give the same bits; they are rounded to a grid of
2**-16 and ties go to the lower unit.  The classifier itself runs in float32:
on another CPU its feature can differ in the last bits, which can move one bit
of the visual SDR when it sits at the threshold; the same onnxruntime on the
same kind of CPU gives the same feature for an image alone or in a batch.
``VARIANT`` changes whenever the same feature could map to other bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from scipy import sparse

from .config import SdrConfig, VisualConfig
from .imaging import DecodedImage
from .sdr import Sdr

__all__ = [
    "FAN_IN",
    "GRID_BITS",
    "VARIANT",
    "Appearance",
    "FeatureResult",
    "FeatureSource",
    "VisualProjection",
    "ranked_winners",
]

# Changes whenever the same feature could map to other bits (part of Appearance.version).
VARIANT = "sparse-gauss64-kwta-g16-1"
FAN_IN = 64  # inputs each unit reads
# Activations are rounded to multiples of 2**-GRID_BITS before the winners are chosen.
GRID_BITS = 16
_ROWS_PER_STEP = 16  # images projected together (the integer keys of more spill out of cache)

# One image's pooled feature, or what went wrong with that image alone.
FeatureResult = npt.NDArray[np.float32] | Exception


@runtime_checkable
class FeatureSource(Protocol):
    """Where pooled features come from: the local classifier (``LocalConceptSource``)."""

    @property
    def feature_version(self) -> str:
        """Changes whenever the same image could get another feature."""

    @property
    def feature_dimensions(self) -> int:
        """Width of the pooled feature (1280 for EfficientNet-Lite0)."""

    def features(self, images: Sequence[DecodedImage]) -> list[FeatureResult]:
        """The pooled feature of each image, in order."""


def ranked_winners(activations: npt.NDArray[np.float64], count: int) -> npt.NDArray[np.uint32]:
    """The ``count`` strongest units per row, strongest first; equal (rounded) activations go to the lower index.

    One integer key per unit (the activation on the grid, then the reversed
    index) makes every rank unique, so the winners and their order are fully defined.
    """
    size = activations.shape[1]
    levels = np.rint(activations * float(1 << GRID_BITS)).astype(np.int64)
    # |activation| stays far below 2**20 for unit-length input, so the key cannot overflow.
    keys = levels * size + (size - 1 - np.arange(size, dtype=np.int64))
    top = np.argpartition(keys, size - count, axis=1)[:, size - count :]
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)  # keys are unique: no ties to settle
    return np.take_along_axis(top, order, axis=1).astype(np.uint32)


class VisualProjection:
    """The seeded sparse wiring for one (seed, inputs, size); projects batches of features."""

    def __init__(self, *, seed: int, inputs: int, size: int, active: int, fan_in: int = FAN_IN) -> None:
        if not 0 < active < size:
            raise ValueError(f"active bits must lie in (0, {size}), got {active}")
        self.seed, self.inputs, self.size, self.active = seed, inputs, size, active
        random = np.random.RandomState(seed)
        columns = random.randint(0, inputs, size=(size, fan_in))
        # Scaled so that a unit-length input gives activations of about unit spread, as the grid assumes.
        weights = random.standard_normal((size, fan_in)) * np.sqrt(inputs / fan_in)
        rows = np.repeat(np.arange(size), fan_in)
        wiring = sparse.csr_matrix((weights.ravel(), (rows, columns.ravel())), shape=(size, inputs))
        wiring.sum_duplicates()  # an input drawn twice for a unit: one weight, the sum; sorted columns
        self._wiring = wiring

    def rank(self, vectors: npt.NDArray[np.floating], count: int | None = None) -> npt.NDArray[np.uint32]:
        """(n, inputs) features -> (n, count) unit positions, strongest first (count: ``active``)."""
        count = self.active if count is None else count
        if not 0 < count <= self.size:
            raise ValueError(f"count must lie in (0, {self.size}], got {count}")
        matrix = np.asarray(vectors, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.inputs:
            raise ValueError(f"expected features of shape (n, {self.inputs}), got {matrix.shape}")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms > 0.0, norms, 1.0)
        result = np.empty((matrix.shape[0], count), dtype=np.uint32)
        for start in range(0, matrix.shape[0], _ROWS_PER_STEP):
            rows = slice(start, start + _ROWS_PER_STEP)
            activations = np.asarray((self._wiring @ matrix[rows].T).T)
            result[rows] = ranked_winners(activations, count)
        return result


class Appearance:
    """Images' pooled features -> visual SDRs: a feature source and the projection, versioned together."""

    name = "local"

    def __init__(self, features: FeatureSource, config: VisualConfig, sdr: SdrConfig) -> None:
        self.features = features
        self.size = sdr.size
        self.dimensions = sdr.dimensions
        self.active = sdr.active_bits
        self.model = f"efficientnet-lite0 pooled feature ({features.feature_dimensions}-d), {VARIANT}"
        self._projection = VisualProjection(
            seed=config.seed, inputs=features.feature_dimensions, size=sdr.size, active=self.active
        )
        # Everything that decides which bits an image gets (reported by Info; a key for stored visual SDRs).
        self.version = (
            f"visual={VARIANT},seed={config.seed},size={sdr.size},active={self.active},"
            f"features={features.feature_version}"
        )

    def rank(self, vectors: npt.NDArray[np.floating], count: int) -> npt.NDArray[np.uint32]:
        """(n, inputs) features -> (n, count) bit positions, strongest first."""
        return self._projection.rank(vectors, count)

    def sdr(self, ranked: npt.NDArray[np.uint32]) -> Sdr:
        """The visual SDR: the ``active`` strongest of a ranked row."""
        return Sdr.trusted(np.sort(ranked[: self.active]), self.size, self.dimensions)
