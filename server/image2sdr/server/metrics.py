"""Prometheus metrics for one server: requests, encode stages, the term cache, the index.

``Metrics`` owns its own ``CollectorRegistry`` (one per ``Server``), so tests that
run several servers in one process never see each other's counts.  The edges
report what they see: the gRPC interceptor (``api/request_metrics.py``) and the
HTTP middleware call ``observe_request``; the encoder, the index and a stream
report through plain callbacks (``observe_encoding``, ``observe_snapshot``,
``stream_items``), so the core never imports prometheus.  What the core already
counts (term-cache hits and misses) or can tell cheaply (items per space) is
read at scrape time by a collector instead of being pushed on every call.

Families (all prefixed ``image2sdr_``, but ``process_*``):
    requests_total{protocol, method, code}          counter; ``code`` in the protocol's own words:
                                                    a gRPC code name for grpc ("OK"), an HTTP status for http ("200")
    request_seconds{protocol, method}               histogram
    encode_stage_seconds{stage}                     histogram, one observation per image and stage
    term_cache_hits_total / term_cache_misses_total counters (distinct terms per lookup)
    index_items{space}                              gauge, read at scrape time
    index_snapshots_total{space, result}            counter: "written" or "failed"
    index_snapshot_seconds{space}                   histogram of written snapshots
    stream_items_in_flight{method}                  gauge: requests read, not yet answered
    build_info{version, concepts, terms, visual}    1, labelled with the server version and its models
    process_*                                       CPU, memory, open files, start time (prometheus_client's)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import fields
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from .terms.cache import CachedTermSource
from .version import SERVER_VERSION

if TYPE_CHECKING:
    from .encoder import Encoder, Encoding
    from .index.item_index import ItemIndex

__all__ = ["REQUEST_BUCKETS", "STAGES", "STAGE_BUCKETS", "Metrics"]

logger = logging.getLogger(__name__)

PREFIX = "image2sdr"
# Seconds: a cached text lookup takes about a millisecond, a map or a large stream up to a minute.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Seconds: a merge takes well under a millisecond, a remote classifier's share of a batch seconds.
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
# StageTimings' fields, by the name of the stage: decode_ms -> "decode".
STAGES = ("decode", "concepts", "terms", "merge", "appearance")


class Metrics:
    """One server's metrics and the registry they are exposed from (``render``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._requests = Counter(
            f"{PREFIX}_requests",
            "Requests answered, by protocol, method and status code.",
            ("protocol", "method", "code"),
            registry=registry,
        )
        self._latency = Histogram(
            f"{PREFIX}_request_seconds",
            "Time from a request's arrival to its answer.",
            ("protocol", "method"),
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self._stages = Histogram(
            f"{PREFIX}_encode_stage_seconds",
            "Time per encoded image in each stage (batch stages shared out).",
            ("stage",),
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self._snapshots = Counter(
            f"{PREFIX}_index_snapshots",
            "Index snapshots attempted, by space and result (written, failed).",
            ("space", "result"),
            registry=registry,
        )
        self._snapshot_seconds = Histogram(
            f"{PREFIX}_index_snapshot_seconds",
            "Time to write one space's index snapshot.",
            ("space",),
            buckets=SNAPSHOT_BUCKETS,
            registry=registry,
        )
        self._in_flight = Gauge(
            f"{PREFIX}_stream_items_in_flight",
            "Stream requests read and not yet answered.",
            ("method",),
            registry=registry,
        )
        self._scraped = _ScrapeTimeCollector()
        registry.register(self._scraped)
        ProcessCollector(registry=registry)  # process_*: this process's own, whichever registry reads it

    def watch(self, encoder: Encoder, index: ItemIndex) -> None:
        """Read the term cache's counts and the index's sizes from these at scrape time."""
        self._scraped.encoder, self._scraped.index = encoder, index

    # -- what the edges and the core report -----------------------------------

    def observe_request(self, protocol: str, method: str, code: str, seconds: float) -> None:
        """One answered request: ``protocol`` "grpc" or "http", ``code`` a gRPC code name or an HTTP status."""
        self._requests.labels(protocol, method, code).inc()
        self._latency.labels(protocol, method).observe(seconds)

    def observe_encoding(self, encoding: Encoding) -> None:
        """One image encoded: its stage timings (the encoder's ``on_encoded``)."""
        timings = encoding.timings
        for stage, field in zip(STAGES, fields(timings), strict=True):
            self._stages.labels(stage).observe(getattr(timings, field.name) / 1000)

    def observe_snapshot(self, space: str, seconds: float, written: bool) -> None:
        """One space's snapshot pass (the index's ``on_snapshot``)."""
        self._snapshots.labels(space, "written" if written else "failed").inc()
        if written:
            self._snapshot_seconds.labels(space).observe(seconds)

    def stream_items(self, method: str, change: int) -> None:
        """``change`` more (or, negative, fewer) stream requests of ``method`` in flight."""
        self._in_flight.labels(method).inc(change)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of everything, and its content type (for GET /metrics)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Described(Protocol):
    """What every provider says of itself (concept, term and visual sources alike)."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...


def _model(source: _Described) -> str:
    return f"{source.name} {source.model}".strip()


class _ScrapeTimeCollector(Collector):
    """What is cheaper to read when scraped than to count on every call."""

    def __init__(self) -> None:
        self.encoder: Encoder | None = None
        self.index: ItemIndex | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are only known once watching; nothing to check for clashes

    def collect(self) -> Iterator[Metric]:
        if self.encoder is not None and isinstance(self.encoder.term_source, CachedTermSource):
            terms = self.encoder.term_source
            yield CounterMetricFamily(
                f"{PREFIX}_term_cache_hits", "Distinct terms found in the term cache.", terms.hits
            )
            yield CounterMetricFamily(
                f"{PREFIX}_term_cache_misses", "Distinct terms asked of the term provider.", terms.misses
            )
        if self.index is not None:
            yield from self._index_items(self.index)
        yield self._build(self.encoder)

    @staticmethod
    def _build(encoder: Encoder | None) -> Metric:
        """The version and, once watching, the models: ``name model`` of each provider ("" for none)."""
        labels = {"version": SERVER_VERSION, "concepts": "", "terms": "", "visual": ""}
        if encoder is not None:
            labels["concepts"] = _model(encoder.concept_source)
            labels["terms"] = _model(encoder.term_source)
            labels["visual"] = "" if encoder.appearance is None else _model(encoder.appearance)
        family = InfoMetricFamily(f"{PREFIX}_build", "The server's version and the models it runs.")
        family.add_metric((), labels)
        return family

    @staticmethod
    def _index_items(index: ItemIndex) -> Iterator[Metric]:
        family = GaugeMetricFamily(f"{PREFIX}_index_items", "Items stored, per space.", labels=("space",))
        try:
            for space in index.spaces:
                family.add_metric((space,), index.count(space))
        except Exception as exc:  # closed, or a remote engine down: the scrape still answers the rest
            logger.debug("index size not read: %r", exc)
            return
        yield family
