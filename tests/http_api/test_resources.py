"""Pictures at their own URLs: a thumbnail and a map's grid as real images, cached by ETag; GetMap's JSON links them.

One server on port 0 with a real index on disk and two real photos added over HTTP;
the app is called in process (Starlette's TestClient).  The images are decoded with
Pillow: they are what the item and the map job hold, byte for byte.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from PIL import Image
from starlette.testclient import TestClient

from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.http_api import create_app
from image2sdr.server.serve import Server, create_server
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

TIMEOUT = 120


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Config:
    return Config(
        data_dir=tmp_path_factory.mktemp("resources"),
        models_dir=models_dir,
        service=ServiceConfig(port=0, shutdown_grace_s=0.5),
        http=HttpConfig(port=0),
    )


@pytest.fixture(scope="module")
def server(config: Config, shared_encoder: Encoder) -> Iterator[Server]:
    started = create_server(config, encoder=shared_encoder)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def http(server: Server, config: Config, photos: dict[str, bytes]) -> Iterator[httpx.Client]:
    """The server's app in process, with two photos added through it."""
    with TestClient(create_app(server.cases, config), base_url="http://127.0.0.1") as client:
        for item_id, name in (("cat", "chelsea"), ("mug", "coffee")):
            headers = {"Content-Type": "image/jpeg"}
            answer = client.post(f"/v1/encode?add={item_id}", content=photos[name], headers=headers)
            assert answer.status_code == 200, answer.text
        yield client


def status(response: httpx.Response, http_status: int, code: grpc.StatusCode) -> dict[str, Any]:
    assert response.status_code == http_status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code.value[0] and body["message"]
    return body


def test_a_thumbnail_is_an_image_revalidated_by_its_etag(http: httpx.Client, server: Server) -> None:
    answer = http.get("/v1/items/cat/thumbnail")
    assert answer.status_code == 200
    assert answer.content == server.cases.get_item("cat").thumbnail
    with Image.open(io.BytesIO(answer.content)) as picture:
        assert answer.headers["content-type"] == f"image/{picture.format.lower()}"
    assert answer.headers["cache-control"] == "private, no-cache"
    again = http.get("/v1/items/cat/thumbnail", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    other = http.get("/v1/items/mug/thumbnail", headers={"If-None-Match": answer.headers["etag"]})
    assert other.status_code == 200 and other.headers["etag"] != answer.headers["etag"]


def test_a_missing_thumbnail_is_a_status(http: httpx.Client, server: Server) -> None:
    body = status(http.get("/v1/items/nobody/thumbnail"), 404, grpc.StatusCode.NOT_FOUND)
    assert "nobody" in body["message"]
    long_id = "x" * 10_000  # no item could have it: refused as GetItem refuses it
    assert status(http.get(f"/v1/items/{long_id}/thumbnail"), 400, grpc.StatusCode.INVALID_ARGUMENT)["message"]
    server.index.add("bits-only", server.cases.get_item("cat").item.sdr)  # stored by SDR alone: no picture
    body = status(http.get("/v1/items/bits-only/thumbnail"), 404, grpc.StatusCode.NOT_FOUND)
    assert "no thumbnail" in body["message"]


def test_get_map_links_its_picture_instead_of_carrying_it(http: httpx.Client, server: Server) -> None:
    created = http.post("/v1/maps", json={"cellPixels": 8})
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    with grpc.insecure_channel(server.address) as channel:  # gRPC's GetMap keeps its PNG
        stub = pb_grpc.Image2SdrStub(channel)
        job = stub.GetMap(pb.GetMapRequest(id=job_id), timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while job.state in (pb.MAP_STATE_QUEUED, pb.MAP_STATE_RUNNING):
            early = http.get(f"/v1/maps/{job_id}/image")
            if early.status_code != 200:  # the job may finish between the two reads
                status(early, 400, grpc.StatusCode.FAILED_PRECONDITION)
            assert time.monotonic() < deadline, f"map job {job_id} still {job.stage}"
            time.sleep(0.05)
            job = stub.GetMap(pb.GetMapRequest(id=job_id), timeout=TIMEOUT)
    assert job.state == pb.MAP_STATE_DONE and job.png
    body = http.get(f"/v1/maps/{job_id}").json()
    assert "png" not in body
    assert body["skippedWithoutVisual"] == 0 and "error" not in body  # defaults present; unset messages absent
    assert [cell["id"] for cell in body["cells"]] == [cell.id for cell in job.cells]
    assert {"cat", "mug"} <= {cell.id for cell in job.cells}
    assert body["imageUrl"] == f"/v1/maps/{job_id}/image"
    picture = http.get(body["imageUrl"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert picture.content == job.png
    assert "immutable" in picture.headers["cache-control"]
    assert http.get(body["imageUrl"], headers={"If-None-Match": picture.headers["etag"]}).status_code == 304
    status(http.get("/v1/maps/no-such-job/image"), 404, grpc.StatusCode.NOT_FOUND)
