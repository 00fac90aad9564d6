"""Memory per call: decoded images are held reduced, decoding shares one budget, examples go a batch at a time.

Real images (a 6 KB bilevel 7000 x 7000 PNG, a thin stripe, scikit-image photos), the
real decoder, and a real server on the session's models for what a caller sees.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from image2sdr.server.config import Config, HttpConfig, ImageConfig, ServiceConfig
from image2sdr.server.encoder import Encoding
from image2sdr.server.errors import DeadlineExceededError, ImageDecodeError, LimitExceededError, NotFoundError
from image2sdr.server.imaging import decode_budget, decode_cost, decode_image, reduce_factor
from image2sdr.server.serve import Server, create_server
from image2sdr.server.upstream import caller_deadline
from image2sdr.server.usecases.context import Deadline
from image2sdr.server.usecases.custom_concepts import DefineRequest, ExampleImage, define_concept
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.encoders import shared_encoder, with_config
from tests.helpers.hostile import thin_png
from tests.helpers.images import encode_png, sample_photo

TIMEOUT = 60
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
BUDGET_MB = 64  # the test server's decode budget: a 7000 x 7000 bilevel image needs ~234 MiB


@pytest.fixture(scope="module")
def huge() -> bytes:
    """About 6 KB on the wire, 49 MP decoded: held as RGB it was 196 MB."""
    return thin_png(7000, 7000)


# -- what a decoded image holds ---------------------------------------------------------


def test_a_huge_bilevel_png_is_held_reduced_to_the_working_pixels(huge: bytes) -> None:
    limits = ImageConfig()
    decoded = decode_image(huge, limits, draft_side=256)
    assert (decoded.width, decoded.height) == (7000, 7000)  # the original's size is still reported
    assert decoded.image.mode == "RGB"
    assert decoded.image.width * decoded.image.height <= limits.working_pixels
    assert decoded.image.size == (1400, 1400)  # a whole factor (5), the aspect ratio kept
    assert np.asarray(decoded.image).min() == 255  # white stays white


def test_a_thin_stripe_is_held_reduced_too() -> None:
    limits = ImageConfig(working_pixels=1_000_000)
    decoded = decode_image(thin_png(16, 400_000), limits)
    assert decoded.image.width * decoded.image.height <= limits.working_pixels
    assert decoded.image.size == (6, 133_334)  # a factor of 3: 5 x 133,334 would be 4 too few columns


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "RGBA", "I;16", "CMYK"])
def test_every_mode_comes_out_reduced_as_rgb(mode: str) -> None:
    buffer = io.BytesIO()
    Image.new(mode, (1200, 900)).save(buffer, "TIFF" if mode == "CMYK" else "PNG")
    decoded = decode_image(buffer.getvalue(), ImageConfig(working_pixels=300_000))
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (600, 450)


def test_the_reduce_factor_is_the_smallest_that_fits() -> None:
    assert reduce_factor(1000, 1000, 1_000_000) == 1
    assert reduce_factor(1001, 1000, 1_000_000) == 2
    assert reduce_factor(7000, 7000, 2_000_000) == 5  # 1400 x 1400 = 1.96 M; 4 would leave 3.06 M
    assert reduce_factor(16, 3_000_000, 2_000_000) == 6  # 3 x 500,000; 5 would leave 4 x 600,000


@pytest.mark.parametrize("name", PHOTOS)
def test_ordinary_photos_decode_to_the_same_pixels_as_before(name: str) -> None:
    """JPEGs at the classifier's draft size and photos as PNG are under the working pixels: untouched."""
    unreduced = ImageConfig(working_pixels=ImageConfig().max_pixels)
    jpeg = sample_photo(name)
    with Image.open(io.BytesIO(jpeg)) as opened:
        png = encode_png(np.asarray(opened.convert("RGB")))
    for data, side in ((jpeg, 256), (jpeg, None), (png, 256)):
        now = decode_image(data, ImageConfig(), side).image
        assert now.tobytes() == decode_image(data, unreduced, side).image.tobytes()


# -- the decode budget --------------------------------------------------------------------


def test_decoding_waits_for_the_budget_until_the_callers_deadline() -> None:
    limits = ImageConfig(decode_budget_mb=16)
    budget = decode_budget(limits)
    photo = sample_photo("chelsea")
    with budget.held(budget.capacity), caller_deadline(0.05), pytest.raises(DeadlineExceededError, match="budget"):
        decode_image(photo, limits, 256)
    assert budget.in_use == 0  # nothing was kept by the decode that gave up


def test_a_waiting_decode_goes_on_when_the_budget_is_given_back() -> None:
    limits = ImageConfig(decode_budget_mb=17)
    budget = decode_budget(limits)
    results: list[object] = []
    holding = budget.held(budget.capacity)
    holding.__enter__()
    worker = threading.Thread(target=lambda: results.append(decode_image(sample_photo("coffee"), limits, 256)))
    try:
        worker.start()
        assert not results  # it cannot have decoded: the whole budget is held here
    finally:
        holding.__exit__(None, None, None)
    worker.join(timeout=TIMEOUT)  # a failure bound only
    assert len(results) == 1 and not isinstance(results[0], Exception)
    assert budget.in_use == 0


def test_the_cost_is_read_from_the_header_before_any_pixel() -> None:
    assert decode_cost(7000, 7000, "1") == 7000 * 7000 * 5
    assert decode_cost(100, 100, "I;16B") == decode_cost(100, 100, "I;16")
    limits = ImageConfig(decode_budget_mb=16)
    with pytest.raises(LimitExceededError, match=r"image\.decode_budget_mb \(16\)"):
        decode_image(thin_png(4000, 4000), limits)  # 80 MB decoded, refused before decoding
    with pytest.raises(ImageDecodeError):  # a damaged file is still that, not a budget matter
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, limits)


# -- on a real server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    config = Config(
        data_dir=tmp_path_factory.mktemp("memory") / "data",
        models_dir=models_dir,
        service=ServiceConfig(port=0, shutdown_grace_s=0.5),
        http=HttpConfig(enabled=False),
        image=ImageConfig(decode_budget_mb=BUDGET_MB),
    )
    server = create_server(config, encoder=with_config(shared_encoder(models_dir), config))
    yield server
    server.stop()  # the encoder's models are the session's: nothing else is closed


@pytest.fixture(scope="module")
def stub(service: Server) -> Iterator[pb_grpc.Image2SdrStub]:
    with grpc.insecure_channel(service.address) as channel:
        yield pb_grpc.Image2SdrStub(channel)


def test_an_image_over_the_decode_budget_is_refused_naming_the_limit(stub: pb_grpc.Image2SdrStub, huge: bytes) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub.Encode(pb.EncodeRequest(image=huge), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"image.decode_budget_mb ({BUDGET_MB})" in refused.value.details()


def _peak_rss_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) >> 10
    raise AssertionError("no VmHWM in /proc/self/status")


def _rss_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) >> 10
    raise AssertionError("no VmRSS in /proc/self/status")


def test_define_concept_holds_its_examples_reduced(stub: pb_grpc.Image2SdrStub) -> None:
    """Ten 12 MP examples: held whole as RGB until the last was decoded, they took 490 MB more at the peak."""
    examples = [pb.ConceptExample(image=thin_png(3500, 3500))] * 10  # 59 MiB to decode: within the budget
    negatives = [pb.ConceptExample(image=sample_photo(name)) for name in PHOTOS[:3]]
    request = pb.DefineConceptRequest(name="white", positives=examples, negatives=negatives)
    Path("/proc/self/clear_refs").write_text("5")  # this process's peak starts again from here
    before = _rss_mib()
    stub.DefineConcept(request, timeout=TIMEOUT)
    assert _peak_rss_mib() - before < 250


def test_define_concept_encodes_its_examples_a_batch_at_a_time(service: Server) -> None:
    """A damaged example in the first batch: the images of the later batches are never decoded."""
    rng = np.random.default_rng(7)
    good = [encode_png(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)) for _ in range(19)]
    images = [*good[:3], b"not an image", *good[3:]]
    batch = service.encoder.concept_source.max_batch
    assert len(images) > batch  # the examples span two classifier batches
    encoded: list[Encoding] = []
    metrics = service.encoder.on_encoded
    service.encoder.on_encoded = encoded.append
    try:
        with pytest.raises(ImageDecodeError) as refused:
            define_concept(service.cases.parts, DefineRequest("noise", [ExampleImage(image) for image in images]))
    finally:
        service.encoder.on_encoded = metrics
    assert refused.value.field == "positives[3].image"
    assert len(encoded) == batch - 1  # the first batch's other images, none of the second's


def test_define_concept_stops_before_the_next_batch_once_its_caller_has_gone(service: Server) -> None:
    """A caller that left (or whose deadline passed) mid-definition: no further batch is encoded."""
    rng = np.random.default_rng(8)
    batch = service.encoder.concept_source.max_batch
    images = [encode_png(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)) for _ in range(batch + 3)]
    call = Deadline()
    encoded: list[Encoding] = []

    def seen(encoding: Encoding) -> None:
        encoded.append(encoding)
        call.cancel()  # the caller hangs up while its first batch is encoded

    metrics = service.encoder.on_encoded
    service.encoder.on_encoded = seen
    try:
        with pytest.raises(DeadlineExceededError):
            define_concept(service.cases.parts, DefineRequest("gone", [ExampleImage(image) for image in images]), call)
    finally:
        service.encoder.on_encoded = metrics
    assert len(encoded) == batch  # the first batch only
    with pytest.raises(NotFoundError):
        service.cases.get_concept("gone")
