"""What a web page may do with the HTTP face (``http_api.browser``), on a real server with no token.

The calls go to the server's app in process (Starlette's TestClient), with the headers
a browser would send for a page of another site: a form post with its Origin or
Referer, a DNS-rebound Host. One call goes over the real socket (uvicorn), where the
Host header is the client's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.http_api import create_app
from image2sdr.server.http_api.browser import PAGE_POLICY, allowed_hosts
from image2sdr.server.serve import Server, create_server

TIMEOUT = 120
ALLOWED_ORIGIN = "http://page.example"
EVIL = "http://evil.example"
TOKEN_ENV = "IMAGE2SDR_TEST_BROWSER_TOKEN"


def config_for(data_dir: Path, models_dir: Path) -> Config:
    return Config(
        data_dir=data_dir,
        models_dir=models_dir,
        service=ServiceConfig(port=0, shutdown_grace_s=0.5, token_env=TOKEN_ENV),
        http=HttpConfig(port=0, cors_origins=(ALLOWED_ORIGIN,), allowed_hosts=("images.example",)),
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, shared_encoder: Encoder) -> Iterator[Server]:
    started = create_server(config_for(tmp_path_factory.mktemp("browser") / "data", models_dir), encoder=shared_encoder)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def http(server: Server, models_dir: Path) -> Iterator[httpx.Client]:
    app = create_app(server.cases, config_for(Path("unused"), models_dir))
    with TestClient(app, base_url="http://127.0.0.1:8080") as client:
        yield client


def refused(response: httpx.Response, status: int, header: str) -> str:
    """The Status message of a refusal, after checking its HTTP status and the header it names."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["details"][0]["fieldViolations"][0]["field"] == header
    message: str = body["message"]
    return message


def test_a_cross_site_form_post_stores_nothing(http: httpx.Client, photos: dict[str, bytes]) -> None:
    files = {"image": ("cat.jpg", photos["chelsea"], "image/jpeg")}
    for sent in ({"Origin": EVIL}, {"Referer": f"{EVIL}/page.html"}, {"Origin": "null"}):
        answer = http.post("/v1/encode", files=files, data={"id": "planted"}, headers=sent)
        assert "http.cors_origins" in refused(answer, 403, "Origin")
    assert http.get("/v1/items/planted").status_code == 404


@pytest.mark.parametrize(
    "sent",
    [
        {},  # no Origin, no Referer: not a browser (curl, a client library)
        {"Origin": "http://127.0.0.1:8080"},  # the page itself
        {"Referer": "http://127.0.0.1:8080/"},
        {"Origin": ALLOWED_ORIGIN},  # http.cors_origins
        {"Origin": EVIL, "X-Requested-With": "x"},  # a header a foreign page cannot add without a preflight
    ],
    ids=["no-origin", "same-origin", "same-referer", "cors-origin", "requested-with"],
)
def test_calls_from_the_site_itself_pass(http: httpx.Client, sent: dict[str, str]) -> None:
    assert http.delete("/v1/items/not-stored", headers=sent).status_code == 404  # past the guard, to the index


def test_reads_from_other_origins_are_left_to_cors(http: httpx.Client) -> None:
    assert http.get("/v1/info", headers={"Origin": EVIL}).status_code == 200  # the browser keeps the answer from it


def test_with_a_token_the_token_decides(server: Server, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "browser-secret")
    app = create_app(server.cases, config_for(Path("unused"), models_dir))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        headers = {"Origin": EVIL, "Authorization": "Bearer browser-secret"}
        assert client.delete("/v1/items/not-stored", headers=headers).status_code == 404
        assert client.delete("/v1/items/not-stored", headers={"Origin": EVIL}).status_code == 401


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", ""])
def test_a_host_not_served_is_400(http: httpx.Client, host: str) -> None:
    answer = http.get("/v1/items", headers={"Host": host})
    assert "http.allowed_hosts" in refused(answer, 400, "Host")


@pytest.mark.parametrize("host", ["localhost:8080", "[::1]:8080", "127.0.0.1", "IMAGES.example"])
def test_the_served_names_pass(http: httpx.Client, host: str) -> None:
    assert http.get("/v1/info", headers={"Host": host}).status_code == 200


def test_healthz_answers_any_host(http: httpx.Client) -> None:
    assert http.get("/healthz", headers={"Host": "10.1.2.3:8080"}).json() == {"status": "SERVING"}


def test_the_host_is_checked_on_the_real_socket(server: Server) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=TIMEOUT) as client:
        assert client.get("/v1/info").status_code == 200
        refused(client.get("/v1/info", headers={"Host": "rebound.example"}), 400, "Host")


def test_allowed_hosts_adds_the_local_names_and_the_listen_address() -> None:
    assert allowed_hosts((), "127.0.0.1") == {"localhost", "127.0.0.1", "[::1]"}
    assert allowed_hosts(("Images.Example",), "::") == {"localhost", "127.0.0.1", "[::1]", "images.example"}
    assert "10.0.0.5" in (allowed_hosts((), "10.0.0.5") or ())
    assert allowed_hosts(("*",), "0.0.0.0") is None  # any Host: a proxy in front checks it


def test_the_page_cannot_be_framed_or_sniffed(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.headers["content-security-policy"] == PAGE_POLICY
    assert "frame-ancestors 'none'" in PAGE_POLICY and "script-src 'self'" in PAGE_POLICY
    for answer in (page, http.get("/static/app.js"), http.get("/v1/info"), http.get("/v1/nowhere")):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
