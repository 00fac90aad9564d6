"""Explain with a remote concept source: the real gRPC service, ``concepts.provider: clarifai``,
pointed at the fake Clarifai server (clarifai_grpc's own V2 protocol, loopback, port 0).

The fake reads the pixels of every image it is sent: the concept "red square" is
worth the share of a 12 x 12 red square still visible.  So the right heatmap is
known exactly, and what reaches Clarifai (PNG bytes of occluded images, a batch
per call) can be looked at call by call.
"""

from __future__ import annotations

import io
import logging
import math
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from image2sdr.server.config import (
    ConceptsConfig,
    ExplainConfig,
)
from image2sdr.server.explain import WIDE, heatmap, plan_grid
from image2sdr.server.serve import Server
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.providers import (
    clarifai_running,
    clarifai_settings,
    provider_config,
    provider_service,
    without_proxies,
)
from tests.helpers.servers import serving
from tests.helpers.upstreams import FakeClarifai, red_pixels

TIMEOUT = 60
KEY_ENV = "IMAGE2SDR_TEST_CLARIFAI_KEY"
CONCEPT = "red square"
BATCH = 8  # concepts.clarifai.max_batch: 36 variants travel in 5 calls
SIDE, PATCH, STRIDE = 80, 24, 12  # patches at 0, 12, ..., 48 and 56: 6 x 6 = 36 variants, 7 x 7 cells
SQUARE = (36, 24, 48, 36)  # left, top, right, bottom: cell (row 2, column 3), whose every patch hides it all
HOTTEST = (2, 3)
FILL = 128
BEFORE_BATCHES = 2  # the check that the image has the concept (the caller's bytes), then the base score


@pytest.fixture(scope="module")
def key() -> str:
    return secrets.token_hex(16)  # made for this run


@pytest.fixture(scope="module")
def fake(key: str) -> Iterator[FakeClarifai]:
    with clarifai_running(key) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh(fake: FakeClarifai, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.reset()
    fake.red_concept = (CONCEPT, area(SQUARE))
    without_proxies(monkeypatch)


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, fake: FakeClarifai, key: str
) -> Iterator[Server]:
    # timeout_s: a bound for a hung fake only, a busy machine answers slowly
    clarifai = clarifai_settings(fake, KEY_ENV, max_batch=BATCH, timeout_s=30.0, retry_total_s=0.5)
    config = provider_config(
        tmp_path_factory.mktemp("explain-clarifai"),
        models_dir,
        concepts=ConceptsConfig(provider="clarifai", clarifai=clarifai),
        explain=ExplainConfig(fill=FILL),
    )
    with provider_service(config, {KEY_ENV: key}) as server:
        yield server


@pytest.fixture(scope="module")
def stub(service: Server) -> Iterator[pb_grpc.Image2SdrStub]:
    with grpc.insecure_channel(service.address) as channel:
        yield pb_grpc.Image2SdrStub(channel)


# -- the picture and what its heatmap must be ------------------------------------------------


def area(box: tuple[int, int, int, int]) -> int:
    left, top, right, bottom = box
    return (right - left) * (bottom - top)


def picture(scale: int = 1) -> npt.NDArray[np.uint8]:
    """A textured background with no red and no patch-grey in it, and the red square."""
    side = SIDE * scale
    y, x = np.mgrid[0:side, 0:side]
    pixels = np.stack([(x * 7 + y * 3) % 90, 150 + (x * 5) % 100, 20 + (y * 11) % 90], axis=-1).astype(np.uint8)
    left, top, right, bottom = (edge * scale for edge in SQUARE)
    pixels[top:bottom, left:right] = (255, 0, 0)
    return pixels


def encoded(pixels: npt.NDArray[np.uint8], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, quality=95)
    return buffer.getvalue()


def expected_heat() -> npt.NDArray[np.float32]:
    """The fall of each patch is the share of the square it hides (base 1.0), averaged per cell."""
    grid = plan_grid(SIDE, SIDE, ExplainConfig(), PATCH, STRIDE)
    left, top, right, bottom = SQUARE
    hidden = [
        max(0, min(right, x1) - max(left, x0)) * max(0, min(bottom, y1) - max(top, y0)) / area(SQUARE)
        for x0, y0, x1, y1 in grid.boxes()
    ]
    return heatmap(grid, 1.0, 1.0 - np.asarray(hidden))


def explain(stub: pb_grpc.Image2SdrStub, data: bytes | None = None, **sizes: int) -> pb.ExplainResponse:
    request = pb.ExplainRequest(image=encoded(picture()) if data is None else data, concept=CONCEPT)
    request.patch, request.stride = sizes.get("patch", PATCH), sizes.get("stride", STRIDE)
    response: pb.ExplainResponse = stub.Explain(request, timeout=TIMEOUT)
    return response


def heat_of(response: pb.ExplainResponse) -> npt.NDArray[np.float64]:
    return np.asarray(response.heat, dtype=np.float64).reshape(response.rows, response.columns)


def hottest(heat: npt.NDArray[np.float64]) -> tuple[int, int]:
    row, column = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(row), int(column)


def decoded(data: bytes) -> tuple[str, npt.NDArray[np.uint8]]:
    with Image.open(io.BytesIO(data)) as image:
        return image.format or "", np.asarray(image.convert("RGB"))


def trailers(error: grpc.RpcError) -> bytes:
    """Every trailing metadata value of a failed call, as bytes."""
    values = (value.encode() if isinstance(value, str) else value for _, value in error.trailing_metadata() or ())
    return b"\n".join(values)


# -- the explanation ---------------------------------------------------------------------------


def test_the_heatmap_is_hottest_over_the_square_clarifai_sees(stub: pb_grpc.Image2SdrStub) -> None:
    response = explain(stub)
    assert response.target == CONCEPT and response.score == 1.0
    assert (response.patch, response.stride, response.variants) == (PATCH, STRIDE, 36)
    assert (response.rows, response.columns) == (7, 7)
    heat = heat_of(response)
    assert hottest(heat) == HOTTEST
    assert heat[HOTTEST] == pytest.approx(1.0)  # every patch over that cell hides the whole square
    assert np.sum(heat > 0.999) == 1  # and no other cell's
    np.testing.assert_allclose(heat, expected_heat(), atol=1e-5)  # every patch reached Clarifai in order
    # Away from the square nothing falls: no patch over those cells touches it.
    assert heat[:1].max() == heat[4:].max() == heat[:, :2].max() == heat[:, 5:].max() == 0.0
    assert decoded(response.png)[0] == "PNG"


def test_occluded_images_reach_clarifai_as_png_bytes_in_batches(
    stub: pb_grpc.Image2SdrStub, fake: FakeClarifai, key: str
) -> None:
    data = encoded(picture())
    response = explain(stub, data)
    variants = response.variants
    batches = math.ceil(variants / BATCH)
    assert len(fake.calls) == BEFORE_BATCHES + batches < variants
    check, base, *batched = fake.calls
    assert [item.data.image.base64 for item in check.request.inputs] == [data]  # the caller's own bytes
    assert [len(call.request.inputs) for call in batched] == [BATCH] * (batches - 1) + [
        variants - BATCH * (batches - 1)
    ]
    assert all(call.metadata["authorization"] == f"Key {key}" for call in fake.calls)
    (whole,) = base.request.inputs
    assert np.array_equal(decoded(whole.data.image.base64)[1], picture())  # lossless: the same pixels
    grid = plan_grid(SIDE, SIDE, ExplainConfig(), PATCH, STRIDE)
    sent = [item.data.image.base64 for call in batched for item in call.request.inputs]
    assert len(sent) == variants and len(set(sent)) == variants
    for data_sent, (left, top, right, bottom) in zip(sent, grid.boxes(), strict=True):
        fmt, pixels = decoded(data_sent)
        assert fmt == "PNG" and pixels.shape == (SIDE, SIDE, 3)
        grey = np.all(pixels == FILL, axis=-1)
        assert grey.sum() == PATCH * PATCH and grey[top:bottom, left:right].all()  # one patch, where planned
    for call in batched:  # a wide list at no floor: a concept that fell out of the top N scores 0
        config = call.request.model.output_info.output_config
        assert (config.max_concepts, config.min_value) == (WIDE, 0.0)


def test_a_jpeg_is_occluded_at_the_size_clarifai_would_see_it(stub: pb_grpc.Image2SdrStub, fake: FakeClarifai) -> None:
    # A JPEG decodes to Clarifai's validation side (DCT scaling) in Encode: the explanation's
    # images must still be made at the working size, not at a quarter of it.
    pixels = picture(scale=4)
    response = explain(stub, encoded(pixels, "JPEG"), patch=PATCH * 4, stride=STRIDE * 4)
    _, base, *batched = fake.calls
    (whole,) = base.request.inputs
    assert decoded(whole.data.image.base64)[1].shape == pixels.shape
    assert {decoded(item.data.image.base64)[1].shape for call in batched for item in call.request.inputs} == {
        pixels.shape
    }
    heat = heat_of(response)
    assert hottest(heat) == HOTTEST


def test_a_passing_fault_mid_explanation_is_retried_and_changes_nothing(
    stub: pb_grpc.Image2SdrStub, fake: FakeClarifai
) -> None:
    fake.script.extend(["ok", "ok", "ok", "throttled", "ok", "unavailable"])
    response = explain(stub)
    np.testing.assert_allclose(heat_of(response), expected_heat(), atol=1e-5)
    assert len(fake.calls) == BEFORE_BATCHES + math.ceil(response.variants / BATCH) + 2


# -- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["error", "unavailable", "throttled"])
def test_clarifai_failing_mid_explanation_gives_unavailable_and_the_service_goes_on(
    stub: pb_grpc.Image2SdrStub,
    service: Server,
    fake: FakeClarifai,
    fault: str,
    *,
    key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.echo_key = True  # the fake quotes the key in every error it gives
    fake.script.extend(["ok"] * (BEFORE_BATCHES + 1))  # the check, the base, the first batch
    fake.always = fault  # then every call fails: the in-band status as is, the others after the retries
    with caplog.at_level(logging.DEBUG), pytest.raises(grpc.RpcError) as failed:
        explain(stub)
    error = failed.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    details = error.details() or ""
    assert "Clarifai" in details and "Key ***" in details, details  # what it said, with the key masked
    assert key not in details and key not in caplog.text
    assert key.encode() not in trailers(error)  # google.rpc.Status details included
    failing = fake.calls[BEFORE_BATCHES + 1 :]
    assert len(failing) == 1 if fault == "error" else len(failing) > 1  # an unknown status is not retried
    second_batch = fake.calls[BEFORE_BATCHES + 1].request.inputs
    assert all(call.request.inputs == second_batch for call in failing)  # no batch after the failed one
    fake.always = "ok"
    assert serving(service.address)
    np.testing.assert_allclose(heat_of(explain(stub)), expected_heat(), atol=1e-5)


def test_a_refused_key_is_failed_precondition_without_the_key(
    stub: pb_grpc.Image2SdrStub, fake: FakeClarifai, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake.echo_key = True
    fake.key = secrets.token_hex(16)  # Clarifai no longer knows ours
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(grpc.RpcError) as failed:
            explain(stub)
    finally:
        fake.key = key
    error = failed.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error.details() or ""
    assert "refused the API key" in details
    assert "API key not found (sent: Key ***)" in details, details  # Clarifai's own words, the key masked
    assert key not in details and key not in caplog.text
    assert len(fake.calls) == 1  # refused at the check: no occluded image was sent


def test_the_fake_counts_red_pixels_from_the_bytes() -> None:
    assert red_pixels(encoded(picture())) == area(SQUARE)
    hidden = picture()
    hidden[24:36, 36:42] = FILL
    assert red_pixels(encoded(hidden)) == area(SQUARE) // 2
