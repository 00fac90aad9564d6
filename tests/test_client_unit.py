"""The Python client without the real server: conversions, error mapping, the CLI, the PNG drawing.

The few tests that need a socket talk to a small fake servicer on a loopback port
(no models), so streaming order, trailers and bearer metadata go through real gRPC.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import sys
import types
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from PIL import Image

import image2sdr.client as client_pkg
from image2sdr.client import (
    USE_CLIENT_DEFAULT,
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
    cli,
)
from image2sdr.client import _convert as convert
from image2sdr.client._draw import ACTIVE, BACKGROUND, sdr_image
from image2sdr.client._exceptions import STATUS_DETAILS_KEY, error_from_rpc_error, error_from_status
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

SIZE, DIMS, ACTIVE_BITS = 16384, (128, 128), 328


def _packed(*details: Any) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return packed


def _bad_request(field_name: str, description: str) -> status_pb2.Status:
    violation = error_details_pb2.BadRequest.FieldViolation(field=field_name, description=description)
    detail = error_details_pb2.BadRequest(field_violations=[violation])
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=description, details=_packed(detail))


class FakeRpcError(grpc.RpcError):
    """What a failed call raises: a grpc.RpcError that is also a grpc.Call."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, Any], ...] = ()) -> None:
        super().__init__(details)
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailers


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
    response = pb.EncodeResponse(request_id="bad", error=_bad_request("image", "not a decodable image"))
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
    status = _bad_request("options.sparsity", "must be in (0, 0.5]")
    trailers = (("other", "x"), (STATUS_DETAILS_KEY, status.SerializeToString()))
    error = error_from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad sparsity", trailers))
    assert isinstance(error, InvalidArgument)
    assert error.field_violations[0].field == "options.sparsity"
    assert isinstance(error.details[0], error_details_pb2.BadRequest)


def test_retry_quota_and_resource_details() -> None:
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000))
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="upstream down", details=_packed(retry))
    error = error_from_status(status)
    assert isinstance(error, Unavailable) and error.retry_delay == 1.5
    quota = error_details_pb2.QuotaFailure(violations=[error_details_pb2.QuotaFailure.Violation(subject="pixels")])
    exhausted = error_from_status(status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, details=_packed(quota)))
    assert isinstance(exhausted, ResourceExhausted) and exhausted.quota_violations[0].subject == "pixels"
    info = error_details_pb2.ResourceInfo(resource_type="item", resource_name="cat.jpg")
    missing = error_from_status(status_pb2.Status(code=code_pb2.NOT_FOUND, message="no", details=_packed(info)))
    assert isinstance(missing, NotFound) and missing.resource_name == "cat.jpg"
    assert missing.retry_delay is None and missing.field_violations == ()


def test_garbled_trailer_and_unknown_codes_still_map() -> None:
    trailers = ((STATUS_DETAILS_KEY, b"\xff\xff not a status"),)
    error = error_from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "gone", trailers))
    assert isinstance(error, NotFound) and error.details == ()
    assert isinstance(error_from_status(status_pb2.Status(code=999, message="?")), Internal)


# -- against a fake servicer on a loopback port ----------------------------------------


def _fake_sdr(image: bytes) -> pb.Sdr:
    seed = int.from_bytes(hashlib.sha256(image).digest()[:8], "big")
    return pb.Sdr(size=SIZE, dimensions=DIMS, active=sorted(random.Random(seed).sample(range(SIZE), ACTIVE_BITS)))


def _abort(context: grpc.ServicerContext, status: status_pb2.Status) -> None:
    from grpc_status import rpc_status  # noqa: PLC0415 - a server-side helper, in the dev environment

    context.abort_with_status(rpc_status.to_status(status))


@dataclass
class FakeServicer(pb_grpc.Image2SdrServicer):  # type: ignore[misc]
    """Encodes anything that starts like a PNG or JPEG; stores items in a dict."""

    items: dict[str, pb.Item] = field(default_factory=dict)
    metadata: list[dict[str, str]] = field(default_factory=list)
    deadlines: list[float | None] = field(default_factory=list)  # seconds each Encode call had left

    def _encode(self, request: pb.EncodeRequest) -> pb.EncodeResponse:
        if not request.image.startswith((b"\x89PNG", b"\xff\xd8")):
            return pb.EncodeResponse(request_id=request.request_id, error=_bad_request("image", "not an image"))
        sdr = _fake_sdr(request.image)
        concepts = [pb.Concept(name="thing", confidence=0.75, used=True)]
        indexed = request.HasField("add_to_index")
        if indexed:
            item = pb.Item(id=request.add_to_index.id, sdr=sdr, concepts=concepts)
            self.items[item.id] = item
        return pb.EncodeResponse(request_id=request.request_id, sdr=sdr, concepts=concepts, indexed=indexed)

    def Encode(self, request: pb.EncodeRequest, context: grpc.ServicerContext) -> pb.EncodeResponse:
        self.metadata.append(dict(context.invocation_metadata()))
        self.deadlines.append(context.time_remaining())
        response = self._encode(request)
        if response.HasField("error"):
            _abort(context, response.error)
        return response

    def EncodeStream(self, requests: Iterator[pb.EncodeRequest], context: grpc.ServicerContext) -> Any:
        for request in requests:
            yield self._encode(request)

    def EncodeText(self, request: pb.EncodeTextRequest, context: grpc.ServicerContext) -> pb.EncodeTextResponse:
        return pb.EncodeTextResponse(term=request.text.lower(), sdr=_fake_sdr(request.text.encode()))

    def GetItem(self, request: pb.GetItemRequest, context: grpc.ServicerContext) -> pb.Item:
        if request.id not in self.items:
            info = error_details_pb2.ResourceInfo(resource_type="item", resource_name=request.id)
            _abort(context, status_pb2.Status(code=code_pb2.NOT_FOUND, message="no such item", details=_packed(info)))
        return self.items[request.id]

    def FindSimilar(self, request: pb.FindSimilarRequest, context: grpc.ServicerContext) -> pb.FindSimilarResponse:
        query = self.GetItem(pb.GetItemRequest(id=request.id), context).sdr
        others = [item for item in self.items.values() if item.id != request.id]
        matches = [pb.Match(id=o.id, overlap=len(set(o.sdr.active) & set(query.active))) for o in others]
        return pb.FindSimilarResponse(matches=sorted(matches, key=lambda m: (-m.overlap, m.id))[: request.k or 10])

    def SimilarTerms(self, request: pb.SimilarTermsRequest, context: grpc.ServicerContext) -> Any:
        return pb.SimilarTermsResponse(terms=[pb.TermMatch(term="thing", overlap=len(request.sdr.active))])


@pytest.fixture
def fake() -> Iterator[tuple[FakeServicer, str]]:
    servicer = FakeServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_Image2SdrServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None).wait()


@pytest.fixture
def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, "PNG")
    return buffer.getvalue()


def test_encode_sends_the_bearer_token_and_health_answers(fake: tuple[FakeServicer, str], png: bytes) -> None:
    servicer, address = fake
    with Image2SdrClient(address, token="s3cret", timeout=5) as client:
        encoding = client.encode(png, max_concepts=3, request_id="one")
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


def test_unreachable_server_is_unavailable() -> None:
    with Image2SdrClient("127.0.0.1:1", timeout=2) as client, pytest.raises(Unavailable):
        client.info()


def test_encode_stream_keeps_order_with_local_and_in_band_errors(
    fake: tuple[FakeServicer, str], png: bytes, tmp_path: Path
) -> None:
    _, address = fake
    image_file = tmp_path / "red.png"
    image_file.write_bytes(png)
    items = [
        EncodeItem(png, request_id="a"),
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


def test_encode_stream_can_be_abandoned_early(fake: tuple[FakeServicer, str], png: bytes) -> None:
    _, address = fake
    with Image2SdrClient(address, timeout=5) as client:
        stream = client.encode_stream(png for _ in range(1000))
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


def test_tls_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="go together"):
        Image2SdrClient("localhost:1", certificate_chain=b"pem")


# -- the CLI -------------------------------------------------------------------------


def test_parser_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE2SDR_SERVER", "sdr.example:443")
    monkeypatch.setenv("IMAGE2SDR_TOKEN", "t0k")
    args = cli.build_parser().parse_args(["similar", "--id", "a.jpg", "-k", "3", "--tls"])
    assert (args.server, args.token, args.k, args.id, args.tls) == ("sdr.example:443", "t0k", 3, "a.jpg", True)
    monkeypatch.delenv("IMAGE2SDR_SERVER")
    assert cli.build_parser().parse_args(["text", "cat"]).server == cli.DEFAULT_SERVER


@pytest.mark.parametrize(
    "argv",
    [[], ["encode"], ["similar", "-k", "0", "--id", "x"], ["terms", "--timeout", "-1", "--text", "x"], ["bogus"]],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2


def test_inconsistent_choices_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["similar", "--server", "127.0.0.1:1"]) == 2
    assert cli.main(["terms", "--text", "cat", "--sdr-json", "x.json", "--server", "127.0.0.1:1"]) == 2
    assert cli.main(["encode", str(tmp_path / "missing.jpg"), "--server", "127.0.0.1:1"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_serve_without_the_server_distribution(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "image2sdr.server.serve", None)  # makes the import fail
    assert cli.main(["serve", "--port", "0"]) == 2
    assert "server is not installed" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "image2sdr.server.serve", types.ModuleType("image2sdr.server.serve"))
    assert cli.main(["serve"]) == 2
    assert "cannot be loaded" in capsys.readouterr().err


def test_cli_encode_json_and_png(
    fake: tuple[FakeServicer, str], png: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = fake
    images = [tmp_path / "a.png", tmp_path / "b.png"]
    for image in images:
        image.write_bytes(png)
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["encode", *map(str, images), "--server", address, "--json", "--png", str(out)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == list(map(str, images))
    assert len(results[0]["sdr"]["active"]) == ACTIVE_BITS and results[0]["concepts"][0]["confidence"] == 0.75
    with Image.open(out / "a.png") as picture:
        assert picture.size == (512, 512)


def test_cli_server_error_exits_1_with_the_message(
    fake: tuple[FakeServicer, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = fake
    assert cli.main(["similar", "--id", "nope", "--server", address]) == 1
    err = capsys.readouterr().err
    assert "NotFound (NOT_FOUND): no such item" in err and "Traceback" not in err


def test_cli_index_resumes_and_skips_non_images(
    fake: tuple[FakeServicer, str], png: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = fake
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.png").write_bytes(png)
    (folder / "sub" / "two.png").write_bytes(png + b"2")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(png)
    assert cli.main(["index", str(folder), "--recursive", "--json", "--server", address]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first == {"indexed": 2, "already_indexed": 0, "skipped": 1, "failed": 0}
    assert sorted(servicer.items) == ["one.png", "sub/two.png"]
    assert cli.main(["index", str(folder), "-r", "--json", "--server", address]) == 0
    assert json.loads(capsys.readouterr().out)["already_indexed"] == 2
    assert cli.main(["similar", "--id", "one.png", "--server", address, "--json"]) == 0
    assert [m["id"] for m in json.loads(capsys.readouterr().out)] == ["sub/two.png"]


def test_cli_terms_from_sdr_json(
    fake: tuple[FakeServicer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = fake
    source = tmp_path / "sdr.json"
    source.write_text(json.dumps([{"image": "x", "sdr": {"size": 64, "dimensions": [8, 8], "active": [1, 2, 3]}}]))
    assert cli.main(["terms", "--sdr-json", str(source), "--server", address]) == 0
    assert capsys.readouterr().out.split() == ["OVERLAP", "TERM", "3", "thing"]


def test_sdr_from_json_accepts_the_documented_shapes() -> None:
    plain = {"size": 8, "dimensions": [2, 4], "active": [1]}
    assert cli.sdr_from_json(plain) == cli.sdr_from_json({"sdr": plain}) == cli.sdr_from_json([{"sdr": plain}])
    with pytest.raises(cli.UsageError):
        cli.sdr_from_json({"active": [1]})


def test_png_paths_number_files_or_fill_a_directory(tmp_path: Path) -> None:
    images = [Path("x/cat.jpg"), Path("y/cat.jpg"), Path("dog.png")]
    assert cli.png_paths(images[:1], tmp_path / "sdr.png") == [tmp_path / "sdr.png"]
    assert cli.png_paths(images, tmp_path / "sdr.png") == [tmp_path / f"sdr-{i}.png" for i in (1, 2, 3)]
    assert cli.png_paths(images, tmp_path) == [tmp_path / "cat.png", tmp_path / "cat-2.png", tmp_path / "dog.png"]


# -- the picture ---------------------------------------------------------------------


def test_sdr_picture_draws_active_bits_dark_on_light() -> None:
    sdr = Sdr(SIZE, DIMS, (0, 129, 16383))  # (row 0, col 0), (row 1, col 1), the last bit
    picture = sdr_image(sdr, scale=4)
    assert picture.size == (512, 512) and picture.mode == "L"
    assert picture.getpixel((0, 0)) == picture.getpixel((3, 3)) == ACTIVE
    assert picture.getpixel((4, 4)) == picture.getpixel((7, 7)) == ACTIVE
    assert picture.getpixel((511, 511)) == ACTIVE
    assert picture.getpixel((4, 0)) == picture.getpixel((100, 300)) == BACKGROUND
    dark = picture.tobytes().count(bytes([ACTIVE]))
    assert dark == 3 * 16


def test_sdr_picture_of_a_flat_sdr_is_nearly_square() -> None:
    picture = sdr_image(Sdr(10, (), (9,)), scale=1)
    assert picture.size == (4, 3) and picture.getpixel((1, 2)) == ACTIVE


# -- the Node client's copy of google/rpc/status.proto ---------------------------------


def _definitions(proto: str) -> list[str]:
    lines = (line.split("//")[0].strip() for line in proto.splitlines())
    return [line for line in lines if line]


def test_node_clients_status_proto_is_the_googleapis_one() -> None:
    import google.rpc  # noqa: PLC0415 - only for its location

    shipped = Path(next(iter(google.rpc.__path__))) / "status.proto"
    vendored = Path(__file__).resolve().parent.parent / "client" / "node" / "protos" / "google" / "rpc" / "status.proto"
    assert _definitions(vendored.read_text()) == _definitions(shipped.read_text())


def test_one_call_can_drop_or_change_the_client_default_deadline(fake: tuple[FakeServicer, str], png: bytes) -> None:
    servicer, address = fake
    with Image2SdrClient(address, timeout=5) as client:
        client.encode(png)  # the client's own 5 s
        client.encode(png, timeout=USE_CLIENT_DEFAULT)
        client.encode(png, timeout=None)  # no deadline for this call
        client.encode(png, timeout=60)
    default, explicit_default, none, longer = servicer.deadlines
    # The server's view of a deadline is rounded a little: compare with margins.
    assert default is not None and 0 < default < 6
    assert explicit_default is not None and 0 < explicit_default < 6
    assert none is None or none > 1e6  # no deadline (grpc reports an unbounded one as huge)
    assert longer is not None and 30 < longer < 61
