"""The HTTP/JSON API: the ASGI app in process (Starlette's TestClient), beside a real gRPC server.

One server on port 0 (both protocols, on the session's encoder) with a real index on
disk; most calls go to its use cases through the app in process, and the tests where
the socket is the point (a stalled upload, a body that stops coming, TLS, Nagle) use
its real uvicorn port.  The photos are scikit-image's.  What the HTTP side answers is
checked against what gRPC answers for the same bytes (one contract, one implementation),
and each refusal for its HTTP status and its google.rpc.Status body.
"""

from __future__ import annotations

import base64
import io
import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import grpc
import httpx
import pytest
from google.protobuf import json_format
from PIL import Image
from starlette.testclient import TestClient

from image2sdr.server.config import Config, HttpConfig, ServiceConfig, TlsConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.http_api import create_app
from image2sdr.server.serve import Server, create_server
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.images import half_size, mirrored
from tests.helpers.tls import certificate

TIMEOUT = 120
ALLOWED_ORIGIN = "http://page.example"
BODY_LIMIT = 1 << 20  # http.max_body_bytes here: the photos are well under it
TOKEN_ENV = "IMAGE2SDR_TEST_HTTP_TOKEN"


def config_for(data_dir: Path, models_dir: Path) -> Config:
    return Config(
        data_dir=data_dir,
        models_dir=models_dir,
        service=ServiceConfig(port=0, shutdown_grace_s=0.5, token_env=TOKEN_ENV),
        http=HttpConfig(port=0, cors_origins=(ALLOWED_ORIGIN,), max_body_bytes=BODY_LIMIT, max_concurrent=2),
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, shared_encoder: Encoder) -> Iterator[Server]:
    started = create_server(config_for(tmp_path_factory.mktemp("http") / "data", models_dir), encoder=shared_encoder)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def http(server: Server, models_dir: Path) -> Iterator[httpx.Client]:
    """The server's HTTP app, called in process: its use cases and metrics, no socket."""
    app = create_app(server.cases, config_for(Path("unused"), models_dir), server.metrics)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture(scope="module")
def socket_http(server: Server) -> Iterator[httpx.Client]:
    """The same server over its real socket (uvicorn)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[pb_grpc.Image2SdrStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.Image2SdrStub(channel)


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def status_of(response: httpx.Response, http_status: int, code: grpc.StatusCode) -> dict[str, Any]:
    """The google.rpc.Status body of a refusal, after checking its HTTP status and gRPC code."""
    assert response.status_code == http_status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code.value[0]
    assert body["message"]
    return body


def detail(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """The detail of type google.rpc.<kind> in a Status body."""
    found = [d for d in body.get("details", ()) if d["@type"] == f"type.googleapis.com/google.rpc.{kind}"]
    assert found, body
    return found[0]


# -- Encode, three ways -------------------------------------------------------------------


def test_encode_by_raw_body_form_and_json_gives_the_grpc_sdr(
    http: httpx.Client, stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]
) -> None:
    image = photos["chelsea"]
    expected = stub.Encode(pb.EncodeRequest(image=image, options=pb.EncodeOptions(max_concepts=5)), timeout=TIMEOUT)
    answers = [
        ok(http.post("/v1/encode?max_concepts=5", content=image, headers={"Content-Type": "image/jpeg"})),
        ok(http.post("/v1/encode?max_concepts=5", files={"image": ("cat.jpg", image, "image/jpeg")})),
        ok(
            http.post(
                "/v1/encode",
                json={"image": base64.b64encode(image).decode(), "options": {"maxConcepts": 5}},
            )
        ),
    ]
    for answer in answers:
        assert "decodeMs" in answer["timings"]  # canonical JSON: lowerCamelCase names
        parsed = json_format.ParseDict(answer, pb.EncodeResponse())
        assert parsed.sdr == expected.sdr
        assert parsed.concepts == expected.concepts
        assert len(parsed.concepts) == 5


def test_info_parsed_back_is_the_grpc_answer(http: httpx.Client, stub: pb_grpc.Image2SdrStub) -> None:
    answer = ok(http.get("/v1/info"))
    assert "serverVersion" in answer and "server_version" not in answer
    assert json_format.ParseDict(answer, pb.InfoResponse()) == stub.Info(pb.InfoRequest(), timeout=TIMEOUT)


# -- the collection -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored(http: httpx.Client, photos: dict[str, bytes]) -> list[str]:
    """Three photos added over HTTP: by raw body with ?add=, by the prototype's form, by JSON."""
    ok(http.post("/v1/encode?add=cat", content=photos["chelsea"], headers={"Content-Type": "image/jpeg"}))
    form = {"id": "mug", "metadata": json.dumps({"source": "studio"})}
    ok(http.post("/v1/encode", files={"image": ("mug.jpg", photos["coffee"], "image/jpeg")}, data=form))
    rocket = {"image": base64.b64encode(photos["rocket"]).decode(), "addToIndex": {"id": "rocket"}}
    assert ok(http.post("/v1/encode", json=rocket))["indexed"] is True
    return ["cat", "mug", "rocket"]


def test_a_stored_item_comes_back_with_its_metadata_and_thumbnail(http: httpx.Client, stored: list[str]) -> None:
    item = ok(http.get("/v1/items/mug"))
    assert item["id"] == "mug"
    assert item["metadata"] == {"source": "studio"}
    with Image.open(io.BytesIO(base64.b64decode(item["thumbnail"]))) as thumbnail:
        assert max(thumbnail.size) > 0


def test_similar_by_text_and_by_id(http: httpx.Client, stub: pb_grpc.Image2SdrStub, stored: list[str]) -> None:
    by_text = ok(http.post("/v1/similar", json={"text": "cat", "k": 3}))
    assert by_text["matches"][0]["id"] == "cat"
    request = pb.FindSimilarRequest(id="cat", k=2)
    by_id = ok(http.post("/v1/similar", json=json_format.MessageToDict(request)))
    assert json_format.ParseDict(by_id, pb.FindSimilarResponse()) == stub.FindSimilar(request, timeout=TIMEOUT)
    assert "cat" not in [match["id"] for match in by_id["matches"]]


def test_items_are_listed_a_page_at_a_time(http: httpx.Client, stored: list[str]) -> None:
    seen, token = [], ""
    for _ in range(len(stored) + 1):
        page = ok(http.get("/v1/items", params={"page_size": 1, "page_token": token}))
        seen += [item["id"] for item in page.get("items", ())]
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert sorted(seen) == sorted(stored)
    filtered = ok(http.post("/v1/items:list", json={"filter": {"metadata": [{"key": "source", "values": ["studio"]}]}}))
    assert [item["id"] for item in filtered["items"]] == ["mug"]


def test_listings_leave_the_sdrs_out_unless_asked(
    http: httpx.Client, stub: pb_grpc.Image2SdrStub, stored: list[str]
) -> None:
    """view=BASIC (the listings' default) sends no SDRs; FULL sends what gRPC does; GetItem is FULL unless asked."""
    basic = ok(http.get("/v1/items", params={"page_size": 10}))
    assert sorted(item["id"] for item in basic["items"]) == sorted(stored)
    for item in basic["items"]:
        assert "sdr" not in item and "visual" not in item and item["thumbnail"] == ""
        assert item["concepts"] and "fingerprint" in item
    full = ok(http.get("/v1/items", params={"page_size": 10, "view": "full"}))
    expected = stub.ListItems(pb.ListItemsRequest(page_size=10), timeout=TIMEOUT)
    assert json_format.ParseDict(full, pb.ListItemsResponse()) == expected
    assert all(item["sdr"]["active"] for item in full["items"])
    studio = {"filter": {"metadata": [{"key": "source", "values": ["studio"]}]}}
    assert "sdr" not in ok(http.post("/v1/items:list", json=studio))["items"][0]
    assert ok(http.post("/v1/items:list?view=FULL", json=studio))["items"][0]["sdr"]["active"]
    item = ok(http.get("/v1/items/mug"))
    assert item["sdr"]["active"] and item["thumbnail"]
    brief = ok(http.get("/v1/items/mug", params={"view": "BASIC"}))
    assert "sdr" not in brief and "visual" not in brief and brief["thumbnail"] == ""
    assert brief["metadata"] == {"source": "studio"} and brief["concepts"] == item["concepts"]
    for path in ("/v1/items", "/v1/items/mug"):
        body = status_of(http.get(path, params={"view": "sideways"}), 400, grpc.StatusCode.INVALID_ARGUMENT)
        assert detail(body, "BadRequest")["fieldViolations"][0]["field"] == "view"
        assert "BASIC, FULL" in body["message"]


def test_every_field_is_in_the_answer_defaults_included(http: httpx.Client, stored: list[str]) -> None:
    """An empty listing is an empty list, no token and total 0, not {} (indexed: false: the on_duplicate test)."""
    nothing = {"filter": {"metadata": [{"key": "source", "values": ["nowhere"]}]}}
    assert ok(http.post("/v1/items:list", json=nothing)) == {"items": [], "nextPageToken": "", "total": "0"}


def test_a_removed_item_is_not_found_with_a_status_naming_it(http: httpx.Client, stored: list[str]) -> None:
    assert ok(http.delete("/v1/items/rocket")) == {}
    body = status_of(http.get("/v1/items/rocket"), 404, grpc.StatusCode.NOT_FOUND)
    assert detail(body, "ResourceInfo")["resourceName"] == "rocket"
    stored.remove("rocket")


def test_on_duplicate_in_the_query_is_honoured(http: httpx.Client, photos: dict[str, bytes]) -> None:
    """Any valid on_duplicate, in any of its spellings (it answered 500: the enum wrapper was called)."""
    jpeg = {"Content-Type": "image/jpeg"}
    assert ok(http.post("/v1/encode?add=dupe-a", content=photos["astronaut"], headers=jpeg))["indexed"]
    for value in ("skip", "SKIP", "ON_DUPLICATE_SKIP"):
        skipped = ok(
            http.post(f"/v1/encode?add=dupe-b&on_duplicate={value}", content=photos["astronaut"], headers=jpeg)
        )
        assert skipped["indexed"] is False and skipped["duplicate"]["id"] == "dupe-a", value
        assert skipped["duplicate"]["phashDistance"] == 0 and skipped["replaced"] == []  # defaults present
    replaced = ok(http.post("/v1/encode?add=dupe-c&on_duplicate=replace", content=photos["astronaut"], headers=jpeg))
    assert replaced["indexed"] and replaced["replaced"] == ["dupe-a"]
    kept = ok(http.post("/v1/encode?add=dupe-d&on_duplicate=keep", content=photos["astronaut"], headers=jpeg))
    assert kept["indexed"]
    for item_id in ("dupe-c", "dupe-d"):  # the module's listing test counts what it stored
        assert ok(http.delete(f"/v1/items/{item_id}")) == {}
    status_of(http.get("/v1/items/dupe-b"), 404, grpc.StatusCode.NOT_FOUND)


def test_a_custom_concept_named_with_a_slash_is_reachable(http: httpx.Client, photos: dict[str, bytes]) -> None:
    """Every name the API accepts can be read and removed again (cats%2Fdogs answered 404)."""
    chelsea = photos["chelsea"]
    positives = [
        {"image": base64.b64encode(image).decode()} for image in (chelsea, half_size(chelsea), mirrored(chelsea))
    ]
    defined = ok(http.post("/v1/concepts", json={"name": "cats/dogs", "positives": positives}))
    assert defined["name"] == "cats/dogs"
    assert ok(http.get("/v1/concepts/cats%2Fdogs"))["name"] == "cats/dogs"
    assert "cats/dogs" in [c["name"] for c in ok(http.get("/v1/concepts"))["concepts"]]
    assert ok(http.delete("/v1/concepts/cats%2Fdogs")) == {}
    body = status_of(http.get("/v1/concepts/cats%2Fdogs"), 404, grpc.StatusCode.NOT_FOUND)
    assert detail(body, "ResourceInfo")["resourceName"] == "cats/dogs"


# -- refusals -----------------------------------------------------------------------------


def test_an_undecodable_image_is_400_naming_the_field(http: httpx.Client) -> None:
    response = http.post("/v1/encode", content=b"not an image at all", headers={"Content-Type": "image/png"})
    body = status_of(response, 400, grpc.StatusCode.INVALID_ARGUMENT)
    assert detail(body, "BadRequest")["fieldViolations"][0]["field"] == "image"


def test_an_unknown_json_field_is_400(http: httpx.Client) -> None:
    body = status_of(http.post("/v1/similar", json={"txet": "cat"}), 400, grpc.StatusCode.INVALID_ARGUMENT)
    assert "txet" in body["message"]
    not_json = http.post("/v1/text", content=b"{not json", headers={"Content-Type": "application/json"})
    status_of(not_json, 400, grpc.StatusCode.INVALID_ARGUMENT)


def test_a_content_type_no_endpoint_reads_is_415(http: httpx.Client) -> None:
    status_of(
        http.post("/v1/encode", content=b"hello", headers={"Content-Type": "text/plain"}),
        415,
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    as_text = http.post("/v1/similar", content=b"text=cat", headers={"Content-Type": "text/plain"})
    status_of(as_text, 415, grpc.StatusCode.INVALID_ARGUMENT)


def test_a_body_over_the_limit_is_413_declared_or_streamed(http: httpx.Client) -> None:
    big = b"\xff" * (BODY_LIMIT + 1)
    declared = http.post("/v1/encode", content=big, headers={"Content-Type": "image/jpeg"})
    detail(status_of(declared, 413, grpc.StatusCode.RESOURCE_EXHAUSTED), "QuotaFailure")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        for _ in range(BODY_LIMIT // 65536 + 2):
            yield b"\xff" * 65536

    streamed = http.post("/v1/encode", content=chunks(), headers={"Content-Type": "image/jpeg"})
    status_of(streamed, 413, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert ok(http.get("/healthz")) == {"status": "SERVING"}


def test_a_deadline_header_is_honoured_and_checked(http: httpx.Client) -> None:
    status_of(http.get("/v1/info", headers={"X-Timeout-S": "1e-9"}), 504, grpc.StatusCode.DEADLINE_EXCEEDED)
    body = status_of(http.get("/v1/info", headers={"X-Timeout-S": "soon"}), 400, grpc.StatusCode.INVALID_ARGUMENT)
    assert detail(body, "BadRequest")["fieldViolations"][0]["field"] == "X-Timeout-S"
    ok(http.get("/v1/info", headers={"X-Timeout-S": "30"}))


def test_bad_query_parameters_and_unknown_routes_answer_a_status(http: httpx.Client) -> None:
    status_of(http.get("/v1/items", params={"page_size": "many"}), 400, grpc.StatusCode.INVALID_ARGUMENT)
    status_of(http.get("/v1/nothing-here"), 404, grpc.StatusCode.NOT_FOUND)
    status_of(
        http.post("/v1/encode?on_duplicate=sometimes&add=x", content=b"x", headers={"Content-Type": "image/jpeg"}),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_the_token_guards_all_but_health_the_page_and_the_docs(
    server: Server, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")  # read when the app is made, as on the gRPC side
    guarded = create_app(server.cases, config_for(Path("unused"), models_dir))
    with TestClient(guarded, base_url="http://127.0.0.1") as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
            response = client.get("/v1/info", headers=headers)
            status_of(response, 401, grpc.StatusCode.UNAUTHENTICATED)
            assert "s3cret" not in response.text
        assert "/v1/encode" in ok(client.get("/openapi.json"))["paths"]  # the docs describe the public proto
        assert client.get("/docs").status_code == client.get("/redoc").status_code == 200
        assert ok(client.get("/v1/info", headers={"Authorization": "Bearer s3cret-token"}))["serverVersion"]
        assert ok(client.get("/v1/info", headers={"Authorization": "bearer s3cret-token"}))["serverVersion"]
        assert ok(client.get("/healthz")) == {"status": "SERVING"}
        page = client.get("/")  # the page asks for the token itself
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert client.get("/static/none.css").status_code == 404


def test_cors_preflight_is_allowed_only_for_configured_origins(http: httpx.Client) -> None:
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,authorization"}
    allowed = http.options("/v1/similar", headers={"Origin": ALLOWED_ORIGIN, **asked})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    refused = http.options("/v1/similar", headers={"Origin": "http://elsewhere.example", **asked})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


def test_openapi_lists_the_endpoints(http: httpx.Client) -> None:
    paths = ok(http.get("/openapi.json"))["paths"]
    for path in ("/v1/encode", "/v1/similar", "/v1/text", "/v1/terms", "/v1/items", "/v1/items/{item_id}", "/v1/info"):
        assert path in paths, path
    assert "multipart/form-data" in paths["/v1/encode"]["post"]["requestBody"]["content"]
    assert http.get("/docs").status_code == 200


def test_http_calls_are_counted_by_rpc_and_status(http: httpx.Client) -> None:
    def encode_errors() -> float:
        text = http.get("/metrics").text
        wanted = 'image2sdr_requests_total{code="400",method="Encode",protocol="http"}'
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted))

    before = encode_errors()
    for _ in range(3):
        http.post("/v1/encode", content=b"no image", headers={"Content-Type": "image/png"})
    assert encode_errors() == before + 3


def test_mutual_tls_uses_the_grpc_side_files(tmp_path: Path, models_dir: Path, shared_encoder: Encoder) -> None:
    ca_cert, _, ca_key, ca_name = certificate("test CA", ca=True)
    files = {"ca": ca_cert}
    for name in ("server", "client"):
        files[f"{name}.crt"], files[f"{name}.key"], _, _ = certificate(name, ca_key, ca_name)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    tls = TlsConfig(cert_file=tmp_path / "server.crt", key_file=tmp_path / "server.key", client_ca_file=tmp_path / "ca")
    config = config_for(tmp_path / "data", models_dir)
    secure_config = config.model_copy(update={"service": config.service.model_copy(update={"tls": tls})})
    secure = create_server(secure_config, encoder=shared_encoder)
    try:
        url = f"https://localhost:{secure.http_port}"
        trusting = ssl.create_default_context(cafile=tmp_path / "ca")
        with httpx.Client(verify=trusting, timeout=TIMEOUT) as anonymous, pytest.raises(httpx.TransportError):
            anonymous.get(f"{url}/healthz")  # no client certificate: no handshake
        trusting.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
        with httpx.Client(verify=trusting, timeout=TIMEOUT) as client:
            assert ok(client.get(f"{url}/healthz")) == {"status": "SERVING"}
            assert ok(client.get(f"{url}/v1/info"))["serverVersion"]
    finally:
        secure.stop()


def test_healthz_and_grpc_health_read_one_state(server: Server, http: httpx.Client, socket_http: httpx.Client) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    def grpc_health() -> int:
        with grpc.insecure_channel(server.address) as channel:
            request = health_pb2.HealthCheckRequest()
            return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=TIMEOUT).status)

    try:
        server.cases.health.set(False, "the index is unavailable")
        answer = http.get("/healthz")
        assert answer.status_code == 503
        assert answer.json() == {"status": "NOT_SERVING", "reason": "the index is unavailable"}
        assert socket_http.get("/healthz").status_code == 503
        assert grpc_health() == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        server.cases.health.set(True)
    assert ok(http.get("/healthz")) == {"status": "SERVING"}
    assert grpc_health() == health_pb2.HealthCheckResponse.SERVING


# -- one side does not hold the other -----------------------------------------------------


def test_grpc_and_http_serve_while_an_upload_stalls(
    server: Server, socket_http: httpx.Client, stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]
) -> None:
    head = (
        f"POST /v1/encode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {BODY_LIMIT // 2}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.http_port or 0), timeout=TIMEOUT) as stalled:
        stalled.sendall(head + b"\xff" * (BODY_LIMIT // 4))  # half the body, then nothing
        started = time.monotonic()
        answer = stub.Encode(pb.EncodeRequest(image=photos["coffee"]), timeout=TIMEOUT)
        assert len(answer.sdr.active) > 0
        assert ok(socket_http.get("/healthz")) == {"status": "SERVING"}
        assert ok(socket_http.post("/v1/text", json={"text": "coffee"}))["term"] == "coffee"
        assert time.monotonic() - started < TIMEOUT


def narrow_config(models_dir: Path) -> Config:
    """One handler slot (so 4 may wait) and a 2 s body timeout."""
    config = config_for(Path("unused"), models_dir)
    return config.model_copy(
        update={"http": config.http.model_copy(update={"max_concurrent": 1, "body_timeout_s": 2.0})}
    )


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, shared_encoder: Encoder) -> Iterator[Server]:
    config = narrow_config(models_dir).model_copy(update={"data_dir": tmp_path_factory.mktemp("narrow") / "data"})
    started = create_server(config, encoder=shared_encoder)
    yield started
    started.stop()


def hold_info(server: Server, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Info calls, once inside their slot, wait for the test: ``holding`` is set when one is in, ``release`` lets go."""
    holding, release = threading.Event(), threading.Event()
    info = server.cases.info

    def held() -> Any:
        holding.set()
        assert release.wait(TIMEOUT), "the test never let the slot go"
        return info()

    monkeypatch.setattr(server.cases, "info", held)
    return holding, release


def test_calls_past_the_waiting_room_get_429_while_healthz_answers(
    server: Server, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one slot is held by the test itself until it lets go: no call's speed decides anything."""
    holding, release = hold_info(server, monkeypatch)
    app = create_app(server.cases, narrow_config(models_dir))
    calls = app.state.calls
    answers: queue.Queue[int] = queue.Queue()
    with TestClient(app, base_url="http://127.0.0.1") as client:

        def ask() -> None:
            answers.put(client.get("/v1/info").status_code)

        running = threading.Thread(target=ask)
        running.start()
        assert holding.wait(TIMEOUT)  # the slot is taken
        waiting = [threading.Thread(target=ask) for _ in range(4)]
        for caller in waiting:
            caller.start()
        deadline = time.monotonic() + TIMEOUT
        while calls.waiting < 4:  # a condition, not a time: each of them is queued for the slot
            assert time.monotonic() < deadline, f"{calls.waiting} calls waiting, 4 expected"
            threading.Event().wait(0.01)
        for _ in range(2):  # past the waiting room: refused at once
            status_of(client.get("/v1/info"), 429, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert ok(client.get("/healthz")) == {"status": "SERVING"}  # waiting calls hold no worker thread
        assert answers.empty()  # ... and none of the five has been answered
        release.set()
        for caller in [running, *waiting]:
            caller.join(TIMEOUT)
    assert sorted(answers.get_nowait() for _ in range(5)) == [200] * 5
    assert answers.empty()


def test_a_body_that_stops_coming_gets_408(narrow: Server) -> None:
    head = b"POST /v1/encode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", narrow.http_port or 0), timeout=TIMEOUT) as stalled:
        stalled.sendall(head + b"\xff" * 10)
        received = b""
        while b"http.body_timeout_s" not in received:  # head and body may come in separate segments
            chunk = stalled.recv(65536)
            if not chunk:
                break
            received += chunk
        answer = received.decode("latin-1")
    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    assert "http.body_timeout_s" in answer


def test_the_listener_turns_nagle_off() -> None:
    # Accepted sockets inherit it; without it every keep-alive answer waited ~40 ms for a delayed ACK.
    from image2sdr.server.http_api.serving import _bind  # noqa: PLC0415

    listener = _bind("127.0.0.1", 0)
    try:
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()


def test_deep_json_and_far_deadlines_are_400(http: httpx.Client) -> None:
    deep = "[" * 5_000 + "]" * 5_000  # json.loads raises RecursionError, not ValueError
    body = status_of(
        http.post("/v1/similar", content=deep, headers={"content-type": "application/json"}),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "nested too deep" in body["message"]
    assert detail(body, "BadRequest")["fieldViolations"][0]["field"] == "body"
    status_of(http.get("/v1/info", headers={"X-Timeout-S": "1e10"}), 400, grpc.StatusCode.INVALID_ARGUMENT)


# -- what a request may cost, and errors that are errors ------------------------------------


@pytest.mark.parametrize("path", ["/v1/encode", "/v1/similar"])
def test_json_values_are_counted_before_parsing(http: httpx.Client, path: str) -> None:
    """200,000 empty arrays in an unknown field (600 kB): 413 naming the limit, before any is made."""
    body = b'{"unknownField": [' + b"[]," * 199_999 + b"[]]}"
    refused = status_of(
        http.post(path, content=body, headers={"content-type": "application/json"}),
        413,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert "http.max_json_values (100000)" in refused["message"]
    assert "(limit 100000, got " in detail(refused, "QuotaFailure")["violations"][0]["description"]


def test_json_past_the_limit_is_refused_before_the_rest_is_read(server: Server, models_dir: Path) -> None:
    """A body that never ends, of empty arrays: 413 at the chunk that passes the limit, read no further."""
    app = create_app(server.cases, config_for(Path("unused"), models_dir))
    chunk = b"[]," * 10_000  # 20,000 marks a chunk: the 5th passes 100,000
    read, answered = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b'{"unknownField": [' if read == 1 else chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        answered.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/similar",
        "raw_path": b"/v1/similar",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    anyio.run(app, scope, receive, send)
    assert answered[0]["status"] == 413
    assert read == 6  # the opening, then five chunks


def test_encode_json_is_parsed_after_its_slot(
    server: Server, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the one slot held by the test, a bad JSON Encode waits for it (504 at its deadline), not 400 at once."""
    holding, release = hold_info(server, monkeypatch)
    app = create_app(server.cases, narrow_config(models_dir))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        running = threading.Thread(target=lambda: client.get("/v1/info"))
        running.start()
        try:
            assert holding.wait(TIMEOUT)  # the slot is taken
            bad = client.post("/v1/encode", json={"unknownField": []}, headers={"X-Timeout-S": "0.2"})
            status_of(bad, 504, grpc.StatusCode.DEADLINE_EXCEEDED)
        finally:
            release.set()
            running.join(TIMEOUT)
        status_of(client.post("/v1/encode", json={"unknownField": []}), 400, grpc.StatusCode.INVALID_ARGUMENT)


def test_form_metadata_nested_deep_is_400_naming_it(http: httpx.Client, photos: dict[str, bytes]) -> None:
    form = {"id": "deep", "metadata": "[" * 5_000 + "]" * 5_000}
    answer = http.post("/v1/encode", files={"image": ("cat.jpg", photos["chelsea"], "image/jpeg")}, data=form)
    refused = status_of(answer, 400, grpc.StatusCode.INVALID_ARGUMENT)
    assert detail(refused, "BadRequest")["fieldViolations"][0]["field"] == "metadata"


def test_a_page_token_past_the_int_limit_is_400_naming_it(http: httpx.Client, stub: pb_grpc.Image2SdrStub) -> None:
    token = "l" + "9" * 4_301  # Python refuses to read an int of more than 4,300 digits
    refused = status_of(http.get("/v1/items", params={"page_token": token}), 400, grpc.StatusCode.INVALID_ARGUMENT)
    assert detail(refused, "BadRequest")["fieldViolations"][0]["field"] == "page_token"
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListItems(pb.ListItemsRequest(page_token=token), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_long_id_is_cut_in_the_status_not_refused_by_the_transport(
    http: httpx.Client, stub: pb_grpc.Image2SdrStub
) -> None:
    """A 10 kB map id: NOT_FOUND with the id's start and end, not "metadata size exceeds hard limit"."""
    long_id = "a" + "m" * 10_000 + "z"
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetMap(pb.GetMapRequest(id=long_id), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()
    message = caught.value.details() or ""
    assert "'amm" in message and "mmz'" in message and "characters cut" in message
    assert len(message.encode()) <= 512
    answer = http.get(f"/v1/maps/{long_id}")
    refused = status_of(answer, 404, grpc.StatusCode.NOT_FOUND)
    assert len(answer.content) < 2_000 and "characters cut" in detail(refused, "ResourceInfo")["resourceName"]


def test_a_client_gone_mid_upload_is_one_line_at_info(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    head = b"POST /v1/encode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
    caplog.set_level("INFO")
    with socket.create_connection(("127.0.0.1", server.http_port or 0), timeout=TIMEOUT) as leaving:
        leaving.sendall(head + b"\xff" * 1_000)
    deadline = time.monotonic() + TIMEOUT  # a failure bound: the server notices the close at once
    while not any("went away" in record.getMessage() or record.levelname == "ERROR" for record in caplog.records):
        assert time.monotonic() < deadline, "the server never noticed the client leave"
        threading.Event().wait(0.01)
    about = [record for record in caplog.records if "went away" in record.getMessage() or record.levelname == "ERROR"]
    assert [(record.levelname, record.exc_info) for record in about] == [("INFO", None)]
    assert "after 1000 bytes" in about[0].getMessage()


def test_an_unexpected_failure_is_a_status_not_plain_text(
    server: Server, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(server.cases.health, "state", broken)
    app = create_app(server.cases, config_for(Path("unused"), models_dir))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        body = status_of(client.get("/healthz"), 500, grpc.StatusCode.INTERNAL)
    assert "a bug" not in body["message"]
