"""Server assembly: ``create_server(config) -> Server``, bound and started.

The one place that builds the core (an ``Encoder``, the index the config
names, the vocabulary) and puts the gRPC pieces around it: the servicer, health checking,
reflection, the bearer-token and malformed-request interceptors, TLS; and, beside them,
the HTTP/JSON face over the same servicer (``web``) when ``http.enabled``.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

from ..config import Config
from ..encoder import Encoder
from ..errors import ConfigError
from ..index import SdrIndex
from ..index import open_index as open_configured_index
from ..index.protocol import ItemIndex
from ..maps.jobs import MapJobs
from ..metrics import Metrics
from ..terms.base import TermSource
from ..vocabulary import Vocabulary, default_terms, read_terms
from ..web import HttpServer, create_app
from .auth import BearerTokenInterceptor
from .health_watch import HealthWatch
from .malformed import MalformedRequestInterceptor
from .request_metrics import RequestMetricsInterceptor
from .servicer import Image2SdrServicer, similar_terms_source

__all__ = ["SERVICE_NAME", "Server", "create_server", "open_index"]

logger = logging.getLogger(__name__)

_SERVICE = pb.DESCRIPTOR.services_by_name["Image2Sdr"]
SERVICE_NAME = _SERVICE.full_name


@dataclass
class Server:
    """A started server and what it owns; ``stop`` shuts everything down in order."""

    grpc_server: grpc.Server
    port: int
    health: health.HealthServicer
    encoder: Encoder
    index: ItemIndex
    grace_s: float
    watch: HealthWatch | None = None  # health follows the index (backend: milvus)
    maps: MapJobs | None = None  # map jobs read the index: they stop before it closes
    metrics: Metrics = field(default_factory=Metrics)  # this server's own registry (GET /metrics renders it)
    http: HttpServer | None = None  # the HTTP/JSON face (http.enabled), on its own thread and port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_port(self) -> int | None:
        """The HTTP port (the one picked, for http.port 0); None when http.enabled is false."""
        return None if self.http is None else self.http.port

    def stop(self, grace_s: float | None = None) -> None:
        # Health first, so load balancers stop sending new calls; then let the
        # calls in flight finish within the grace period; then close storage.
        if self.watch is not None:
            self.watch.stop()
        self.health.enter_graceful_shutdown()
        grace = self.grace_s if grace_s is None else grace_s
        if self.http is not None:  # both sides drain at once, within one grace period
            self.http.begin_stop()
        self.grpc_server.stop(grace).wait()
        if self.http is not None:
            self.http.join(grace)
        if self.maps is not None:
            self.maps.close()
        self.index.close()
        self.encoder.close()

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()


def create_server(
    config: Config, *, encoder: Encoder | None = None, index: ItemIndex | None = None, metrics: Metrics | None = None
) -> Server:
    """Build, bind and start the service; ``config.service.port = 0`` picks a free port.

    ``encoder`` and ``index`` may be handed in (the caller keeps them until ``stop``);
    otherwise they are built from the config (``open_index``). ``metrics`` (default: a new
    registry) is fed by the interceptors, the encoder and the index: ``Server.metrics``.
    If anything fails on the way, what this call opened is closed again (the index
    holds a lock on its directory), so a caller may fix the config and retry.
    """
    opened: list[Encoder | ItemIndex] = []
    try:
        if encoder is None:
            encoder = Encoder.from_config(config)
            opened.append(encoder)
        if index is None:
            index = open_index(config)
            opened.append(index)
        return _start(config, encoder, index, metrics or Metrics())
    except BaseException:
        for resource in reversed(opened):
            resource.close()
        raise


def open_index(config: Config) -> ItemIndex:
    """The index ``config.index.backend`` names (``image2sdr.server.index.open_index``)."""
    return open_configured_index(config)


def _start(config: Config, encoder: Encoder, index: ItemIndex, metrics: Metrics) -> Server:
    _observe(metrics, encoder, index)
    vocabulary = Vocabulary(_vocabulary_terms(config, encoder.term_source), encoder.term_source)
    service = config.service
    options = [
        ("grpc.max_receive_message_length", service.max_message_bytes),
        ("grpc.max_send_message_length", service.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.http2.bdp_probe", int(service.http2_bdp_probe)),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=service.workers, thread_name_prefix="rpc"),
        interceptors=_interceptors(config, metrics),
        options=options,
        maximum_concurrent_rpcs=service.workers * 4,
    )
    servicer = Image2SdrServicer(config, encoder, index, vocabulary)
    pb_grpc.add_Image2SdrServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = _bind(server, config)
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    http = _start_http(config, servicer, health_servicer, metrics, server) if config.http.enabled else None
    watch = None
    if config.index.backend == "milvus":  # a remote engine can fail while this process runs on
        watch = HealthWatch(index, health_servicer, ("", SERVICE_NAME), config.index.milvus.health_every_s)
        watch.start()
    logger.info("image2sdr serving on %s:%d (%s)", service.host, port, "TLS" if service.tls.cert_file else "plaintext")
    return Server(
        server, port, health_servicer, encoder, index, service.shutdown_grace_s, watch, servicer.maps, metrics, http
    )


def _start_http(
    config: Config,
    servicer: Image2SdrServicer,
    health_servicer: health.HealthServicer,
    metrics: Metrics,
    grpc_server: grpc.Server,
) -> HttpServer:
    """The HTTP/JSON face over the same servicer; if it cannot start, the gRPC server stops too."""
    app = create_app(servicer, config, metrics, health=health_servicer)
    try:
        return HttpServer.start(app, config.http, config.service.tls, config.service.shutdown_grace_s)
    except BaseException:
        grpc_server.stop(0).wait()
        raise


def _vocabulary_terms(config: Config, terms: TermSource) -> list[str]:
    if config.service.vocabulary_file is not None:
        return read_terms(config.service.vocabulary_file)
    if similar_terms_source(terms) is not None:
        return []  # SimilarTerms asks the provider; no word list to fingerprint
    return default_terms(config.models_dir)


def _observe(metrics: Metrics, encoder: Encoder, index: ItemIndex) -> None:
    """Feed ``metrics`` from the core: every image encoded, every snapshot written, sizes when scraped."""
    metrics.watch(encoder, index)
    encoder.on_encoded = metrics.observe_encoding
    if isinstance(index, SdrIndex):  # Milvus keeps its own storage: no snapshots here
        index.on_snapshot = metrics.observe_snapshot


def _interceptors(config: Config, metrics: Metrics) -> list[grpc.ServerInterceptor]:
    # Metrics outermost, so refusals are counted too. Then the token: a caller without it
    # learns nothing, not even that its bytes were bad.
    paired = frozenset(
        method.name for method in _SERVICE.methods if method.client_streaming and method.server_streaming
    )
    interceptors: list[grpc.ServerInterceptor] = [RequestMetricsInterceptor(metrics, SERVICE_NAME, paired)]
    token = os.environ.get(config.service.token_env, "")
    if token:
        interceptors.append(BearerTokenInterceptor(token))
    request_types = {method.name: method.input_type.full_name for method in _SERVICE.methods}
    return [*interceptors, MalformedRequestInterceptor(SERVICE_NAME, request_types)]


def _bind(server: grpc.Server, config: Config) -> int:
    service = config.service
    address = f"{service.host}:{service.port}"
    tls = service.tls
    try:
        if tls.cert_file is None or tls.key_file is None:
            port = int(server.add_insecure_port(address))
        else:
            credentials = grpc.ssl_server_credentials(
                [(_read(tls.key_file), _read(tls.cert_file))],
                root_certificates=_read(tls.client_ca_file) if tls.client_ca_file else None,
                require_client_auth=tls.client_ca_file is not None,
            )
            port = int(server.add_secure_port(address, credentials))
    except RuntimeError as exc:  # grpc >= 1.6x raises "Failed to bind" instead of returning 0
        raise ConfigError(f"cannot listen on {address}: is another process using the port?") from exc
    if port == 0:
        raise ConfigError(f"cannot listen on {address}")
    return port


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
