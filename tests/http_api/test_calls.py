"""HTTP calls end with their caller: a client that hangs up cancels its call's context.

A real server (uvicorn on port 0); the call's work is the test's own (``UNARY`` patched),
waiting until its context says the caller has gone, so nothing depends on timing.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.messages import UNARY
from image2sdr.server.serve import Server, create_server
from image2sdr.server.usecases import CallContext
from image2sdr.v1 import image2sdr_pb2 as pb

TIMEOUT = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, shared_encoder: Encoder) -> Iterator[Server]:
    config = Config(
        data_dir=tmp_path_factory.mktemp("calls") / "data",
        models_dir=models_dir,
        service=ServiceConfig(port=0, shutdown_grace_s=0.5),
        http=HttpConfig(port=0, max_concurrent=1),
    )
    started = create_server(config, encoder=shared_encoder)
    yield started
    started.stop()


def test_a_client_that_hangs_up_cancels_its_call(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    started, gone = threading.Event(), threading.Event()

    def info(cases: Any, request: pb.InfoRequest, call: CallContext) -> pb.InfoResponse:
        started.set()
        stop = threading.Event()
        for _ in range(TIMEOUT * 100):  # a failure bound: the work checks its caller as Explain's loop does
            if call.cancelled():
                gone.set()
                break
            stop.wait(0.01)
        return pb.InfoResponse()

    monkeypatch.setitem(UNARY, "Info", info)
    with socket.create_connection(("127.0.0.1", server.http_port or 0), timeout=TIMEOUT) as client:
        client.sendall(b"GET /v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert started.wait(TIMEOUT)
    assert gone.wait(TIMEOUT), "the call ran on after its client had gone"
