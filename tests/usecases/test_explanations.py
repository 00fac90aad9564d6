"""Explain through the real gRPC service: a concept, a custom concept, a match with a stored item.

A real server on port 0 with the real models; the photos are scikit-image's.
Every refusal is checked for its status code and the field it names.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from PIL import Image
from skimage import data as skdata

from image2sdr.server.index.values import SEMANTIC
from image2sdr.server.serve import Server
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.images import encode_jpeg, half_size, mirrored
from tests.helpers.servers import start_server

TIMEOUT = 120


def photo(name: str) -> bytes:
    pixels = getattr(skdata, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return encode_jpeg(pixels)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("explain"), models_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[pb_grpc.Image2SdrStub]:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.Image2SdrStub(channel)
        for item_id, name in (("cat", "chelsea"), ("mug", "coffee")):
            request = pb.EncodeRequest(image=photo(name), add_to_index=pb.AddToIndex(id=item_id))
            assert stub.Encode(request, timeout=TIMEOUT).indexed
        # An item added by SDR alone has no visual SDR (no gRPC call adds one: the index does).
        semantic = server.index.get("cat").in_space(SEMANTIC)
        assert semantic is not None
        server.index.add("words only", semantic)
        chelsea = photo("chelsea")
        positives = [pb.ConceptExample(image=image) for image in (chelsea, half_size(chelsea), mirrored(chelsea))]
        negatives = [pb.ConceptExample(image=photo(n)) for n in ("coffee", "rocket", "astronaut", "moon")]
        stub.DefineConcept(
            pb.DefineConceptRequest(name="our cat", positives=positives, negatives=negatives), timeout=TIMEOUT
        )
        yield stub


def explained(stub: pb_grpc.Image2SdrStub, **fields: object) -> pb.ExplainResponse:
    response: pb.ExplainResponse = stub.Explain(pb.ExplainRequest(**fields), timeout=TIMEOUT)  # type: ignore[arg-type]
    return response


def heat_of(response: pb.ExplainResponse) -> np.ndarray:
    heat = np.array(response.heat, dtype=np.float64)
    assert heat.shape == (response.rows * response.columns,)
    return heat.reshape(response.rows, response.columns)


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def test_a_concept_is_explained_with_a_heatmap_and_its_overlay(stub: pb_grpc.Image2SdrStub) -> None:
    response = explained(stub, image=photo("chelsea"), concept="cat")
    assert response.target == "cat"
    assert 0.5 < response.score <= 1.0
    assert (response.patch, response.stride) == (75, 38)  # 0.25 x 300 px, 0.5 x the patch
    assert (response.columns, response.rows) == (12, 8)  # 451 x 300 in steps of 38
    assert response.variants == 11 * 7
    heat_of(response)
    assert png_size(response.png) == (451, 300)
    assert response.elapsed_ms > 0


def test_hiding_the_hottest_region_costs_more_than_hiding_the_coldest(stub: pb_grpc.Image2SdrStub) -> None:
    """The heatmap agrees with the model: occlude where it is hot, then where it is cold, and ask again."""
    data = photo("astronaut")
    encoded = stub.Encode(pb.EncodeRequest(image=data), timeout=TIMEOUT)
    concept = encoded.concepts[0].name
    response = explained(stub, image=data, concept=concept)
    heat = heat_of(response)
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    drops = []
    for cell in (np.argmax(heat), np.argmin(heat)):
        row, column = np.unravel_index(int(cell), heat.shape)
        hidden = pixels.copy()
        y, x = int((row + 0.5) * response.stride), int((column + 0.5) * response.stride)
        half = response.patch // 2
        hidden[max(0, y - half) : y + half, max(0, x - half) : x + half] = 128
        scored = stub.Encode(
            pb.EncodeRequest(image=encode_jpeg(hidden, 95), options=pb.EncodeOptions(max_concepts=200)),
            timeout=TIMEOUT,
        )
        left = next((c.confidence for c in scored.concepts if c.name == concept), 0.0)
        drops.append(response.score - left)
    hot, cold = drops
    assert hot > cold


def test_a_custom_concept_is_explained(stub: pb_grpc.Image2SdrStub) -> None:
    response = explained(stub, image=photo("chelsea"), custom_concept="our cat")
    assert response.target == "our cat"
    assert 0.0 <= response.score <= 1.0
    assert len(response.heat) == response.rows * response.columns
    assert np.isfinite(heat_of(response)).all()


@pytest.mark.parametrize("space", [pb.SPACE_SEMANTIC, pb.SPACE_VISUAL])
def test_a_match_with_a_stored_item_is_explained_by_overlap(stub: pb_grpc.Image2SdrStub, space: int) -> None:
    response = explained(stub, image=photo("chelsea"), like="cat", space=space, patch=150, stride=75)
    assert response.target == "cat"
    stored = stub.GetItem(pb.GetItemRequest(id="cat"), timeout=TIMEOUT)
    expected = len(stored.sdr.active) if space == pb.SPACE_SEMANTIC else len(stored.visual.active)
    assert response.score == expected  # the same photo: every bit shared
    assert (response.patch, response.stride, response.variants) == (150, 75, 6 * 3)  # the last column at 301
    heat = heat_of(response)
    assert (heat >= 0).all()  # nothing shares more bits with the photo than the photo itself
    if space == pb.SPACE_VISUAL:
        assert heat.max() > 0  # hiding part of it costs bits of how it looks
    # The semantic SDR holds the concepts' terms: hiding a patch that leaves the same concepts
    # (with other confidences) often leaves every bit, so its heatmap may be flat.


def _refused(stub: pb_grpc.Image2SdrStub, **fields: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        explained(stub, **fields)
    return refused.value


def _detail(error: grpc.RpcError, kind: type) -> object:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            detail = kind()
            assert status_pb2.Status.FromString(value).details[0].Unpack(detail)
            return detail
    raise AssertionError("no google.rpc.Status details")


def field_of(error: grpc.RpcError) -> str:
    detail = _detail(error, error_details_pb2.BadRequest)
    assert isinstance(detail, error_details_pb2.BadRequest)
    return str(detail.field_violations[0].field)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"concept": "rocket"}, "concept"),  # the cat photo has no such concept
        ({"concept": "cat", "patch": 301}, "patch"),  # larger than the 451 x 300 image
        ({"concept": "cat", "patch": 40, "stride": 41}, "stride"),
        ({"concept": "cat", "patch": 20, "stride": 1}, "stride"),  # past explain.max_variants
        ({"like": "cat", "space": pb.SPACE_BLEND}, "space"),
        ({"concept": "cat", "space": pb.SPACE_VISUAL}, "space"),  # space is for like only
        ({"like": "words only", "space": pb.SPACE_VISUAL}, "like"),  # no visual SDR stored
        ({}, "target"),
    ],
)
def test_bad_requests_name_their_field(stub: pb_grpc.Image2SdrStub, fields: dict[str, object], field: str) -> None:
    error = _refused(stub, image=photo("chelsea"), **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(error) == field


def test_the_refusal_of_a_missing_concept_names_what_the_image_has(stub: pb_grpc.Image2SdrStub) -> None:
    error = _refused(stub, image=photo("chelsea"), concept="rocket")
    assert "cat" in (error.details() or "")


def test_a_bad_image_is_invalid(stub: pb_grpc.Image2SdrStub) -> None:
    error = _refused(stub, image=b"not an image", concept="cat")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(error) == "image"


@pytest.mark.parametrize(
    ("fields", "kind"),
    [({"custom_concept": "never defined"}, "custom concept"), ({"like": "no such item"}, "item")],
)
def test_unknown_names_are_not_found(stub: pb_grpc.Image2SdrStub, fields: dict[str, object], kind: str) -> None:
    error = _refused(stub, image=photo("chelsea"), **fields)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    detail = _detail(error, error_details_pb2.ResourceInfo)
    assert isinstance(detail, error_details_pb2.ResourceInfo)
    assert detail.resource_type == kind


def test_a_caller_past_its_deadline_stops_the_work_and_the_server_goes_on(
    server: Server, stub: pb_grpc.Image2SdrStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch of variants is held until the caller has given up: no time window decides the outcome."""
    source = server.encoder.concept_source
    calls: list[int] = []
    classify, explain = source.concepts, server.cases.explain
    gave_up, ended = threading.Event(), threading.Event()

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) > 2:  # after the check and the base: a batch of variants waits for the caller to go
            assert gave_up.wait(TIMEOUT)
        return classify(*args, **kwargs)

    def explaining(*args: Any, **kwargs: Any) -> Any:
        try:
            return explain(*args, **kwargs)
        finally:
            ended.set()

    monkeypatch.setattr(source, "concepts", counted)
    monkeypatch.setattr(server.cases, "explain", explaining)
    request = pb.ExplainRequest(image=photo("chelsea"), concept="cat", patch=30, stride=15)  # 30 x 19 variants
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(request, timeout=1.0)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    gave_up.set()
    assert ended.wait(TIMEOUT)  # the server's side of the call is over
    batches = 1 + 1 + math.ceil(30 * 19 / source.max_batch)  # the check, the base, the variants
    assert len(calls) <= 3 < batches  # the batch under way when the caller left was the last
    monkeypatch.undo()
    response = explained(stub, image=photo("chelsea"), concept="cat")  # the server goes on serving
    assert response.variants == 11 * 7
