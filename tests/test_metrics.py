"""Prometheus metrics: the families ``Metrics`` renders; a real server's counts move by exactly what was called."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from image2sdr.server.encoder import Encoding, StageTimings
from image2sdr.server.metrics import STAGES, Metrics
from image2sdr.server.sdr import Sdr

FAMILIES = (
    "image2sdr_requests",
    "image2sdr_request_seconds",
    "image2sdr_encode_stage_seconds",
    "image2sdr_index_snapshots",
    "image2sdr_index_snapshot_seconds",
    "image2sdr_stream_items_in_flight",
)


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``render()``'s text, by (sample name, labels)."""
    body, _ = metrics.render()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """One sample's value, 0 when it has not been observed yet."""
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
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
