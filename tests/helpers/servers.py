"""A real image2sdr server on a free loopback port, with service settings of the test's choosing."""

from __future__ import annotations

from pathlib import Path

from image2sdr.server.api import Server, create_server
from image2sdr.server.config import Config, ServiceConfig

__all__ = ["start_server"]


def start_server(tmp_path: Path, models_dir: Path, **service: object) -> Server:
    config = Config(
        data_dir=tmp_path / "data",
        models_dir=models_dir,
        service=ServiceConfig(port=0, shutdown_grace_s=0.5, **service),  # type: ignore[arg-type]
    )
    return create_server(config)
