"""Shared fixtures: the real exported models, real photos, real files under tmp_path."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from skimage import data as skdata

from image2sdr.server.api import create_server
from image2sdr.server.config import Config, ServiceConfig

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    path = Path(os.environ.get("IMAGE2SDR_MODELS_DIR", REPO / "models"))
    if not (path / "manifest.json").is_file():
        pytest.fail(f"no exported models in {path}: run `make models` (make test does it)")
    return path


@pytest.fixture
def config(tmp_path: Path, models_dir: Path) -> Config:
    return Config(data_dir=tmp_path / "data", models_dir=models_dir)


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def encode_jpeg(pixels: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """Real photos shipped inside scikit-image, as JPEG files a caller would send."""
    return {name: encode_jpeg(getattr(skdata, name)()) for name in ("chelsea", "coffee", "astronaut", "rocket")}


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[object]:
    """A real gRPC server on a free loopback port, shared by the service tests."""
    config = Config(
        data_dir=tmp_path_factory.mktemp("service-data"),
        models_dir=models_dir,
        service=ServiceConfig(port=0, max_message_bytes=4 * 1024 * 1024, shutdown_grace_s=1.0),
    )
    server = create_server(config)
    yield server
    server.stop()


def serving(address: str) -> bool:
    """The server at ``address`` answers its health check with SERVING."""
    with grpc.insecure_channel(address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
