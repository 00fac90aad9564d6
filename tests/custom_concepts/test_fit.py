"""Custom concepts from examples (fit, document, scoring): real Sdr values, clustered like images of one subject."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from image2sdr.server.config import Config
from image2sdr.server.custom_concepts import (
    DOCUMENT_VERSION,
    ConceptDocumentError,
    ConceptSet,
    CustomConcept,
    Example,
    define,
    from_document,
    to_document,
)
from image2sdr.server.encoder import Encoder
from image2sdr.server.errors import InvalidInputError
from image2sdr.server.sdr import Sdr
from tests.helpers.images import encode_jpeg

SIZE = 16384
ACTIVE = 328


def random_sdr(rng: np.random.Generator, active: int, size: int = SIZE) -> Sdr:
    return Sdr.from_positions(np.sort(rng.choice(size, active, replace=False)), size)


def near(base: np.ndarray, rng: np.random.Generator, keep: int = 240) -> Sdr:
    """An SDR holding ``keep`` of ``base``'s bits and random others: one more image of a subject."""
    kept = rng.choice(base, keep, replace=False)
    others = rng.choice(np.setdiff1d(np.arange(SIZE), base), ACTIVE - keep, replace=False)
    return Sdr.from_positions(np.sort(np.concatenate([kept, others])), SIZE)


def subject(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A subject's typical semantic and visual bits."""
    rng = np.random.default_rng(seed)
    return rng.choice(SIZE, ACTIVE, replace=False), rng.choice(SIZE, ACTIVE, replace=False)


def examples(seed: int, count: int, *, start: int = 0, visual: bool = True) -> list[Example]:
    semantic, look = subject(seed)
    rng = np.random.default_rng([seed, start])
    return [Example(near(semantic, rng), near(look, rng) if visual else None) for _ in range(count)]


def sdrs(example: Example) -> dict[str, Sdr]:
    found = {"semantic": example.semantic}
    if example.visual is not None:
        found["visual"] = example.visual
    return found


def teach(positives: int = 6, negatives: int = 12) -> CustomConcept:
    others = [e for seed in (11, 12, 13) for e in examples(seed, negatives // 3)]
    return define("storefront", examples(1, positives), others, active_bits=ACTIVE, sdr_size=SIZE)


def test_concept_separates_its_subject_from_others() -> None:
    concept = teach()
    held_out = examples(1, 20, start=1)
    strangers = [e for seed in (11, 12, 13, 14, 15) for e in examples(seed, 10, start=1)]
    assert all(concept.present(sdrs(e)) for e in held_out)
    assert not any(concept.present(sdrs(e)) for e in strangers)
    assert min(concept.confidence(sdrs(e)) for e in held_out) > 0.9
    assert max(concept.confidence(sdrs(e)) for e in strangers) < 0.1
    assert set(concept.sdrs) == {"semantic", "visual"}
    assert all(sdr.active == ACTIVE for sdr in concept.sdrs.values())


def test_concept_bits_are_those_the_positives_share() -> None:
    semantic, _ = subject(1)
    concept = teach()
    shared = np.intersect1d(concept.sdrs["semantic"].positions, semantic).size
    assert shared > 0.9 * ACTIVE  # the subject's bits, not the noise around them


def test_same_examples_in_any_order_give_the_same_concept() -> None:
    positives = examples(1, 7)
    negatives = [e for seed in (11, 12) for e in examples(seed, 5)]
    first = define("c", positives, negatives, active_bits=ACTIVE, sdr_size=SIZE)
    rng = np.random.default_rng(3)
    again = define(
        "c",
        [positives[i] for i in rng.permutation(len(positives))],
        [negatives[i] for i in rng.permutation(len(negatives))],
        active_bits=ACTIVE,
        sdr_size=SIZE,
    )
    assert to_document(again) == to_document(first)


def test_fewer_than_three_positives_are_refused() -> None:
    with pytest.raises(InvalidInputError) as raised:
        define("c", examples(1, 2), examples(11, 5), active_bits=ACTIVE, sdr_size=SIZE)
    assert raised.value.field == "positives"


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "x" * 201])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        define(name, examples(1, 3), (), active_bits=ACTIVE, sdr_size=SIZE)
    assert raised.value.field == "name"


def test_examples_of_another_size_are_refused() -> None:
    odd = Example(Sdr.from_positions([1, 2, 3], 1024))
    with pytest.raises(InvalidInputError) as raised:
        define("c", examples(1, 3), [odd], active_bits=ACTIVE, sdr_size=SIZE)
    assert raised.value.field == "negatives[0]"


def test_visual_space_is_dropped_when_one_example_lacks_it() -> None:
    negatives = examples(11, 4) + examples(12, 1, visual=False)
    concept = define("c", examples(1, 5), negatives, active_bits=ACTIVE, sdr_size=SIZE)
    assert set(concept.sdrs) == {"semantic"}
    assert [fit.spaces for fit in concept.fits] == [("semantic",)]
    assert concept.present(sdrs(examples(1, 1, start=1)[0]))  # an image's visual SDR is then ignored


def test_image_without_visual_sdr_is_scored_by_the_semantic_fit() -> None:
    concept = teach()
    image = examples(1, 1, start=2, visual=False)[0]
    fit = concept.fit_for(sdrs(image))
    assert fit.spaces == ("semantic",) and fit.weights == (1.0,)
    assert concept.present(sdrs(image))
    with pytest.raises(InvalidInputError):
        concept.score({"visual": examples(1, 1)[0].semantic})


def test_without_negatives_the_positives_still_define_it() -> None:
    concept = define("c", examples(1, 5), (), active_bits=ACTIVE, sdr_size=SIZE)
    assert concept.negatives == 0 and concept.report.negative_scores == ()
    assert concept.present(sdrs(examples(1, 1, start=1)[0]))
    assert not concept.present(sdrs(examples(20, 1)[0]))


def test_loo_threshold_lies_between_a_typical_positive_and_a_random_sdr() -> None:
    rng = np.random.default_rng(5)
    same = random_sdr(rng, ACTIVE)
    positives = [Example(same) for _ in range(4)]
    negatives = [Example(random_sdr(rng, ACTIVE)) for _ in range(8)]
    concept = define("c", positives, negatives, active_bits=ACTIVE, sdr_size=SIZE)
    assert concept.score({"semantic": same}) == 1.0 > concept.threshold
    assert concept.confidence({"semantic": same}) > 0.99
    stranger = random_sdr(rng, ACTIVE)
    assert concept.score({"semantic": stranger}) < concept.threshold
    assert concept.confidence({"semantic": stranger}) < 0.01
    report = concept.report
    assert (report.positives, report.negatives) == (4, 8)
    assert report.precision == report.recall == report.f1 == 1.0
    assert report.positive_scores == (1.0, 1.0, 1.0, 1.0)


def test_confidence_is_one_half_at_the_threshold() -> None:
    fit = teach().fits[0]
    assert fit.confidence(fit.threshold) == 0.5
    assert fit.confidence(fit.threshold + fit.scale) == pytest.approx(1 - fit.confidence(fit.threshold - fit.scale))
    assert fit.confidence(fit.threshold + fit.scale) > 0.7


def test_examples_that_do_not_separate_make_a_concept_that_is_never_present() -> None:
    """Positives and negatives of the same two subjects: nothing tells them apart, and the report says so."""
    mixed = examples(1, 3) + examples(2, 3)
    negatives = examples(1, 3, start=5) + examples(2, 3, start=5)
    concept = define("c", mixed, negatives, active_bits=ACTIVE, sdr_size=SIZE)
    report = concept.report
    assert report.recall == 0.0 and report.f1 == 0.0
    assert concept.threshold > max(report.positive_scores + report.negative_scores)
    assert not any(concept.present(sdrs(e)) for e in examples(1, 5, start=9) + examples(2, 5, start=9))


def test_document_round_trip() -> None:
    concept = teach()
    document = to_document(concept)
    assert json.loads(document)["version"] == DOCUMENT_VERSION
    again = from_document("storefront", document, SIZE)
    assert again.sdrs == concept.sdrs
    assert again.fits == concept.fits
    assert again.report == concept.report
    assert to_document(again) == document
    image = sdrs(examples(1, 1, start=3)[0])
    assert again.confidence(image) == concept.confidence(image)


def _damaged(document: str, change: str) -> str:
    raw = json.loads(document)
    if change == "version":
        raw["version"] = 2
    elif change == "positions":
        raw["spaces"]["semantic"]["positions"].reverse()
    elif change == "weights":
        raw["spaces"]["visual"]["weights"] = raw["spaces"]["visual"]["weights"][:-1]
    elif change == "space":
        raw["spaces"]["colour"] = raw["spaces"].pop("visual")
    elif change == "scale":
        raw["fits"][0]["scale"] = 0
    elif change == "fits":
        raw["fits"] = []
    elif change == "semantic fit":
        raw["fits"] = raw["fits"][:1]
    elif change == "report":
        raw["report"]["positives"] = 99
    elif change == "example ids":  # more ids kept than examples counted
        raw["example_ids"] = {"positives": [f"p{n}" for n in range(99)], "negatives": []}
    return json.dumps(raw)


@pytest.mark.parametrize(
    "change", ["version", "positions", "weights", "space", "scale", "fits", "semantic fit", "report", "example ids"]
)
def test_damaged_documents_are_refused(change: str) -> None:
    with pytest.raises(ConceptDocumentError, match="storefront"):
        from_document("storefront", _damaged(to_document(teach()), change), SIZE)


@pytest.mark.parametrize("document", ["", "not json", "[]", "{}", '{"version": 1}', '{"version": "1"}'])
def test_corrupt_documents_are_refused(document: str) -> None:
    with pytest.raises(ConceptDocumentError):
        from_document("c", document, SIZE)


def test_document_of_another_sdr_size_is_refused() -> None:
    with pytest.raises(ConceptDocumentError, match="define it again"):
        from_document("c", to_document(teach()), 4096)


def test_concept_set_scores_as_each_concept_alone() -> None:
    concepts = [
        teach(),
        define("semantic only", examples(2, 4, visual=False), examples(12, 4), active_bits=ACTIVE, sdr_size=SIZE),
        define("lamp", examples(3, 5), examples(11, 6), active_bits=ACTIVE, sdr_size=SIZE),
    ]
    table = ConceptSet(concepts, SIZE)
    for image in examples(1, 2, start=4) + examples(3, 2, start=4) + examples(2, 2, start=4, visual=False):
        found = table.confidences(sdrs(image))
        assert [name for name, _ in found] == [c.name for c in concepts]
        for (_, confidence), concept in zip(found, concepts, strict=True):
            assert confidence == pytest.approx(concept.confidence(sdrs(image)), abs=1e-9)


def variant(data: bytes, step: int) -> bytes:
    """A crop, brightened, mirrored every other step: another shot of the same scene."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    image = image.crop((step * 9, step * 6, width - step * 7, height - step * 5))
    image = ImageEnhance.Brightness(image).enhance(1.0 + 0.06 * step)
    return encode_jpeg(np.asarray(ImageOps.mirror(image) if step % 2 else image))


def test_concepts_from_real_encodings(config: Config, photos: dict[str, bytes]) -> None:
    """The real encoder's SDRs: a cat taught by shots of chelsea is found in another shot, not in coffee."""
    encoder = Encoder.from_config(config)
    try:

        def example(data: bytes) -> Example:
            encoding = encoder.encode(data)
            return Example(encoding.sdr, encoding.visual)

        cats = [example(variant(photos["chelsea"], step)) for step in range(4)]
        others = [
            example(variant(photos[name], step)) for name in ("coffee", "astronaut", "rocket") for step in range(2)
        ]
        concept = define("our cat", cats[:3], others, active_bits=config.sdr.active_bits, sdr_size=config.sdr.size)
        assert set(concept.sdrs) == {"semantic", "visual"}
        assert concept.present(sdrs(cats[3]))
        assert not concept.present(sdrs(example(variant(photos["coffee"], 3))))
    finally:
        encoder.close()


def test_concept_set_scores_a_batch_as_each_image_alone() -> None:
    table = ConceptSet(
        [teach(), define("lamp", examples(3, 5), examples(11, 6), active_bits=ACTIVE, sdr_size=SIZE)], SIZE
    )
    images = [sdrs(e) for e in examples(1, 2, start=6) + examples(3, 2, start=6, visual=False) + examples(9, 2)]
    together = table.confidences_many(images)
    assert together.shape == (6, 2)
    for row, image in enumerate(images):
        assert together[row].tolist() == pytest.approx([value for _, value in table.confidences(image)], abs=1e-12)
        assert table.scores_many(images)[row].tolist() == pytest.approx(table.scores(image).tolist(), abs=1e-12)
    assert table.scores_many([]).shape == (0, 2)


def test_an_empty_concept_set_scores_nothing() -> None:
    table = ConceptSet([], SIZE)
    assert table.confidences(sdrs(examples(1, 1)[0])) == []
    with pytest.raises(InvalidInputError):
        table.scores({"semantic": Sdr.from_positions([1], 64)})


def background_of(concept_share: int, strangers: int) -> list[Example]:
    """Unlabelled stored items: ``concept_share`` of subject 1 among ``strangers`` unrelated ones."""
    rng = np.random.default_rng(5)
    others = [Example(random_sdr(rng, ACTIVE), random_sdr(rng, ACTIVE)) for _ in range(strangers)]
    return examples(1, concept_share, start=5) + others


def test_background_sets_the_threshold_and_reports_what_it_flags() -> None:
    others = [e for seed in (11, 12, 13) for e in examples(seed, 4)]
    concept = define(
        "storefront", examples(1, 10), others, active_bits=ACTIVE, sdr_size=SIZE, background=background_of(20, 180)
    )
    found = concept.report.background
    assert found is not None and found.items == 200
    # One item in ten shows it: the estimate finds that share, and says the flagged ones are it.
    assert 0.08 <= found.flagged <= 0.12 and 0.05 <= found.prevalence <= 0.12
    # The estimate errs low (its prevalence is the least of noisy ratios): honest, not flattering.
    assert found.precision >= 0.6 and found.recall >= 0.9
    assert concept.report.threshold == concept.threshold
    held_out = examples(1, 20, start=9)
    strangers = [e for seed in range(40, 45) for e in examples(seed, 10, start=9)]
    assert all(concept.present(sdrs(e)) for e in held_out)
    assert not any(concept.present(sdrs(e)) for e in strangers)


def test_too_small_a_background_leaves_the_threshold_to_the_examples() -> None:
    others = [e for seed in (11, 12, 13) for e in examples(seed, 4)]
    alone = define("storefront", examples(1, 6), others, active_bits=ACTIVE, sdr_size=SIZE)
    small = define("storefront", examples(1, 6), others, active_bits=ACTIVE, sdr_size=SIZE, background=others[:5])
    assert alone.report.background is None and small.report.background is None


def test_document_round_trip_keeps_background_suggestions_and_example_ids() -> None:
    others = [e for seed in (11, 12, 13) for e in examples(seed, 4)]
    concept = define(
        "storefront", examples(1, 10), others, active_bits=ACTIVE, sdr_size=SIZE, background=background_of(10, 90)
    )
    concept = dataclasses.replace(concept, suggestions=(("item-7", 0.49), ("item-2", 0.55)))
    concept = dataclasses.replace(concept, positive_ids=("shop-1", "shop-2"), negative_ids=("street",))
    document = to_document(concept)
    again = from_document("storefront", document, SIZE)
    assert again.report == concept.report and again.report.background is not None
    assert again.suggestions == concept.suggestions and to_document(again) == document
    assert (again.positive_ids, again.negative_ids) == (("shop-1", "shop-2"), ("street",))
    # A document written before the ids were kept reads with none (version 1 still).
    older = json.loads(document)
    del older["example_ids"]
    assert from_document("storefront", json.dumps(older), SIZE).positive_ids == ()
