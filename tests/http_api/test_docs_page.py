"""/docs (Swagger UI) and /redoc (ReDoc) in a real browser with the network cut off.

Playwright drives Debian's Chromium (as tests/http_api/test_page.py does) against a
real server on port 0; every request that does not go to that server is aborted, as
it would fail on a machine with no internet. Both readers must still load their
scripts (from the package, not a CDN), read /openapi.json and list the operations.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.serve import create_server

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason=f"no {CHROMIUM}: run `make chromium` (Debian's chromium package) to drive the docs in a browser",
)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, shared_encoder: Encoder) -> Iterator[str]:
    config = Config(
        data_dir=tmp_path_factory.mktemp("docs-data"),
        models_dir=models_dir,
        service=ServiceConfig(port=0, shutdown_grace_s=0.5),
        http=HttpConfig(port=0),
    )
    server = create_server(config, encoder=shared_encoder)
    yield f"http://127.0.0.1:{server.http_port}"
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def offline(browser: Browser, base_url: str) -> Iterator[tuple[Page, list[str]]]:
    """A page whose requests reach only the server; the list of those cut off."""
    context = browser.new_context()
    refused: list[str] = []
    served = urlsplit(base_url).netloc

    def route(route: Route) -> None:
        parts = urlsplit(route.request.url)
        if parts.scheme in ("http", "https") and parts.netloc != served:
            refused.append(route.request.url)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    context.route("**/*", route)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page, refused
    context.close()


def test_swagger_ui_lists_the_operations_offline(offline: tuple[Page, list[str]], base_url: str) -> None:
    page, refused = offline
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base_url}/docs")
    for path in ("/v1/encode", "/v1/similar", "/v1/items/{item_id}", "/v1/info"):
        expect(page.locator(".opblock-summary-path", has_text=path).first).to_be_visible(timeout=TIMEOUT_MS)
    # The request and response schemas resolve: Swagger UI lists them, and no resolver error shows.
    expect(page.get_by_role("button", name="EncodeRequest", exact=True)).to_be_attached()
    expect(page.locator(".errors-wrapper")).to_have_count(0)
    assert refused == []
    assert errors == []


def test_redoc_lists_the_operations_offline(offline: tuple[Page, list[str]], base_url: str) -> None:
    page, refused = offline
    page.goto(f"{base_url}/redoc")
    # ReDoc's side menu names each operation by its summary (FastAPI: the route's name).
    menu = page.locator(".menu-content")
    for name in ("Encode", "FindSimilar", "GetItem", "Info"):
        expect(menu.get_by_text(name, exact=True).first).to_be_attached(timeout=TIMEOUT_MS)
    # ReDoc's "by Redocly" logo is its one remote file: an <img> that hides itself when it fails.
    assert [url for url in refused if not url.endswith("/redoc/logo-mini.svg")] == []
