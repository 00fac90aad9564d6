"""Faults of the Milvus engine told for what they are (issue 26): a collection set that does not match,
a side collection dropped under a running index and its explicit repair, credentials refused,
and an outage's messages without transport debris.

On the real server the suite starts (``milvus_server``): what Milvus answers to a dropped
collection or a foreign schema is the point.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from image2sdr.server.config import IndexConfig, MilvusConfig
from image2sdr.server.errors import IndexMismatchError, UpstreamError, UpstreamKeyError
from image2sdr.server.fingerprints import Fingerprint
from image2sdr.server.index import VISUAL, Item, MilvusIndex
from image2sdr.server.index.milvus import repair as repair_module
from image2sdr.server.messages.status import status_for
from image2sdr.server.sdr import Sdr
from image2sdr.server.upstream import RetryPolicy, Secret
from tests.helpers.index import SIZE
from tests.helpers.milvus import MilvusServer, drop_collections

_COLLECTIONS = itertools.count()
_SHA = "ab" * 32
_PHASH = 0x8F3C_0000_1234_5678


@pytest.fixture
def prefix(milvus_server: MilvusServer) -> Iterator[str]:
    name = f"faults_{next(_COLLECTIONS)}_{time.time_ns() % 10**9}"
    yield name
    drop_collections(milvus_server.uri, f"{name}_")


def _config(uri: str, prefix: str, **milvus: object) -> IndexConfig:
    settings = {"uri": uri, "collection": prefix, **milvus}
    return IndexConfig(backend="milvus", milvus=MilvusConfig(**settings))  # type: ignore[arg-type]


def _collections(uri: str, prefix: str) -> list[str]:
    client = MilvusClient(uri=uri, timeout=30)
    try:
        return sorted(name for name in client.list_collections() if name.startswith(f"{prefix}_"))
    finally:
        client.close()


def test_a_foreign_schema_is_refused_naming_what_differs_and_nothing_is_created(
    milvus_server: MilvusServer, prefix: str
) -> None:
    client = MilvusClient(uri=milvus_server.uri, timeout=30)
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=32)
        schema.add_field("code", DataType.BINARY_VECTOR, dim=64)
        schema.add_field("seq", DataType.VARCHAR, max_length=20)
        params = client.prepare_index_params()
        params.add_index(field_name="code", metric_type="HAMMING", index_type="BIN_FLAT")
        client.create_collection(f"{prefix}_semantic", schema=schema, index_params=params)
    finally:
        client.close()
    with pytest.raises(IndexMismatchError) as refused:
        MilvusIndex(_config(milvus_server.uri, prefix), SIZE)
    message = str(refused.value)
    assert f"{prefix}_semantic lacks field 'id'" in message and "'sha256'" in message
    assert f"{prefix}_semantic.seq is VARCHAR, this config makes INT64" in message
    assert "holds codes of 64 bits" in message
    assert _collections(milvus_server.uri, prefix) == [f"{prefix}_semantic"]  # nothing created
    status = status_for(refused.value)
    assert status.code == code_pb2.FAILED_PRECONDITION and not status.details  # no retry hint


def test_a_dropped_side_collection_is_an_error_until_repaired_from_the_item_rows(
    milvus_server: MilvusServer, shared: MilvusIndex, tmp_path: Path
) -> None:
    uri, prefix, running = milvus_server.uri, shared.engine.config.milvus.collection, shared
    semantic, visual = Sdr.from_positions(range(20), SIZE), Sdr.from_positions(range(100, 140), SIZE)
    stored = Item("photo", semantic, spaces={VISUAL: visual}, fingerprint=Fingerprint(_SHA, _PHASH))
    before = running.count()  # the package's other tests' items are there
    running.add_many([stored, Item("plain", Sdr.from_positions(range(5), SIZE))])
    client = MilvusClient(uri=uri, timeout=30)
    for name in ("visual", "phash"):
        client.drop_collection(f"{prefix}_{name}")
    client.close()

    with pytest.raises(IndexMismatchError) as failing:  # told at once, as what it is
        running.get("photo")
    assert f"{prefix}_visual" in str(failing.value) and "repair" in str(failing.value)
    assert status_for(failing.value).code == code_pb2.FAILED_PRECONDITION
    assert not running.available()
    assert f"{prefix}_" in running.problem() and "missing" in running.problem()  # health's reason

    with pytest.raises(IndexMismatchError) as refused:  # a restart does not recreate them empty
        MilvusIndex(_config(uri, prefix), SIZE)
    assert f"{prefix}_visual, {prefix}_phash" in str(refused.value)
    assert "nothing was created" in str(refused.value)
    assert f"{prefix}_visual" not in _collections(uri, prefix)  # nothing created

    config = tmp_path / "config.yml"
    config.write_text(
        f"data_dir: {tmp_path}\nindex:\n  backend: milvus\n  milvus:\n    uri: {uri}\n    collection: {prefix}\n",
        encoding="utf-8",
    )
    assert repair_module.main(["--config", str(config)]) == 0

    assert running.available() and running.problem() == ""  # the running index serves again
    repaired = MilvusIndex(_config(uri, prefix), SIZE)
    try:
        item = repaired.get("photo")
        assert item.sdr == semantic and item.in_space(VISUAL) is None  # the visual code is lost, and says so
        assert (repaired.count(), repaired.count(VISUAL)) == (before + 2, 0)
        copies = repaired.find_duplicates(Fingerprint("cd" * 32, _PHASH ^ 0b11), None)
        assert [copy.id for copy in copies] == ["photo"]  # the pHash rebuilt from the item row
    finally:
        repaired.close()


def test_config_drift_is_refused_at_start(milvus_server: MilvusServer, shared: MilvusIndex) -> None:
    prefix = shared.engine.config.milvus.collection
    with pytest.raises(IndexMismatchError) as refused:
        MilvusIndex(_config(milvus_server.uri, prefix, index_type="BIN_IVF_FLAT", shards=4), SIZE)
    message = str(refused.value)
    assert f"{prefix}_semantic is indexed BIN_FLAT, milvus.index_type says BIN_IVF_FLAT" in message
    assert f"{prefix}_semantic has 1 shards, milvus.shards says 4" in message


class _RpcError(grpc.RpcError):
    """What grpc raises for a call the server answered with ``code``."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    "refusal",
    [
        _RpcError(
            grpc.StatusCode.UNAUTHENTICATED, "auth check failure, please check username and password are correct"
        ),
        MilvusException(1400, "not authenticated"),  # Milvus's own code (merr)
        MilvusException(1, "Fail connecting to server: auth check failure, please check username and password"),
    ],
)
def test_refused_credentials_are_told_naming_the_token_variable(
    shared: MilvusIndex, monkeypatch: pytest.MonkeyPatch, refusal: Exception
) -> None:
    """Milvus 2.3.5 answers a wrong token as each of these (the test server runs without auth: the answer is
    given to the engine's client here)."""
    engine = shared.engine
    milvus = engine.config.milvus.model_copy(update={"token_env": "MY_MILVUS_TOKEN"})
    monkeypatch.setattr(engine, "config", engine.config.model_copy(update={"milvus": milvus}))
    monkeypatch.setattr(engine, "_token", Secret("user:the-secret-value"))

    def refused(*args: object, **kwargs: object) -> object:
        raise refusal

    monkeypatch.setattr(engine._client, "query", refused)
    with pytest.raises(UpstreamKeyError) as failed:
        shared.contains(["x"])
    message = str(failed.value)
    assert "$MY_MILVUS_TOKEN" in message and "credentials" in message and "the-secret-value" not in message
    assert status_for(failed.value).code == code_pb2.FAILED_PRECONDITION
    assert not shared.available() and "$MY_MILVUS_TOKEN" in shared.problem()  # health's reason


def test_an_outage_message_carries_no_transport_debris_and_the_budget_holds(
    shared: MilvusIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = shared.engine
    monkeypatch.setattr(engine, "_policy", RetryPolicy("Milvus at the test server", 10.0, 4.0, 0.01))
    debris = (
        "<_InactiveRpcError of RPC that terminated with:\n\tstatus = StatusCode.UNAVAILABLE\n\tdetails = "
        '"failed to connect to all addresses"\n\tdebug_error_string = "UNKNOWN:Error received from peer '
        '{grpc_status:14, grpc_message:"failed to connect"}"\n>'
    )
    given: list[float] = []

    def down(*args: object, timeout: float, **kwargs: object) -> object:
        given.append(timeout)
        raise MilvusException(2, f"[query] Retry timeout: {timeout}s, {debris}")

    monkeypatch.setattr(engine._client, "query", down)
    with pytest.raises(UpstreamError) as failed:
        shared.contains(["x"])
    message = str(failed.value)
    assert "Milvus" in message and "unavailable" in message
    assert "_InactiveRpcError" not in message and "debug_error_string" not in message and "{" not in message
    assert len(given) > 1  # retried; each request given a share of the budget pymilvus cannot overrun
    assert "failed to connect to all addresses" in message  # what grpc said, kept
    assert max(given) <= 4.0  # no request is given more than the call's budget


def test_a_call_ends_within_its_budget_while_a_request_hangs(
    shared: MilvusIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pymilvus may hold a request past its timeout (its own retries): the call returns anyway, UNAVAILABLE."""
    engine = shared.engine
    monkeypatch.setattr(engine, "_policy", RetryPolicy("Milvus at the test server", 10.0, 1.0, 0.01))
    released = threading.Event()
    hung = threading.Event()

    def hanging(*args: object, **kwargs: object) -> object:
        hung.set()
        released.wait(60)
        raise MilvusException(2, "released by the test")

    monkeypatch.setattr(engine._client, "query", hanging)
    try:
        with pytest.raises(UpstreamError) as failed:
            shared.contains(["x"])
        assert hung.is_set() and not released.is_set()  # returned while the request still hangs
        assert "no answer within" in str(failed.value)
    finally:
        released.set()


def test_the_writer_reads_its_own_writes_at_the_default_level(shared: MilvusIndex) -> None:
    """Bounded by default: this replica's reads right after its own write are Session (its write's timestamp)."""
    assert shared.engine.config.milvus.consistency_level == "Bounded"
    before = shared.count()
    sdr = Sdr.from_positions(range(300, 330), SIZE)
    for number in range(3):
        shared.add(f"own-{number}", sdr)
        assert shared.get(f"own-{number}").sdr == sdr
        assert shared.contains([f"own-{number}"]) == [True]
    assert shared.count() == before + 3
    assert {match.id for match in shared.search(sdr, k=5)} >= {"own-0", "own-1", "own-2"}
    shared.remove("own-0")
    assert shared.contains(["own-0"]) == [False] and shared.count() == before + 2
