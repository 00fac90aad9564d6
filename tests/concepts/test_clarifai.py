"""The Clarifai concept provider against a real gRPC server speaking clarifai_grpc's V2 API,
and the image2sdr service configured to use it, end to end."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2

from image2sdr.server.concepts.base import ConceptSource
from image2sdr.server.concepts.clarifai import ClarifaiConceptSource, clarifai_channel_for
from image2sdr.server.config import (
    ClarifaiConceptsConfig,
    ConceptsConfig,
    ImageConfig,
)
from image2sdr.server.errors import ConfigError, ImageDecodeError, UpstreamError
from image2sdr.server.imaging import DecodedImage, decode_image
from image2sdr.server.merge import Merger, WeightedSdr
from image2sdr.server.serve import Server
from image2sdr.server.upstream import RateLimiter, Secret, read_key
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
from tests.helpers.upstreams import FakeClarifai, FakeProxy, digest

TIMEOUT = 60
KEY_ENV = "IMAGE2SDR_TEST_CLARIFAI_KEY"

# What the fake answers for the photos (values exact in float32).
CHELSEA = [("cat", 0.96875), ("no person", 0.9375), ("hard hat", 0.5), ("animal", 0.875), ("whiskers", 0.25)]
COFFEE = [("coffee", 0.984375), ("cup", 0.90625), ("no people", 0.75), ("drink", 0.6875)]


@pytest.fixture(scope="module")
def key() -> str:
    return secrets.token_hex(16)  # obviously fake, made for this run


@pytest.fixture(scope="module")
def fake(key: str) -> Iterator[FakeClarifai]:
    with clarifai_running(key) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh(fake: FakeClarifai, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.reset()
    without_proxies(monkeypatch)


def settings(fake: FakeClarifai, **overrides: object) -> ClarifaiConceptsConfig:
    return clarifai_settings(fake, KEY_ENV, **overrides)


@pytest.fixture
def source(fake: FakeClarifai, key: str) -> Iterator[ClarifaiConceptSource]:
    source = ClarifaiConceptSource(settings(fake), Secret(key))
    yield source
    source.close()


@pytest.fixture(scope="module")
def images(photos: dict[str, bytes]) -> dict[str, DecodedImage]:
    return {name: decode_image(data, ImageConfig(), 64) for name, data in photos.items()}


def answer(fake: FakeClarifai, photos: dict[str, bytes]) -> None:
    fake.answers[digest(photos["chelsea"])] = list(CHELSEA)
    fake.answers[digest(photos["coffee"])] = list(COFFEE)


# -- the provider --------------------------------------------------------------------------


def test_concepts_and_the_request_clarifai_sees(
    source: ClarifaiConceptSource,
    fake: FakeClarifai,
    images: dict[str, DecodedImage],
    photos: dict[str, bytes],
    key: str,
) -> None:
    answer(fake, photos)
    assert isinstance(source, ConceptSource)
    cat, coffee = source.concepts([images["chelsea"], images["coffee"]], max_concepts=4, min_confidence=0.3)
    assert not isinstance(cat, Exception) and not isinstance(coffee, Exception)
    assert [(c.name, c.confidence) for c in cat] == [
        ("cat", 0.96875),
        ("no person", 0.9375),
        ("animal", 0.875),
        ("hard hat", 0.5),
    ]
    assert [c.name for c in coffee] == ["coffee", "cup", "no people", "drink"]
    (call,) = fake.calls
    assert call.metadata["authorization"] == f"Key {key}"
    request = call.request
    assert (request.user_app_id.user_id, request.user_app_id.app_id) == ("clarifai", "main")
    assert (request.model_id, request.version_id) == ("general-image-recognition", "aa7f35c01e0642fda5cf400f543e7c40")
    output_config = request.model.output_info.output_config
    assert output_config.max_concepts == 4 and output_config.min_value == pytest.approx(0.3)
    assert [item.data.image.base64 for item in request.inputs] == [
        photos["chelsea"],
        photos["coffee"],
    ]  # original bytes


def test_batches_hold_at_most_max_batch_images(
    fake: FakeClarifai, key: str, images: dict[str, DecodedImage], photos: dict[str, bytes]
) -> None:
    answer(fake, photos)
    source = ClarifaiConceptSource(settings(fake, max_batch=2), Secret(key))
    try:
        batch = [images[name] for name in ("chelsea", "coffee", "astronaut", "chelsea", "coffee")]
        results = source.concepts(batch, 10, 0.0)
    finally:
        source.close()
    assert [len(call.request.inputs) for call in fake.calls] == [2, 2, 1]
    names = [result[0].name for result in results if not isinstance(result, Exception)]
    assert names == ["cat", "coffee", "thing", "cat", "coffee"]  # order kept across requests


def test_mixed_status_fails_only_its_own_item(
    source: ClarifaiConceptSource, fake: FakeClarifai, images: dict[str, DecodedImage], photos: dict[str, bytes]
) -> None:
    answer(fake, photos)
    fake.failing.add(digest(photos["coffee"]))
    cat, coffee, rocket = source.concepts([images["chelsea"], images["coffee"], images["rocket"]], 10, 0.0)
    assert isinstance(coffee, ImageDecodeError) and "MP_IMAGE_DECODE_ERROR" in str(coffee)
    assert not isinstance(cat, Exception) and cat[0].name == "cat"
    assert not isinstance(rocket, Exception) and rocket[0].name == "thing"
    assert len(fake.calls) == 1  # an in-band failure is not retried


def test_every_input_failing_is_answered_per_image_not_as_an_outage(
    source: ClarifaiConceptSource, fake: FakeClarifai, images: dict[str, DecodedImage], photos: dict[str, bytes]
) -> None:
    fake.failing.add(digest(photos["coffee"]))
    (coffee,) = source.concepts([images["coffee"]], 10, 0.0)  # top-level FAILURE, one failed output
    assert isinstance(coffee, ImageDecodeError)  # INVALID_ARGUMENT for the caller, not UNAVAILABLE
    assert len(fake.calls) == 1


def test_multi_word_and_negative_concepts_pass_through(
    source: ClarifaiConceptSource, fake: FakeClarifai, images: dict[str, DecodedImage], photos: dict[str, bytes]
) -> None:
    fake.answers[digest(photos["chelsea"])] = [("No  Person", 0.75), ("Hard Hat", 0.5), ("", 0.25)]
    (found,) = source.concepts([images["chelsea"]], 10, 0.0)
    assert not isinstance(found, Exception)
    # Lower-cased and single-spaced, nothing dropped: an unnamed concept falls back to its id.
    assert [c.name for c in found] == ["no person", "hard hat", "ai_"]


def test_throttling_and_unavailable_are_retried(
    source: ClarifaiConceptSource,
    fake: FakeClarifai,
    images: dict[str, DecodedImage],
    photos: dict[str, bytes],
    *,
    caplog: pytest.LogCaptureFixture,
    key: str,
) -> None:
    answer(fake, photos)
    fake.script.extend(["throttled", "unavailable", "throttled"])
    with caplog.at_level(logging.DEBUG):
        (found,) = source.concepts([images["chelsea"]], 10, 0.0)
    assert not isinstance(found, Exception) and found[0].name == "cat"
    assert len(fake.calls) == 4
    assert "CONN_THROTTLED" in caplog.text and "UNAVAILABLE" in caplog.text
    assert key not in caplog.text


def test_a_slow_answer_times_out_and_is_retried(fake: FakeClarifai, key: str, images: dict[str, DecodedImage]) -> None:
    fake.slow_s = 0.6
    fake.script.append("slow")
    source = ClarifaiConceptSource(settings(fake, timeout_s=0.2, retry_total_s=3.0), Secret(key))
    try:
        started = time.monotonic()
        (found,) = source.concepts([images["chelsea"]], 10, 0.0)
    finally:
        source.close()
    assert not isinstance(found, Exception)
    assert len(fake.calls) == 2 and time.monotonic() - started < 0.6 + 1.0


def test_retries_stop_within_the_budget(
    fake: FakeClarifai, key: str, images: dict[str, DecodedImage], caplog: pytest.LogCaptureFixture
) -> None:
    fake.always = "unavailable"
    source = ClarifaiConceptSource(settings(fake, retry_total_s=0.5, backoff_s=0.05), Secret(key))
    try:
        started = time.monotonic()
        with caplog.at_level(logging.DEBUG):
            results = source.concepts([images["chelsea"], images["coffee"]], 10, 0.0)
        elapsed = time.monotonic() - started
    finally:
        source.close()
    assert elapsed < 0.5 + 0.5
    assert len(fake.calls) >= 2  # retried, and then gave up
    for result in results:  # every image of the failed request gets the error, in-band
        assert isinstance(result, UpstreamError)
        assert "Clarifai unavailable" in str(result) and "gave up after" in str(result)
        assert key not in str(result) and key not in repr(result)
    assert key not in caplog.text


def test_a_refused_key_is_not_retried(fake: FakeClarifai, images: dict[str, DecodedImage]) -> None:
    wrong = secrets.token_hex(16)
    source = ClarifaiConceptSource(settings(fake), Secret(wrong))
    try:
        (result,) = source.concepts([images["chelsea"]], 10, 0.0)
    finally:
        source.close()
    assert isinstance(result, UpstreamError)
    assert "refused the API key" in str(result) and "concepts.clarifai.api_key_env" in str(result)
    assert wrong not in str(result)
    assert len(fake.calls) == 1


def test_the_key_comes_from_the_environment_and_never_prints(
    monkeypatch: pytest.MonkeyPatch, fake: FakeClarifai, key: str
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=KEY_ENV) as missing:
        ClarifaiConceptSource.from_config(settings(fake))
    assert "not set" in str(missing.value)
    monkeypatch.setenv(KEY_ENV, key)
    source = ClarifaiConceptSource.from_config(settings(fake))
    try:
        assert key not in repr(source) and key not in str(vars(source).get("_key"))
        assert "general-image-recognition" in source.model
    finally:
        source.close()
    assert str(Secret(key)) == repr(Secret(key)) == "Secret('***')"
    # A key pasted where the variable name belongs is refused without being quoted.
    with pytest.raises(ValueError) as pasted:
        settings(fake, api_key_env=f"sk-{key}")
    assert key not in str(pasted.value)
    monkeypatch.setenv("lowercase_name", "")
    with pytest.raises(ConfigError) as unprintable:
        read_key("lowercase_name", "concepts.clarifai.api_key_env")
    assert "lowercase_name" not in str(unprintable.value)


def test_rate_limit_spaces_requests_and_bounds_the_queue() -> None:
    limiter = RateLimiter(20.0)
    started = time.monotonic()
    for _ in range(6):
        assert limiter.acquire(started + 10)
    assert time.monotonic() - started >= 5 / 20 - 0.01
    # A caller whose turn would come after its deadline is turned away at once.
    slow = RateLimiter(1.0)
    assert slow.acquire(time.monotonic() + 5)
    refused_at = time.monotonic()
    assert not slow.acquire(time.monotonic() + 0.2)
    assert time.monotonic() - refused_at < 0.1


def test_rate_limit_applies_to_clarifai_calls(fake: FakeClarifai, key: str, images: dict[str, DecodedImage]) -> None:
    source = ClarifaiConceptSource(settings(fake, rate_per_s=10.0, max_batch=1), Secret(key))
    try:
        started = time.monotonic()
        source.concepts([images["chelsea"]] * 4, 10, 0.0)
    finally:
        source.close()
    assert len(fake.calls) == 4 and time.monotonic() - started >= 3 / 10 - 0.01


def test_explicit_proxy_setting(fake: FakeClarifai, key: str, images: dict[str, DecodedImage]) -> None:
    proxy = FakeProxy()
    try:
        source = ClarifaiConceptSource(settings(fake, proxy=proxy.url), Secret(key))
        try:
            (found,) = source.concepts([images["chelsea"]], 10, 0.0)
        finally:
            source.close()
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert not isinstance(found, Exception)
    assert proxy.seen == [f"CONNECT 127.0.0.1:{fake.port} HTTP/1.1"]  # type: ignore[attr-defined]


def test_proxy_from_the_environment(
    fake: FakeClarifai, key: str, images: dict[str, DecodedImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = FakeProxy()
    monkeypatch.setenv("grpc_proxy", proxy.url)
    monkeypatch.delenv("no_grpc_proxy", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        channel = clarifai_channel_for(settings(fake))
        source = ClarifaiConceptSource(settings(fake), Secret(key), channel=channel)
        try:
            (found,) = source.concepts([images["chelsea"]], 10, 0.0)
        finally:
            channel.close()
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert not isinstance(found, Exception)
    assert len(proxy.seen) == 1 and proxy.seen[0].startswith("CONNECT 127.0.0.1:")


# -- end to end: the image2sdr service with concepts.provider = clarifai --------------------


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, fake: FakeClarifai, key: str
) -> Iterator[Server]:
    concepts = ConceptsConfig(provider="clarifai", clarifai=settings(fake))
    config = provider_config(tmp_path_factory.mktemp("clarifai-service"), models_dir, concepts=concepts)
    with provider_service(config, {KEY_ENV: key}) as server:
        yield server


@pytest.fixture(scope="module")
def stub(service: Server) -> Iterator[pb_grpc.Image2SdrStub]:
    with grpc.insecure_channel(service.address) as channel:
        yield pb_grpc.Image2SdrStub(channel)


def predicted(service: Server, concepts: list[tuple[str, float]], max_concepts: int = 10) -> list[int]:
    """The SDR the merge rules give for these Clarifai concepts, with the service's own term SDRs."""
    encoder = service.encoder
    kept = sorted(concepts, key=lambda pair: -pair[1])[:max_concepts]
    config = encoder.config.sdr
    merger = Merger(
        config.size, config.dimensions, config.tie_break_seed, config.normalization, config.confidence_power
    )
    weighted = [(name, merger.concept_weight(value)) for name, value in kept]
    signed = [(name[3:], -weight) if name.startswith("no ") else (name, weight) for name, weight in weighted]
    sdrs = encoder.term_source.term_sdrs([term for term, _ in signed])
    merged = merger.merge(
        [WeightedSdr(sdr, weight) for sdr, (_, weight) in zip(sdrs, signed, strict=True) if sdr is not None],
        config.active_bits,
    )
    return merged.sdr.positions.tolist()


def test_encode_gives_the_sdr_the_merge_predicts(
    stub: pb_grpc.Image2SdrStub, service: Server, fake: FakeClarifai, photos: dict[str, bytes], key: str
) -> None:
    answer(fake, photos)
    response = stub.Encode(pb.EncodeRequest(image=photos["chelsea"]), timeout=TIMEOUT)
    assert list(response.sdr.active) == predicted(service, CHELSEA)
    assert [(c.name, c.confidence, c.used) for c in response.concepts] == [
        ("cat", 0.96875, True),
        ("no person", 0.9375, True),  # merged as "person" with a negative weight
        ("animal", 0.875, True),
        ("hard hat", 0.5, True),  # a multi-word concept is a term of its own
        ("whiskers", 0.25, True),
    ]
    (call,) = fake.calls
    assert call.request.model.output_info.output_config.max_concepts == 50  # ours, not Clarifai's 20
    assert call.metadata["authorization"] == f"Key {key}"
    # The "person" bits are held down: none of them wins unless another concept supports it.
    person = set(service.encoder.term_source.term_sdrs(["person"])[0].positions.tolist())  # type: ignore[union-attr]
    others = set().union(
        *(
            set(s.positions.tolist())
            for s in service.encoder.term_source.term_sdrs(["cat", "animal", "hard hat", "whiskers"])
            if s
        )
    )
    assert not (set(response.sdr.active) & (person - others))


def test_stream_batches_and_reports_failures_in_band(
    stub: pb_grpc.Image2SdrStub, service: Server, fake: FakeClarifai, photos: dict[str, bytes]
) -> None:
    answer(fake, photos)
    fake.failing.add(digest(photos["astronaut"]))
    names = ["chelsea", "coffee", "astronaut", "coffee", "chelsea", "rocket"]
    requests = [pb.EncodeRequest(image=photos[name], request_id=f"{i}-{name}") for i, name in enumerate(names)]
    fake.script.append("throttled")  # the first request is throttled once, then answered
    responses = list(stub.EncodeStream(iter(requests), timeout=TIMEOUT))
    assert [r.request_id for r in responses] == [r.request_id for r in requests]
    expected = {"chelsea": predicted(service, CHELSEA), "coffee": predicted(service, COFFEE)}
    for name, response in zip(names, responses, strict=True):
        if name == "astronaut":
            assert response.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert "Clarifai could not read this image" in response.error.message
        elif name in expected:
            assert list(response.sdr.active) == expected[name]
        else:
            assert not response.HasField("error") and response.concepts[0].name == "thing"
    assert sum(len(call.request.inputs) for call in fake.calls) >= len(names)
    assert max(len(call.request.inputs) for call in fake.calls) > 1  # a stream's images travel together


def test_upstream_down_gives_unavailable_and_the_service_recovers(
    stub: pb_grpc.Image2SdrStub,
    service: Server,
    fake: FakeClarifai,
    photos: dict[str, bytes],
    *,
    key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    answer(fake, photos)
    fake.always = "unavailable"
    with caplog.at_level(logging.DEBUG), pytest.raises(grpc.RpcError) as failed:
        stub.Encode(pb.EncodeRequest(image=photos["chelsea"]), timeout=TIMEOUT)
    error = failed.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "Clarifai unavailable" in error.details() and "gave up after" in error.details()
    retry = error_details_pb2.RetryInfo()
    status = next(value for name, value in error.trailing_metadata() if name == "grpc-status-details-bin")
    assert key not in error.details() and key.encode() not in status
    assert status_pb2.Status.FromString(status).details[0].Unpack(retry)
    # A stream keeps going: every item reports UNAVAILABLE in-band.
    responses = list(
        stub.EncodeStream(iter([pb.EncodeRequest(image=photos["coffee"], request_id="s")] * 2), timeout=TIMEOUT)
    )
    assert [r.error.code for r in responses] == [grpc.StatusCode.UNAVAILABLE.value[0]] * 2
    assert key not in caplog.text
    assert serving(service.address)
    fake.always = "ok"
    response = stub.Encode(pb.EncodeRequest(image=photos["chelsea"]), timeout=TIMEOUT)
    assert list(response.sdr.active) == predicted(service, CHELSEA)


def test_info_reports_clarifai_without_the_key(stub: pb_grpc.Image2SdrStub, key: str) -> None:
    info = stub.Info(pb.InfoRequest(), timeout=TIMEOUT)
    assert info.concepts.name == "clarifai"
    assert info.concepts.model == "clarifai/main/general-image-recognition@aa7f35c01e0642fda5cf400f543e7c40"
    assert info.terms.name == "local"
    assert key.encode() not in info.SerializeToString()


def test_same_image_same_sdr(stub: pb_grpc.Image2SdrStub, fake: FakeClarifai, photos: dict[str, bytes]) -> None:
    answer(fake, photos)
    first = stub.Encode(pb.EncodeRequest(image=photos["coffee"]), timeout=TIMEOUT)
    second = stub.Encode(pb.EncodeRequest(image=photos["coffee"]), timeout=TIMEOUT)
    assert list(first.sdr.active) == list(second.sdr.active)
    assert np.all(np.diff(np.asarray(first.sdr.active)) > 0)
