"""The client over several replicas: calls go round robin, and a replica down or not SERVING is passed over.

Each replica is the fake servicer (``tests/helpers/fake_service.py``, no models) on its own
gRPC server on a loopback port, with a health service the test can turn to NOT_SERVING;
its ``calls`` counter says which replica answered.  The DNS test points the client at a
small DNS server of its own that gives one name a record per replica (127.0.0.1 and
127.0.0.2, one port), the shape of a Kubernetes headless Service.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from image2sdr.client import Image2SdrClient, Unavailable, cli
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.fake_service import FakeServicer
from tests.helpers.tls import certificate

IMAGE = b"\x89PNG not really, but the fake encodes anything that starts like one"
CALLS = 20
WAIT_S = 10.0  # the longest a test waits for the client to see a change; never asserted on


@dataclass
class Replica:
    """One fake server: its servicer (calls counted), its health service, its address."""

    server: grpc.Server
    address: str
    servicer: FakeServicer = field(default_factory=FakeServicer)
    health: health.HealthServicer = field(default_factory=health.HealthServicer)

    @property
    def encodes(self) -> int:
        return self.servicer.calls["Encode"]

    def stop(self) -> None:
        self.server.stop(None).wait()


def start_replica(host: str = "127.0.0.1", port: int = 0, credentials: grpc.ServerCredentials | None = None) -> Replica:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    if credentials is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    replica = Replica(server, f"{host}:{bound}")
    pb_grpc.add_Image2SdrServicer_to_server(replica.servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(replica.health, server)
    server.start()
    return replica


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started = [start_replica(), start_replica()]
    yield started
    for replica in started:
        replica.stop()


def encode_many(client: Image2SdrClient, times: int = CALLS) -> None:
    for _ in range(times):
        client.encode(IMAGE)


def warm_up(client: Image2SdrClient, replicas: list[Replica]) -> None:
    """Calls until every replica has had one: the client connects to each, and the turn starts with the first ready.

    With gRPC's default policy (pick_first) every call goes to one replica, and this fails.
    """
    for _ in range(100):
        if all(replica.encodes for replica in replicas):
            return
        client.encode(IMAGE)
    pytest.fail(f"100 calls did not reach every replica: {[replica.encodes for replica in replicas]}")


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {WAIT_S} s: {what}")


def reset(replicas: list[Replica]) -> None:
    for replica in replicas:
        replica.servicer.calls.clear()


# -- round robin over a list of addresses ------------------------------------------------


def test_calls_go_to_each_replica_in_turn(replicas: list[Replica]) -> None:
    a, b = replicas
    with Image2SdrClient([a.address, b.address]) as client:
        assert client.target == f"ipv4:{a.address},{b.address}"
        warm_up(client, replicas)
        reset(replicas)
        encode_many(client)
    assert (a.encodes, b.encodes) == (CALLS // 2, CALLS // 2)


def test_a_stopped_replica_is_passed_over(replicas: list[Replica]) -> None:
    a, b = replicas
    with Image2SdrClient([a.address, b.address]) as client:
        warm_up(client, replicas)
        b.stop()
        reset(replicas)
        encode_many(client)  # none raises
    assert (a.encodes, b.encodes) == (CALLS, 0)


def test_with_health_check_a_replica_not_serving_is_passed_over(replicas: list[Replica]) -> None:
    a, b = replicas
    with Image2SdrClient([a.address, b.address], health_check=True) as client:
        warm_up(client, replicas)
        b.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        until(lambda: _next_call_misses(client, b), "the client stops calling the replica that is NOT_SERVING")
        reset(replicas)
        encode_many(client)
        assert (a.encodes, b.encodes) == (CALLS, 0)
        b.health.set("", health_pb2.HealthCheckResponse.SERVING)
        until(lambda: not _next_call_misses(client, b), "the replica SERVING again gets calls")


def test_with_health_check_and_no_replica_serving_calls_raise_unavailable(replicas: list[Replica]) -> None:
    with Image2SdrClient([r.address for r in replicas], health_check=True, timeout=WAIT_S) as client:
        warm_up(client, replicas)
        for replica in replicas:
            replica.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        until(lambda: _raises_unavailable(client), "calls fail once no replica is SERVING")
        with pytest.raises(Unavailable):
            client.health()  # the health call is balanced like any other: it has nowhere to go


def test_without_health_check_a_replica_not_serving_still_gets_calls(replicas: list[Replica]) -> None:
    a, b = replicas
    with Image2SdrClient([a.address, b.address]) as client:
        warm_up(client, replicas)
        b.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert client.health() in {"SERVING", "NOT_SERVING"}  # whichever replica's turn it is answers
        reset(replicas)
        encode_many(client)
    assert (a.encodes, b.encodes) == (CALLS // 2, CALLS // 2)


def _next_call_misses(client: Image2SdrClient, replica: Replica) -> bool:
    """Whether ten calls in a row go elsewhere (by turn, one in two would reach ``replica``)."""
    before = replica.encodes
    encode_many(client, 10)
    return replica.encodes == before


def _raises_unavailable(client: Image2SdrClient) -> bool:
    try:
        client.encode(IMAGE)
    except Unavailable:
        return True
    return False


# -- round robin over the records of a DNS name ----------------------------------------


@contextmanager
def fake_dns(name: str, ips: list[str]) -> Iterator[str]:
    """A DNS server on a loopback UDP port that answers ``name``'s A query with ``ips``; yields its address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            sock.sendto(_dns_answer(query, name, ips), peer)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        sock.close()


def _dns_answer(query: bytes, name: str, ips: list[str]) -> bytes:
    """The answer to a one-question query: A records for ``name``, nothing else (AAAA and the rest are empty)."""
    end, labels = 12, []
    while query[end]:
        labels.append(query[end + 1 : end + 1 + query[end]].decode())
        end += 1 + query[end]
    (qtype,) = struct.unpack(">H", query[end + 1 : end + 3])
    a_query = qtype == 1 and ".".join(labels).lower() == name
    # Each record points back at the question's name (offset 12), class IN, TTL 0, 4 bytes.
    records = [struct.pack(">HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(ip) for ip in ips] if a_query else []
    header = struct.pack(">HHHHHH", struct.unpack(">H", query[:2])[0], 0x8180, 1, len(records), 0, 0)
    return header + query[12 : end + 5] + b"".join(records)


@pytest.fixture
def replicas_behind_one_port() -> Iterator[list[Replica]]:
    """Two replicas on one port, at 127.0.0.1 and 127.0.0.2, as two pods behind one Service port."""
    for _ in range(5):
        first = start_replica("127.0.0.1")
        port = int(first.address.rpartition(":")[2])
        try:
            second = start_replica("127.0.0.2", port)
        except RuntimeError:  # the port is taken on 127.0.0.2: try another
            first.stop()
            continue
        yield [first, second]
        first.stop()
        second.stop()
        return
    pytest.fail("found no port free on both 127.0.0.1 and 127.0.0.2")


def test_a_dns_name_with_a_record_per_replica_is_balanced(replicas_behind_one_port: list[Replica]) -> None:
    a, b = replicas_behind_one_port
    port = a.address.rpartition(":")[2]
    with (
        fake_dns("replicas.test", ["127.0.0.1", "127.0.0.2"]) as dns,
        Image2SdrClient(f"dns://{dns}/replicas.test:{port}") as client,  # dns://SERVER/NAME:PORT asks that server
    ):
        warm_up(client, replicas_behind_one_port)
        reset(replicas_behind_one_port)
        encode_many(client)
    assert (a.encodes, b.encodes) == (CALLS // 2, CALLS // 2)


# -- TLS and the token over several replicas -------------------------------------------


def test_tls_and_token_over_several_replicas() -> None:
    ca_pem, _, ca_key, ca_name = certificate("test CA", ca=True)
    cert, key_pem, _, _ = certificate("replicas.test", ca_key, ca_name, host="replicas.test")
    credentials = grpc.ssl_server_credentials([(key_pem, cert)])
    started = [start_replica(credentials=credentials) for _ in range(2)]
    try:
        addresses = [replica.address for replica in started]
        with pytest.raises(ValueError, match="server_name"):
            Image2SdrClient(addresses, root_certificates=ca_pem)  # the list is no name to check certificates against
        with Image2SdrClient(addresses, root_certificates=ca_pem, server_name="replicas.test", token="t0k") as client:
            warm_up(client, started)
        for replica in started:
            assert {m.get("authorization") for m in replica.servicer.metadata} == {"Bearer t0k"}
    finally:
        for replica in started:
            replica.stop()


# -- what the client makes of its target -----------------------------------------------


@pytest.mark.parametrize(
    ("target", "channel_target"),
    [
        ("localhost:50051", "localhost:50051"),  # one str is one gRPC target, as it is
        (
            "dns:///image2sdr-headless.ns.svc.cluster.local:50051",
            "dns:///image2sdr-headless.ns.svc.cluster.local:50051",
        ),
        ("ipv4:10.0.0.1:1,10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),
        (["sdr.example:443"], "sdr.example:443"),  # one address may be a name
        (("10.0.0.1:50051", " 10.0.0.2:50052 "), "ipv4:10.0.0.1:50051,10.0.0.2:50052"),
        (["[::1]:50051", "[fd00::2]:50051"], "ipv6:[::1]:50051,[fd00::2]:50051"),
    ],
)
def test_target(target: str | list[str], channel_target: str) -> None:
    with Image2SdrClient(target) as client:  # channels connect on the first call: nothing is called here
        assert client.target == channel_target


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("", "empty target"),
        ("  ", "empty target"),
        ([], "no addresses"),
        ([""], "is not HOST:PORT"),
        (["localhost"], "is not HOST:PORT"),
        (["localhost:"], "is not HOST:PORT"),
        (["localhost:http"], "is not HOST:PORT"),
        (["10.0.0.1:0"], "is not HOST:PORT"),
        (["10.0.0.1:65536"], "is not HOST:PORT"),
        (["::1:50051"], "is not HOST:PORT"),  # IPv6 needs its brackets
        (["[not-an-ip]:50051"], "is not HOST:PORT"),
        (["bad host:50051"], "is not HOST:PORT"),
        (["10.0.0.1:1", "dns:///b:2"], "is not HOST:PORT"),
        (["10.0.0.1:1", "10.0.0.2:2,10.0.0.3:3"], "is not HOST:PORT"),
        (["10.0.0.1:1", "replica-b:1"], "'replica-b:1' is a name"),
        (["127.0.0.1:1", "[::1]:1"], "all IPv4 or all IPv6"),
    ],
)
def test_a_bad_target_is_a_value_error(target: str | list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Image2SdrClient(target)


def test_an_address_that_is_no_str_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not int"):
        Image2SdrClient(["10.0.0.1:1", 50051])  # type: ignore[list-item]


# -- the CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "server"),
    [
        ([], "sdr.example:443"),  # $IMAGE2SDR_SERVER
        (["--server", "10.0.0.1:1"], "10.0.0.1:1"),  # replaces the default, adds nothing to it
        (["--server", "10.0.0.1:1", "--server", "10.0.0.2:2"], "10.0.0.1:1,10.0.0.2:2"),
        (["--server", "10.0.0.1:1,10.0.0.2:2", "--server", "10.0.0.3:3"], "10.0.0.1:1,10.0.0.2:2,10.0.0.3:3"),
    ],
)
def test_cli_server_can_be_given_again(monkeypatch: pytest.MonkeyPatch, argv: list[str], server: str) -> None:
    monkeypatch.setenv("IMAGE2SDR_SERVER", "sdr.example:443")
    assert cli.build_parser().parse_args(["text", "cat", *argv]).server == server


def test_cli_over_two_replicas(replicas: list[Replica], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = replicas
    monkeypatch.setenv("IMAGE2SDR_SERVER", f"{a.address},{b.address}")
    assert cli.main(["text", "cat"]) == 0
    assert cli.main(["text", "cat", "--server", a.address, "--server", b.address]) == 0
    assert a.servicer.calls["EncodeText"] + b.servicer.calls["EncodeText"] == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--server", "10.0.0.1:1,"], "is not HOST:PORT"),
        (["--server", "10.0.0.1:1", "--server", "replica-b:1"], "is a name"),
        (["--server", "10.0.0.1:1", "--server", "10.0.0.2:1", "--tls"], "--tls-server-name"),
    ],
)
def test_cli_bad_server_lists_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["text", "cat", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_target_with_a_scheme_goes_alone(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["text", "cat", "--server", "dns:///replicas.test:1", "--server", "10.0.0.2:1"])
    assert exit_.value.code == 2
    assert "goes alone" in capsys.readouterr().err
