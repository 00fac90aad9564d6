"""The gRPC service on a real server (port 0): contract, status codes, streams, load."""

from __future__ import annotations

import contextlib
import io
import itertools
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from image2sdr.server.config import LocalConceptsConfig, ServiceConfig
from image2sdr.server.encoder import EncodeOptions, Encoding
from image2sdr.server.grpc_api.stream_limits import OpenStream, StreamSlots
from image2sdr.server.index.values import AddOutcome, Item
from image2sdr.server.serve import Server
from image2sdr.server.thumbnails import Thumbnail
from image2sdr.server.usecases.items import MAX_IDS_PER_CALL
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.images import png_with_header
from tests.helpers.servers import healthy

TIMEOUT = 60


@pytest.fixture(scope="module")
def channel(service) -> Iterator[grpc.Channel]:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(service.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.Image2SdrStub:
    return pb_grpc.Image2SdrStub(channel)


def details_of(error: grpc.RpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no google.rpc.Status details on the error")


def expect(code: grpc.StatusCode, call, *args, **kwargs) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=kwargs.pop("timeout", TIMEOUT), **kwargs)
    assert info.value.code() == code, info.value.details()
    return info.value


@pytest.fixture
def encoded(service: Server, monkeypatch: pytest.MonkeyPatch) -> queue.Queue[int]:
    """One entry per image the server encodes, seen from inside it."""
    seen = queue.Queue[int]()
    encode_batch = service.encoder._encode_batch  # under encode_batch and encode_many both

    def counting(
        images: Sequence[bytes], options: EncodeOptions | None, thumbnails: Sequence[bool]
    ) -> list[Encoding | Exception]:
        for _ in images:
            seen.put(1)
        return encode_batch(images, options, thumbnails)

    monkeypatch.setattr(service.encoder, "_encode_batch", counting)
    return seen


@pytest.fixture
def streams_ended(monkeypatch: pytest.MonkeyPatch) -> queue.Queue[str]:
    """One entry per EncodeStream the server has finished with: its work is over and its slot given back."""
    ended = queue.Queue[str]()
    release = StreamSlots.release

    def releasing(self: StreamSlots, stream: OpenStream) -> None:
        release(self, stream)
        ended.put(stream.peer)

    monkeypatch.setattr(StreamSlots, "release", releasing)
    return ended


# -- the contract ------------------------------------------------------------------


def test_encode_a_photo(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]) -> None:
    response = stub.Encode(pb.EncodeRequest(image=photos["chelsea"], request_id="cat-1"), timeout=TIMEOUT)
    assert response.request_id == "cat-1"
    assert response.sdr.size == 16384 and list(response.sdr.dimensions) == [128, 128]
    active = list(response.sdr.active)
    assert len(active) == 328 and active == sorted(set(active))
    assert {"cat", "animal"} <= {c.name for c in response.concepts if c.used}
    assert not response.short and not response.HasField("error")
    assert response.timings.total_ms > 0


def test_same_image_same_sdr_over_the_wire(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]) -> None:
    first = stub.Encode(pb.EncodeRequest(image=photos["coffee"]), timeout=TIMEOUT)
    second = stub.Encode(pb.EncodeRequest(image=photos["coffee"]), timeout=TIMEOUT)
    assert list(first.sdr.active) == list(second.sdr.active)


def test_options_are_honoured(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]) -> None:
    options = pb.EncodeOptions(max_concepts=4, sparsity=0.04)
    response = stub.Encode(pb.EncodeRequest(image=photos["chelsea"], options=options), timeout=TIMEOUT)
    assert len(response.concepts) == 4
    assert len(response.sdr.active) <= round(16384 * 0.04)


def test_index_find_get_remove(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]) -> None:
    for name in ("chelsea", "coffee", "astronaut"):
        add = pb.AddToIndex(id=f"photo/{name}", metadata={"source": "skimage"})
        assert stub.Encode(pb.EncodeRequest(image=photos[name], add_to_index=add), timeout=TIMEOUT).indexed
    by_id = stub.FindSimilar(pb.FindSimilarRequest(id="photo/chelsea", k=5), timeout=TIMEOUT)
    assert "photo/chelsea" not in [m.id for m in by_id.matches]
    assert by_id.matches and by_id.matches[0].metadata["source"] == "skimage"
    by_image = stub.FindSimilar(pb.FindSimilarRequest(image=photos["chelsea"], k=3), timeout=TIMEOUT)
    assert by_image.matches[0].id == "photo/chelsea" and by_image.matches[0].overlap == 328
    assert any(c.name == "cat" for c in by_image.matches[0].concepts)
    by_sdr = stub.FindSimilar(pb.FindSimilarRequest(sdr=by_image.query, k=3, min_overlap=300), timeout=TIMEOUT)
    assert [m.id for m in by_sdr.matches] == ["photo/chelsea"]
    item = stub.GetItem(pb.GetItemRequest(id="photo/coffee"), timeout=TIMEOUT)
    assert item.id == "photo/coffee" and len(item.sdr.active) == 328
    # Read back from the store, every SDR still carries the geometry htm.core needs.
    assert list(item.sdr.dimensions) == list(by_id.query.dimensions) == [128, 128]
    again = stub.FindSimilar(pb.FindSimilarRequest(sdr=item.sdr, k=1), timeout=TIMEOUT)
    assert again.matches[0].id == "photo/coffee"
    stub.RemoveItem(pb.RemoveItemRequest(id="photo/coffee"), timeout=TIMEOUT)
    expect(grpc.StatusCode.NOT_FOUND, stub.GetItem, pb.GetItemRequest(id="photo/coffee"))


def test_items_exist(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]) -> None:
    add = pb.AddToIndex(id="exists/chelsea")
    stub.Encode(pb.EncodeRequest(image=photos["chelsea"], add_to_index=add), timeout=TIMEOUT)
    ids = ["exists/none", "exists/chelsea", "exists/none-either", "exists/chelsea"]
    answer = stub.ItemsExist(pb.ItemsExistRequest(ids=ids), timeout=TIMEOUT)
    assert list(answer.exists) == [False, True, False, True]
    assert list(stub.ItemsExist(pb.ItemsExistRequest(), timeout=TIMEOUT).exists) == []
    at_most = [f"exists/{i}" for i in range(MAX_IDS_PER_CALL)]
    assert not any(stub.ItemsExist(pb.ItemsExistRequest(ids=at_most), timeout=TIMEOUT).exists)
    for ids in ([*at_most, "one too many"], ["exists/chelsea", ""]):
        error = expect(grpc.StatusCode.INVALID_ARGUMENT, stub.ItemsExist, pb.ItemsExistRequest(ids=ids))
        bad_request = error_details_pb2.BadRequest()
        assert details_of(error).details[0].Unpack(bad_request)
        assert bad_request.field_violations[0].field == "ids"
    stub.RemoveItem(pb.RemoveItemRequest(id="exists/chelsea"), timeout=TIMEOUT)
    assert list(stub.ItemsExist(pb.ItemsExistRequest(ids=["exists/chelsea"]), timeout=TIMEOUT).exists) == [False]


def test_encode_text_and_similar_terms(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]) -> None:
    text = stub.EncodeText(pb.EncodeTextRequest(text="  Coffee Mug "), timeout=TIMEOUT)
    assert text.term == "coffee mug" and len(text.sdr.active) == 328
    cached = stub.EncodeText(pb.EncodeTextRequest(text="coffee mug"), timeout=TIMEOUT)  # from the term cache
    assert list(cached.sdr.dimensions) == [128, 128] and cached.sdr.active == text.sdr.active
    cat = stub.Encode(pb.EncodeRequest(image=photos["chelsea"]), timeout=TIMEOUT)
    words = stub.SimilarTerms(pb.SimilarTermsRequest(sdr=cat.sdr, k=10), timeout=TIMEOUT)
    assert len(words.terms) == 10
    assert "cat" in [t.term for t in words.terms]
    assert [t.overlap for t in words.terms] == sorted((t.overlap for t in words.terms), reverse=True)


def test_info(stub: pb_grpc.Image2SdrStub) -> None:
    info = stub.Info(pb.InfoRequest(), timeout=TIMEOUT)
    assert info.geometry.size == 16384 and list(info.geometry.dimensions) == [128, 128]
    assert info.active_bits == 328
    assert info.concepts.name == "local" and info.terms.name == "local" and info.terms.version
    assert info.concepts.version.startswith("onnx=")  # the exported classifier's sha256 prefix
    assert info.index_kind == "exact"
    assert info.limits.max_k == 1000 and info.limits.max_pixels > 0
    assert info.vocabulary_size > 1000


def test_health_and_reflection(channel: grpc.Channel) -> None:
    assert healthy(channel)
    reflection_stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = list(reflection_stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT))
    names = {service.name for service in response.list_services_response.service}
    assert "image2sdr.v1.Image2Sdr" in names and "grpc.health.v1.Health" in names


# -- bad input: the right status, details, and the server keeps serving ------------


def test_garbage_bytes(stub: pb_grpc.Image2SdrStub, channel: grpc.Channel) -> None:
    error = expect(grpc.StatusCode.INVALID_ARGUMENT, stub.Encode, pb.EncodeRequest(image=b"\x00garbage\xff" * 10))
    status = details_of(error)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "image"
    assert healthy(channel)


def test_empty_request(stub: pb_grpc.Image2SdrStub) -> None:
    error = expect(grpc.StatusCode.INVALID_ARGUMENT, stub.Encode, pb.EncodeRequest())
    assert "empty" in error.details()


def test_oversized_message(stub: pb_grpc.Image2SdrStub, channel: grpc.Channel) -> None:
    expect(grpc.StatusCode.RESOURCE_EXHAUSTED, stub.Encode, pb.EncodeRequest(image=b"\xff" * (5 * 1024 * 1024)))
    assert healthy(channel)


def test_pixel_bomb(stub: pb_grpc.Image2SdrStub) -> None:
    error = expect(
        grpc.StatusCode.RESOURCE_EXHAUSTED, stub.Encode, pb.EncodeRequest(image=png_with_header(90_000, 90_000))
    )
    quota = error_details_pb2.QuotaFailure()
    assert details_of(error).details[0].Unpack(quota)
    assert "pixels" in error.details()


@pytest.mark.parametrize(
    "sdr",
    [
        pb.Sdr(size=16384, active=[5, 3, 9]),  # unsorted
        pb.Sdr(size=16384, active=[3, 3, 9]),  # duplicated
        pb.Sdr(size=16384, active=[3, 16384]),  # out of range
        pb.Sdr(size=1024, active=[1, 2]),  # wrong size
        pb.Sdr(size=16384, dimensions=[64, 256], active=[1, 2]),  # wrong dimensions
    ],
)
def test_bad_sdr(stub: pb_grpc.Image2SdrStub, sdr: pb.Sdr) -> None:
    error = expect(grpc.StatusCode.INVALID_ARGUMENT, stub.FindSimilar, pb.FindSimilarRequest(sdr=sdr))
    bad_request = error_details_pb2.BadRequest()
    assert details_of(error).details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field.startswith("sdr.")


def test_bad_options_and_k(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]) -> None:
    expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.Encode,
        pb.EncodeRequest(image=photos["chelsea"], options=pb.EncodeOptions(sparsity=0.9)),
    )
    expect(grpc.StatusCode.INVALID_ARGUMENT, stub.FindSimilar, pb.FindSimilarRequest(id="x", k=1001))
    expect(grpc.StatusCode.INVALID_ARGUMENT, stub.FindSimilar, pb.FindSimilarRequest(k=3))  # no query
    expect(grpc.StatusCode.INVALID_ARGUMENT, stub.EncodeText, pb.EncodeTextRequest(text="   "))


def test_unknown_id(stub: pb_grpc.Image2SdrStub) -> None:
    for call, request in (
        (stub.GetItem, pb.GetItemRequest(id="no-such-item")),
        (stub.RemoveItem, pb.RemoveItemRequest(id="no-such-item")),
        (stub.FindSimilar, pb.FindSimilarRequest(id="no-such-item")),
    ):
        error = expect(grpc.StatusCode.NOT_FOUND, call, request)
        info = error_details_pb2.ResourceInfo()
        assert details_of(error).details[0].Unpack(info) and info.resource_name == "no-such-item"


def test_expired_deadline(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes], channel: grpc.Channel) -> None:
    expect(grpc.StatusCode.DEADLINE_EXCEEDED, stub.Encode, pb.EncodeRequest(image=photos["astronaut"]), timeout=0.0005)
    assert healthy(channel)


def test_a_stream_past_its_deadline_stops_on_the_server(
    stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes], encoded: queue.Queue[int], streams_ended: queue.Queue[str]
) -> None:

    def endless() -> Iterator[pb.EncodeRequest]:
        while True:
            yield pb.EncodeRequest(image=photos["chelsea"])

    with pytest.raises(grpc.RpcError) as info:
        for _ in stub.EncodeStream(endless(), timeout=1.0):
            pass
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    streams_ended.get(timeout=TIMEOUT)  # the server saw the deadline and stopped (a batch under way may finish)
    work = encoded.qsize()
    assert work > 0 and encoded.qsize() == work


# -- streams ---------------------------------------------------------------------------


def test_stream_keeps_order_and_answers_bad_items_in_band(
    stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes], channel: grpc.Channel
) -> None:
    good = list(photos.values())
    requests = []
    for i in range(40):
        image = good[i % len(good)] if i % 5 else b"not an image %d" % i
        requests.append(pb.EncodeRequest(image=image, request_id=f"r{i}"))
    responses = list(stub.EncodeStream(iter(requests), timeout=TIMEOUT * 2))
    assert [r.request_id for r in responses] == [f"r{i}" for i in range(40)]
    expected = {
        name: list(stub.Encode(pb.EncodeRequest(image=img), timeout=TIMEOUT).sdr.active) for name, img in photos.items()
    }
    names = list(photos)
    for i, response in enumerate(responses):
        if i % 5:
            assert not response.HasField("error")
            assert list(response.sdr.active) == expected[names[i % len(good)]]
        else:
            assert response.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert not response.HasField("sdr")
    assert healthy(channel)


def test_stream_item_with_pixel_bomb_and_bad_options(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]) -> None:
    requests = [
        pb.EncodeRequest(image=photos["chelsea"], request_id="a"),
        pb.EncodeRequest(image=png_with_header(90_000, 90_000), request_id="bomb"),
        pb.EncodeRequest(image=photos["chelsea"], request_id="b", options=pb.EncodeOptions(max_concepts=0)),
        pb.EncodeRequest(image=photos["chelsea"], request_id="c", add_to_index=pb.AddToIndex(id="")),
        pb.EncodeRequest(image=photos["chelsea"], request_id="d"),
    ]
    responses = {r.request_id: r for r in stub.EncodeStream(iter(requests), timeout=TIMEOUT)}
    assert responses["bomb"].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert responses["b"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert responses["c"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert list(responses["a"].sdr.active) == list(responses["d"].sdr.active)


def test_cancelled_stream_stops_and_server_stays_healthy(
    stub: pb_grpc.Image2SdrStub,
    photos: dict[str, bytes],
    channel: grpc.Channel,
    encoded: queue.Queue[int],
    streams_ended: queue.Queue[str],
) -> None:
    sent = queue.Queue[int]()
    senders: set[threading.Thread] = set()

    def endless() -> Iterator[pb.EncodeRequest]:
        i = 0
        while True:  # a caller that would send forever
            senders.add(threading.current_thread())
            sent.put(i)
            yield pb.EncodeRequest(image=photos["coffee"], request_id=str(i))
            i += 1

    call = stub.EncodeStream(endless(), timeout=TIMEOUT)
    received = [next(call).request_id for _ in range(5)]
    call.cancel()
    with pytest.raises(grpc.RpcError) as info:
        for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.CANCELLED
    assert received == ["0", "1", "2", "3", "4"]
    streams_ended.get(timeout=TIMEOUT)  # the server stopped the stream's work (a batch under way may finish)
    work = encoded.qsize()
    for sender in senders:  # nothing more is pulled from the caller: the thread that pulled has finished
        sender.join(timeout=TIMEOUT)
        assert not sender.is_alive()
    count = sent.qsize()
    assert work >= 5 and encoded.qsize() == work  # and the server encodes nothing more: the work stopped
    assert count < 5 + 64 + 32  # back-pressure: read-ahead stayed bounded
    assert healthy(channel)


def test_back_pressure_bounds_read_ahead(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]) -> None:
    """A sender faster than the encoder is held back: it is never far ahead of the answers."""
    pulled = 0

    def requests() -> Iterator[pb.EncodeRequest]:
        nonlocal pulled
        for i in range(240):
            pulled += 1
            yield pb.EncodeRequest(image=photos["chelsea"], request_id=str(i))

    ahead = []
    for answered, _ in enumerate(stub.EncodeStream(requests(), timeout=TIMEOUT * 4), start=1):
        ahead.append(pulled - answered)
    service = ServiceConfig()
    batch = min(LocalConceptsConfig().batch_size, service.stream_in_flight)  # stream_batch 0: the provider's
    # Queued (in_flight) + one batch being encoded + one being stored (finished) meanwhile +
    # one batch of answers on the way back + a 64 KiB transport window (one or two 39 KB photos).
    bound = service.stream_in_flight + 3 * batch + 4
    assert max(ahead) <= bound, f"read {max(ahead)} requests ahead of the answers; bound {bound}"


# -- load --------------------------------------------------------------------------------


def test_bounded_load(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes], channel: grpc.Channel) -> None:
    images = list(photos.values())

    def stream_worker(worker: int) -> int:
        requests = [pb.EncodeRequest(image=images[i % len(images)], request_id=f"{worker}-{i}") for i in range(30)]
        responses = list(stub.EncodeStream(iter(requests), timeout=TIMEOUT * 4))
        assert [r.request_id for r in responses] == [r.request_id for r in requests]
        assert not any(r.HasField("error") for r in responses)
        return len(responses)

    def unary_worker(worker: int) -> int:
        answered = 0
        for i in range(15):
            if i % 5 == 4:
                expect(grpc.StatusCode.INVALID_ARGUMENT, stub.Encode, pb.EncodeRequest(image=b"junk"))
            else:
                stub.Encode(pb.EncodeRequest(image=images[(worker + i) % len(images)]), timeout=TIMEOUT * 4)
            answered += 1
        return answered

    with ThreadPoolExecutor(8) as pool:
        streams = [pool.submit(stream_worker, w) for w in range(4)]
        unaries = [pool.submit(unary_worker, w) for w in range(4)]
        assert sum(f.result(timeout=600) for f in streams) == 4 * 30
        assert sum(f.result(timeout=600) for f in unaries) == 4 * 15
    assert healthy(channel)


def random_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_concurrent_adds_and_searches(stub: pb_grpc.Image2SdrStub) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def searcher() -> None:
        while not stop.is_set():
            try:
                stub.FindSimilar(pb.FindSimilarRequest(image=random_png(0), k=5), timeout=TIMEOUT)
            except grpc.RpcError as exc:  # pragma: no cover - reported below
                errors.append(exc)

    thread = threading.Thread(target=searcher)
    thread.start()
    for i in range(20):
        stub.Encode(pb.EncodeRequest(image=random_png(i), add_to_index=pb.AddToIndex(id=f"noise-{i}")), timeout=TIMEOUT)
    stop.set()
    thread.join(timeout=60)
    assert not errors
    for i in range(20):
        assert stub.GetItem(pb.GetItemRequest(id=f"noise-{i}"), timeout=TIMEOUT).id == f"noise-{i}"


def test_a_stream_batch_is_stored_in_one_transaction(
    stub: pb_grpc.Image2SdrStub, service: Server, photos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions: list[int] = []
    add_many = service.index.add_many

    def counting(items: Sequence[Item], **policy: Any) -> list[AddOutcome]:
        transactions.append(len(items))
        return add_many(items, **policy)

    monkeypatch.setattr(service.index, "add_many", counting)
    images = list(photos.values())
    requests = [
        pb.EncodeRequest(image=images[i % len(images)], request_id=str(i), add_to_index=pb.AddToIndex(id=f"tx-{i}"))
        for i in range(12)
    ]
    answers = list(stub.EncodeStream(iter(requests), timeout=TIMEOUT))
    assert all(a.indexed for a in answers)
    assert sum(transactions) == 12 and len(transactions) < 12  # whole batches, not one commit per image
    for i in range(12):
        stub.RemoveItem(pb.RemoveItemRequest(id=f"tx-{i}"), timeout=TIMEOUT)


def test_a_thumbnail_that_will_not_encode_fails_its_item_alone(
    stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thumbnail's bytes are made as its item is stored (on the stream's finishing thread): one
    that fails fails its item, in band, and the other items are stored and answered in order."""
    calls = itertools.count()
    encode = Thumbnail.data.func

    def second_fails(thumbnail: Thumbnail) -> bytes:
        if next(calls) == 1:
            raise OSError("the thumbnail encoder failed")
        return encode(thumbnail)

    monkeypatch.setattr(Thumbnail, "data", property(second_fails))
    ids = [f"thumbfail/{i}" for i in range(3)]
    requests = [
        pb.EncodeRequest(image=photos["chelsea"], request_id=str(i), add_to_index=pb.AddToIndex(id=item_id))
        for i, item_id in enumerate(ids)
    ]
    try:
        answers = list(stub.EncodeStream(iter(requests), timeout=TIMEOUT))
        assert [a.request_id for a in answers] == ["0", "1", "2"]
        assert [a.indexed for a in answers] == [True, False, True] and answers[1].HasField("error")
        assert list(stub.ItemsExist(pb.ItemsExistRequest(ids=ids), timeout=TIMEOUT).exists) == [True, False, True]
    finally:
        for item_id in ids:
            with contextlib.suppress(grpc.RpcError):
                stub.RemoveItem(pb.RemoveItemRequest(id=item_id), timeout=TIMEOUT)


def test_only_encodings_that_are_stored_make_a_thumbnail(
    service: Server, stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thumbnail costs ~0.7 ms: made for add_to_index, never for a query or Explain's variants."""
    made: list[Thumbnail | None] = []
    encoder = service.encoder
    encode_batch, encode_many = encoder.encode_batch, encoder.encode_many

    def recorded(outcomes: list[Any]) -> list[Any]:
        made.extend(outcome.thumbnail for outcome in outcomes if isinstance(outcome, Encoding))
        return outcomes

    monkeypatch.setattr(encoder, "encode_batch", lambda images, options=None: recorded(encode_batch(images, options)))
    monkeypatch.setattr(encoder, "encode_many", lambda requests: recorded(encode_many(requests)))
    add = pb.AddToIndex(id="thumbs/stored")
    assert stub.Encode(pb.EncodeRequest(image=photos["chelsea"], add_to_index=add), timeout=TIMEOUT).indexed
    try:
        assert len(made) == 1 and made[0]
        made.clear()
        stub.Encode(pb.EncodeRequest(image=photos["chelsea"]), timeout=TIMEOUT)
        stub.FindSimilar(pb.FindSimilarRequest(image=photos["chelsea"], k=1), timeout=TIMEOUT)
        stub.FindSimilar(pb.FindSimilarRequest(image=photos["chelsea"], k=1, space=pb.SPACE_BLEND), timeout=TIMEOUT)
        explained = stub.Explain(
            pb.ExplainRequest(image=photos["chelsea"], like="thumbs/stored", patch=150, stride=150), timeout=TIMEOUT
        )
        assert made == [None] * (3 + 1 + explained.variants)  # Encode, FindSimilar x 2, Explain's base and variants
        made.clear()
        streamed = [
            pb.EncodeRequest(image=photos["coffee"], request_id="kept", add_to_index=pb.AddToIndex(id="thumbs/mug")),
            pb.EncodeRequest(image=photos["rocket"], request_id="asked"),
        ]
        answers = list(stub.EncodeStream(iter(streamed), timeout=TIMEOUT))
        assert [a.request_id for a in answers] == ["kept", "asked"] and answers[0].indexed
        assert len(made) == 2 and made[0] and made[1] is None
        assert stub.GetItem(pb.GetItemRequest(id="thumbs/mug"), timeout=TIMEOUT).thumbnail
    finally:
        for item_id in ("thumbs/stored", "thumbs/mug"):
            with contextlib.suppress(grpc.RpcError):
                stub.RemoveItem(pb.RemoveItemRequest(id=item_id), timeout=TIMEOUT)
