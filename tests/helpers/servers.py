"""Real image2sdr servers for tests: one on a free loopback port, and whether a server is up."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.serve import Server, create_server
from tests.helpers.encoders import shared_encoder

__all__ = ["healthy", "serving", "start_server"]


def start_server(tmp_path: Path, models_dir: Path, **service: object) -> Server:
    """A server with service settings of the test's choosing, on port 0, on the session's encoder."""
    config = Config(
        data_dir=tmp_path / "data",
        models_dir=models_dir,
        service=ServiceConfig(port=0, shutdown_grace_s=0.5, **service),  # type: ignore[arg-type]
        http=HttpConfig(enabled=False),  # gRPC only: no two servers share the fixed HTTP port
    )
    return create_server(config, encoder=shared_encoder(models_dir))


def healthy(channel: grpc.Channel) -> bool:
    """The server behind ``channel`` answers its health check with SERVING."""
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def serving(address: str) -> bool:
    """The server at ``address`` answers its health check with SERVING."""
    with grpc.insecure_channel(address) as channel:
        return healthy(channel)
