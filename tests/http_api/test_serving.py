"""uvicorn as served: a request head has a deadline, idle sockets hold no place, /healthz is always answered.

Real servers (HTTP on port 0, the session's encoder) with one handler slot (so 37
requests in flight at most) and an 8-connection cap; one gives a request head a
minute, the other a second. The tests speak raw TCP where the socket is the point.
Waits are failure bounds only.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.serve import Server, create_server

TIMEOUT = 30
MAX_CONNECTIONS = 8


def _server(data_dir: Path, models_dir: Path, encoder: Encoder, header_timeout_s: float) -> Server:
    config = Config(
        data_dir=data_dir,
        models_dir=models_dir,
        service=ServiceConfig(port=0, shutdown_grace_s=0.5),
        http=HttpConfig(port=0, max_concurrent=1, header_timeout_s=header_timeout_s, max_connections=MAX_CONNECTIONS),
    )
    return create_server(config, encoder=encoder)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, shared_encoder: Encoder) -> Iterator[Server]:
    """Heads get a minute: a connection closed here was closed for another reason."""
    started = _server(tmp_path_factory.mktemp("serving") / "data", models_dir, shared_encoder, TIMEOUT * 2)
    yield started
    started.stop()


@pytest.fixture
def impatient(tmp_path: Path, models_dir: Path, shared_encoder: Encoder) -> Iterator[Server]:
    """Heads get a second."""
    started = _server(tmp_path / "data", models_dir, shared_encoder, 1.0)
    yield started
    started.stop()


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.http_port or 0), timeout=TIMEOUT)


def _closed_by_server(conn: socket.socket) -> bool:
    """Whether the server closes ``conn`` (waits up to TIMEOUT: a failure bound)."""
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_connections_neither_lock_callers_out_nor_pile_up(server: Server) -> None:
    idle = [_connect(server) for _ in range(40)]  # uvicorn's old cap here was 37: every request got 503
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=TIMEOUT) as client:
            assert client.get("/healthz").json() == {"status": "SERVING"}
            assert client.get("/v1/info").status_code == 200
        # Past 8 open connections the one idle longest made room: the first 32 are gone.
        assert all(_closed_by_server(conn) for conn in idle[: 40 - MAX_CONNECTIONS])
    finally:
        for conn in idle:
            conn.close()


def test_a_head_trickled_a_line_at_a_time_is_cut_off(impatient: Server) -> None:
    with _connect(impatient) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        conn.settimeout(0.2)
        started, line = time.monotonic(), 0
        while time.monotonic() - started < TIMEOUT:  # a failure bound: the server closes after 1 s
            try:
                conn.sendall(f"X-Trickle-{line}: {line}\r\n".encode())
                if conn.recv(1) == b"":
                    break
            except TimeoutError:
                line += 1
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            pytest.fail(f"a head trickled for {TIMEOUT} s was still being read")
