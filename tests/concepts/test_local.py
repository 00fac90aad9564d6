"""The embedded concept provider on real photos (EfficientNet-Lite0 + WordNet roll-up)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from image2sdr.server.concepts.base import ConceptSource
from image2sdr.server.concepts.local import (
    CLASSIFIER_FILE,
    CLASSIFIER_FILES,
    HIERARCHY_FILE,
    PIXELS_VERSION,
    ROLLUP_VERSION,
    LocalConceptSource,
    WordNetRollup,
    preprocess,
)
from image2sdr.server.config import Config, LocalConceptsConfig
from image2sdr.server.errors import ModelsMissingError
from image2sdr.server.imaging import decode_image
from tests.helpers.images import sample_photo


@pytest.fixture(scope="module")
def source(models_dir: Path) -> LocalConceptSource:
    return LocalConceptSource(models_dir, LocalConceptsConfig())


def names_for(source: LocalConceptSource, photo: bytes, top: int = 10) -> dict[str, float]:
    decoded = decode_image(photo, Config().image, source.input_side)
    (concepts,) = source.concepts([decoded], top, 0.0)
    assert not isinstance(concepts, Exception)
    return {c.name: c.confidence for c in concepts}


def test_is_a_concept_source(source: LocalConceptSource) -> None:
    assert isinstance(source, ConceptSource)


def test_cat_photo_gives_cat_and_animal(source: LocalConceptSource, photos: dict[str, bytes]) -> None:
    found = names_for(source, photos["chelsea"])
    assert found["cat"] > 0.8
    assert found["animal"] > 0.8
    assert found["animal"] >= found["cat"]  # an ancestor holds at least its descendants' mass


def test_coffee_photo_gives_coffee_drink_and_cup(source: LocalConceptSource, photos: dict[str, bytes]) -> None:
    found = names_for(source, photos["coffee"], top=12)
    assert found["coffee"] > 0.8
    assert found["drink"] > 0.8  # WordNet's "beverage", named by its most used lemma
    # "cup" (0.0138) ranks 11th, behind "alcohol", "drug" and "drug of abuse", tied at 0.0144 (all kept).
    assert "cup" in found


def test_concepts_are_general_phrases_ranked_and_bounded(source: LocalConceptSource, photos: dict[str, bytes]) -> None:
    for photo in photos.values():
        found = names_for(source, photo, top=10)
        confidences = list(found.values())
        # Ten concepts at most; one WordNet names several ways (synonyms) brings all its names.
        assert 1 <= len(set(confidences)) <= 10 <= len(found) <= 10 * 9
        assert confidences == sorted(confidences, reverse=True)
        assert all(0.0 < c <= 1.0 for c in confidences)
        assert not {"entity", "physical entity", "object", "whole", "artifact"} & set(found)
        assert all(name == name.lower() and "_" not in name for name in found)


def test_multi_word_names_stay_phrases(source: LocalConceptSource, photos: dict[str, bytes]) -> None:
    found = names_for(source, photos["chelsea"])
    assert "domestic cat" in found or "tiger cat" in found


def test_max_concepts_and_min_confidence(source: LocalConceptSource, photos: dict[str, bytes]) -> None:
    decoded = decode_image(photos["chelsea"], Config().image)
    (three,) = source.concepts([decoded], 3, 0.0)
    (confident,) = source.concepts([decoded], 50, 0.5)
    assert not isinstance(three, Exception) and not isinstance(confident, Exception)
    assert len(three) == 3
    assert confident and all(c.confidence >= 0.5 for c in confident)


def test_batch_equals_one_by_one(source: LocalConceptSource, photos: dict[str, bytes]) -> None:
    decoded = [decode_image(p, Config().image, source.input_side) for p in photos.values()]
    batched = source.concepts(decoded, 10, 0.0)
    single = [source.concepts([d], 10, 0.0)[0] for d in decoded]
    for a, b in zip(batched, single, strict=True):
        assert not isinstance(a, Exception) and not isinstance(b, Exception)
        assert [c.name for c in a] == [c.name for c in b]
        assert np.allclose([c.confidence for c in a], [c.confidence for c in b], atol=2e-4)


def test_preprocess_shape_and_scale(photos: dict[str, bytes]) -> None:
    pixels = preprocess(decode_image(photos["coffee"], Config().image).image)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == np.float32
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0


def test_rollup_mass_is_the_sum_beneath(models_dir: Path) -> None:
    rollup = WordNetRollup.load(models_dir / "imagenet_hierarchy.json", excluded=())
    uniform = np.full(1000, 1 / 1000, dtype=np.float32)
    mass = dict(zip(rollup.names, (uniform @ rollup.matrix).tolist(), strict=True))
    assert len(rollup.concept_of) == len(rollup.names) > int(rollup.concept_of.max()) + 1  # synonyms share one
    assert mass["entity"] == pytest.approx(1.0, abs=1e-4)  # every class is an entity
    assert 0.05 < mass["dog"] < 0.2  # ImageNet holds ~120 dog breeds


def certain(rollup: WordNetRollup, name: str) -> list[int]:
    """The classes beneath the synset(s) called ``name``."""
    columns = [i for i, synset in enumerate(rollup.names) if synset == name]
    return sorted({int(c) for c in np.flatnonzero(rollup.matrix[:, columns].any(axis=1))})


def test_names_with_equal_mass_are_all_kept(models_dir: Path) -> None:
    """A dog the classifier is sure of gives one mass to "dog", "canine" and "domestic animal" (and
    more): each is kept.  Two names per mass were kept until ROLLUP_VERSION 2, and "dog" was never one."""
    rollup = WordNetRollup.load(models_dir / HIERARCHY_FILE, LocalConceptsConfig().excluded)
    dogs = certain(rollup, "dog")
    assert len(dogs) == 118  # ImageNet's dog breeds
    for breed in dogs:
        probabilities = np.zeros(1000, np.float32)
        probabilities[breed] = 1.0
        found = {c.name: c.confidence for c in rollup.concepts(probabilities, 10, 0.0)}
        assert found["dog"] == found["canine"] == found["domestic animal"] == found["animal"] == 1.0


def test_synonyms_share_one_place_and_bring_all_their_names(models_dir: Path) -> None:
    rollup = WordNetRollup.load(models_dir / HIERARCHY_FILE, LocalConceptsConfig().excluded)
    (bubble,) = certain(rollup, "globule")
    probabilities = np.zeros(1000, np.float32)
    probabilities[bubble], probabilities[certain(rollup, "wall clock")[0]] = 0.6, 0.4
    found = [c.name for c in rollup.concepts(probabilities, 2, 0.0)]
    assert found[:6] == ["ball", "bubble", "form", "globule", "round shape", "sphere"]  # one concept, six names
    assert len(found) == 7 and found[6] in {"clock", "device", "instrument", "timepiece", "wall clock"}


def test_only_the_top_parts_concepts_of_equal_mass_and_then_by_name(models_dir: Path) -> None:
    rollup = WordNetRollup.load(models_dir / HIERARCHY_FILE, LocalConceptsConfig().excluded)
    (springer,) = certain(rollup, "english springer")
    probabilities = np.zeros(1000, np.float32)
    probabilities[springer] = 1.0
    chain = sorted({rollup.names[c] for c in np.flatnonzero(rollup.matrix[springer])})
    assert len(chain) == len({int(rollup.concept_of[c]) for c in np.flatnonzero(rollup.matrix[springer])}) == 11
    assert [c.name for c in rollup.concepts(probabilities, 10, 0.0)] == chain[:10]
    assert [c.name for c in rollup.concepts(probabilities, 3, 0.0)] == chain[:3]
    assert [c.name for c in rollup.concepts(probabilities, 50, 0.0)] == chain


def test_a_photo_keeps_every_synonym_and_what_it_shows(source: LocalConceptSource) -> None:
    """scikit-image's wall clock looks a little like a bubble (0.33): "ball", "bubble", "form", "globule",
    "round shape" and "sphere" all stand over that one class.  All six are named, and they take one
    place of the ten, so "clock" (0.09) is still among the photo's concepts."""
    found = names_for(source, sample_photo("clock"))
    spheres = {name: found.get(name) for name in ("ball", "bubble", "form", "globule", "round shape", "sphere")}
    assert len(set(spheres.values())) == 1 and None not in spheres.values(), found
    assert "clock" in found and "wall clock" in found
    assert source.version.endswith(f",rollup={ROLLUP_VERSION}")  # the same image may now get other concepts


def test_missing_models_say_how_to_fix(tmp_path: Path, models_dir: Path) -> None:
    with pytest.raises(ModelsMissingError, match="make models"):
        LocalConceptSource(tmp_path, LocalConceptsConfig())
    # Models exported before the int8 classifier: fp32 still loads, int8 says how to get it.
    for name in (CLASSIFIER_FILE, HIERARCHY_FILE):
        (tmp_path / name).symlink_to(models_dir / name)
    LocalConceptSource(tmp_path, LocalConceptsConfig())
    with pytest.raises(ModelsMissingError, match=f"{CLASSIFIER_FILES['int8']} is missing: run `make models`"):
        LocalConceptSource(tmp_path, LocalConceptsConfig(precision="int8"))


def test_int8_classifier_sees_the_cat_and_has_its_own_version(
    source: LocalConceptSource, models_dir: Path, photos: dict[str, bytes]
) -> None:
    int8 = LocalConceptSource(models_dir, LocalConceptsConfig(precision="int8"))
    found = names_for(int8, photos["chelsea"])
    assert found["cat"] > 0.5 and found["animal"] >= found["cat"]
    # Its SDRs differ from fp32's, so nothing cached or stored under one version is read as the other.
    assert ",int8," in int8.version and int8.version != source.version
    assert ",int8," in int8.feature_version and int8.feature_version != source.feature_version
    # The pixels the classifier is given (box-reduced above image.working_pixels) are part of both versions.
    for version in (source.version, source.feature_version, int8.version, int8.feature_version):
        assert f",pixels={PIXELS_VERSION}" in version
    assert "int8" in int8.model and "fp32" in source.model


def test_an_image_prepared_while_decoding_gives_what_the_image_gives(
    source: LocalConceptSource, photos: dict[str, bytes]
) -> None:
    decoded = [decode_image(photo, Config().image, source.input_side) for photo in photos.values()]
    prepared = [source.prepare(image) for image in decoded]
    for made, image in zip(prepared, decoded, strict=True):
        assert np.array_equal(made.pixels, preprocess(image.image)) and made.image is image.image
        # The whole image at the classifier's scale, kept for the thumbnail when that shrank it.
        if min(image.image.size) > 256:
            assert made.reduced is not None and min(made.reduced.size) == 256
            assert abs(made.reduced.width / made.reduced.height - image.image.width / image.image.height) < 0.01
        else:
            assert made.reduced is None
    assert source.prepare(prepared[0]) is prepared[0]
    for a, b in zip(source.observe(decoded, 10, 0.0), source.observe(prepared, 10, 0.0), strict=True):
        assert not isinstance(a, Exception) and not isinstance(b, Exception)
        assert a.concepts == b.concepts and np.array_equal(a.features, b.features)


def test_observe_gives_concepts_and_the_pooled_feature_from_one_inference(
    source: LocalConceptSource, photos: dict[str, bytes]
) -> None:
    decoded = [decode_image(photo, Config().image, source.input_side) for photo in photos.values()]
    observed = source.observe(decoded, 10, 0.0)
    features = source.features(decoded)
    assert source.feature_dimensions == 1280
    for observation, concepts, feature in zip(observed, source.concepts(decoded, 10, 0.0), features, strict=True):
        assert not isinstance(observation, Exception) and not isinstance(feature, Exception)
        assert observation.concepts == concepts
        assert observation.features.shape == (1280,) and observation.features.dtype == np.float32
        assert np.array_equal(observation.features, feature)
        assert np.isfinite(feature).all() and feature.std() > 0
    # One image alone gives the same feature as in a batch (up to float noise between kernels).
    (alone,) = source.features(decoded[:1])
    assert np.allclose(alone, features[0], atol=1e-4)
    # Different photos, different features.
    first, second = features[0], features[1]
    assert isinstance(first, np.ndarray) and isinstance(second, np.ndarray)
    cosine = float(first @ second / np.linalg.norm(first) / np.linalg.norm(second))
    assert cosine < 0.9


def _classifier_without_features(path: Path) -> None:
    """A tiny ONNX model shaped like the version-1 export: pixels in, probabilities out, nothing else."""
    pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, 224, 224])
    probabilities = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Softmax", ["flat"], ["probabilities"]),
        ],
        "classifier_v1",
        [pixels],
        [probabilities],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))


def test_a_classifier_exported_before_the_features_output_says_to_re_export(tmp_path: Path, models_dir: Path) -> None:
    _classifier_without_features(tmp_path / CLASSIFIER_FILE)
    shutil.copyfile(models_dir / HIERARCHY_FILE, tmp_path / HIERARCHY_FILE)
    with pytest.raises(ModelsMissingError, match=r"no 'features' output.*run `make models` again"):
        LocalConceptSource(tmp_path, LocalConceptsConfig())
