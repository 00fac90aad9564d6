"""Every custom concept scored against images at once: one sparse product per space (Encode's hot path)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy import sparse

from ..errors import InvalidInputError
from ..index.values import SEMANTIC, VISUAL
from ..sdr import Sdr
from .concept import SPACES, CustomConcept, Fit

__all__ = ["ConceptSet"]


class ConceptSet:
    """Every custom concept, scored against one image in one sparse product per space (Encode's hot path).

    Gives the same scores and confidences as each ``CustomConcept`` alone, up to float rounding.
    """

    def __init__(self, concepts: Sequence[CustomConcept], sdr_size: int) -> None:
        self.concepts = tuple(concepts)
        self.size = sdr_size
        self._matrices = {space: self._matrix(space) for space in SPACES}
        # Per concept: the fit over every space it has (used when the image has them all) and
        # the semantic fit (an image without a visual SDR).
        full = [concept.fits[0] for concept in self.concepts]
        alone = [concept.fits[-1] for concept in self.concepts]
        self._visual_share = np.array([_share(fit, VISUAL) for fit in full])
        self._full = _fit_arrays(full)
        self._alone = _fit_arrays(alone)

    def _matrix(self, space: str) -> sparse.csr_matrix:
        """(size, concepts): each concept's bit weights in its column, normalised to sum to 1."""
        rows, columns, values = [], [], []
        for column, concept in enumerate(self.concepts):
            bits = concept.bits.get(space)
            if bits is not None and bits.sdr.active:
                rows.append(bits.sdr.positions.astype(np.intp))
                columns.append(np.full(bits.sdr.active, column, dtype=np.intp))
                values.append(bits.weights / bits.weights.sum())
        shape = (self.size, len(self.concepts))
        if not rows:
            return sparse.csr_matrix(shape)
        return sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))), shape=shape)

    def scores(self, sdrs: Mapping[str, Sdr]) -> npt.NDArray[np.float64]:
        """Each concept's score for one image (as ``CustomConcept.score``), in order."""
        row: npt.NDArray[np.float64] = self.scores_many([sdrs])[0]
        return row

    def confidences(self, sdrs: Mapping[str, Sdr]) -> list[tuple[str, float]]:
        """(name, confidence) of every concept for one image, in order."""
        values = self.confidences_many([sdrs])[0]
        return [(concept.name, float(value)) for concept, value in zip(self.concepts, values, strict=True)]

    def scores_many(self, images: Sequence[Mapping[str, Sdr]]) -> npt.NDArray[np.float64]:
        """(images, concepts): every concept's score for each image (a batch, or stored items)."""
        semantic = self._space_scores(SEMANTIC, [image.get(SEMANTIC) for image in images])
        seen = [row for row, image in enumerate(images) if isinstance(image.get(VISUAL), Sdr)]
        if seen:
            visual = self._space_scores(VISUAL, [images[row].get(VISUAL) for row in seen])
            share = self._visual_share
            semantic[seen] = (1.0 - share) * semantic[seen] + share * visual
        return semantic

    def confidences_many(self, images: Sequence[Mapping[str, Sdr]]) -> npt.NDArray[np.float64]:
        """(images, concepts): every concept's confidence for each image."""
        scores = self.scores_many(images)
        seen = np.array([isinstance(image.get(VISUAL), Sdr) for image in images], dtype=bool)[:, None]
        threshold = np.where(seen, self._full[0], self._alone[0])
        scale = np.where(seen, self._full[1], self._alone[1])
        exponent = np.clip(-(scores - threshold) / scale, -700.0, 700.0)
        return np.asarray(1.0 / (1.0 + np.exp(exponent)), dtype=np.float64)

    def _space_scores(self, space: str, sdrs: Sequence[Sdr | None]) -> npt.NDArray[np.float64]:
        """(len(sdrs), concepts): the images' SDRs as one sparse matrix, times the concepts' weights."""
        for sdr in sdrs:
            if not isinstance(sdr, Sdr) or sdr.size != self.size:
                raise InvalidInputError(f"the image's {space} SDR must have {self.size} bits", field=space)
        checked = [sdr for sdr in sdrs if isinstance(sdr, Sdr)]
        pointers = np.zeros(len(checked) + 1, dtype=np.int64)
        np.cumsum([sdr.active for sdr in checked], out=pointers[1:])
        columns = np.concatenate([sdr.positions for sdr in checked]) if checked else np.zeros(0, np.uint32)
        images = sparse.csr_matrix(
            (np.ones(columns.size), columns.astype(np.intp), pointers), shape=(len(checked), self.size)
        )
        return np.asarray((images @ self._matrices[space]).toarray(), dtype=np.float64)


def _share(fit: Fit, space: str) -> float:
    return fit.weights[fit.spaces.index(space)] if space in fit.spaces else 0.0


def _fit_arrays(fits: Sequence[Fit]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    return np.array([fit.threshold for fit in fits]), np.array([fit.scale for fit in fits])
