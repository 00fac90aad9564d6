"""A real server for the benchmarks that go over HTTP: gRPC and HTTP on port 0, a FAISS index
in a scratch directory, the real models from models/ (bench_listing.py, bench_page.py)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.serve import Server, create_server

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Served:
    server: Server
    config: Config
    scratch: Path  # the data directory, removed afterwards: room for files a benchmark writes

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"


@contextmanager
def http_server() -> Iterator[Served]:
    """A started server over a fresh data directory; stopped, its encoder closed and the directory gone after."""
    with tempfile.TemporaryDirectory() as scratch:
        config = Config(
            data_dir=Path(scratch),
            models_dir=ROOT / "models",
            service=ServiceConfig(port=0, shutdown_grace_s=0.5),
            http=HttpConfig(port=0),
        )
        encoder = Encoder.from_config(config)
        server = create_server(config, encoder=encoder)
        try:
            yield Served(server, config, Path(scratch))
        finally:
            server.stop()
            encoder.close()
