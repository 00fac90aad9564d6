"""The gRPC server's workers: long calls get a share of them, and health checks never wait behind work.

A real server with 4 workers and 2 stream slots (so 1 long call at a time). The test
holds the work itself (the use case waits for an event it sets), so no call's speed
decides anything; the short timeouts below are failure bounds only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from image2sdr.server.errors import InvalidInputError
from image2sdr.server.serve import Server
from image2sdr.server.usecases import explanations
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.servers import start_server

TIMEOUT = 60
BOUND = 10  # seconds a call that must not wait gets: a failure bound, never reached when it passes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    started = start_server(tmp_path_factory.mktemp("grpc-server"), models_dir, workers=4, max_streams=2)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as channel:
        yield channel


class Held:
    """Work that waits until the test lets it go; ``entered`` counts those waiting."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def wait_for(self, count: int) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=TIMEOUT), "the held work never started"

    def hold(self) -> None:
        self.entered.release()
        assert self.release.wait(TIMEOUT), "the test never let the work go"


def _health(channel: grpc.Channel) -> int:
    request = health_pb2.HealthCheckRequest()
    return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=BOUND).status)


def test_long_calls_past_their_share_are_refused_at_once_and_short_calls_go_on(
    server: Server, channel: grpc.Channel, photos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held()

    def explain_image(*args: Any) -> Any:
        held.hold()
        raise InvalidInputError("held by the test", field="image")

    monkeypatch.setattr(explanations, "explain_image", explain_image)
    stub = pb_grpc.Image2SdrStub(channel)
    request = pb.ExplainRequest(image=photos["chelsea"], concept="cat")
    running = stub.Explain.future(request, timeout=TIMEOUT)
    try:
        held.wait_for(1)  # the one long-call slot is taken
        for _ in range(3):  # more than the workers left: none of them may wait on a worker
            with pytest.raises(grpc.RpcError) as refused:
                stub.Explain(request, timeout=BOUND)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "service.max_long_calls" in (refused.value.details() or "")
            status = rpc_status.from_call(refused.value)
            assert status is not None
            retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
            assert len(retry) == 1
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert len(stub.Encode(pb.EncodeRequest(image=photos["coffee"]), timeout=BOUND).sdr.active) > 0
    finally:
        held.release.set()
    with pytest.raises(grpc.RpcError) as ended:
        running.result(timeout=TIMEOUT)
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # it ran to its end, as the test made it
    assert server.cases.long_calls.running == 0


def test_health_is_answered_while_every_worker_is_busy(
    server: Server, channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Held()
    info = server.cases.info

    def held_info() -> Any:
        held.hold()
        return info()

    monkeypatch.setattr(server.cases, "info", held_info)
    stub = pb_grpc.Image2SdrStub(channel)
    busy = [stub.Info.future(pb.InfoRequest(), timeout=TIMEOUT) for _ in range(4)]
    try:
        held.wait_for(4)  # all 4 workers hold a call
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        held.release.set()
    assert all(call.result(timeout=TIMEOUT).active_bits == 328 for call in busy)
