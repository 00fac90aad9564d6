"""Explanations' core without a socket: the patch grid, variants, heatmaps from known scores, the overlay."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from image2sdr.server.concepts.local import LocalConceptSource
from image2sdr.server.config import Config, ExplainConfig, LocalConceptsConfig
from image2sdr.server.errors import DeadlineExceededError, InvalidInputError
from image2sdr.server.explain import (
    MAX_CELLS,
    WORK_PIXELS,
    WORK_SIDE,
    ConceptTarget,
    explain,
    heatmap,
    occluded,
    plan_grid,
    render,
    sends_bytes,
    working_image,
    working_size,
)
from image2sdr.server.imaging import DecodedImage, decode_image

DEFAULTS = ExplainConfig()


def test_default_grid_is_a_share_of_the_shorter_side() -> None:
    grid = plan_grid(400, 200, DEFAULTS, None, None)
    assert grid.patch == 50  # 0.25 x 200
    assert grid.stride == 25  # 0.5 x 50
    assert grid.xs == tuple(range(0, 351, 25))
    assert grid.ys == tuple(range(0, 151, 25))
    assert (grid.columns, grid.rows) == (16, 8)
    assert grid.variants == 15 * 7


def test_the_last_patch_ends_at_the_border() -> None:
    grid = plan_grid(103, 100, DEFAULTS, 40, 30)
    assert grid.xs == (0, 30, 60, 63)
    assert grid.ys == (0, 30, 60)
    assert (grid.columns, grid.rows) == (4, 4)


@pytest.mark.parametrize(
    ("patch", "stride", "field"),
    [(101, None, "patch"), (0, None, "patch"), (10, 0, "stride"), (10, 11, "stride")],
)
def test_bad_sizes_name_their_field(patch: int, stride: int | None, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        plan_grid(200, 100, DEFAULTS, patch, stride)
    assert caught.value.field == field


def test_too_many_variants_names_the_field_that_made_them() -> None:
    config = ExplainConfig(max_variants=100)
    with pytest.raises(InvalidInputError, match="max_variants") as caught:
        plan_grid(200, 200, config, 20, 5)
    assert caught.value.field == "stride"
    with pytest.raises(InvalidInputError) as caught:
        plan_grid(200, 200, config, 4, None)
    assert caught.value.field == "patch"


def test_a_panorama_at_the_default_patch_names_the_image_not_the_stride() -> None:
    # 20:1 at the default shares: 159 x 7 patches, over max_variants; no size was set to blame.
    with pytest.raises(InvalidInputError, match="larger patch") as caught:
        plan_grid(20_000, 1000, DEFAULTS, None, None)
    assert caught.value.field == "image"
    assert "20000x1000" in str(caught.value)
    assert plan_grid(20_000, 1000, DEFAULTS, 1000, None).variants <= DEFAULTS.max_variants  # the way out it names


def test_too_many_cells_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="cells") as caught:
        plan_grid(2000, 1000, ExplainConfig(max_variants=100_000), 990, 3)
    assert caught.value.field == "stride"
    assert MAX_CELLS < 2000 * 1000 // 9


def test_variants_hide_exactly_their_patch() -> None:
    image = Image.new("RGB", (100, 60), (10, 200, 30))
    grid = plan_grid(100, 60, DEFAULTS, 20, 10)
    first, last = occluded(image, grid, [0, grid.variants - 1], fill=128)
    pixels = np.asarray(first)
    assert (pixels[:20, :20] == 128).all()
    assert (pixels[20:, :] == (10, 200, 30)).all()
    assert (np.asarray(last)[40:, 80:] == 128).all()
    assert np.asarray(image).max() == 200  # the original is left as it was


def test_variants_scale_to_a_reduced_decode() -> None:
    small = Image.new("RGB", (50, 30), (0, 0, 0))
    grid = plan_grid(100, 60, DEFAULTS, 20, 10)  # planned on the image as sent, twice the size
    (hidden,) = occluded(small, grid, [grid.variants - 1], fill=200)
    pixels = np.asarray(hidden)[..., 0]
    assert (pixels[20:, 40:] == 200).all()
    assert int((pixels == 200).sum()) == 10 * 10


def test_heatmap_is_the_mean_fall_over_covering_patches() -> None:
    grid = plan_grid(40, 40, DEFAULTS, 20, 10)  # 3 x 3 patches, 4 x 4 cells
    falls = np.zeros((3, 3))
    falls[0, 0] = 0.9  # only the top-left patch matters
    heat = heatmap(grid, 1.0, 1.0 - falls.ravel())
    assert heat.shape == (4, 4)
    assert heat[0, 0] == pytest.approx(0.9)  # covered by patch (0, 0) alone
    assert heat[0, 1] == pytest.approx(0.45)  # by (0, 0) and (0, 1)
    assert heat[1, 1] == pytest.approx(0.9 / 4)  # by four patches
    assert heat[3, 3] == pytest.approx(0.0)


def test_heatmap_of_a_uniform_fall_is_uniform_and_rises_are_negative() -> None:
    grid = plan_grid(103, 77, DEFAULTS, 30, 20)  # patches not aligned with the border
    heat = heatmap(grid, 0.5, np.full(grid.variants, 0.7))
    assert heat.shape == (grid.rows, grid.columns)
    assert np.allclose(heat, -0.2)


def test_heatmap_checks_the_count() -> None:
    grid = plan_grid(40, 40, DEFAULTS, 20, 10)
    with pytest.raises(ValueError, match="variants"):
        heatmap(grid, 1.0, np.zeros(4))


def test_overlay_is_a_png_of_the_image_coloured_where_the_score_fell() -> None:
    image = Image.new("RGB", (80, 40), (128, 128, 128))
    heat = np.array([[1.0, 0.0], [-0.5, 0.0]], dtype=np.float32)
    png = render(image, heat)
    with Image.open(io.BytesIO(png)) as shown:
        assert shown.format == "PNG"
        assert shown.size == (80, 40)
        pixels = np.asarray(shown.convert("RGB")).astype(int)
    assert abs(pixels[2, 2] - 128).max() > 20  # the hot corner is coloured
    assert abs(pixels[38, 78] - 128).max() <= 1  # no fall: the photo as it is
    assert abs(pixels[38, 2] - 128).max() <= 1  # a rise is not coloured either


def test_overlay_of_no_fall_anywhere_is_the_image() -> None:
    image = Image.new("RGB", (30, 20), (10, 20, 30))
    with Image.open(io.BytesIO(render(image, np.zeros((2, 3), dtype=np.float32)))) as shown:
        assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(image))


def test_working_image_is_bounded_never_enlarged() -> None:
    assert working_image(Image.new("RGB", (2000, 1000))).size == (2 * WORK_SIDE, WORK_SIDE)
    assert working_image(Image.new("RGB", (300, 200))).size == (300, 200)


@pytest.mark.parametrize("size", [(500, 100_000), (100_000, 500), (200, 40_000), (7000, 7000), (4096, 1024)])
def test_the_working_copy_is_bounded_whatever_the_aspect_ratio(size: tuple[int, int]) -> None:
    width, height = working_size(*size)
    assert width * height <= WORK_PIXELS
    assert min(width, height) <= WORK_SIDE
    assert abs(width / height - size[0] / size[1]) / (size[0] / size[1]) < 0.02  # the shape is kept
    assert working_size(300, 200) == (300, 200)  # never enlarged


def test_a_long_thin_image_is_explained_on_a_bounded_copy() -> None:
    # 1:200, as a 500 x 100000 strip (within image.max_pixels) with patch = stride = 500: 200 variants.
    image = Image.new("RGB", (200, 40_000), (255, 255, 255))
    decoded = DecodedImage(data=b"", image=image, format="PNG", width=image.width, height=image.height)
    target = _Sized(calls=[])
    grid = plan_grid(decoded.width, decoded.height, DEFAULTS, 200, 200)
    assert grid.variants == 200
    explanation = explain(decoded, target, grid, DEFAULTS.fill)
    assert sum(len(call) for call in target.calls) == 1 + grid.variants
    assert max(len(call) for call in target.calls) <= target.batch
    seen = {size for call in target.calls for size in call}
    assert seen == {working_size(200, 40_000)}
    ((width, height),) = seen
    assert width * height <= WORK_PIXELS  # each batch holds at most batch x WORK_PIXELS pixels
    assert explanation.heat.shape == (grid.rows, grid.columns)


def test_explain_stops_between_batches_once_the_caller_has_gone() -> None:
    image = Image.new("RGB", (160, 120), (255, 255, 255))
    decoded = DecodedImage(data=b"", image=image, format="PNG", width=160, height=120)
    target = _Scripted(calls=[])
    grid = plan_grid(decoded.width, decoded.height, DEFAULTS, None, None)
    asked: list[int] = []

    def stopped() -> bool:
        asked.append(len(target.calls))
        return len(target.calls) >= 3  # the base score and two batches, then the caller goes

    with pytest.raises(DeadlineExceededError, match=f"after 14 of {grid.variants}"):
        explain(decoded, target, grid, DEFAULTS.fill, stopped)
    assert target.calls == [1, 7, 7]  # no scoring call after the stop
    assert asked == [0, 1, 2, 3]
    with pytest.raises(DeadlineExceededError):  # gone before it started: not even the base score
        explain(decoded, _Scripted(calls=[]), grid, DEFAULTS.fill, lambda: True)


@dataclass
class _Sized:
    """A target that records the size of every image it is given, call by call."""

    calls: list[list[tuple[int, int]]]
    name: str = "sizes"
    batch: int = 16
    needs_bytes: bool = False

    def scores(self, images: Sequence[DecodedImage]) -> npt.NDArray[np.float64]:
        self.calls.append([image.image.size for image in images])
        return np.zeros(len(images))


@dataclass
class _Scripted:
    """A target that scores the mean brightness of the top-left quarter: the hot region is known."""

    calls: list[int]
    name: str = "top-left"
    batch: int = 7
    needs_bytes: bool = True

    def scores(self, images: Sequence[DecodedImage]) -> npt.NDArray[np.float64]:
        self.calls.append(len(images))
        assert all(image.data.startswith(b"\x89PNG") for image in images)
        values = []
        for image in images:
            pixels = np.asarray(image.image, dtype=np.float64)
            h, w = pixels.shape[:2]
            values.append(pixels[: h // 4, : w // 4].mean() / 255)
        return np.array(values)


def test_explain_finds_the_region_a_black_box_looks_at() -> None:
    image = Image.new("RGB", (160, 120), (255, 255, 255))
    decoded = DecodedImage(data=b"", image=image, format="PNG", width=160, height=120)
    target = _Scripted(calls=[])
    explanation = explain(
        decoded, target, plan_grid(decoded.width, decoded.height, DEFAULTS, None, None), DEFAULTS.fill
    )
    grid = explanation.grid
    assert explanation.score == pytest.approx(1.0)
    assert max(target.calls) <= 7  # in batches of the target's size
    assert sum(target.calls) == 1 + grid.variants
    hottest = np.unravel_index(int(np.argmax(explanation.heat)), explanation.heat.shape)
    assert hottest[0] < grid.rows // 3
    assert hottest[1] < grid.columns // 3
    assert explanation.heat[-1, -1] == pytest.approx(0.0)
    assert explanation.png.startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def classifier(models_dir: Path) -> LocalConceptSource:
    return LocalConceptSource(models_dir, LocalConceptsConfig())


def test_a_concept_the_image_lacks_is_refused_naming_what_it_has(
    classifier: LocalConceptSource, photos: dict[str, bytes]
) -> None:
    decoded = decode_image(photos["chelsea"], Config().image, classifier.input_side)
    with pytest.raises(InvalidInputError, match="cat") as caught:
        ConceptTarget.checked(classifier, "rocket", decoded, 10, 0.0)
    assert caught.value.field == "concept"
    assert ConceptTarget.checked(classifier, " Cat ", decoded, 10, 0.0).name == "cat"
    assert not sends_bytes(classifier)


def test_occluding_the_hottest_region_costs_more_than_the_coldest(
    classifier: LocalConceptSource, photos: dict[str, bytes]
) -> None:
    decoded = decode_image(photos["chelsea"], Config().image, classifier.input_side)
    target = ConceptTarget.checked(classifier, "cat", decoded, 10, 0.0)
    explanation = explain(
        decoded, target, plan_grid(decoded.width, decoded.height, DEFAULTS, None, None), DEFAULTS.fill
    )
    grid, heat = explanation.grid, explanation.heat
    assert heat.shape == (grid.rows, grid.columns)
    # Hide a patch over the hottest and over the coldest cell, on the image as classified.
    work = working_image(decoded.image)
    boxes = grid.boxes()
    centres = [((left + right) / 2, (top + bottom) / 2) for left, top, right, bottom in boxes]

    def nearest(row: int, column: int) -> int:
        x, y = (column + 0.5) * grid.stride, (row + 0.5) * grid.stride
        return int(np.argmin([(cx - x) ** 2 + (cy - y) ** 2 for cx, cy in centres]))

    hot = nearest(*np.unravel_index(int(np.argmax(heat)), heat.shape))
    cold = nearest(*np.unravel_index(int(np.argmin(heat)), heat.shape))
    hidden = [
        DecodedImage(b"", image, "PNG", image.width, image.height)
        for image in occluded(work, grid, [hot, cold], DEFAULTS.fill)
    ]
    hot_score, cold_score = target.scores(hidden)
    assert explanation.score - hot_score > explanation.score - cold_score
