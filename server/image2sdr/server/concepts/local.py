"""The embedded concept provider: EfficientNet-Lite0 + a WordNet roll-up.

ImageNet's 1000 classes are narrow leaves ("tabby", "Egyptian cat",
"espresso").  A caller wants what Clarifai's general model gives: "cat",
"animal", "drink".  Every ImageNet class is a WordNet synset, so each
hypernym's confidence is the probability mass of the classes beneath it
(computed as one matrix product), and the strongest informative synsets, leaves
and ancestors alike, are the concepts.  Synsets too abstract to say anything
about a picture ("entity", "whole", "artifact") are excluded by config.

The classifier was exported to ONNX by ``make models``; onnxruntime runs it.
One inference gives two outputs: the class probabilities (the concepts) and
the 1280-d pooled feature the last layer reads, which ``appearance`` projects
to the visual SDR.  ``observe`` returns both; ``features`` only the second,
for a deployment whose concepts come from Clarifai (one local inference then
still runs per image, for the visual SDR alone).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from PIL import Image
from scipy import sparse

from ..config import LocalConceptsConfig
from ..errors import ModelsMissingError
from ..imaging import DecodedImage
from ..manifest import file_fingerprint
from .base import Concept, ConceptResult

__all__ = [
    "CLASSIFIER_FILE",
    "CLASSIFIER_FILES",
    "FEATURES_OUTPUT",
    "HIERARCHY_FILE",
    "ROLLUP_VERSION",
    "LocalConceptSource",
    "Observation",
    "ObservationResult",
    "PreparedImage",
    "WordNetRollup",
]

logger = logging.getLogger(__name__)

CLASSIFIER_FILE = "efficientnet_lite0.onnx"
# The classifier's file per concepts.local.precision (`make models` writes both).
CLASSIFIER_FILES = {"fp32": CLASSIFIER_FILE, "int8": "efficientnet_lite0_int8.onnx"}
HIERARCHY_FILE = "imagenet_hierarchy.json"
PROBABILITIES_OUTPUT = "probabilities"
FEATURES_OUTPUT = "features"  # the pooled feature; exports before version 2 lack it
INPUT_SIDE = 224  # EfficientNet-Lite0 input resolution
RESIZE_SIDE = 256  # short side before the centre crop (crop ratio 0.875, as in training)
# EfficientNet-Lite was trained on TF-style inputs: (x - 127) / 128.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
# Confidences are rounded so that float noise between CPUs cannot change them
# (the same image must give the same SDR on every machine).
CONFIDENCE_DECIMALS = 4
# Images whose short side scaled to 256 leaves the long side above 16 x 256 (aspect
# ratios beyond 16:1) are cropped before they are resized; see _centre_crop.
MAX_RESIZED_PIXELS = RESIZE_SIDE * RESIZE_SIDE * 16
# Bumped whenever the classifier can be given other pixels for the same image bytes (part of both
# versions, so of the concept and visual caches' keys). 2: images of more than image.working_pixels
# (non-JPEG; a JPEG is drafted first) are box-reduced when decoded, before the classifier's resize.
PIXELS_VERSION = 2
# Bumped whenever the roll-up can name other concepts for the same probabilities (part of the
# version Info reports). 2: names of equal mass no longer drop one another; synonyms share a place.
# 3: 50 concepts kept by default (concepts.max_concepts, 10 before) and merged with flattened
# weights (sdr.confidence_power 0.25): the same image names more concepts and gets another SDR.
ROLLUP_VERSION = 3


@dataclass(frozen=True)
class WordNetRollup:
    """ImageNet class probabilities -> probability mass under each WordNet synset -> named concepts.

    Synsets over exactly the same classes always carry the same mass: "ball",
    "bubble", "form", "globule", "round shape" and "sphere" all stand over ImageNet's
    one "bubble" class.  They are one concept said six ways, so they take one place
    among the ``top`` and bring all their names; otherwise one photo of a wall clock
    that looks a little like a bubble would spend six of its ten places on the bubble
    and lose "clock".
    """

    matrix: npt.NDArray[np.float32]  # [1000 classes, S synsets], 1 where the synset is above the class
    names: tuple[str, ...]  # display name per synset column ("cat", "coffee mug")
    # Per synset column, the concept it names: columns over the same set of classes share one.
    concept_of: npt.NDArray[np.intp]
    # ``matrix`` transposed and sparse (about 10 synsets above a class): a dense product went
    # through OpenBLAS, whose threads fought onnxruntime's for the cores; this one sums in a
    # fixed order on the calling thread, in float64.
    beneath: sparse.csr_array

    @classmethod
    def load(cls, path: Path, excluded: Sequence[str]) -> WordNetRollup:
        doc = json.loads(path.read_text(encoding="utf-8"))
        skip = set(excluded)
        keep = sorted(key for key, synset in doc["synsets"].items() if synset["lemma"] not in skip)
        column = {key: i for i, key in enumerate(keep)}
        matrix = np.zeros((len(doc["classes"]), len(keep)), dtype=np.float32)
        for entry in doc["classes"]:
            for key in entry["synsets"]:
                if key in column:
                    matrix[entry["index"], column[key]] = 1.0
        names = tuple(doc["synsets"][key]["name"].lower() for key in keep)
        _, concept_of = np.unique(matrix.T, axis=0, return_inverse=True)
        beneath = sparse.csr_array(matrix.T.astype(np.float64))
        return cls(matrix=matrix, names=names, concept_of=concept_of.reshape(-1), beneath=beneath)

    def concepts(self, probabilities: npt.NDArray[np.float32], top: int, floor: float) -> list[Concept]:
        """The names of the ``top`` concepts with the most mass (at least ``floor``): mass desc, then name.

        Equal masses never drop a name: a confidently classified dog gives "canine",
        "domestic animal" and "dog" one mass, and each is a name a caller may search by,
        filter on or ask Explain about.  (Up to ROLLUP_VERSION 1 only two names per mass
        were kept, in synset order, so "dog" was missing from every such dog.)  Those
        three stand over different classes, so each takes a place; the synonyms of one
        concept share theirs (see the class docstring).  Only ``top`` can part concepts
        of equal mass, and then by name.
        """
        mass = np.round(self.beneath @ probabilities.astype(np.float64), CONFIDENCE_DECIMALS)
        best: dict[str, float] = {}
        places: set[int] = set()
        for score, columns in _levels(mass, floor):
            if len(places) == top:  # all the synsets of a concept have its mass: every one was read
                break
            for column in sorted(columns, key=self.names.__getitem__):
                name, concept = self.names[column], int(self.concept_of[column])
                if name in best:  # a name shared by two synsets keeps its best score
                    continue
                if concept not in places:
                    if len(places) == top:  # a concept tied with the last one kept, later by name
                        continue
                    places.add(concept)
                best[name] = min(score, 1.0)
        return [Concept(name, score) for name, score in best.items()]  # read by mass desc, then name


def _levels(mass: npt.NDArray[np.floating[Any]], floor: float) -> Iterator[tuple[float, list[int]]]:
    """The synset columns by mass, strongest first, one list per mass; masses of 0 or below ``floor`` left out."""
    order = np.argsort(-mass, kind="stable")
    descending = mass[order]
    start = 0
    while start < order.size:
        score = float(descending[start])
        if score < floor or score <= 0.0:
            return
        end = int(np.searchsorted(-descending, -score, side="right"))
        yield score, [int(column) for column in order[start:end]]
        start = end


@dataclass(frozen=True)
class Observation:
    """What one inference says of one image: its concepts and its pooled feature."""

    concepts: list[Concept]
    features: npt.NDArray[np.float32]  # (feature_dimensions,), as the classifier computed it


ObservationResult = Observation | Exception


@dataclass(frozen=True, kw_only=True)
class PreparedImage(DecodedImage):
    """A decoded image with the classifier's input already made from it (``LocalConceptSource.prepare``).

    The encoder prepares images on its decode threads, beside the decoding, so the
    resize and scaling run on both cores instead of on the thread that runs the
    classifier; anything that reads a ``DecodedImage`` still reads this one.
    """

    pixels: npt.NDArray[np.float32]  # [3, 224, 224], as ``preprocess`` makes it
    # The whole image at the classifier's scale (short side 256) before the crop, when that
    # shrank it: a thumbnail is made from it for a fraction of the cost of the full image.
    reduced: Image.Image | None = None


_Inferred = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | Exception  # (probabilities, features)


class LocalConceptSource:
    """ImageNet classifier run with onnxruntime; concepts from the WordNet roll-up."""

    name = "local"

    def __init__(self, models_dir: Path, config: LocalConceptsConfig) -> None:
        model_file = CLASSIFIER_FILES[config.precision]
        model_path = models_dir / model_file
        hierarchy_path = models_dir / HIERARCHY_FILE
        for path in (model_path, hierarchy_path):
            if not path.is_file():
                raise ModelsMissingError(f"{path} is missing: run `make models` first")
        self._session = _session(model_path, config.threads)
        self.feature_dimensions = _feature_dimensions(self._session, model_path)
        self._rollup = WordNetRollup.load(hierarchy_path, config.excluded)
        self._batch = config.batch_size
        self.precision = config.precision
        self.model = f"efficientnet-lite0 (ImageNet-1k, {config.precision}) + WordNet 3.0 roll-up"
        # Changes whenever the exported classifier, its precision or the hierarchy does (reported by
        # Info, and in every cache key that holds concepts or visual SDRs).
        classifier, hierarchy = (file_fingerprint(models_dir, name) for name in (model_file, HIERARCHY_FILE))
        precision = "" if config.precision == "fp32" else f",{config.precision}"  # fp32 named by its absence
        onnx = f"onnx={classifier}{precision},pixels={PIXELS_VERSION}"
        self.version = f"{onnx},hierarchy={hierarchy},rollup={ROLLUP_VERSION}"
        self.feature_version = onnx  # the pooled feature depends on the classifier alone

    @property
    def input_side(self) -> int:
        return RESIZE_SIDE

    @property
    def rollup(self) -> WordNetRollup:
        """The WordNet roll-up this source names concepts with (read by ``make bench-meaning``'s sweep)."""
        return self._rollup

    @property
    def max_batch(self) -> int:
        return self._batch

    def prepare(self, image: DecodedImage) -> PreparedImage:
        """``image`` with the classifier's input made from it, so that inference need not make it."""
        if isinstance(image, PreparedImage):
            return image
        kept = {field.name: getattr(image, field.name) for field in fields(image)}
        crop, resized = _centre_crop(image.image)
        reduced = resized if resized is not None and resized.width < image.image.width else None
        return PreparedImage(**kept, pixels=_scaled(crop), reduced=reduced)

    def concepts(self, images: Sequence[DecodedImage], max_concepts: int, min_confidence: float) -> list[ConceptResult]:
        return [
            result if isinstance(result, Exception) else result.concepts
            for result in self.observe(images, max_concepts, min_confidence)
        ]

    def observe(
        self, images: Sequence[DecodedImage], max_concepts: int, min_confidence: float
    ) -> list[ObservationResult]:
        """Concepts and pooled feature of each image, from one classifier call per batch."""
        results: list[ObservationResult] = []
        for inferred in self._infer_all(images):
            if isinstance(inferred, Exception):
                results.append(inferred)
            else:
                probabilities, features = inferred
                results.append(
                    Observation(self._rollup.concepts(probabilities, max_concepts, min_confidence), features)
                )
        return results

    def features(self, images: Sequence[DecodedImage]) -> list[npt.NDArray[np.float32] | Exception]:
        """The pooled feature of each image (or the error for that image alone)."""
        return [inferred if isinstance(inferred, Exception) else inferred[1] for inferred in self._infer_all(images)]

    def _infer_all(self, images: Sequence[DecodedImage]) -> list[_Inferred]:
        results: list[_Inferred] = []
        for start in range(0, len(images), self._batch):
            results.extend(self._chunk(images[start : start + self._batch]))
        return results

    def _chunk(self, images: Sequence[DecodedImage]) -> list[_Inferred]:
        # An image that cannot be prepared fails alone; the rest still share one classifier call.
        results: list[_Inferred | None] = []
        prepared: list[tuple[int, npt.NDArray[np.float32]]] = []
        for slot, image in enumerate(images):
            try:
                pixels = image.pixels if isinstance(image, PreparedImage) else preprocess(image.image)
                prepared.append((slot, pixels))
                results.append(None)
            except Exception as exc:
                results.append(exc)
        if prepared:
            probabilities, features = self.infer(np.stack([pixels for _, pixels in prepared]))
            for (slot, _), row, feature in zip(prepared, probabilities, features, strict=True):
                results[slot] = (row, feature)
        return [result if result is not None else RuntimeError("image left without a result") for result in results]

    def infer(self, pixels: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Class probabilities [batch, 1000] and pooled features [batch, 1280] for pixels [batch, 3, 224, 224]."""
        probabilities, features = self._session.run([PROBABILITIES_OUTPUT, FEATURES_OUTPUT], {"pixels": pixels})
        return np.asarray(probabilities, dtype=np.float32), np.asarray(features, dtype=np.float32)


def preprocess(image: Image.Image) -> npt.NDArray[np.float32]:
    """RGB image -> [3, 224, 224] float32: short side to 256, centre crop, TF scaling."""
    return _scaled(_centre_crop(image)[0])


def _scaled(crop: Image.Image) -> npt.NDArray[np.float32]:
    pixels = (np.asarray(crop, dtype=np.float32) - PIXEL_MEAN) / PIXEL_STD
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _centre_crop(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """The 224 x 224 centre of the image scaled to a short side of 256, and that scaled image (None if thin)."""
    width, height = image.size
    scale = RESIZE_SIDE / min(width, height)
    size = (max(INPUT_SIDE, round(width * scale)), max(INPUT_SIDE, round(height * scale)))
    left = (size[0] - INPUT_SIDE) // 2
    top = (size[1] - INPUT_SIDE) // 2
    if size[0] * size[1] <= MAX_RESIZED_PIXELS:
        # reducing_gap lets Pillow shrink large images in cheap integer steps first.
        resized = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        return resized.crop((left, top, left + INPUT_SIDE, top + INPUT_SIDE)), resized
    # A very thin image (16 x 3,000,000 passes the pixel limit) would be enlarged to
    # gigabytes before the crop threw nearly all of it away: resample only the part
    # that is kept, straight to 224 x 224.  Ordinary images keep the path above, so
    # their SDRs stay what they were bit for bit.
    sx, sy = width / size[0], height / size[1]
    box = (left * sx, top * sy, (left + INPUT_SIDE) * sx, (top + INPUT_SIDE) * sy)
    return image.resize((INPUT_SIDE, INPUT_SIDE), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0), None


def _feature_dimensions(session: ort.InferenceSession, path: Path) -> int:
    """The width of the pooled feature; a classifier exported before it was an output is refused."""
    outputs = {output.name: output for output in session.get_outputs()}
    if FEATURES_OUTPUT not in outputs or PROBABILITIES_OUTPUT not in outputs:
        raise ModelsMissingError(
            f"{path} has no {FEATURES_OUTPUT!r} output: it was exported by an older `make models` "
            "(export version 1); run `make models` again to re-export it"
        )
    width = outputs[FEATURES_OUTPUT].shape[-1]
    if not isinstance(width, int) or width <= 0:
        raise ModelsMissingError(f"{path}: the {FEATURES_OUTPUT!r} output has no fixed width; run `make models` again")
    return width


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # onnxruntime's idle workers spin for a while after each run, waiting for the next: here
    # the next work is the decode threads', and a spinning worker only takes their core.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
