"""A hostile caller cannot take the service away from others: real servers, real bytes.

Thin images that pass the pixel limit, damaged files that make Pillow raise
odd exceptions, idle streams, invalid ids sent with expensive images, bytes
that are not a protobuf, and a FindSimilar by id racing a replace.
"""

from __future__ import annotations

import os
import queue
import resource
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from image2sdr.server.config import IndexConfig
from image2sdr.server.errors import StreamLimitError
from image2sdr.server.grpc_api.stream_limits import StreamSlots, peer_host
from image2sdr.server.index import SdrIndex
from image2sdr.server.index.faiss.spaces import Spaces
from image2sdr.server.sdr import Sdr
from image2sdr.server.serve import Server
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.hostile import broken_colour_profile_png, odd_strip_offsets_tiff, thin_png
from tests.helpers.servers import healthy, start_server

TIMEOUT = 60
ENCODE_STREAM = "/image2sdr.v1.Image2Sdr/EncodeStream"
# Enough for the server (about 2.8 GiB of address space at its peak), far below the
# ~37 GB that enlarging a 16 x 3,000,000 image to a short side of 256 would take.
ADDRESS_SPACE_CAP = 5 << 30


@pytest.fixture(scope="module")
def channel(service: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(service.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.Image2SdrStub:
    return pb_grpc.Image2SdrStub(channel)


# -- images --------------------------------------------------------------------------


@pytest.fixture
def capped_server(tmp_path: Path, models_dir: Path) -> Iterator[str]:
    """`image2sdr serve` in its own process, under an address-space cap: a runaway allocation fails there."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))

    env = {**os.environ, "IMAGE2SDR_MODELS_DIR": str(models_dir)}
    command = [sys.executable, "-m", "image2sdr.server.serve", "--port", "0", "--http-port", "0"]
    command += ["--data-dir", str(tmp_path / "data")]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        preexec_fn=cap,  # noqa: PLW1509 - the cap is set in the child before the server starts
    ) as process:
        try:
            line = process.stdout.readline()  # type: ignore[union-attr]
            assert "listening on" in line
            yield f"127.0.0.1:{int(line.rsplit(':', 1)[1])}"
        finally:
            process.terminate()
            process.wait(timeout=60)


def test_thin_images_are_encoded_without_enlarging_them(capped_server: str) -> None:
    thin = {
        "16x3,000,000": thin_png(16, 3_000_000),
        "16x50,000": thin_png(16, 50_000),
        "50,000x16": thin_png(50_000, 16),
    }
    assert len(thin["16x3,000,000"]) < 16_000  # a few KB on the wire
    with grpc.insecure_channel(capped_server) as channel:
        stub = pb_grpc.Image2SdrStub(channel)
        for name, image in thin.items():
            response = stub.Encode(pb.EncodeRequest(image=image), timeout=TIMEOUT * 2)
            assert len(response.sdr.active) == 328, name
        # Several at once, in one stream, still within the cap; the server stays up.
        requests = [pb.EncodeRequest(image=thin["16x50,000"], request_id=str(i)) for i in range(4)]
        answers = list(stub.EncodeStream(iter(requests), timeout=TIMEOUT * 2))
        assert [a.request_id for a in answers] == ["0", "1", "2", "3"]
        assert not any(a.HasField("error") for a in answers)
        assert healthy(channel)


@pytest.mark.parametrize("make", [broken_colour_profile_png, odd_strip_offsets_tiff])
def test_a_damaged_file_is_invalid_argument(stub: pb_grpc.Image2SdrStub, channel: grpc.Channel, make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        stub.Encode(pb.EncodeRequest(image=make()), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "damaged" in (info.value.details() or "")
    assert healthy(channel)


def test_damaged_files_fail_alone_in_a_stream(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]) -> None:
    images = [photos["chelsea"], broken_colour_profile_png(), photos["coffee"], odd_strip_offsets_tiff()]
    requests = [pb.EncodeRequest(image=image, request_id=str(i)) for i, image in enumerate(images * 3)]
    answers = list(stub.EncodeStream(iter(requests), timeout=TIMEOUT * 2))
    assert [a.request_id for a in answers] == [str(i) for i in range(12)]
    for i, answer in enumerate(answers):
        if i % 2:
            assert answer.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        else:
            assert not answer.HasField("error") and len(answer.sdr.active) == 328


# -- requests checked before the work ---------------------------------------------------


def test_a_bad_id_is_refused_before_the_encode(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]) -> None:
    long_id = "x" * 257  # index.max_id_length is 256
    # Sent with bytes that are no image: the answer is about the id, so the id was checked first.
    for image in (b"not an image", photos["chelsea"]):
        with pytest.raises(grpc.RpcError) as info:
            stub.Encode(pb.EncodeRequest(image=image, add_to_index=pb.AddToIndex(id=long_id)), timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "item id" in (info.value.details() or "")
    requests = [
        pb.EncodeRequest(image=b"not an image", request_id="bad", add_to_index=pb.AddToIndex(id=long_id)),
        pb.EncodeRequest(image=photos["coffee"], request_id="good", add_to_index=pb.AddToIndex(id="coffee-ok")),
    ]
    bad, good = stub.EncodeStream(iter(requests), timeout=TIMEOUT)
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "item id" in bad.error.message
    assert good.indexed
    stub.RemoveItem(pb.RemoveItemRequest(id="coffee-ok"), timeout=TIMEOUT)  # the shared index stays as others expect
    with pytest.raises(grpc.RpcError) as info:
        stub.GetItem(pb.GetItemRequest(id=long_id), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bytes_that_are_not_a_protobuf_are_invalid_argument(
    channel: grpc.Channel, stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]
) -> None:
    garbage = b"\xff\xff\xff\xff\x0f"  # an unterminated varint key
    encode = channel.unary_unary("/image2sdr.v1.Image2Sdr/Encode")
    with pytest.raises(grpc.RpcError) as info:
        encode(garbage, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "EncodeRequest" in (info.value.details() or "")
    # In a stream the bad message is answered in-band, in its place; the good ones around it are kept.
    good = pb.EncodeRequest(image=photos["chelsea"], request_id="good").SerializeToString()
    stream = channel.stream_stream(ENCODE_STREAM, response_deserializer=pb.EncodeResponse.FromString)
    answers = list(stream(iter([good, garbage, good]), timeout=TIMEOUT))
    assert [a.request_id for a in answers] == ["good", "", "good"]
    assert answers[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert not answers[0].HasField("error") and answers[0].sdr.active == answers[2].sdr.active
    assert stub.Info(pb.InfoRequest(), timeout=TIMEOUT).active_bits == 328


# -- streams ---------------------------------------------------------------------------------


def _idle_stream(stub: pb_grpc.Image2SdrStub, image: bytes, release: threading.Event, name: str) -> grpc.Call:
    """A stream that sends one image, then holds the stream open without sending."""

    def requests() -> Iterator[pb.EncodeRequest]:
        yield pb.EncodeRequest(image=image, request_id=name)
        release.wait(120)

    call = stub.EncodeStream(requests(), timeout=120)
    assert next(call).request_id == name
    return call


def test_idle_streams_are_closed_and_their_slots_given_back(
    tmp_path: Path, models_dir: Path, photos: dict[str, bytes]
) -> None:
    server = start_server(
        tmp_path, models_dir, workers=4, max_streams=2, max_streams_per_peer=0, stream_idle_timeout_s=1.0
    )
    release = threading.Event()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.Image2SdrStub(channel)
            idle = [_idle_stream(stub, photos["chelsea"], release, f"idle-{i}") for i in range(2)]
            for call in idle:  # each is told why it ends, without the caller having done anything
                with pytest.raises(grpc.RpcError) as info:
                    next(call)
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert "stream_idle_timeout_s" in (info.value.details() or "")
            # Both slots are free again: two streams at once are served.
            busy = [stub.EncodeStream(iter([pb.EncodeRequest(image=photos["coffee"])]), timeout=TIMEOUT) for _ in "ab"]
            assert all(len(list(call)) == 1 for call in busy)
    finally:
        release.set()
        server.stop()


def test_a_peer_holds_only_its_share_of_the_streams(tmp_path: Path, models_dir: Path, photos: dict[str, bytes]) -> None:
    server = start_server(tmp_path, models_dir, workers=6, max_streams=4, max_streams_per_peer=2)
    release = threading.Event()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.Image2SdrStub(channel)
            held = [_idle_stream(stub, photos["chelsea"], release, f"held-{i}") for i in range(2)]
            with pytest.raises(grpc.RpcError) as info:
                list(stub.EncodeStream(iter([pb.EncodeRequest(image=photos["coffee"])]), timeout=TIMEOUT))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_streams_per_peer" in (info.value.details() or "")
            assert stub.Info(pb.InfoRequest(), timeout=TIMEOUT).active_bits == 328
            release.set()
            for call in held:
                assert list(call) == []
    finally:
        release.set()
        server.stop()


def test_stream_slots_share_per_peer_host() -> None:
    slots = StreamSlots(total=3, per_peer=2)
    a, b = peer_host("ipv4:10.0.0.7:50001"), peer_host("ipv4:10.0.0.7:50002")
    assert a == b == "ipv4:10.0.0.7"  # a new connection is the same peer
    assert peer_host("ipv6:[::1]:4242") == "ipv6:[::1]"
    first = slots.acquire(a)
    slots.acquire(b)
    with pytest.raises(StreamLimitError, match="max_streams_per_peer"):
        slots.acquire(a)
    slots.acquire("ipv4:10.0.0.8")  # another host still gets in
    with pytest.raises(StreamLimitError, match=r"service\.max_streams\)"):
        slots.acquire("ipv4:10.0.0.9")
    slots.release(first)
    slots.acquire("ipv4:10.0.0.9")
    assert slots.open_streams() == 3
    assert StreamSlots(total=2, per_peer=0).per_peer == 2  # 0: no share below the total


# -- the index ----------------------------------------------------------------------------


def test_find_similar_by_id_reads_one_consistent_state(tmp_path: Path, models_dir: Path) -> None:
    """The item is replaced back and forth while it is searched by id; every answer must agree with itself."""
    server = start_server(tmp_path, models_dir)
    size = 16384
    rng = np.random.default_rng(5)
    a_bits, b_bits = (np.sort(rng.choice(size, 328, replace=False)) for _ in "ab")
    a, b = (Sdr.from_positions(bits, size) for bits in (a_bits, b_bits))
    near = {a.positions.tobytes(): "near-a", b.positions.tobytes(): "near-b"}
    server.index.add("near-a", Sdr.from_positions(a_bits[:300], size))
    server.index.add("near-b", Sdr.from_positions(b_bits[:300], size))
    stop = threading.Event()
    failures: queue.Queue[str] = queue.Queue()

    def replace_forever() -> None:
        while not stop.is_set():
            for sdr in (a, b):
                server.index.add("subject", sdr)
                server.index.remove("subject")
                server.index.add("subject", sdr)

    writer = threading.Thread(target=replace_forever)
    server.index.add("subject", a)
    writer.start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.Image2SdrStub(channel)
            for _ in range(400):
                try:
                    answer = stub.FindSimilar(pb.FindSimilarRequest(id="subject", k=1), timeout=TIMEOUT)
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.NOT_FOUND or "subject" not in (exc.details() or ""):
                        raise
                    continue  # removed before the call: a fair answer
                searched = np.asarray(answer.query.active, dtype=np.uint32).tobytes()
                if answer.matches[0].id != near[searched]:
                    failures.put(f"query {near[searched]!r} but best match {answer.matches[0].id!r}")
    finally:
        stop.set()
        writer.join(timeout=60)
        server.stop()
    assert failures.empty(), failures.get()


def test_a_failed_open_closes_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def open_files() -> list[str]:
        paths = []
        for fd in Path("/proc/self/fd").iterdir():
            try:
                paths.append(os.readlink(fd))
            except FileNotFoundError:  # the directory listing's own descriptor, already closed
                continue
        return paths

    with SdrIndex(tmp_path, IndexConfig()) as index:
        index.add("one", Sdr.from_positions([1, 2, 3], 16384))
    snapshots = list(tmp_path.glob("*.snapshot"))
    assert snapshots
    for snapshot in snapshots:  # the next open must rebuild, and the rebuild fails
        snapshot.unlink()

    def failing_build(self: Spaces, *args: object) -> None:
        raise MemoryError("no room for FAISS")

    monkeypatch.setattr(Spaces, "build", failing_build)
    with pytest.raises(MemoryError):
        SdrIndex(tmp_path, IndexConfig())
    assert not [path for path in open_files() if path.startswith(str(tmp_path))]
    monkeypatch.undo()
    with SdrIndex(tmp_path, IndexConfig()) as index:  # and the directory is free to open again
        assert index.count() == 1
