"""A real server over the session's encoder (no second model load) and an index of its own."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.index.item_index import ItemIndex
from image2sdr.server.serve import Server, create_server, open_index

__all__ = ["BorrowedServer"]


@dataclass
class BorrowedServer:
    """``start`` binds (port 0 first, then the same port again); ``stop`` breaks every call at once.

    ``stop`` stops only the gRPC server (the index stays open, so a restart on the same
    port finds it); ``close`` stops every server it started, closes the index it opened
    and gives the encoder its hook back.
    """

    encoder: Encoder
    data_dir: Path
    models_dir: Path
    token_env: str = "IMAGE2SDR_TOKEN"
    token: str = ""  # set: every call must carry it
    servers: list[Server] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._hook = self.encoder.on_encoded
        self.index: ItemIndex = open_index(self._config(0))

    @property
    def address(self) -> str:
        return self.servers[-1].address

    def _config(self, port: int) -> Config:
        return Config(
            data_dir=self.data_dir,
            models_dir=self.models_dir,
            service=ServiceConfig(port=port, shutdown_grace_s=0.0, token_env=self.token_env),
            http=HttpConfig(enabled=False),  # gRPC only: no two servers share the fixed HTTP port
        )

    def start(self) -> None:
        port = self.servers[-1].port if self.servers else 0
        saved = os.environ.get(self.token_env)
        if self.token:  # read once, when the server is made
            os.environ[self.token_env] = self.token
        try:
            self.servers.append(create_server(self._config(port), encoder=self.encoder, index=self.index))
        finally:
            if saved is None:
                os.environ.pop(self.token_env, None)
            else:
                os.environ[self.token_env] = saved

    def stop(self) -> None:
        self.servers[-1].grpc.server.stop(0).wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        for started in self.servers:
            started.stop(0)  # stops what each made (health, map jobs); the index and encoder were lent
        self.index.close()
        self.encoder.on_encoded = self._hook
