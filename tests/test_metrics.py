"""Prometheus metrics: the families ``Metrics`` renders; a real server's counts move by exactly what was called."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.encoder import Encoder, Encoding, StageTimings
from image2sdr.server.metrics import STAGES, Metrics
from image2sdr.server.sdr import Sdr
from image2sdr.server.serve import SERVICE_NAME, Server, create_server
from image2sdr.server.usecases.info import SERVER_VERSION
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.encoders import with_fresh_cache

JPEG = {"content-type": "image/jpeg"}
FAMILIES = (
    "image2sdr_requests",
    "image2sdr_request_seconds",
    "image2sdr_encode_stage_seconds",
    "image2sdr_index_snapshots",
    "image2sdr_index_snapshot_seconds",
    "image2sdr_stream_items_in_flight",
    "image2sdr_build_info",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(metrics: Metrics) -> Samples:
    """Every sample of ``render()``'s text."""
    body, _ = metrics.render()
    return parse(body.decode("utf-8"))


def parse(text: str) -> Samples:
    """Every sample of Prometheus text, by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    """One sample's value, 0 when it has not been observed yet."""
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, sample_labels), v in found.items() if n == name and wanted <= sample_labels)


# -- Metrics alone ---------------------------------------------------------------


def test_render_is_prometheus_text_with_every_family() -> None:
    metrics = Metrics()
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=")  # the text format, not OpenMetrics
    names = {family.name for family in text_string_to_metric_families(body.decode("utf-8"))}
    assert set(FAMILIES) <= names


def test_observe_request_counts_by_protocol_method_and_code() -> None:
    metrics = Metrics()
    metrics.observe_request("grpc", "Encode", "OK", 0.002)
    metrics.observe_request("grpc", "Encode", "OK", 0.2)
    metrics.observe_request("http", "/v1/encode", "400", 0.004)
    found = samples(metrics)
    assert value(found, "image2sdr_requests_total", protocol="grpc", method="Encode", code="OK") == 2
    assert value(found, "image2sdr_requests_total", protocol="http", method="/v1/encode", code="400") == 1
    assert value(found, "image2sdr_request_seconds_count", protocol="grpc", method="Encode") == 2
    assert math.isclose(value(found, "image2sdr_request_seconds_sum", protocol="grpc", method="Encode"), 0.202)
    # Buckets from 1 ms to 60 s: the 2 ms call is under 2.5 ms, the 200 ms one is not.
    assert value(found, "image2sdr_request_seconds_bucket", protocol="grpc", method="Encode", le="0.0025") == 1
    assert value(found, "image2sdr_request_seconds_bucket", protocol="grpc", method="Encode", le="60.0") == 2


def test_every_stage_of_an_encoding_is_observed_in_seconds() -> None:
    metrics = Metrics()
    timings = StageTimings(decode_ms=2.0, concepts_ms=30.0, terms_ms=1.0, merge_ms=0.5, appearance_ms=4.0)
    encoding = Encoding(Sdr.from_positions([1, 2], 64), (), short=False, timings=timings)
    metrics.observe_encoding(encoding)
    metrics.observe_encoding(encoding)
    found = samples(metrics)
    for stage, ms in zip(STAGES, (2.0, 30.0, 1.0, 0.5, 4.0), strict=True):
        assert value(found, "image2sdr_encode_stage_seconds_count", stage=stage) == 2
        assert math.isclose(value(found, "image2sdr_encode_stage_seconds_sum", stage=stage), 2 * ms / 1000)


def test_snapshots_count_written_and_failed_and_time_the_written() -> None:
    metrics = Metrics()
    metrics.observe_snapshot("semantic", 0.25, written=True)
    metrics.observe_snapshot("semantic", 0.5, written=False)
    found = samples(metrics)
    assert value(found, "image2sdr_index_snapshots_total", space="semantic", result="written") == 1
    assert value(found, "image2sdr_index_snapshots_total", space="semantic", result="failed") == 1
    assert value(found, "image2sdr_index_snapshot_seconds_count", space="semantic") == 1


def test_stream_items_go_up_and_back_down() -> None:
    metrics = Metrics()
    metrics.stream_items("EncodeStream", 3)
    assert value(samples(metrics), "image2sdr_stream_items_in_flight", method="EncodeStream") == 3
    metrics.stream_items("EncodeStream", -3)
    assert value(samples(metrics), "image2sdr_stream_items_in_flight", method="EncodeStream") == 0


def test_each_metrics_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.observe_request("grpc", "Info", "OK", 0.001)
    assert value(samples(second), "image2sdr_requests_total", protocol="grpc", method="Info", code="OK") == 0


# -- a real server ----------------------------------------------------------------


def config_for(tmp_path: Path, models_dir: Path) -> Config:
    """Both ports free ones (the HTTP one too: 8080 may be taken)."""
    return Config(
        data_dir=tmp_path / "data",
        models_dir=models_dir,
        service=ServiceConfig(port=0, shutdown_grace_s=0.5),
        http=HttpConfig(port=0),
    )


@pytest.fixture
def server(tmp_path: Path, models_dir: Path, shared_encoder: Encoder) -> Iterator[Server]:
    """A server on the session's models with a term cache of its own: its first encodings miss."""
    encoder, cache = with_fresh_cache(shared_encoder, tmp_path)
    started = create_server(config_for(tmp_path, models_dir), encoder=encoder)
    try:
        yield started
    finally:
        started.stop()
        cache.close()


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_grpc_calls_move_the_counts_by_exactly_what_was_called(server: Server, photos: dict[str, bytes]) -> None:
    before = samples(server.metrics)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.Image2SdrStub(channel)
        stub.Encode(pb.EncodeRequest(image=photos["chelsea"], add_to_index=pb.AddToIndex(id="cat")), timeout=60)
        first = samples(server.metrics)
        stub.Encode(pb.EncodeRequest(image=photos["chelsea"]), timeout=60)
        second = samples(server.metrics)
        with pytest.raises(grpc.RpcError) as bad:
            stub.Encode(pb.EncodeRequest(image=b"not an image"), timeout=60)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stub.FindSimilar(pb.FindSimilarRequest(id="cat"), timeout=60)
        names = ("coffee", "astronaut", "rocket")
        stream = [pb.EncodeRequest(image=photos[n], add_to_index=pb.AddToIndex(id=n), request_id=n) for n in names]
        answers = list(stub.EncodeStream(iter(stream), timeout=120))
    assert [answer.request_id for answer in answers] == list(names)
    after = samples(server.metrics)

    def requests(method: str, code: str) -> float:
        return moved(before, after, "image2sdr_requests_total", protocol="grpc", method=method, code=code)

    assert requests("Encode", "OK") == 2
    assert requests("Encode", "INVALID_ARGUMENT") == 1
    assert requests("FindSimilar", "OK") == 1
    assert requests("EncodeStream", "OK") == 1
    assert total(after, "image2sdr_requests_total") - total(before, "image2sdr_requests_total") == 5
    for method, calls in (("Encode", 3), ("FindSimilar", 1), ("EncodeStream", 1)):
        assert moved(before, after, "image2sdr_request_seconds_count", protocol="grpc", method=method) == calls
    # Five images encoded (two by Encode, three in the stream): the bad one never was, FindSimilar by id needs none.
    for stage in STAGES:
        assert moved(before, after, "image2sdr_encode_stage_seconds_count", stage=stage) == 5
    # The second encoding of the same photo finds every term the first one asked for in the cache.
    first_misses = moved(before, first, "image2sdr_term_cache_misses_total")
    first_terms = first_misses + moved(before, first, "image2sdr_term_cache_hits_total")
    assert first_misses > 0
    assert moved(first, second, "image2sdr_term_cache_misses_total") == 0
    assert moved(first, second, "image2sdr_term_cache_hits_total") == first_terms
    for space in server.index.spaces:
        assert value(after, "image2sdr_index_items", space=space) == 4
    assert value(after, "image2sdr_stream_items_in_flight", method="EncodeStream") == 0


def test_a_stream_the_caller_cancels_counts_as_cancelled_and_leaves_nothing_in_flight(
    server: Server, photos: dict[str, bytes]
) -> None:
    release = threading.Event()

    def requests() -> Iterator[pb.EncodeRequest]:
        yield pb.EncodeRequest(image=photos["coffee"], request_id="first")
        release.wait(30)  # the stream stays open until the caller gives up

    with grpc.insecure_channel(server.address) as channel:
        call = pb_grpc.Image2SdrStub(channel).EncodeStream(requests(), timeout=60)
        assert next(call).request_id == "first"
        call.cancel()
    release.set()
    cancelled = {"protocol": "grpc", "method": "EncodeStream", "code": "CANCELLED"}
    deadline = time.monotonic() + 120  # a bound for a failure only: the count is waited for, not timed
    while value(samples(server.metrics), "image2sdr_requests_total", **cancelled) < 1:
        assert time.monotonic() < deadline, "the cancelled stream was never counted"
        time.sleep(0.05)
    found = samples(server.metrics)
    assert value(found, "image2sdr_requests_total", **cancelled) == 1
    assert value(found, "image2sdr_stream_items_in_flight", method="EncodeStream") == 0


def test_snapshots_written_at_close_are_counted_per_space(
    tmp_path: Path, models_dir: Path, photos: dict[str, bytes], shared_encoder: Encoder
) -> None:
    server = create_server(config_for(tmp_path, models_dir), encoder=shared_encoder)
    try:
        with grpc.insecure_channel(server.address) as channel:
            request = pb.EncodeRequest(image=photos["rocket"], add_to_index=pb.AddToIndex(id="rocket"))
            pb_grpc.Image2SdrStub(channel).Encode(request, timeout=60)
        assert total(samples(server.metrics), "image2sdr_index_snapshots_total") == 0  # snapshot_every is far off
    finally:
        server.stop()
    found = samples(server.metrics)
    for space in server.index.spaces:
        assert value(found, "image2sdr_index_snapshots_total", space=space, result="written") == 1
        assert value(found, "image2sdr_index_snapshot_seconds_count", space=space) == 1
    assert total(found, "image2sdr_index_snapshots_total", result="failed") == 0


def test_refusals_before_the_servicer_are_counted_too(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch, shared_encoder: Encoder
) -> None:
    monkeypatch.setenv("IMAGE2SDR_TOKEN", "a-token-for-tests")
    server = create_server(config_for(tmp_path, models_dir), encoder=shared_encoder)
    try:
        with grpc.insecure_channel(server.address) as channel:
            info = channel.unary_unary(f"/{SERVICE_NAME}/Info")
            with pytest.raises(grpc.RpcError) as refused:
                info(pb.InfoRequest().SerializeToString(), timeout=30)  # no token
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            metadata = (("authorization", "Bearer a-token-for-tests"),)
            with pytest.raises(grpc.RpcError) as malformed:
                info(b"\xff\xff not a protobuf", timeout=30, metadata=metadata)
            assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        found = samples(server.metrics)
    finally:
        server.stop()
    assert value(found, "image2sdr_requests_total", protocol="grpc", method="Info", code="UNAUTHENTICATED") == 1
    assert value(found, "image2sdr_requests_total", protocol="grpc", method="Info", code="INVALID_ARGUMENT") == 1


def test_get_metrics_over_http_counts_the_http_calls_and_leaves_grpc_alone(
    server: Server, photos: dict[str, bytes]
) -> None:
    assert server.http_port is not None
    with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=60) as http:

        def scrape() -> Samples:
            answer = http.get("/metrics")
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/plain; version=")
            return parse(answer.text)

        before = scrape()
        added = http.post("/v1/encode", params={"add": "cat"}, content=photos["chelsea"], headers=JPEG)
        assert added.status_code == 200
        refused = http.post("/v1/encode", content=b"not an image", headers={"content-type": "application/octet-stream"})
        assert refused.status_code == 400
        assert http.get("/v1/info").status_code == 200
        assert http.post("/v1/similar", json={"id": "cat"}).status_code == 200
        assert http.get("/static/app.js").status_code == 200
        assert http.get("/static/nothing-here.css").status_code == 404
        assert http.get("/v1/nowhere/at/all").status_code == 404
        assert http.get("/also-nowhere").status_code == 404
        expected = {
            ("Encode", "200"): 1,
            ("Encode", "400"): 1,
            ("Info", "200"): 1,
            ("FindSimilar", "200"): 1,
            ("static", "200"): 1,  # every file in one label, found or not
            ("static", "404"): 1,
            ("unknown", "404"): 2,  # every path no route serves in one label: bounded, whatever is asked
        }

        def requests(found: Samples, method: str, code: str) -> float:
            return moved(before, found, "image2sdr_requests_total", protocol="http", method=method, code=code)

        # A request is counted once its answer has gone, so the last one may trail the scrape a little.
        deadline, after = time.monotonic() + 120, scrape()  # a bound for a failure only
        while any(requests(after, *key) < calls for key, calls in expected.items()):
            assert time.monotonic() < deadline, "the HTTP calls were never all counted"
            time.sleep(0.05)
            after = scrape()
    for (method, code), calls in expected.items():
        assert requests(after, method, code) == calls
        assert moved(before, after, "image2sdr_request_seconds_count", protocol="http", method=method) >= calls
    # The same use cases, called in-process: not a call to our own gRPC port.
    assert total(after, "image2sdr_requests_total", protocol="grpc") == total(
        before, "image2sdr_requests_total", protocol="grpc"
    )
    for stage in STAGES:  # one image encoded; the bad one never was
        assert moved(before, after, "image2sdr_encode_stage_seconds_count", stage=stage) == 1
    for space in server.index.spaces:
        assert value(after, "image2sdr_index_items", space=space) == 1
    # One code vocabulary per protocol: HTTP statuses for http, gRPC code names for grpc.
    http_codes = {
        dict(labels)["code"]
        for name, labels in after
        if name == "image2sdr_requests_total" and ("protocol", "http") in labels
    }
    assert {"200", "400", "404"} <= http_codes and all(code.isdigit() for code in http_codes)
    # What runs: the version and the models, and the process's own series.
    built = [dict(labels) for (name, labels), v in after.items() if name == "image2sdr_build_info" and v == 1]
    assert len(built) == 1 and built[0]["version"] == SERVER_VERSION
    assert built[0]["concepts"] == f"{server.encoder.concept_source.name} {server.encoder.concept_source.model}".strip()
    assert value(after, "process_resident_memory_bytes") > 0
