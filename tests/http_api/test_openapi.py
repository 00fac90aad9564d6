"""/openapi.json: real schemas from the proto's descriptors, and only the statuses the edge sends.

The document comes from the app over the session's real server (its use cases are not
called: the document is built from the routes and the descriptors). Each RPC's
operation must point at components that exist, each component must resolve, and
each status advertised must be one the error mapping (errors.py) can produce.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2
from starlette.testclient import TestClient

from image2sdr.server.config import Config, HttpConfig
from image2sdr.server.http_api import create_app
from image2sdr.server.http_api.errors import EDGE_STATUSES, http_status
from image2sdr.server.http_api.openapi import SERVICE
from image2sdr.server.serve import Server

# Server-streaming or bidirectional RPCs have no HTTP route.
STREAMING = {"EncodeStream"}


@pytest.fixture(scope="module")
def document(service: Server, models_dir: Path) -> Iterator[dict[str, Any]]:
    config = Config(data_dir=Path("unused"), models_dir=models_dir, http=HttpConfig(port=0))
    with TestClient(create_app(service.cases, config), base_url="http://127.0.0.1") as client:
        answer = client.get("/openapi.json")
        assert answer.status_code == 200
        yield answer.json()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _component(document: dict[str, Any], ref: str) -> dict[str, Any]:
    prefix = "#/components/schemas/"
    assert ref.startswith(prefix), ref
    schemas: dict[str, Any] = document["components"]["schemas"]
    assert ref[len(prefix) :] in schemas, f"{ref} names no component"
    return dict(schemas[ref[len(prefix) :]])


def test_every_rpc_has_request_and_response_schemas(document: dict[str, Any]) -> None:
    served = set()
    for path, method, operation in _operations(document):
        rpc = operation["summary"]
        if path == "/healthz":
            continue
        if path.endswith(("/thumbnail", "/image")):  # pictures at their own URLs, not RPCs
            assert {*operation["responses"]["200"]["content"]} <= {"image/webp", "image/jpeg", "image/png"}, path
            continue
        method_descriptor = SERVICE.methods_by_name[rpc]  # each operation is an RPC, by its name
        served.add(rpc)
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert _component(document, ok["$ref"])["title"] == method_descriptor.output_type.name
        if method == "post":
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            assert _component(document, body["$ref"])["title"] == method_descriptor.input_type.name, path
    assert served == set(SERVICE.methods_by_name) - STREAMING


def test_every_reference_resolves_and_fastapis_422_models_are_gone(document: dict[str, Any]) -> None:
    for ref in set(_refs(document)):
        _component(document, ref)
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])


def test_only_the_statuses_the_edge_sends_are_advertised(document: dict[str, Any]) -> None:
    mapped = {http_status(code) for code in code_pb2.Code.values()}
    advertised = {int(status) for _, _, operation in _operations(document) for status in operation["responses"]}
    assert 422 not in advertised
    assert advertised <= mapped | EDGE_STATUSES | {200}
    assert {400, 401, 403, 404, 413, 429, 500, 503, 504} <= advertised
    encode = document["paths"]["/v1/encode"]["post"]["responses"]
    assert {"413", "415", "429"} <= set(encode)
    assert "404" not in document["paths"]["/v1/info"]["get"]["responses"]
    for status, answer in encode.items():
        if status != "200":
            assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/google.rpc.Status"}


def test_fields_are_described_as_json_format_writes_them(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    request = schemas["image2sdr.v1.EncodeRequest"]["properties"]
    assert request["image"]["format"] == "byte"  # bytes as base64
    assert request["addToIndex"] == {"$ref": "#/components/schemas/image2sdr.v1.AddToIndex"}  # json names
    add = schemas["image2sdr.v1.AddToIndex"]["properties"]
    assert add["metadata"]["additionalProperties"] == {"type": "string"}  # a map
    assert schemas["image2sdr.v1.OnDuplicate"]["enum"] == [
        "ON_DUPLICATE_UNSPECIFIED",
        "ON_DUPLICATE_KEEP",
        "ON_DUPLICATE_SKIP",
        "ON_DUPLICATE_REPLACE",
    ]
    assert schemas["image2sdr.v1.Fingerprint"]["properties"]["phash"]["type"] == "string"  # fixed64 as a string
    assert schemas["image2sdr.v1.Sdr"]["properties"]["active"]["type"] == "array"
    assert schemas["image2sdr.v1.ListItemsResponse"]["properties"]["total"]["format"] == "uint64"
    assert "at most one of image, sdr, id, text" in schemas["image2sdr.v1.FindSimilarRequest"]["description"]
    details = schemas["google.rpc.Status"]["properties"]["details"]["items"]
    assert details["required"] == ["@type"]


def test_page_size_zero_is_described_as_it_behaves(document: dict[str, Any]) -> None:
    parameters = document["paths"]["/v1/items"]["get"]["parameters"]
    page_size = next(parameter for parameter in parameters if parameter["name"] == "page_size")
    assert "0 or absent: 100" in page_size["description"]


def test_the_item_views_are_described_with_their_defaults(document: dict[str, Any]) -> None:
    operations = [
        ("/v1/items", "get", "BASIC"),
        ("/v1/items:list", "post", "BASIC"),
        ("/v1/items/{item_id}", "get", "FULL"),
    ]
    for path, method, default in operations:
        view = next(p for p in document["paths"][path][method]["parameters"] if p["name"] == "view")
        assert view["in"] == "query" and view["schema"]["enum"] == ["BASIC", "FULL"], path
        assert f"absent: {default}" in view["description"], path
