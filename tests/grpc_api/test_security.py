"""Bearer token, TLS and mutual TLS, and graceful shutdown of the real process."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from image2sdr.server.config import Config, HttpConfig, ServiceConfig, TlsConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.errors import ConfigError
from image2sdr.server.serve import Server, create_server
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.servers import start_server
from tests.helpers.tls import certificate

TOKEN = "s3cret-token-for-tests-only"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA, a server certificate for localhost and a client certificate."""
    directory = tmp_path_factory.mktemp("pki")
    ca_cert, _, ca_key, ca_name = certificate("test CA", ca=True)
    server_cert, server_key, _, _ = certificate("localhost", ca_key, ca_name)
    client_cert, client_key, _, _ = certificate("client", ca_key, ca_name)
    files = {
        "ca": ca_cert,
        "server.crt": server_cert,
        "server.key": server_key,
        "client.crt": client_cert,
        "client.key": client_key,
    }
    paths = {}
    for name, content in files.items():
        paths[name] = directory / name
        paths[name].write_bytes(content)
    return paths


@pytest.fixture
def token_server(tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("IMAGE2SDR_TOKEN", TOKEN)
    server = start_server(tmp_path, models_dir)
    yield server
    server.stop()


def test_token_is_required_except_for_health(token_server: Server) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        stub = pb_grpc.Image2SdrStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong-token"),), (("authorization", TOKEN),)):
            with pytest.raises(grpc.RpcError) as info:
                stub.Info(pb.InfoRequest(), metadata=metadata, timeout=30)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert TOKEN not in (info.value.details() or "")
        # Streams are guarded the same way.
        with pytest.raises(grpc.RpcError) as info:
            list(stub.EncodeStream(iter([pb.EncodeRequest(image=b"x")]), timeout=30))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        info_response = stub.Info(pb.InfoRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=30)
        assert info_response.geometry.size == 16384
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_tls(tmp_path: Path, models_dir: Path, pki: dict[str, Path]) -> None:
    server = start_server(tmp_path, models_dir, tls=TlsConfig(cert_file=pki["server.crt"], key_file=pki["server.key"]))
    try:
        address = f"localhost:{server.port}"
        credentials = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        with grpc.secure_channel(address, credentials) as channel:
            assert pb_grpc.Image2SdrStub(channel).Info(pb.InfoRequest(), timeout=30).active_bits == 328
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as info:
            pb_grpc.Image2SdrStub(channel).Info(pb.InfoRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # plaintext is not served
    finally:
        server.stop()


def test_mutual_tls(tmp_path: Path, models_dir: Path, pki: dict[str, Path]) -> None:
    tls = TlsConfig(cert_file=pki["server.crt"], key_file=pki["server.key"], client_ca_file=pki["ca"])
    server = start_server(tmp_path, models_dir, tls=tls)
    try:
        address = f"localhost:{server.port}"
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=pki["ca"].read_bytes(),
            private_key=pki["client.key"].read_bytes(),
            certificate_chain=pki["client.crt"].read_bytes(),
        )
        with grpc.secure_channel(address, with_cert) as channel:
            assert pb_grpc.Image2SdrStub(channel).Info(pb.InfoRequest(), timeout=30).active_bits == 328
        without = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        with grpc.secure_channel(address, without) as channel, pytest.raises(grpc.RpcError) as info:
            pb_grpc.Image2SdrStub(channel).Info(pb.InfoRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


def _signal_a_worker_thread(pid: int, signum: int) -> None:
    """Deliver ``signum`` to one of the process's non-main threads (Linux tgkill).

    The kernel may hand a process-directed signal to any thread; when it picked one
    of gRPC's, an earlier server never woke up.  Aiming at such a thread makes that
    case happen every time instead of now and then.
    """
    tasks = sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)
    assert tasks, "the server runs gRPC threads"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_TGKILL, pid, tasks[-1], signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


_SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine(), 0)


@pytest.mark.parametrize(
    "deliver",
    [
        pytest.param(os.kill, id="to-the-process"),
        pytest.param(
            _signal_a_worker_thread,
            id="to-a-grpc-thread",
            marks=pytest.mark.skipif(not _SYS_TGKILL or sys.platform != "linux", reason="needs Linux tgkill"),
        ),
    ],
)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signals_shut_down_gracefully(
    tmp_path: Path, models_dir: Path, deliver: Callable[[int, int], None], signum: int
) -> None:
    env = {**os.environ, "IMAGE2SDR_MODELS_DIR": str(models_dir)}
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "image2sdr.server.serve",
            "--port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:  # the with block closes the pipes
        try:
            line = process.stdout.readline()  # type: ignore[union-attr]
            assert "listening on" in line, process.stderr.read()  # type: ignore[union-attr]
            port = int(line.rsplit(":", 1)[1])
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert pb_grpc.Image2SdrStub(channel).Info(pb.InfoRequest(), timeout=30).active_bits == 328
            deliver(process.pid, signum)
            assert process.wait(timeout=60) == 0
            assert f"received {signal.Signals(signum).name}, shutting down" in process.stderr.read()  # type: ignore[union-attr]
        finally:
            if process.poll() is None:
                process.kill()


def test_streams_beyond_the_limit_are_refused_and_health_stays_up(
    tmp_path: Path, models_dir: Path, photos: dict[str, bytes]
) -> None:
    server = start_server(
        tmp_path, models_dir, workers=2, max_streams=1, stream_preempt_after_s=0, stream_preempt_waiting_s=0
    )
    release = threading.Event()

    def held_open() -> Iterator[pb.EncodeRequest]:
        yield pb.EncodeRequest(image=photos["chelsea"], request_id="first")
        release.wait(30)  # a caller that keeps its stream open and idle

    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.Image2SdrStub(channel)
            first = stub.EncodeStream(held_open(), timeout=60)
            assert next(first).request_id == "first"
            with pytest.raises(grpc.RpcError) as info:
                list(stub.EncodeStream(iter([pb.EncodeRequest(image=photos["coffee"])]), timeout=30))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_streams" in (info.value.details() or "")
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert stub.Info(pb.InfoRequest(), timeout=60).active_bits == 328  # unary calls still served
            release.set()
            assert list(first) == []
            again = list(stub.EncodeStream(iter([pb.EncodeRequest(image=photos["coffee"])]), timeout=30))
            assert len(again) == 1 and not again[0].HasField("error")  # the slot was given back
    finally:
        release.set()
        server.stop()


def test_a_busy_port_is_a_clear_error_and_nothing_stays_locked(
    tmp_path: Path, models_dir: Path, shared_encoder: Encoder
) -> None:
    first = start_server(tmp_path / "a", models_dir)
    try:
        busy = Config(
            data_dir=tmp_path / "b" / "data",
            models_dir=models_dir,
            service=ServiceConfig(host="127.0.0.1", port=first.port),
            http=HttpConfig(enabled=False),  # gRPC only: no two servers share the fixed HTTP port
        )
        with pytest.raises(ConfigError, match="cannot listen"):
            create_server(busy, encoder=shared_encoder)
        # The index directory it opened was released: the same config on a free port starts.
        second = create_server(busy.model_copy(update={"service": ServiceConfig(port=0)}), encoder=shared_encoder)
        second.stop()
    finally:
        first.stop()
