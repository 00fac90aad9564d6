"""Maps through the real gRPC service: CreateMap starts a job, GetMap reports it (issue 14).

A real server on port 0 with the real models and a real index on disk: photos
(scikit-image's) added from their images carry thumbnails; items added by SDR
alone have none and are drawn as their SDR. Every refusal is checked for its
status code and the field it names.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from image2sdr.server.config import Config, HttpConfig, MapsConfig, ServiceConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.sdr import Sdr
from image2sdr.server.serve import Server, create_server
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.images import sample_photo as photo
from tests.helpers.status import bad_request_field

TIMEOUT = 120
PHOTOS = {"cat": "chelsea", "mug": "coffee", "rocket": "rocket", "astronaut": "astronaut", "camera": "camera"}
CLUSTER = [f"pattern-{number}" for number in range(5)]  # added by SDR: one motif, varied
LIMIT = 12


def motif(seed: int) -> Sdr:
    rng = np.random.default_rng(7)
    prototype = rng.choice(16384, 328, replace=False)
    kept = np.random.default_rng(seed).choice(prototype, 260, replace=False)
    rest = np.random.default_rng(seed + 100).choice(np.setdiff1d(np.arange(16384), prototype), 68, replace=False)
    return Sdr.from_positions(np.union1d(kept, rest), 16384)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, shared_encoder: Encoder) -> Iterator[Server]:
    config = Config(
        data_dir=tmp_path_factory.mktemp("maps") / "data",
        models_dir=models_dir,
        service=ServiceConfig(port=0, shutdown_grace_s=0.5),
        http=HttpConfig(enabled=False),  # gRPC only: no two servers share the fixed HTTP port
        # One t-SNE thread: an xdist worker has one core; a thread per core in each oversubscribes them
        # (a 10-item map took ~10 s on two threads, well under 1 s on one, on the 2-core machine).
        maps=MapsConfig(max_items=LIMIT, map_pixels=320, threads=1),
    )
    server = create_server(config, encoder=shared_encoder)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[pb_grpc.Image2SdrStub]:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.Image2SdrStub(channel)
        for item_id, name in PHOTOS.items():
            target = pb.AddToIndex(id=item_id, metadata={"kind": "photo"})
            assert stub.Encode(pb.EncodeRequest(image=photo(name), add_to_index=target), timeout=TIMEOUT).indexed
        for number, item_id in enumerate(CLUSTER):
            server.index.add(item_id, motif(number), metadata={"kind": "pattern"})
        yield stub


def finished(stub: pb_grpc.Image2SdrStub, job: pb.MapJob) -> pb.MapJob:
    deadline = time.monotonic() + TIMEOUT
    while job.state in (pb.MAP_STATE_QUEUED, pb.MAP_STATE_RUNNING):
        assert time.monotonic() < deadline, f"map job {job.id} still {job.stage}"
        time.sleep(0.05)
        job = stub.GetMap(pb.GetMapRequest(id=job.id), timeout=TIMEOUT)
    return job


def refused(stub: pb_grpc.Image2SdrStub, request: pb.CreateMapRequest) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateMap(request, timeout=TIMEOUT)
    return caught.value.code(), bad_request_field(
        caught.value
    ) if caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT else ""


def test_map_of_everything(stub: pb_grpc.Image2SdrStub) -> None:
    job = stub.CreateMap(pb.CreateMapRequest(), timeout=TIMEOUT)
    assert job.id and job.items == 10 and job.created_ms > 0
    done = finished(stub, job)
    assert done.state == pb.MAP_STATE_DONE and done.progress == 1.0 and done.stage == "done"
    assert (done.columns, done.rows) == (4, 4) and done.cell_pixels == 80
    assert {cell.id for cell in done.cells} == set(PHOTOS) | set(CLUSTER)
    assert len({(cell.column, cell.row) for cell in done.cells}) == 10
    assert all(cell.column < 4 and cell.row < 4 for cell in done.cells)
    drawn = {cell.id: cell.thumbnail for cell in done.cells}
    assert all(drawn[item_id] for item_id in PHOTOS) and not any(drawn[item_id] for item_id in CLUSTER)
    with Image.open(io.BytesIO(done.png)) as picture:
        assert picture.format == "PNG" and picture.size == (320, 320)
    assert 0.0 <= done.neighbourhood_kept <= 1.0
    again = finished(stub, stub.CreateMap(pb.CreateMapRequest(), timeout=TIMEOUT))
    assert [(c.id, c.column, c.row) for c in again.cells] == [(c.id, c.column, c.row) for c in done.cells]


def test_map_of_ids_filter_and_grid(stub: pb_grpc.Image2SdrStub) -> None:
    ids = pb.CreateMapRequest(ids=pb.ItemIds(ids=["cat", "mug", "rocket"]), columns=3, cell_pixels=16)
    done = finished(stub, stub.CreateMap(ids, timeout=TIMEOUT))
    assert [cell.id for cell in done.cells] == ["cat", "mug", "rocket"]
    assert (done.columns, done.rows, done.cell_pixels) == (3, 1, 16)
    only = pb.Filter(metadata=[pb.MetadataCondition(key="kind", values=["pattern"])])
    patterns = finished(stub, stub.CreateMap(pb.CreateMapRequest(filter=only), timeout=TIMEOUT))
    assert sorted(cell.id for cell in patterns.cells) == sorted(CLUSTER)


def test_visual_map_leaves_out_items_without_a_visual_sdr(stub: pb_grpc.Image2SdrStub) -> None:
    request = pb.CreateMapRequest(space=pb.SPACE_VISUAL)
    done = finished(stub, stub.CreateMap(request, timeout=TIMEOUT))
    assert done.space == pb.SPACE_VISUAL and done.skipped_without_visual == len(CLUSTER)
    assert sorted(cell.id for cell in done.cells) == sorted(PHOTOS)


def test_map_of_a_custom_concept(stub: pb_grpc.Image2SdrStub) -> None:
    examples = [pb.ConceptExample(id=item_id) for item_id in CLUSTER[:3]]
    negatives = [pb.ConceptExample(id=item_id) for item_id in PHOTOS]
    stub.DefineConcept(pb.DefineConceptRequest(name="motif", positives=examples, negatives=negatives), timeout=TIMEOUT)
    done = finished(stub, stub.CreateMap(pb.CreateMapRequest(concept="motif"), timeout=TIMEOUT))
    assert sorted(cell.id for cell in done.cells) == sorted(CLUSTER)


def test_bad_maps_are_refused_with_the_field_named(stub: pb_grpc.Image2SdrStub, server: Server) -> None:
    nothing = pb.Filter(metadata=[pb.MetadataCondition(key="kind", values=["painting"])])
    assert refused(stub, pb.CreateMapRequest(filter=nothing)) == (grpc.StatusCode.INVALID_ARGUMENT, "filter")
    assert refused(stub, pb.CreateMapRequest(ids=pb.ItemIds())) == (grpc.StatusCode.INVALID_ARGUMENT, "ids")
    with pytest.raises(grpc.RpcError) as unknown_id:
        stub.CreateMap(pb.CreateMapRequest(ids=pb.ItemIds(ids=["cat", "nope"])), timeout=TIMEOUT)
    assert unknown_id.value.code() == grpc.StatusCode.NOT_FOUND and "ids[1]" in (unknown_id.value.details() or "")
    assert refused(stub, pb.CreateMapRequest(columns=100, rows=100)) == (grpc.StatusCode.INVALID_ARGUMENT, "columns")
    patterns = pb.CreateMapRequest(filter=pb.Filter(metadata=[pb.MetadataCondition(key="kind", values=["pattern"])]))
    patterns.space = pb.SPACE_VISUAL
    assert refused(stub, patterns) == (grpc.StatusCode.INVALID_ARGUMENT, "space")  # added by SDR: no visual SDRs
    assert refused(stub, pb.CreateMapRequest(ids=pb.ItemIds(ids=["cat", "cat"]))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ids",
    )
    assert refused(stub, pb.CreateMapRequest(columns=3, rows=3)) == (grpc.StatusCode.INVALID_ARGUMENT, "columns")
    assert refused(stub, pb.CreateMapRequest(space=pb.SPACE_BLEND)) == (grpc.StatusCode.INVALID_ARGUMENT, "space")
    assert refused(stub, pb.CreateMapRequest(cell_pixels=300)) == (grpc.StatusCode.INVALID_ARGUMENT, "cell_pixels")
    assert refused(stub, pb.CreateMapRequest(concept="unknown"))[0] == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as unknown:
        stub.GetMap(pb.GetMapRequest(id="no-such-job"), timeout=TIMEOUT)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    for number in range(LIMIT - 10 + 1):  # one more item than a map may hold
        server.index.add(f"extra-{number}", motif(50 + number))
    try:
        assert refused(stub, pb.CreateMapRequest()) == (grpc.StatusCode.INVALID_ARGUMENT, "items")
    finally:
        for number in range(LIMIT - 10 + 1):
            server.index.remove(f"extra-{number}")
    assert finished(stub, stub.CreateMap(pb.CreateMapRequest(), timeout=TIMEOUT)).state == pb.MAP_STATE_DONE


def test_info_reports_the_map_limit(stub: pb_grpc.Image2SdrStub) -> None:
    assert stub.Info(pb.InfoRequest(), timeout=TIMEOUT).limits.max_map_items == LIMIT
