"""``start_grpc``: the gRPC server around the use cases, bound and started.

The servicer, health checking (mirroring ``usecases.Health``), reflection, the metrics,
bearer-token and malformed-request interceptors, TLS.  What the server serves is built
elsewhere (``serve.create_server``, the composition root).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

from ..auth import BearerToken
from ..config import Config
from ..errors import ConfigError
from ..metrics import Metrics
from ..usecases import HealthState, UseCases
from .auth import BearerTokenInterceptor
from .malformed import MalformedRequestInterceptor
from .own_pool import HEALTH_CHECK, OwnPoolInterceptor
from .request_metrics import RequestMetricsInterceptor
from .servicer import Image2SdrServicer

__all__ = ["SERVICE_NAME", "GrpcServer", "start_grpc"]

logger = logging.getLogger(__name__)

_SERVICE = pb.DESCRIPTOR.services_by_name["Image2Sdr"]
SERVICE_NAME = _SERVICE.full_name
_HEALTH_NAMES = ("", SERVICE_NAME)  # the whole server, and the service
_HEALTH_THREADS = 2  # health checks answer in microseconds: two threads serve any prober


@dataclass
class GrpcServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    health_pool: ThreadPoolExecutor | None = None  # health checks' own threads (``own_pool``)

    def stop(self, grace_s: float) -> None:
        """Health says NOT_SERVING for good, then the calls in flight finish within ``grace_s``."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        if self.health_pool is not None:
            self.health_pool.shutdown(wait=False)

    def begin_stop(self) -> None:
        self.health.enter_graceful_shutdown()


def start_grpc(config: Config, cases: UseCases, metrics: Metrics, token: BearerToken | None) -> GrpcServer:
    """Bind ``service.host:service.port`` (0: a free port) and serve the use cases there."""
    service = config.service
    options = [
        ("grpc.max_receive_message_length", service.max_message_bytes),
        ("grpc.max_send_message_length", service.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.http2.bdp_probe", int(service.http2_bdp_probe)),
    ]
    health_pool = ThreadPoolExecutor(max_workers=_HEALTH_THREADS, thread_name_prefix="rpc-health")
    server = grpc.server(
        ThreadPoolExecutor(max_workers=service.workers, thread_name_prefix="rpc"),
        interceptors=[OwnPoolInterceptor(frozenset({HEALTH_CHECK}), health_pool), *_interceptors(metrics, token)],
        options=options,
        maximum_concurrent_rpcs=service.workers * 4,
    )
    pb_grpc.add_Image2SdrServicer_to_server(Image2SdrServicer(cases, config), server)  # type: ignore[no-untyped-call]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = _bind(server, config)
    server.start()
    cases.health.listen(lambda state: _mirror(health_servicer, state))
    logger.info("image2sdr serving on %s:%d (%s)", service.host, port, "TLS" if service.tls.cert_file else "plaintext")
    return GrpcServer(server, port, health_servicer, health_pool)


def _mirror(servicer: health.HealthServicer, state: HealthState) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if state.serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in _HEALTH_NAMES:
        servicer.set(name, status)


def _interceptors(metrics: Metrics, token: BearerToken | None) -> list[grpc.ServerInterceptor]:
    # Metrics outermost, so refusals are counted too. Then the token: a caller without it
    # learns nothing, not even that its bytes were bad.
    paired = frozenset(
        method.name for method in _SERVICE.methods if method.client_streaming and method.server_streaming
    )
    interceptors: list[grpc.ServerInterceptor] = [RequestMetricsInterceptor(metrics, SERVICE_NAME, paired)]
    if token is not None:
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
