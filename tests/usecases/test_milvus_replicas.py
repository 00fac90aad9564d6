"""The service on a real Milvus server: replicas sharing one collection, and Milvus failing under it.

The contract tests (``test_index_contract.py``) run the index itself against the
embedded engine and this server; here two real image2sdr gRPC servers share one
collection, and the Milvus server is stopped and started again beneath a running
image2sdr server.
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from image2sdr.server.config import Config, HttpConfig, IndexConfig, MilvusConfig, ServiceConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.errors import UpstreamError
from image2sdr.server.index.milvus import faults as faults_module
from image2sdr.server.serve import Server, create_server
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.milvus import MilvusServer

TIMEOUT = 60
_COLLECTIONS = itertools.count()
SECRET = "root:Milvus-test-token-value"


def _config(tmp_path: Path, models_dir: Path, uri: str, collection: str, **milvus: object) -> Config:
    settings = {"uri": uri, "collection": collection, "consistency_level": "Strong", **milvus}
    return Config(
        data_dir=tmp_path,
        models_dir=models_dir,
        index=IndexConfig(backend="milvus", milvus=MilvusConfig(**settings)),  # type: ignore[arg-type]
        service=ServiceConfig(port=0, shutdown_grace_s=0.5),
        http=HttpConfig(enabled=False),  # gRPC only: no two servers share the fixed HTTP port
    )


@pytest.fixture
def collection() -> str:
    return f"service_{next(_COLLECTIONS)}_{int(time.time())}"


@pytest.fixture
def replicas(
    tmp_path: Path, models_dir: Path, milvus_server: MilvusServer, collection: str, shared_encoder: Encoder
) -> Iterator[tuple[Server, Server]]:
    first = create_server(_config(tmp_path / "a", models_dir, milvus_server.uri, collection), encoder=shared_encoder)
    try:
        second = create_server(
            _config(tmp_path / "b", models_dir, milvus_server.uri, collection), encoder=shared_encoder
        )
    except BaseException:
        first.stop()
        raise
    yield first, second
    first.stop()
    second.stop()


def _stub(server: Server) -> tuple[grpc.Channel, pb_grpc.Image2SdrStub]:
    channel = grpc.insecure_channel(server.address)
    return channel, pb_grpc.Image2SdrStub(channel)


def _health(server: Server) -> int:
    with grpc.insecure_channel(server.address) as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status)


def test_two_replicas_share_one_collection(replicas: tuple[Server, Server], photos: dict[str, bytes]) -> None:
    first, second = replicas
    channel_a, a = _stub(first)
    channel_b, b = _stub(second)
    with channel_a, channel_b:
        added = a.Encode(
            pb.EncodeRequest(image=photos["chelsea"], add_to_index=pb.AddToIndex(id="cat", metadata={"by": "a"})),
            timeout=TIMEOUT,
        )
        assert added.indexed
        item = b.GetItem(pb.GetItemRequest(id="cat"), timeout=TIMEOUT)  # found through the other replica
        assert item.metadata["by"] == "a" and list(item.sdr.active) == list(added.sdr.active)
        assert list(item.visual.active) == list(added.visual.active) and item.fingerprint.sha256
        assert b.ItemsExist(pb.ItemsExistRequest(ids=["cat", "dog"]), timeout=TIMEOUT).exists == [True, False]
        b.Encode(pb.EncodeRequest(image=photos["coffee"], add_to_index=pb.AddToIndex(id="mug")), timeout=TIMEOUT)
        found = a.FindSimilar(pb.FindSimilarRequest(image=photos["chelsea"], k=2), timeout=TIMEOUT)
        assert found.matches[0].id == "cat"  # the same image: the whole SDR shared
        assert found.matches[0].overlap == len(added.sdr.active)
        # Replaced through the second, seen replaced through the first.
        b.Encode(
            pb.EncodeRequest(image=photos["rocket"], add_to_index=pb.AddToIndex(id="cat", metadata={"by": "b"})),
            timeout=TIMEOUT,
        )
        assert a.GetItem(pb.GetItemRequest(id="cat"), timeout=TIMEOUT).metadata["by"] == "b"
        info = a.Info(pb.InfoRequest(), timeout=TIMEOUT)
        assert (info.index_kind, info.index_size, info.index_visual_size) == ("milvus BIN_FLAT", 2, 2)
        # Removed through the first, gone through the second.
        a.RemoveItem(pb.RemoveItemRequest(id="cat"), timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError) as missing:
            b.GetItem(pb.GetItemRequest(id="cat"), timeout=TIMEOUT)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        listed = b.ListItems(pb.ListItemsRequest(page_size=10), timeout=TIMEOUT)
        assert [entry.id for entry in listed.items] == ["mug"]


def test_a_map_of_items_stored_through_another_replica(
    replicas: tuple[Server, Server], photos: dict[str, bytes]
) -> None:
    first, second = replicas
    channel_a, a = _stub(first)
    channel_b, b = _stub(second)
    with channel_a, channel_b:
        for item_id, name in (("cat", "chelsea"), ("mug", "coffee"), ("rocket", "rocket")):
            request = pb.EncodeRequest(image=photos[name], add_to_index=pb.AddToIndex(id=item_id))
            assert a.Encode(request, timeout=TIMEOUT).indexed
        job = b.CreateMap(pb.CreateMapRequest(space=pb.SPACE_VISUAL, cell_pixels=32), timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while job.state in (pb.MAP_STATE_QUEUED, pb.MAP_STATE_RUNNING) and time.monotonic() < deadline:
            time.sleep(0.05)
            job = b.GetMap(pb.GetMapRequest(id=job.id), timeout=TIMEOUT)
        assert job.state == pb.MAP_STATE_DONE, job.error.message
        assert sorted(cell.id for cell in job.cells) == ["cat", "mug", "rocket"]
        assert all(cell.thumbnail for cell in job.cells)  # thumbnails kept in Milvus, drawn by the other replica
        assert job.png.startswith(b"\x89PNG") and (job.columns, job.rows) == (2, 2)
        with pytest.raises(grpc.RpcError) as elsewhere:
            a.GetMap(pb.GetMapRequest(id=job.id), timeout=TIMEOUT)  # jobs live in the replica that runs them
        assert elsewhere.value.code() == grpc.StatusCode.NOT_FOUND


def test_milvus_down_at_start_is_a_clear_error_naming_the_uri(
    tmp_path: Path,
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    shared_encoder: Encoder,
) -> None:
    monkeypatch.setenv("MILVUS_TOKEN", "token-from-the-environment-" + SECRET)
    with socket_nobody_listens_on() as port:
        uri = f"http://root:{SECRET.split(':', 1)[1]}@127.0.0.1:{port}"
        config = _config(tmp_path, models_dir, uri, "nowhere", timeout_s=2.0)
        with pytest.raises(UpstreamError) as failed:
            create_server(config, encoder=shared_encoder)
    message = str(failed.value)
    assert f"127.0.0.1:{port}" in message and "Milvus" in message
    assert SECRET.split(":", 1)[1] not in message  # credentials in the URI are masked
    assert "token-from-the-environment" not in message + caplog.text


def test_milvus_stopped_and_restarted_under_a_running_server(
    tmp_path: Path,
    models_dir: Path,
    milvus_server: MilvusServer,
    collection: str,
    *,
    photos: dict[str, bytes],
    shared_encoder: Encoder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    pymilvus_lines = _Lines()
    logging.getLogger("pymilvus").addHandler(pymilvus_lines)  # pymilvus logs to a handler of its own
    config = _config(
        tmp_path, models_dir, milvus_server.uri, collection, timeout_s=2.0, retry_total_s=3.0, health_every_s=0.2
    )
    server = create_server(config, encoder=shared_encoder)
    channel, stub = _stub(server)
    try:
        with channel:
            stub.Encode(pb.EncodeRequest(image=photos["chelsea"], add_to_index=pb.AddToIndex(id="kept")), timeout=60)
            milvus_server.stop()

            with pytest.raises(grpc.RpcError) as failed:
                stub.Encode(pb.EncodeRequest(image=photos["coffee"], add_to_index=pb.AddToIndex(id="lost")), timeout=60)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "Milvus" in (failed.value.details() or "")
            for debris in ("_InactiveRpcError", "debug_error_string", "grpc_status"):
                assert debris not in (failed.value.details() or "")
            details = next(v for k, v in failed.value.trailing_metadata() if k == "grpc-status-details-bin")
            retry = error_details_pb2.RetryInfo()
            assert status_pb2.Status.FromString(details).details[0].Unpack(retry) and retry.retry_delay.seconds >= 1
            with pytest.raises(grpc.RpcError) as searching:
                stub.FindSimilar(pb.FindSimilarRequest(id="kept"), timeout=60)
            assert searching.value.code() == grpc.StatusCode.UNAVAILABLE
            _wait_for(lambda: _health(server) == health_pb2.HealthCheckResponse.NOT_SERVING)
            # The process serves on: an encode that stores nothing still works.
            assert stub.Encode(pb.EncodeRequest(image=photos["coffee"]), timeout=60).sdr.active

            milvus_server.start()
            _wait_for(lambda: _health(server) == health_pb2.HealthCheckResponse.SERVING, timeout_s=120)
            assert stub.ItemsExist(pb.ItemsExistRequest(ids=["kept", "lost"]), timeout=60).exists == [True, False]
            stub.Encode(pb.EncodeRequest(image=photos["coffee"], add_to_index=pb.AddToIndex(id="later")), timeout=60)
            assert stub.GetItem(pb.GetItemRequest(id="later"), timeout=60).id == "later"
        # The outage in the log: a line when it began and one when it ended (with a count), no tracebacks.
        told = [record.getMessage() for record in caplog.records if record.name == faults_module.__name__]
        began = sum("is not answering" in line for line in told)
        assert began >= 1 and began == sum("answers again after" in line and "requests failed" in line for line in told)
        assert not [record for record in caplog.records if record.name.startswith("pymilvus")]
        assert pymilvus_lines.records == []  # its traceback per failed request or reconnect is silenced
        assert "Traceback" not in caplog.text
    finally:
        logging.getLogger("pymilvus").removeHandler(pymilvus_lines)
        server.stop()
        if not _up(milvus_server):  # leave the shared server up for the tests after this one
            milvus_server.start()


class _Lines(logging.Handler):
    """The records a logger handled (pymilvus's do not propagate to caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _up(server: MilvusServer) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", server.port)) == 0


def _wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not reached within {timeout_s:.0f} s")


class socket_nobody_listens_on:
    """A loopback port bound (so nothing else takes it) but not listening: connections are refused."""

    def __enter__(self) -> int:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        return int(self._socket.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._socket.close()
