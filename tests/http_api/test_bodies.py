"""Request bodies and query strings as an HTTP client writes them: short enum names, unknown parameters.

Through the real app in process, over the session's real server: enum values are
taken short and in any case as well as canonical (nested ones too), a value that is
neither is 400 listing the valid ones, and a query parameter the route does not take
is 400 naming it instead of being ignored.  Plain forms (ids as a list, concept examples
as ids) are read as the proto's nested ones.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from image2sdr.server.config import Config, HttpConfig
from image2sdr.server.http_api import create_app
from image2sdr.server.serve import Server
from tests.helpers.images import half_size, mirrored


@pytest.fixture(scope="module")
def http(service: Server, models_dir: Path) -> Iterator[TestClient]:
    config = Config(data_dir=Path("unused"), models_dir=models_dir, http=HttpConfig(port=0))
    with TestClient(create_app(service.cases, config), base_url="http://127.0.0.1") as client:
        yield client


def _refused(answer: httpx.Response, field: str) -> str:
    assert answer.status_code == 400, answer.text
    body: dict[str, Any] = answer.json()
    violation = body["details"][0]["fieldViolations"][0]
    assert violation["field"] == field
    return str(body["message"])


@pytest.mark.parametrize("space", ["SPACE_SEMANTIC", "semantic", "Semantic", "space_semantic"])
def test_an_enum_is_read_short_or_canonical_in_any_case(http: TestClient, space: str) -> None:
    answer = http.post("/v1/similar", json={"text": "cat", "k": 1, "space": space})
    assert answer.status_code == 200, answer.text


def test_a_refused_enum_value_lists_the_valid_ones(http: TestClient) -> None:
    message = _refused(http.post("/v1/similar", json={"text": "cat", "space": "sideways"}), "space")
    assert "'sideways' is not a Space" in message
    assert "semantic, visual, blend" in message


def test_nested_enums_are_read_short_too(http: TestClient, photos: dict[str, bytes]) -> None:
    image = base64.b64encode(photos["coffee"]).decode()
    bad = {"image": image, "addToIndex": {"id": "coffee-enum", "onDuplicate": "sometimes"}}
    message = _refused(http.post("/v1/encode", json=bad), "addToIndex.onDuplicate")
    assert "keep, skip, replace" in message
    good = {"image": image, "addToIndex": {"id": "coffee-enum", "onDuplicate": "skip"}}
    first = http.post("/v1/encode", json=good)
    assert first.status_code == 200, first.text
    again = http.post("/v1/encode", json={**good, "addToIndex": {"id": "coffee-again", "onDuplicate": "Skip"}})
    assert again.status_code == 200, again.text
    assert http.get("/v1/items/coffee-again").status_code == 404  # skipped: the copy was stored already
    assert http.delete("/v1/items/coffee-enum").status_code == 200


def test_an_unknown_query_parameter_is_refused_naming_it(http: TestClient) -> None:
    message = _refused(http.get("/v1/items", params={"tag": "dog"}), "tag")
    assert "tag" in message and "page_size" in message  # what it takes, too
    _refused(http.get("/v1/info", params={"verbose": "1"}), "verbose")
    _refused(http.post("/v1/similar", params={"k": "3"}, json={"text": "cat"}), "k")
    # Parameters a route does take, its own or its body reader's, still pass.
    assert http.get("/v1/items", params={"page_size": "1"}).status_code == 200


def test_ids_and_examples_may_be_given_plain(http: TestClient, photos: dict[str, bytes]) -> None:
    """A map by ``"ids": [...]`` and concept examples as ids, as well as the proto's nested forms."""
    coffee = photos["coffee"]
    ids = ["plain-1", "plain-2", "plain-3"]
    for item_id, image in zip(ids, (coffee, half_size(coffee), mirrored(coffee)), strict=True):
        added = http.post(f"/v1/encode?add={item_id}", content=image, headers={"Content-Type": "image/jpeg"})
        assert added.status_code == 200, added.text
    try:
        for given in (ids, {"ids": ids}):
            job = http.post("/v1/maps", json={"ids": given, "cellPixels": 8})
            assert job.status_code == 200, job.text
        for positives in (ids, [{"id": ids[0]}, ids[1], {"id": ids[2]}]):
            defined = http.post("/v1/concepts", json={"name": "plain-mug", "positives": positives})
            assert defined.status_code == 200, defined.text
            assert defined.json()["positives"] == 3
        # Read as ids: an unknown one is NOT_FOUND naming it, not a parse error.
        for body in ({"ids": ["plain-1", "plain-none"]}, {"name": "plain-x", "positives": [*ids[:2], "plain-none"]}):
            path = "/v1/maps" if "ids" in body else "/v1/concepts"
            refused = http.post(path, json=body)
            assert refused.status_code == 404 and "plain-none" in refused.text, refused.text
        _refused(http.post("/v1/maps", json={"ids": "plain-1"}), "body")  # neither form: the parser's 400
    finally:
        http.delete("/v1/concepts/plain-mug")
        for item_id in ids:
            http.delete(f"/v1/items/{item_id}")
