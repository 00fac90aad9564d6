"""The encoder end to end on real photos with the real embedded models."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from image2sdr.server.concepts.base import Concept
from image2sdr.server.config import Config
from image2sdr.server.encoder import ConceptUse, EncodeOptions, Encoder
from image2sdr.server.encoder.decoding import Wanted, timed_decode
from image2sdr.server.errors import (
    ImageDecodeError,
    ImageTooSmallError,
    InvalidInputError,
    InvalidTermError,
    PixelLimitError,
)
from image2sdr.server.thumbnails import make_thumbnail
from tests.helpers.images import encode_png, png_with_header, sample_photo


@pytest.fixture(scope="module")
def encoder(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Encoder]:
    config = Config(data_dir=tmp_path_factory.mktemp("data"), models_dir=models_dir)
    encoder = Encoder.from_config(config)
    yield encoder
    encoder.close()


def test_cat_photo(encoder: Encoder, photos: dict[str, bytes]) -> None:
    encoding = encoder.encode(photos["chelsea"])
    assert encoding.sdr.size == 16384
    assert encoding.sdr.dimensions == (128, 128)
    assert encoding.sdr.active == 328 and not encoding.short
    names = {c.name for c in encoding.used}
    assert {"cat", "animal"} <= names
    assert encoding.timings.concepts_ms > 0 and encoding.timings.merge_ms > 0


def test_same_image_same_sdr(encoder: Encoder, photos: dict[str, bytes]) -> None:
    first = encoder.encode(photos["coffee"])
    again = encoder.encode(photos["coffee"])
    batched = encoder.encode_batch([photos["chelsea"], photos["coffee"]])[1]
    assert first.sdr == again.sdr
    assert not isinstance(batched, Exception) and batched.sdr == first.sdr


def test_similar_images_overlap_more_than_different_ones(encoder: Encoder, photos: dict[str, bytes]) -> None:
    cat = encoder.encode(photos["chelsea"]).sdr
    flipped_buffer = io.BytesIO()
    Image.open(io.BytesIO(photos["chelsea"])).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped_buffer, "PNG")
    mirrored = encoder.encode(flipped_buffer.getvalue()).sdr
    coffee = encoder.encode(photos["coffee"]).sdr
    assert cat.overlap(mirrored) > 3 * cat.overlap(coffee)


_OTHER_PROCESS = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from image2sdr.server.config import Config
    from image2sdr.server.encoder import Encoder
    encoder = Encoder.from_config(Config(data_dir=Path(sys.argv[1]), models_dir=Path(sys.argv[2])))
    print(json.dumps(encoder.encode(Path(sys.argv[3]).read_bytes()).sdr.positions.tolist()))
    """
)


def test_same_sdr_in_another_process_with_a_cold_cache(
    encoder: Encoder, photos: dict[str, bytes], models_dir: Path, tmp_path: Path
) -> None:
    image = tmp_path / "chelsea.jpg"
    image.write_bytes(photos["chelsea"])
    output = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, str(tmp_path / "fresh"), str(models_dir), str(image)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert json.loads(output) == encoder.encode(photos["chelsea"]).sdr.positions.tolist()


def test_options_change_the_result(encoder: Encoder, photos: dict[str, bytes]) -> None:
    few = encoder.encode(photos["chelsea"], EncodeOptions(max_concepts=3))
    assert len(few.concepts) == 3
    denser = encoder.encode(photos["chelsea"], EncodeOptions(sparsity=0.04))
    assert denser.sdr.active == round(16384 * 0.04)
    confident = encoder.encode(photos["chelsea"], EncodeOptions(min_confidence=0.5))
    assert all(c.confidence >= 0.5 for c in confident.concepts)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (EncodeOptions(max_concepts=0), "max_concepts"),
        (EncodeOptions(max_concepts=201), "max_concepts"),
        (EncodeOptions(min_confidence=1.5), "min_confidence"),
        (EncodeOptions(sparsity=0.0), "sparsity"),
        (EncodeOptions(sparsity=0.9), "sparsity"),
    ],
)
def test_bad_options(encoder: Encoder, photos: dict[str, bytes], options: EncodeOptions, field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        encoder.encode(photos["chelsea"], options)
    assert info.value.field == field


def test_multi_word_and_negative_concepts(encoder: Encoder) -> None:
    concepts = [Concept("hard hat", 0.9), Concept("Construction  Worker", 0.8), Concept("no people", 0.7)]
    encoding = encoder.encode_concepts(concepts)
    assert [c.used for c in encoding.concepts] == [True, True, True]
    people = encoder.term_sdr("people")
    assert people is not None
    without = encoder.encode_concepts(concepts[:2])
    # The negative concept subtracts: fewer of "people"'s bits than with no mention at all.
    assert encoding.sdr.overlap(people) < without.sdr.overlap(people)


def test_a_negative_concept_subtracts_from_its_positive_term(encoder: Encoder) -> None:
    people = encoder.term_sdr("people")
    assert people is not None
    base = [Concept("car", 0.5)]
    positive = encoder.encode_concepts([*base, Concept("people", 0.9)])
    # people nets 0.9 - 0.6 = 0.3 < car's 0.5: car's bits now win where people's won before.
    both = encoder.encode_concepts([*base, Concept("people", 0.9), Concept("no people", 0.6)])
    assert [c.used for c in both.concepts] == [True, True, True]  # neither is dropped
    assert both.sdr.overlap(people) < positive.sdr.overlap(people)


def test_concepts_merge_with_the_configured_confidence_power(encoder: Encoder) -> None:
    assert encoder.config.sdr.confidence_power == 0.25  # the default
    encoding = encoder.encode_concepts([Concept("cat", 0.0625), Concept("no people", 0.0016)])
    assert [use.confidence for use in encoding.concepts] == [0.0625, 0.0016]  # reported as found
    assert [term.weight for term in encoding.merged] == pytest.approx([0.5, -0.2])


def test_duplicate_terms_and_bad_concepts_are_skipped_with_reasons(encoder: Encoder) -> None:
    encoding = encoder.encode_concepts(
        [Concept("Cat", 0.9), Concept("cat ", 0.5), Concept("   ", 0.4), Concept("dog", 0.01)],
        EncodeOptions(min_confidence=0.05),
    )
    used = [c.name for c in encoding.used]
    reasons = {c.name: c.reason for c in encoding.skipped}
    assert used == ["Cat"]
    assert "same term" in reasons["cat "]
    assert len(encoding.concepts) == 3  # "dog" is below min_confidence: left out entirely
    assert "usable term" in reasons["   "]


def test_short_union_is_reported(encoder: Encoder) -> None:
    # One term has exactly w = 328 bits; asking for 2 x w cannot be filled.
    encoding = encoder.encode_concepts([Concept("cat", 0.9)], EncodeOptions(sparsity=0.04))
    assert encoding.short and encoding.sdr.active == 328


def test_no_usable_concept_gives_an_empty_short_sdr(encoder: Encoder) -> None:
    encoding = encoder.encode_concepts([])
    assert encoding.sdr.active == 0 and encoding.short


def test_term_sdr(encoder: Encoder) -> None:
    sdr = encoder.term_sdr("  Coffee   Mug ")
    assert sdr is not None and sdr == encoder.term_sdr("coffee mug")
    with pytest.raises(InvalidTermError):
        encoder.term_sdr("   ")


def test_bad_images_fail_alone_and_the_encoder_keeps_working(encoder: Encoder, photos: dict[str, bytes]) -> None:
    bad = {
        b"not an image at all": ImageDecodeError,
        b"": ImageDecodeError,
        photos["coffee"][:2000]: ImageDecodeError,
        png_with_header(0, 5): ImageDecodeError,
        png_with_header(90_000, 90_000): PixelLimitError,
        encode_png(np.zeros((1, 1, 3), np.uint8)): ImageTooSmallError,
    }
    expected = encoder.encode(photos["chelsea"]).sdr
    batch = [photos["chelsea"]]
    for image in bad:
        batch += [image, photos["chelsea"]]
    results = encoder.encode_batch(batch)
    assert len(results) == len(batch)
    for image, error in bad.items():
        with pytest.raises(error):
            encoder.encode(image)
    for result in results[::2]:
        assert not isinstance(result, Exception) and result.sdr == expected
    for result, error in zip(results[1::2], bad.values(), strict=True):
        assert isinstance(result, error)
    assert encoder.encode(photos["chelsea"]).sdr == expected


def test_encode_many_batches_by_options_and_keeps_order(
    encoder: Encoder, photos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    narrow = EncodeOptions(max_concepts=3)
    requests = [
        (photos["chelsea"], None),
        (photos["coffee"], narrow),
        (photos["chelsea"], EncodeOptions(max_concepts=0)),  # bad options fail only their image
        (photos["coffee"], EncodeOptions()),  # the same as no options
        (photos["chelsea"], narrow),
    ]
    expected = [encoder.encode(image, options) for image, options in requests if options != requests[2][1]]
    batches: list[int] = []
    encode_batch = encoder._encode_batch  # one batch, each image saying whether it wants a thumbnail

    def counting(images: list[bytes], options: EncodeOptions | None, thumbnails: list[bool]) -> list[object]:
        batches.append(len(images))
        return encode_batch(images, options, thumbnails)  # type: ignore[return-value]

    monkeypatch.setattr(encoder, "_encode_batch", counting)
    results = encoder.encode_many(requests)
    assert sorted(batches) == [1, 2, 2]  # one batch per distinct set of options
    assert isinstance(results[2], InvalidInputError)
    kept = [result for i, result in enumerate(results) if i != 2]
    assert [r.sdr for r in kept] == [e.sdr for e in expected]  # type: ignore[union-attr]
    assert [len(r.concepts) for r in kept] == [len(e.concepts) for e in expected]  # type: ignore[union-attr]


def test_custom_concepts_are_reported_and_merged_only_when_used(encoder: Encoder, photos: dict[str, bytes]) -> None:
    plain = encoder.encode(photos["chelsea"])
    rocket = encoder.term_sdr("rocket")
    assert rocket is not None
    reported = encoder.with_custom(plain, [(ConceptUse("launch pad", 0.9, used=False), rocket)])
    assert reported.custom == (ConceptUse("launch pad", 0.9, used=False),)
    assert reported.sdr == plain.sdr  # reported, not merged
    merged = encoder.with_custom(plain, [(ConceptUse("launch pad", 0.9, used=True), rocket)])
    assert merged.sdr != plain.sdr and merged.sdr.active == plain.sdr.active
    gained = np.intersect1d(merged.sdr.positions, rocket.positions).size
    assert gained > np.intersect1d(plain.sdr.positions, rocket.positions).size  # merged like a concept
    assert encoder.with_custom(plain, [(ConceptUse("launch pad", 0.9, used=True), rocket)]) == merged  # deterministic


def test_a_thumbnail_only_when_the_encoding_will_be_stored(
    encoder: Encoder, photos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert encoder.config.index.thumbnails == 96
    plain = encoder.encode(photos["chelsea"])
    assert plain.thumbnail is None  # a query, a concept's example, an Explain variant
    kept = encoder.encode(photos["chelsea"], EncodeOptions(thumbnail=True))
    assert kept.thumbnail is not None and kept.thumbnail.data.startswith(b"RIFF")  # WebP, made when read
    assert kept.sdr == plain.sdr and kept.visual == plain.visual
    # Made from the classifier's scaled copy, it looks as one made from the whole photo does.
    full = make_thumbnail(Image.open(io.BytesIO(photos["chelsea"])), 96, "webp", 80)
    made, whole = (np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64) for data in (kept.thumbnail.data, full))
    assert made.shape == whole.shape and np.abs(made - whole).mean() < 4
    calls: list[int] = []
    observe = encoder.concept_source.observe  # type: ignore[attr-defined]

    def counted(images: Any, *args: Any) -> Any:
        calls.append(len(images))
        return observe(images, *args)

    monkeypatch.setattr(encoder.concept_source, "observe", counted)
    stored, asked = encoder.encode_many([(photos["coffee"], EncodeOptions(thumbnail=True)), (photos["rocket"], None)])
    assert calls == [2]  # stored or not, one batch: only the thumbnail differs
    assert not isinstance(stored, Exception) and stored.thumbnail is not None
    assert not isinstance(asked, Exception) and asked.thumbnail is None


def test_stored_concepts_fit_the_index_limit_leaving_out_the_weakest_names(encoder: Encoder) -> None:
    """Synonyms bring all their names (the clock photo: ten concepts, more names), so an add could pass
    index.max_concepts: the provider's weakest names are left out instead, custom concepts kept."""
    encoding = encoder.encode(sample_photo("clock"))
    names = [(c.name, c.confidence) for c in encoding.used]
    assert len(names) > 10
    assert list(encoding.stored_concepts(200)) == names
    assert list(encoding.stored_concepts(10)) == names[:10]
    rocket = encoder.term_sdr("rocket")
    assert rocket is not None
    custom = encoder.with_custom(encoding, [(ConceptUse("launch pad", 0.9, used=True), rocket)])
    assert list(custom.stored_concepts(10)) == [*names[:9], ("launch pad", 0.9)]


def test_keypoints_only_for_images_to_store_and_only_when_kept(photos: dict[str, bytes]) -> None:
    kept, off = Config(), Config.model_validate({"index": {"keypoints": False}})
    stored = timed_decode(photos["chelsea"], kept, None, Wanted(thumbnail=True, keypoints=True), None)
    assert stored.keypoints is not None and len(stored.keypoints.own) > 0
    assert timed_decode(photos["chelsea"], kept, None, Wanted(), None).keypoints is None  # a plain encode
    assert timed_decode(photos["chelsea"], off, None, Wanted(thumbnail=True, keypoints=True), None).keypoints is None
