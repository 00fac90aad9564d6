"""The visual SDR and visual_share on real photos with the real exported classifier."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from image2sdr.server.appearance import VARIANT, Appearance, VisualProjection, ranked_winners
from image2sdr.server.concepts.base import Concept, ConceptResult
from image2sdr.server.concepts.local import LocalConceptSource
from image2sdr.server.config import ClarifaiConceptsConfig, ConceptsConfig, Config, SdrConfig, VisualConfig
from image2sdr.server.encoder import EncodeOptions, Encoder
from image2sdr.server.errors import InvalidInputError, ModelsMissingError
from image2sdr.server.imaging import DecodedImage
from image2sdr.server.sdr import Sdr
from image2sdr.server.terms.local import LocalTermSource
from tests.helpers.encoders import with_config

EXPECTED = Path(__file__).parent / "fixtures" / "semantic_sdrs_before_visual.json"


@pytest.fixture(scope="module")
def encoder(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Encoder]:
    encoder = Encoder.from_config(Config(data_dir=tmp_path_factory.mktemp("data"), models_dir=models_dir))
    yield encoder
    encoder.close()


def visual_of(encoder: Encoder, image: bytes) -> Sdr:
    visual = encoder.encode(image).visual
    assert visual is not None
    return visual


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _half_q30(image: Image.Image) -> bytes:
    return _jpeg(image.resize((image.width // 2, image.height // 2), Image.Resampling.BICUBIC), quality=30)


def _crop85(image: Image.Image) -> bytes:
    dx, dy = round(image.width * 0.075), round(image.height * 0.075)
    return _jpeg(image.crop((dx, dy, image.width - dx, image.height - dy)))


ALTERATIONS: dict[str, Callable[[Image.Image], bytes]] = {
    "half size + JPEG q30": _half_q30,
    "85 % centre crop": _crop85,
    "mirror": lambda image: _jpeg(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    "brightness x1.3": lambda image: _jpeg(ImageEnhance.Brightness(image).enhance(1.3)),
}


def test_every_image_gets_a_visual_sdr_with_exactly_the_active_bits(encoder: Encoder, photos: dict[str, bytes]) -> None:
    batch = encoder.encode_batch(list(photos.values()))
    visuals = []
    for image, result in zip(photos.values(), batch, strict=True):
        assert not isinstance(result, Exception)
        assert result.visual is not None and result.fingerprint is not None
        assert result.visual.active == encoder.config.sdr.active_bits == 328
        assert result.visual.size == 16384 and result.visual.dimensions == (128, 128)
        assert (np.diff(result.visual.positions.astype(np.int64)) > 0).all()
        single = encoder.encode(image)  # one at a time, batched, or in a stream: the same bits
        assert single.visual == result.visual and single.fingerprint == result.fingerprint
        visuals.append(result.visual)
    (many,) = encoder.encode_many([(photos["rocket"], EncodeOptions(max_concepts=3))])
    assert not isinstance(many, Exception) and many.visual == visuals[list(photos).index("rocket")]
    assert len({v.positions.tobytes() for v in visuals}) == len(visuals)


_OTHER_PROCESS = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from image2sdr.server.config import Config
    from image2sdr.server.encoder import Encoder
    encoder = Encoder.from_config(Config(data_dir=Path(sys.argv[1]), models_dir=Path(sys.argv[2])))
    encoding = encoder.encode(Path(sys.argv[3]).read_bytes())
    print(json.dumps({"visual": encoding.visual.positions.tolist(), "phash": encoding.fingerprint.phash,
                      "version": encoder.appearance.version}))
    """
)


def test_the_same_bytes_give_the_same_visual_sdr_in_another_process(
    encoder: Encoder, photos: dict[str, bytes], models_dir: Path, tmp_path: Path
) -> None:
    image = tmp_path / "astronaut.jpg"
    image.write_bytes(photos["astronaut"])
    output = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, str(tmp_path / "fresh"), str(models_dir), str(image)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    here = encoder.encode(photos["astronaut"])
    assert here.visual is not None and here.fingerprint is not None and encoder.appearance is not None
    assert json.loads(output) == {
        "visual": here.visual.positions.tolist(),
        "phash": here.fingerprint.phash,
        "version": encoder.appearance.version,
    }


def test_altered_copies_overlap_their_original_more_than_any_other_photo(
    encoder: Encoder, photos: dict[str, bytes]
) -> None:
    originals = {name: visual_of(encoder, data) for name, data in photos.items()}
    for name, data in photos.items():
        image = Image.open(io.BytesIO(data)).convert("RGB")
        for alteration, alter in ALTERATIONS.items():
            copy = visual_of(encoder, alter(image))
            own = copy.overlap(originals[name])
            best_other = max(copy.overlap(v) for other, v in originals.items() if other != name)
            assert own > best_other, f"{name}, {alteration}: {own} shared bits vs {best_other} with another photo"


def test_visual_share_zero_keeps_the_semantic_sdr_bit_for_bit(encoder: Encoder, photos: dict[str, bytes]) -> None:
    # Recorded with the defaults of their day: 10 concepts weighted by their confidence itself,
    # which a config still gives (an index encoded by those releases keeps matching new encodings).
    before = encoder.config.model_copy(
        update={
            "sdr": encoder.config.sdr.model_copy(update={"confidence_power": 1.0}),
            "concepts": encoder.config.concepts.model_copy(update={"max_concepts": 10}),
        }
    )
    legacy = with_config(encoder, before)
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))["photos"]
    for name, recorded in expected.items():
        assert hashlib.sha256(photos[name]).hexdigest() == recorded["jpeg_sha256"]  # the very bytes recorded
        for options in (None, EncodeOptions(visual_share=0.0)):
            assert legacy.encode(photos[name], options).sdr.positions.tolist() == recorded["active"], name
    assert encoder.encode(photos["chelsea"]).sdr.positions.tolist() != expected["chelsea"]["active"]  # today's


def test_visual_share_gives_the_visual_sdrs_strongest_bits_their_places(
    encoder: Encoder, photos: dict[str, bytes]
) -> None:
    plain = encoder.encode(photos["chelsea"])
    shared = encoder.encode(photos["chelsea"], EncodeOptions(visual_share=0.3))
    assert shared.sdr == encoder.encode(photos["chelsea"], EncodeOptions(visual_share=0.3)).sdr  # deterministic
    assert plain.visual is not None and shared.visual == plain.visual
    bits, semantic, visual = (set(s.positions.tolist()) for s in (shared.sdr, plain.sdr, plain.visual))
    assert shared.sdr.active == 328 and not shared.short
    assert len(bits & visual) >= round(0.3 * 328)
    assert bits <= semantic | visual  # the other places go to the semantic ranking's best bits
    assert len(bits & semantic) >= 328 - round(0.3 * 328)
    assert encoder.encode(photos["chelsea"], EncodeOptions(visual_share=1.0)).sdr == plain.visual
    denser = encoder.encode(photos["chelsea"], EncodeOptions(visual_share=1.0, sparsity=0.04))
    assert denser.sdr.active == 655 and set(plain.visual.positions.tolist()) <= set(denser.sdr.positions.tolist())


def test_visual_share_moves_a_copy_closer_to_its_original_than_to_a_look_alike(
    encoder: Encoder, photos: dict[str, bytes]
) -> None:
    mirrored = ALTERATIONS["mirror"](Image.open(io.BytesIO(photos["chelsea"])).convert("RGB"))
    gaps = []
    for share in (0.0, 0.5):
        options = EncodeOptions(visual_share=share)
        original, copy = (encoder.encode(data, options).sdr for data in (photos["chelsea"], mirrored))
        other = encoder.encode(photos["coffee"], options).sdr
        gaps.append(copy.overlap(original) - copy.overlap(other))
    assert gaps[1] > 0 and gaps[0] > 0


@pytest.mark.parametrize("share", [-0.01, 1.01, float("nan"), float("inf")])
def test_visual_share_out_of_bounds_names_the_field(encoder: Encoder, photos: dict[str, bytes], share: float) -> None:
    with pytest.raises(InvalidInputError) as info:
        encoder.encode(photos["coffee"], EncodeOptions(visual_share=share))
    assert info.value.field == "visual_share"


def test_the_configured_share_applies_and_a_request_overrides_it(
    models_dir: Path, tmp_path: Path, encoder: Encoder, photos: dict[str, bytes]
) -> None:
    shared = Encoder.from_config(Config(data_dir=tmp_path, models_dir=models_dir, sdr=SdrConfig(visual_share=0.3)))
    try:
        by_config = shared.encode(photos["coffee"])
        assert by_config.sdr == encoder.encode(photos["coffee"], EncodeOptions(visual_share=0.3)).sdr
        assert by_config.sdr != encoder.encode(photos["coffee"]).sdr
        assert (
            shared.encode(photos["coffee"], EncodeOptions(visual_share=0.0)).sdr == encoder.encode(photos["coffee"]).sdr
        )
    finally:
        shared.close()


def test_visual_off_gives_no_visual_sdr_and_refuses_a_share(
    models_dir: Path, tmp_path: Path, encoder: Encoder, photos: dict[str, bytes]
) -> None:
    config = Config(data_dir=tmp_path, models_dir=models_dir, visual=VisualConfig(enabled=False))
    off = Encoder.from_config(config)
    try:
        result = off.encode(photos["chelsea"])
        assert off.appearance is None and result.visual is None
        assert result.fingerprint == encoder.encode(photos["chelsea"]).fingerprint  # fingerprints stay
        assert result.sdr == encoder.encode(photos["chelsea"]).sdr
        with pytest.raises(InvalidInputError) as info:
            off.encode(photos["chelsea"], EncodeOptions(visual_share=0.2))
        assert info.value.field == "visual_share"
    finally:
        off.close()


class _OtherProvider:
    """A remote-like concept provider: fixed concepts, full-size images (as Clarifai gets them)."""

    name, model, version, input_side, max_batch = "other", "fixed", "1", None, 16

    def concepts(self, images: Sequence[DecodedImage], max_concepts: int, min_confidence: float) -> list[ConceptResult]:
        return [[Concept("cat", 0.9)] for _ in images]


def test_another_concept_provider_still_gets_the_local_visual_sdr(
    config: Config, encoder: Encoder, photos: dict[str, bytes]
) -> None:
    appearance = Appearance(LocalConceptSource(config.models_dir, config.concepts.local), config.visual, config.sdr)
    terms = LocalTermSource(config.models_dir, config.terms.local, config.sdr)
    other = Encoder(config, _OtherProvider(), terms, appearance)
    try:
        for name in ("chelsea", "coffee"):  # small enough that the local provider decodes them in full too
            result = other.encode(photos[name])
            assert [c.name for c in result.concepts] == ["cat"]
            assert result.visual == encoder.encode(photos[name]).visual
    finally:
        other.close()


def test_a_remote_concept_provider_without_local_models_says_how_to_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLARIFAI_PAT", "not-used")
    remote = ConceptsConfig(provider="clarifai", clarifai=ClarifaiConceptsConfig(endpoint="127.0.0.1:9", tls=False))
    config = Config(data_dir=tmp_path / "data", models_dir=tmp_path / "no-models", concepts=remote)
    with pytest.raises(ModelsMissingError, match=r"make models.*visual\.enabled: false"):
        Encoder.from_config(config)


def test_ranking_is_strongest_first_and_ties_go_to_the_lower_index() -> None:
    activations = np.array([[0.5, 2.0, 1.0, 2.0, -1.0, 1.0 + 1e-9]])
    assert ranked_winners(activations, 4).tolist() == [[1, 3, 2, 5]]  # 1e-9 is below the grid: a tie


def test_the_projection_is_fixed_by_its_seed() -> None:
    vectors = np.random.default_rng(3).random((5, 1280)).astype(np.float32)
    first = VisualProjection(seed=7, inputs=1280, size=16384, active=328).rank(vectors)
    again = VisualProjection(seed=7, inputs=1280, size=16384, active=328).rank(vectors)
    other = VisualProjection(seed=8, inputs=1280, size=16384, active=328).rank(vectors)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    longer = VisualProjection(seed=7, inputs=1280, size=16384, active=328).rank(vectors, 400)
    assert np.array_equal(longer[:, :328], first)  # a longer ranking starts with the same bits


def test_the_version_names_the_projection_its_seed_and_the_classifier(encoder: Encoder) -> None:
    appearance = encoder.appearance
    assert appearance is not None
    assert f"visual={VARIANT}" in appearance.version and "seed=20261201" in appearance.version
    assert isinstance(encoder.concept_source, LocalConceptSource)
    assert appearance.version.endswith(f"features={encoder.concept_source.feature_version}")
    assert encoder.concept_source.feature_version.startswith("onnx=")  # the classifier file's hash
