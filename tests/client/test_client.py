"""The Python client without the real server: its surface, conversions, error mapping, calls.

The tests that need a socket talk to the fake servicer (``tests/helpers/fake_service.py``,
no models) on a loopback port, so streaming order, trailers, bearer metadata and
deadlines go through real gRPC.
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2

import image2sdr.client as client_pkg
from image2sdr.client import (
    MAX_IDS_PER_CALL,
    USE_CLIENT_DEFAULT,
    DuplicateThresholds,
    EncodeItem,
    Encoding,
    Image2SdrClient,
    Image2SdrError,
    Internal,
    InvalidArgument,
    ItemError,
    NotFound,
    ResourceExhausted,
    Sdr,
    Unavailable,
)
from image2sdr.client import _convert as convert
from image2sdr.client._exceptions import STATUS_DETAILS_KEY, error_from_rpc_error, error_from_status
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.fake_service import ACTIVE_BITS, DIMS, SIZE, FakeRpcError, FakeServicer, bad_request, packed

# -- the package surface -----------------------------------------------------------


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(client_pkg) if not name.startswith("_")} - {"cli"}
    assert sorted(client_pkg.__all__) == sorted(public)
    assert all(hasattr(client_pkg, name) for name in client_pkg.__all__)


def test_client_has_a_method_for_every_rpc_of_the_contract() -> None:
    service = pb.DESCRIPTOR.services_by_name["Image2Sdr"]
    for name in service.methods_by_name:
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        assert callable(getattr(Image2SdrClient, snake, None)), f"no client method for {name}"
        assert hasattr(pb_grpc.Image2SdrStub, "__init__")


# -- plain values and conversions ----------------------------------------------------


def test_sdr_dense_overlap_and_sparsity() -> None:
    a = Sdr(8, (2, 4), (1, 3, 6))
    b = Sdr(8, (2, 4), (3, 4, 6, 7))
    assert a.to_dense() == [0, 1, 0, 1, 0, 0, 1, 0]
    assert a.overlap(b) == b.overlap(a) == 2
    assert a.sparsity == 3 / 8


@pytest.mark.parametrize(
    ("size", "dimensions", "active"),
    [(8, (2, 4), (3, 1)), (8, (2, 4), (1, 1)), (8, (2, 4), (8,)), (8, (3, 3), ()), (0, (), ())],
)
def test_sdr_rejects_what_is_not_an_sdr(size: int, dimensions: tuple[int, ...], active: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        Sdr(size, dimensions, active)


def test_overlap_needs_equal_sizes() -> None:
    with pytest.raises(ValueError, match="8 and 16"):
        Sdr(8, (), (1,)).overlap(Sdr(16, (), (1,)))


def test_sdr_round_trips_through_protobuf() -> None:
    sdr = Sdr(SIZE, DIMS, (0, 5, 16383))
    message = convert.sdr_to_pb(sdr)
    assert list(message.active) == [0, 5, 16383] and list(message.dimensions) == [128, 128]
    assert convert.sdr_from_pb(pb.Sdr.FromString(message.SerializeToString())) == sdr


def test_encoding_from_response() -> None:
    response = pb.EncodeResponse(
        request_id="r1",
        sdr=pb.Sdr(size=SIZE, dimensions=DIMS, active=[2, 9]),
        concepts=[pb.Concept(name="cat", confidence=0.5, used=True), pb.Concept(name="mat", skip_reason="weak")],
        short=True,
        indexed=True,
        timings=pb.StageTimings(total_ms=12.5),
    )
    encoding = convert.encoding_from_pb(response)
    assert encoding.request_id == "r1" and encoding.short and encoding.indexed
    assert encoding.sdr.active == (2, 9)
    assert [(c.name, c.used, c.skip_reason) for c in encoding.concepts] == [("cat", True, ""), ("mat", False, "weak")]
    assert encoding.timings is not None and encoding.timings.total_ms == 12.5
    assert convert.encoding_from_pb(pb.EncodeResponse(sdr=response.sdr)).timings is None


def test_in_band_stream_error_becomes_an_item_error() -> None:
    response = pb.EncodeResponse(request_id="bad", error=bad_request("image", "not a decodable image"))
    result = convert.result_from_pb(response)
    assert isinstance(result, ItemError) and result.request_id == "bad"
    assert isinstance(result.error, InvalidArgument)
    assert result.error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in result.error.field_violations] == [("image", "not a decodable image")]


def test_options_and_add_to_index_messages() -> None:
    assert convert.encode_options_message(None, None, None) is None
    options = convert.encode_options_message(5, None, 0.04)
    assert options is not None and options.HasField("max_concepts") and not options.HasField("min_confidence")
    assert convert.add_to_index_message(None, None) is None
    added = convert.add_to_index_message("a/b.jpg", {"k": "v"})
    assert added is not None and added.id == "a/b.jpg" and dict(added.metadata) == {"k": "v"}
    with pytest.raises(ValueError, match="add_to_index"):
        convert.add_to_index_message(None, {"k": "v"})
    with pytest.raises(ValueError, match="add_to_index"):
        EncodeItem(b"x", metadata={"k": "v"})


def test_info_match_item_and_terms_from_protobuf() -> None:
    info = convert.info_from_pb(
        pb.InfoResponse(
            server_version="0.1.0",
            geometry=pb.Sdr(size=SIZE, dimensions=DIMS),
            active_bits=ACTIVE_BITS,
            concepts=pb.Provider(name="local", model="m"),
            index_size=3,
            limits=pb.Limits(max_k=1000),
            vocabulary_size=7,
        )
    )
    assert (info.size, info.dimensions, info.active_bits, info.index_size) == (SIZE, DIMS, ACTIVE_BITS, 3)
    assert info.concepts.name == "local" and info.limits.max_k == 1000 and info.vocabulary_size == 7
    match = convert.match_from_pb(pb.Match(id="x", overlap=40, metadata={"a": "b"}))
    assert (match.id, match.overlap, match.metadata) == ("x", 40, {"a": "b"})
    item = convert.item_from_pb(pb.Item(id="x", sdr=pb.Sdr(size=8, active=[1])))
    assert item.sdr == Sdr(8, (), (1,))
    assert convert.term_match_from_pb(pb.TermMatch(term="cat", overlap=9)).term == "cat"


# -- exceptions ----------------------------------------------------------------------


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_every_status_code_has_a_family(code: grpc.StatusCode) -> None:
    error = error_from_rpc_error(FakeRpcError(code, "boom"))
    assert type(error) is not Image2SdrError and isinstance(error, Image2SdrError)
    assert code in type(error).codes and error.code is code and error.message == "boom"


def test_details_are_read_from_the_status_trailer() -> None:
    status = bad_request("options.sparsity", "must be in (0, 0.5]")
    trailers = (("other", "x"), (STATUS_DETAILS_KEY, status.SerializeToString()))
    error = error_from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad sparsity", trailers))
    assert isinstance(error, InvalidArgument)
    assert error.field_violations[0].field == "options.sparsity"
    assert isinstance(error.details[0], error_details_pb2.BadRequest)


def test_retry_quota_and_resource_details() -> None:
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000))
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="upstream down", details=packed(retry))
    error = error_from_status(status)
    assert isinstance(error, Unavailable) and error.retry_delay == 1.5
    quota = error_details_pb2.QuotaFailure(violations=[error_details_pb2.QuotaFailure.Violation(subject="pixels")])
    exhausted = error_from_status(status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, details=packed(quota)))
    assert isinstance(exhausted, ResourceExhausted) and exhausted.quota_violations[0].subject == "pixels"
    info = error_details_pb2.ResourceInfo(resource_type="item", resource_name="cat.jpg")
    missing = error_from_status(status_pb2.Status(code=code_pb2.NOT_FOUND, message="no", details=packed(info)))
    assert isinstance(missing, NotFound) and missing.resource_name == "cat.jpg"
    assert missing.retry_delay is None and missing.field_violations == ()


def test_garbled_trailer_and_unknown_codes_still_map() -> None:
    trailers = ((STATUS_DETAILS_KEY, b"\xff\xff not a status"),)
    error = error_from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "gone", trailers))
    assert isinstance(error, NotFound) and error.details == ()
    assert isinstance(error_from_status(status_pb2.Status(code=999, message="?")), Internal)


# -- against the fake servicer on a loopback port ----------------------------------------


def test_encode_sends_the_bearer_token_and_health_answers(fake: tuple[FakeServicer, str], tiny_png: bytes) -> None:
    servicer, address = fake
    with Image2SdrClient(address, token="s3cret", timeout=5) as client:
        encoding = client.encode(tiny_png, max_concepts=3, request_id="one")
        assert client.health() == health_pb2.HealthCheckResponse.ServingStatus.Name(
            health_pb2.HealthCheckResponse.SERVING
        )
    assert encoding.request_id == "one" and len(encoding.sdr.active) == ACTIVE_BITS
    assert servicer.metadata[-1]["authorization"] == "Bearer s3cret"


def test_failed_call_raises_the_typed_error_from_the_rpc_error(fake: tuple[FakeServicer, str]) -> None:
    _, address = fake
    with Image2SdrClient(address, timeout=5) as client, pytest.raises(InvalidArgument) as caught:
        client.encode(b"plain text")
    assert caught.value.field_violations[0].field == "image"
    assert isinstance(caught.value.__cause__, grpc.RpcError)
    with Image2SdrClient(address, timeout=5) as client, pytest.raises(NotFound) as missing:
        client.get_item("nope")
    assert missing.value.resource_name == "nope"


def test_items_exist_answers_each_id_in_order(fake: tuple[FakeServicer, str], tiny_png: bytes) -> None:
    servicer, address = fake
    with Image2SdrClient(address, timeout=5) as client:
        client.encode(tiny_png, add_to_index="b")
        assert client.items_exist(["a", "b", "c", "b"]) == [False, True, False, True]
        assert client.items_exist([]) == []
        with pytest.raises(InvalidArgument):
            client.items_exist(["x"] * (MAX_IDS_PER_CALL + 1))
    assert servicer.calls["ItemsExist"] == 3


def test_unreachable_server_is_unavailable() -> None:
    with Image2SdrClient("127.0.0.1:1", timeout=2) as client, pytest.raises(Unavailable):
        client.info()


def test_encode_stream_keeps_order_with_local_and_in_band_errors(
    fake: tuple[FakeServicer, str], tiny_png: bytes, tmp_path: Path
) -> None:
    _, address = fake
    image_file = tmp_path / "red.png"
    image_file.write_bytes(tiny_png)
    items = [
        EncodeItem(tiny_png, request_id="a"),
        EncodeItem(tmp_path / "missing.png", request_id="b"),
        EncodeItem(b"not an image", request_id="c"),
        image_file,
        EncodeItem(b"\x89PNG" + bytes(4096), request_id="too-big"),
    ]
    with Image2SdrClient(address, timeout=5, max_message_bytes=2048) as client:
        results = list(client.encode_stream(items))
    assert [r.request_id for r in results] == ["a", "b", "c", "3", "too-big"]
    assert isinstance(results[0], Encoding) and isinstance(results[3], Encoding)
    assert all(isinstance(r, ItemError) for r in (results[1], results[2], results[4]))
    errors = [r.error for r in results if isinstance(r, ItemError)]
    assert [type(e) for e in errors] == [InvalidArgument, InvalidArgument, ResourceExhausted]
    assert "missing.png" in errors[0].message


def test_encode_stream_can_be_abandoned_early(fake: tuple[FakeServicer, str], tiny_png: bytes) -> None:
    _, address = fake
    with Image2SdrClient(address, timeout=5) as client:
        stream = client.encode_stream(tiny_png for _ in range(1000))
        first = next(stream)
        stream.close()  # cancels the call rather than draining it
    assert isinstance(first, Encoding) and first.request_id == "0"


def test_find_similar_takes_exactly_one_query(fake: tuple[FakeServicer, str]) -> None:
    _, address = fake
    with Image2SdrClient(address) as client:
        with pytest.raises(ValueError, match="exactly one"):
            client.find_similar()
        with pytest.raises(ValueError, match="exactly one"):
            client.find_similar(id="a", image=b"x")
        with pytest.raises(ValueError, match="space"):
            client.find_similar(id="a", space="looks")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="exactly one"):
            client.find_duplicates()


def test_find_similar_in_a_space_says_what_it_skipped(fake: tuple[FakeServicer, str], tiny_png: bytes) -> None:
    servicer, address = fake
    for name in ("a", "b"):
        servicer.store(tiny_png + name.encode(), name)
    with Image2SdrClient(address) as client:
        matches = client.find_similar(id="a", space="blend", blend_weight=0.2)
        semantic = client.find_similar(id="a")
    assert servicer.searches[0].space == pb.SPACE_BLEND and servicer.searches[0].blend_weight == pytest.approx(0.2)
    (match,) = matches
    assert match.id == "b" and match.scored_by == ("semantic", "visual") and matches.skipped_without_visual == 1
    assert match.semantic_overlap is not None and match.visual_overlap is not None
    assert match.score == pytest.approx(0.8 * match.semantic_overlap + 0.2 * match.visual_overlap, rel=1e-6)
    assert servicer.searches[1].space == pb.SPACE_SEMANTIC and semantic.skipped_without_visual == 0


def test_find_duplicates_and_skip_on_duplicate(fake: tuple[FakeServicer, str], tiny_png: bytes) -> None:
    servicer, address = fake
    with Image2SdrClient(address) as client:
        first = client.encode(tiny_png, add_to_index="first")
        again = client.encode(tiny_png, add_to_index="again", on_duplicate="skip")
        copies = client.find_duplicates(image=tiny_png, thresholds=DuplicateThresholds(max_phash_distance=4))
        by_id = client.find_duplicates(id="first")
    assert first.indexed and first.fingerprint is not None and first.visual is not None
    assert len(first.fingerprint.phash_hex) == 16 and len(first.fingerprint.sha256) == 64
    assert not again.indexed and again.duplicate is not None and again.duplicate.id == "first"
    assert sorted(servicer.items) == ["first"]
    assert [(c.id, c.kind, c.phash_distance) for c in copies] == [("first", "same_bytes", 0)]
    assert by_id == []  # itself left out
    with pytest.raises(ValueError, match="add_to_index"):
        convert.add_to_index_message(None, None, "skip")
    with pytest.raises(ValueError, match="on_duplicate"):
        convert.add_to_index_message("x", None, "never")  # type: ignore[arg-type]


def test_new_fields_from_protobuf() -> None:
    fingerprint = pb.Fingerprint(sha256="ab" * 32, phash=(1 << 64) - 1)
    response = pb.EncodeResponse(
        sdr=pb.Sdr(size=SIZE, dimensions=DIMS, active=[1]),
        visual=pb.Sdr(size=SIZE, dimensions=DIMS, active=[2, 3]),
        fingerprint=fingerprint,
        duplicate=pb.Duplicate(id="old", kind=pb.DUPLICATE_KIND_TRANSFORMED, phash_distance=20, visual_overlap=250),
        replaced=["x", "y"],
    )
    encoding = convert.encoding_from_pb(response)
    assert encoding.visual is not None and encoding.visual.active == (2, 3)
    assert encoding.fingerprint is not None and encoding.fingerprint.phash_hex == "f" * 16
    assert encoding.duplicate is not None and encoding.duplicate.kind == "transformed"
    assert encoding.replaced == ("x", "y")
    bare = convert.encoding_from_pb(pb.EncodeResponse(sdr=response.sdr))
    assert bare.visual is None and bare.fingerprint is None and bare.duplicate is None
    item = convert.item_from_pb(pb.Item(id="sdr-only", sdr=pb.Sdr(size=8, active=[1])))
    assert item.visual is None and item.fingerprint is None  # added by SDR alone: says so
    info = convert.info_from_pb(
        pb.InfoResponse(
            visual=pb.Provider(name="local", version="v1"),
            duplicate_thresholds=pb.DuplicateThresholds(max_phash_distance=6, min_visual_share=0.5),
            index_visual_size=4,
        )
    )
    assert info.visual is not None and info.visual.version == "v1" and info.index_visual_size == 4
    assert info.duplicate_thresholds == DuplicateThresholds(6, 0.5)
    assert convert.info_from_pb(pb.InfoResponse()).visual is None
    options = convert.encode_options_message(None, None, None, 0.25)
    assert options is not None and options.HasField("visual_share") and not options.HasField("sparsity")


def test_tls_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="go together"):
        Image2SdrClient("localhost:1", certificate_chain=b"pem")


def test_one_call_can_drop_or_change_the_client_default_deadline(
    fake: tuple[FakeServicer, str], tiny_png: bytes
) -> None:
    servicer, address = fake
    with Image2SdrClient(address, timeout=5) as client:
        client.encode(tiny_png)  # the client's own 5 s
        client.encode(tiny_png, timeout=USE_CLIENT_DEFAULT)
        client.encode(tiny_png, timeout=None)  # no deadline for this call
        client.encode(tiny_png, timeout=60)
    default, explicit_default, none, longer = servicer.deadlines
    # The server's view of a deadline is rounded a little: compare with margins.
    assert default is not None and 0 < default < 6
    assert explicit_default is not None and 0 < explicit_default < 6
    assert none is None or none > 1e6  # no deadline (grpc reports an unbounded one as huge)
    assert longer is not None and 30 < longer < 61
