"""RESOURCE_EXHAUSTED over HTTP: 413 when what was sent is over a limit, 429 only for load.

The size refusals go through the real app (in process, over the session's real server
and its default image limits: 20 MiB, 50 megapixels); the load refusal through the
waiting room is tested with the calls in tests/http_api/test_app.py. Here the other
load refusals (a full map queue, no stream slot) are checked through the mapping itself.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from PIL import Image
from starlette.testclient import TestClient

from image2sdr.server.config import Config, HttpConfig
from image2sdr.server.errors import LimitExceededError, MetadataTooLargeError, PixelLimitError, StreamLimitError
from image2sdr.server.http_api import create_app
from image2sdr.server.http_api.errors import status_http
from image2sdr.server.messages import status_for
from image2sdr.server.serve import Server


@pytest.fixture(scope="module")
def http(service: Server, models_dir: Path) -> Iterator[TestClient]:
    config = Config(data_dir=Path("unused"), models_dir=models_dir, http=HttpConfig(port=0))
    with TestClient(create_app(service.cases, config), base_url="http://127.0.0.1") as client:
        yield client


def _quota_subjects(body: dict[str, object]) -> list[str]:
    status = json_format.ParseDict(body, status_pb2.Status())
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    quota = error_details_pb2.QuotaFailure()
    assert status.details[0].Unpack(quota)
    return [violation.subject for violation in quota.violations]


def test_an_image_over_the_pixel_limit_is_413(http: TestClient) -> None:
    bomb = io.BytesIO()
    Image.new("1", (8_000, 8_000)).save(bomb, format="PNG")  # 64 megapixels in a few kB
    answer = http.post("/v1/encode", content=bomb.getvalue(), headers={"content-type": "image/png"})
    assert answer.status_code == 413
    assert _quota_subjects(answer.json()) == ["PixelLimitError"]
    assert "pixels" in answer.json()["message"]


def test_an_image_over_the_byte_limit_is_413(http: TestClient) -> None:
    image = b"\xff" * (20 * 1024 * 1024 + 1)  # one byte over image.max_bytes, under http.max_body_bytes
    answer = http.post("/v1/encode", content=image, headers={"content-type": "image/jpeg"})
    assert answer.status_code == 413
    assert _quota_subjects(answer.json()) == ["ImageTooLargeError"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PixelLimitError("too many pixels", limit=1, actual=2), 413),
        (MetadataTooLargeError("too much metadata", limit=1, actual=2), 413),
        (StreamLimitError("no stream slot left", limit=1, actual=2), 429),
        (LimitExceededError("map jobs queued: the queue is full", limit=1, actual=2), 429),
        (MemoryError(), 429),
    ],
)
def test_size_is_413_and_load_429(error: BaseException, expected: int) -> None:
    assert status_http(status_for(error, logged=True)) == expected
