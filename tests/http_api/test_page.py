"""The page at ``/`` in a real browser: Playwright driving Debian's Chromium against a real server.

A real server on port 0 with its HTTP face on port 0; the page uploads a real photo
(scikit-image's chelsea as a JPEG), shows its concepts and draws its SDR bit for bit,
adds it under an id, finds it again by the word "cat", highlights the bits a match
shares, and removes it from the collection (GET /v1/items/{id} is 404 afterwards).
Every request the page makes stays on the server's own origin (the machine has no
internet, and the page must work without one). A screenshot goes under tmp_path.

Chromium comes from Debian (`make chromium`): Playwright never downloads a browser
here, so executable_path is always passed. Without /usr/bin/chromium the tests skip,
except under CI, where they must run (and fail if the browser is missing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, Request, expect, sync_playwright
from skimage import data as skdata

from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.serve import Server, create_server
from tests.helpers.encoders import shared_encoder
from tests.helpers.images import encode_jpeg

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 60_000  # an encode on a busy 2-core machine, first model use included
ITEM_ID = "chelsea-from-the-page"
TOKEN_ENV = "IMAGE2SDR_PAGE_TEST_TOKEN"
TOKEN = "page-test-token"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason=f"no {CHROMIUM}: run `make chromium` (Debian's chromium package) to drive the page in a browser",
)

# Pixels of the canvas that are not background, as bit positions (row-major, one pixel a bit).
PAINTED_BITS = """() => {
  const canvas = document.getElementById("sdr-canvas");
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const bits = [];
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i] !== 255 || pixels[i + 1] !== 255 || pixels[i + 2] !== 255) bits.push(i / 4);
  }
  return bits;
}"""
# Bits drawn in the "shared with the chosen match" colour (app.js COLOURS.shared).
SHARED_BITS = PAINTED_BITS.replace(
    "pixels[i] !== 255 || pixels[i + 1] !== 255 || pixels[i + 2] !== 255",
    "pixels[i] === 234 && pixels[i + 1] === 88 && pixels[i + 2] === 12",
)


def _start(data_dir: Path, models_dir: Path, token_env: str = "IMAGE2SDR_TOKEN") -> Server:
    """A real server, gRPC and HTTP both on free ports, on the session's encoder."""
    service = ServiceConfig(port=0, shutdown_grace_s=0.5, token_env=token_env)
    config = Config(data_dir=data_dir, models_dir=models_dir, service=service, http=HttpConfig(port=0))
    return create_server(config, encoder=shared_encoder(models_dir))


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[str]:
    server = _start(tmp_path_factory.mktemp("page-data"), models_dir)
    yield f"http://127.0.0.1:{server.http_port}"
    server.stop()


@pytest.fixture(scope="module")
def token_url(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[str]:
    """A server that wants a bearer token (read from the environment when it starts)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(TOKEN_ENV, TOKEN)
        server = _start(tmp_path_factory.mktemp("page-token-data"), models_dir, TOKEN_ENV)
    yield f"http://127.0.0.1:{server.http_port}"
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=TIMEOUT_MS)  # expect's own default is 5 s, too short for a first encode
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


class Recorded:
    """What a page did that the test checks afterwards: the URLs it asked for, its script errors, what CSP blocked."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self.gets: list[str] = []  # the URLs of its GET requests
        self.errors: list[str] = []
        self.blocked: list[str] = []  # the server's Content-Security-Policy refusing something the page does
        page.on("request", self._request)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda message: self._console(message.text))

    def _request(self, request: Request) -> None:
        self.urls.append(request.url)
        if request.method == "GET":
            self.gets.append(request.url)

    def _console(self, text: str) -> None:
        if "Content Security Policy" in text:
            self.blocked.append(text)

    def foreign(self, origin: str) -> list[str]:
        """Requests that left ``origin`` (a blob: URL is the page's own; data: URLs fetch nothing)."""
        return [url for url in self.urls if _origin(url.removeprefix("blob:")) not in (origin, "data:")]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return "data:" if parts.scheme == "data" else f"{parts.scheme}://{parts.netloc}"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    yield opened
    context.close()


@pytest.fixture
def chelsea_jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "chelsea.jpg"
    path.write_bytes(encode_jpeg(skdata.chelsea()))
    return path


def _expect_the_strongest_concepts_then_all(page: Page) -> None:
    expect(page.get_by_test_id("concepts")).to_contain_text("%")
    expect(page.get_by_test_id("concept")).to_have_count(10)  # the strongest; the faint rest on request
    page.get_by_test_id("more-concepts").click()
    expect(page.get_by_test_id("more-concepts")).to_have_count(0)
    assert page.get_by_test_id("concept").count() > 10


def test_upload_add_search_highlight_remove(page: Page, base_url: str, chelsea_jpeg: Path, tmp_path: Path) -> None:
    recorded = Recorded(page)
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.goto(f"{base_url}/")
    expect(page.get_by_test_id("sdr-explainer")).to_contain_text("SDR")
    expect(page.get_by_test_id("docs-link")).to_have_attribute("href", "/docs")
    expect(page.get_by_test_id("collection-total")).to_contain_text("0 items")

    # Upload: concepts with confidences, the SDR drawn, its decoded terms.
    page.get_by_test_id("image-input").set_input_files(str(chelsea_jpeg))
    expect(page.get_by_test_id("concept").filter(has_text="cat").first).to_be_visible()
    _expect_the_strongest_concepts_then_all(page)
    expect(page.get_by_test_id("term").first).to_be_visible()
    drawn = page.evaluate(PAINTED_BITS)
    assert len(drawn) > 100, "the SDR canvas is blank"
    assert int(page.get_by_test_id("sdr-canvas").get_attribute("data-active") or 0) == len(drawn)

    # Add under an id: it is stored, listed with its thumbnail, and the query now finds it.
    page.get_by_test_id("add-id").fill(ITEM_ID)
    page.get_by_test_id("add-button").click()
    expect(page.get_by_test_id("status")).to_have_text(f"Added {ITEM_ID}")
    stored = page.request.get(f"{base_url}/v1/items/{ITEM_ID}").json()
    assert drawn == stored["sdr"]["active"], "the canvas is not the stored SDR bit for bit"
    listed = page.locator(f'[data-testid="collection-item"][data-id="{ITEM_ID}"]')
    thumbnail = f"/v1/items/{ITEM_ID}/thumbnail"  # a picture at its own URL, not base64 in JSON
    expect(listed.locator("img.thumb")).to_have_attribute("src", thumbnail)
    assert page.evaluate("(img) => img.complete && img.naturalWidth > 0", listed.locator("img.thumb").element_handle())
    match = page.locator(f'[data-testid="match"][data-id="{ITEM_ID}"]')
    expect(match.get_by_test_id("match-overlap")).to_have_text(f"{len(drawn)} bits shared")

    # Clicking the match highlights the bits it shares with the query: all of them, the same photo.
    match.get_by_role("button").click()
    expect(page.get_by_test_id("sdr-canvas")).to_have_attribute("data-shared", str(len(drawn)))
    assert page.evaluate(SHARED_BITS) == drawn
    page.screenshot(path=tmp_path / "page.png", full_page=True)  # docs/images/page.png is this one

    # Words: "cat" finds it, thumbnail and overlap shown; nothing of the photo's query is left beside them.
    page.get_by_test_id("search-text").fill("cat")
    page.get_by_test_id("search-button").click()
    expect(page.get_by_test_id("sdr-caption")).to_contain_text("“cat”")
    expect(page.get_by_test_id("preview")).to_be_hidden()
    expect(page.get_by_test_id("concept")).to_have_count(0)
    expect(page.get_by_test_id("add-button")).to_be_disabled()
    found = page.locator(f'[data-testid="match"][data-id="{ITEM_ID}"]')
    expect(found.locator("img.thumb")).to_have_attribute("src", thumbnail)
    expect(found.get_by_test_id("match-overlap")).to_contain_text("bits shared")

    _remove_with_undo(page, base_url, listed, found, asked)
    gone = page.request.get(f"{base_url}/v1/items/{ITEM_ID}")
    assert gone.status == 404
    assert ITEM_ID in gone.json()["message"]

    assert recorded.foreign(base_url) == []
    # The page asks for the view it uses: listings without SDRs, a stored item with them (it draws them).
    paths = [(urlsplit(url).path, urlsplit(url).query) for url in recorded.gets]
    listings = [query for path, query in paths if path == "/v1/items"]
    assert listings and all("view=BASIC" in query for query in listings), listings
    reads = [query for path, query in paths if path == f"/v1/items/{ITEM_ID}"]
    assert reads and all(query == "view=FULL" for query in reads), reads
    assert recorded.errors == []
    assert recorded.blocked == []


def _remove_with_undo(page: Page, base_url: str, listed: Locator, found: Locator, asked: list[str]) -> None:
    # Remove it from the collection list: asked first, gone from the page, and undone while the page is open.
    listed.get_by_test_id("remove").click()
    expect(page.get_by_test_id("status")).to_have_text(f"Removed {ITEM_ID}")
    assert len(asked) == 1 and ITEM_ID in asked[0] and "undo" in asked[0]
    expect(listed).to_have_count(0)
    expect(found).to_have_count(0)
    assert page.request.get(f"{base_url}/v1/items/{ITEM_ID}").ok  # held by the page until it is sure
    page.get_by_test_id("undo-button").click()
    expect(listed).to_have_count(1)
    expect(page.get_by_test_id("undo")).to_be_hidden()

    # Removed again and sent at once: gone from the server too.
    listed.get_by_test_id("remove").click()
    page.get_by_test_id("undo-commit").click()
    expect(page.get_by_test_id("undo")).to_be_hidden()
    expect(page.get_by_test_id("collection-total")).to_contain_text("0 items")


def test_a_bad_file_clears_the_last_image_and_shows_the_status(
    page: Page, base_url: str, chelsea_jpeg: Path, tmp_path: Path
) -> None:
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("these are words, not pixels")
    page.goto(f"{base_url}/")
    page.get_by_test_id("image-input").set_input_files(str(chelsea_jpeg))
    expect(page.get_by_test_id("add-button")).to_be_enabled()
    expect(page.get_by_test_id("term").first).to_be_visible()
    page.get_by_test_id("image-input").set_input_files(str(not_an_image))
    error = page.get_by_test_id("error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("(HTTP 400)")
    # Nothing of chelsea's is left beside the refusal, and the bad file cannot be added.
    expect(page.get_by_test_id("preview")).to_be_hidden()
    for panel in ("concept", "term", "match"):
        expect(page.get_by_test_id(panel)).to_have_count(0)
    expect(page.get_by_test_id("add-button")).to_be_disabled()
    assert page.get_by_test_id("sdr-canvas").get_attribute("data-active") == "0"
    upload = {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": not_an_image.read_bytes()}
    message = page.request.post(f"{base_url}/v1/encode", multipart={"image": upload}).json()
    expect(error).to_have_text(f"{message['message']} (HTTP 400)")


def test_the_id_follows_the_chosen_image_and_replacing_asks_first(page: Page, base_url: str, tmp_path: Path) -> None:
    cat, mug = tmp_path / "cat-photo.jpg", tmp_path / "mug-photo.jpg"
    cat.write_bytes(encode_jpeg(skdata.chelsea()))
    mug.write_bytes(encode_jpeg(skdata.coffee()))
    asked: list[str] = []
    replies: list[bool] = []  # how the test answers each confirm, in order

    def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        if replies.pop(0):
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", answer)
    page.goto(f"{base_url}/")
    status, add_id = page.get_by_test_id("status"), page.get_by_test_id("add-id")
    page.get_by_test_id("image-input").set_input_files(str(cat))
    expect(add_id).to_have_value("cat-photo")
    expect(status).to_contain_text("Encoded cat-photo.jpg in")
    page.get_by_test_id("add-button").click()
    expect(status).to_have_text("Added cat-photo")
    stored = page.request.get(f"{base_url}/v1/items/cat-photo").json()

    # Another image proposes its own id, not the one the last image was stored under.
    page.get_by_test_id("image-input").set_input_files(str(mug))
    expect(add_id).to_have_value("mug-photo")
    expect(status).to_contain_text("Encoded mug-photo.jpg in")

    # Added over a stored id on purpose: asked first; cancelled, nothing is stored.
    add_id.fill("cat-photo")
    replies.append(False)
    page.get_by_test_id("add-button").click()
    expect(status).to_have_text("Not added: cat-photo is stored already")
    assert len(asked) == 1 and "cat-photo" in asked[0] and "Replace" in asked[0]
    assert page.request.get(f"{base_url}/v1/items/cat-photo").json()["sdr"] == stored["sdr"]

    # Confirmed, it replaces the stored item, and says so.
    replies.append(True)
    page.get_by_test_id("add-button").click()
    expect(status).to_have_text("Replaced cat-photo")
    assert len(asked) == 2
    replaced = page.request.get(f"{base_url}/v1/items/cat-photo").json()
    assert replaced["sdr"] != stored["sdr"]
    expect(page.get_by_test_id("collection-total")).to_contain_text("1 item,")
    assert page.request.delete(f"{base_url}/v1/items/cat-photo").ok  # the next test starts from an empty index


def test_token_asked_on_401_and_kept_for_the_tab(page: Page, token_url: str) -> None:
    asked: list[str] = []

    def answer(dialog: Dialog) -> None:  # a wrong token first, then the right one
        dialog.accept(TOKEN if asked else "not-the-token")
        asked.append(dialog.message)

    page.on("dialog", answer)
    page.goto(f"{token_url}/")
    expect(page.get_by_test_id("info")).to_contain_text("server")
    expect(page.get_by_test_id("collection-total")).to_contain_text("0 items")
    assert asked == ["This server needs a bearer token:", "That token was refused. Bearer token:"]
    assert page.evaluate("sessionStorage.getItem('image2sdr.token')") == TOKEN
    page.reload()
    expect(page.get_by_test_id("collection-total")).to_contain_text("0 items")
    assert len(asked) == 2, "asked again although the tab kept the token"


def _add(page: Page, base_url: str, item_id: str, jpeg: bytes) -> None:
    answer = page.request.post(f"{base_url}/v1/encode?add={item_id}", data=jpeg, headers={"Content-Type": "image/jpeg"})
    assert answer.ok, answer.text()


def test_the_map_names_a_cell_on_hover_and_opens_it_on_click(page: Page, base_url: str) -> None:
    recorded = Recorded(page)
    page.goto(f"{base_url}/")
    for item_id, image in (
        ("map-cat", skdata.chelsea()),
        ("map-mug", skdata.coffee()),
        ("map-rocket", skdata.rocket()),
    ):
        _add(page, base_url, item_id, encode_jpeg(image))
    page.get_by_test_id("map-button").click()
    cell = page.locator('[data-testid="map-cell"][data-id="map-mug"]')
    expect(page.get_by_test_id("map-cell")).to_have_count(3)
    # Edge to edge: the thumbnail fills its square cell, cropped rather than letterboxed.
    box, picture = cell.bounding_box(), cell.locator("img").bounding_box()
    assert box and picture and box["width"] == box["height"] == picture["width"] == picture["height"]
    assert cell.locator("img").evaluate("(img) => getComputedStyle(img).objectFit") == "cover"
    cell.hover()
    expect(page.get_by_test_id("map-tip")).to_contain_text("map-mug · ")
    mug = page.request.get(f"{base_url}/v1/items/map-mug").json()
    expect(page.get_by_test_id("map-tip")).to_contain_text(mug["concepts"][0]["name"])
    page.get_by_test_id("map-zoom").fill("128")
    expect(cell).to_have_css("width", "128px")
    cell.click()
    expect(page.get_by_test_id("sdr-caption")).to_contain_text("stored item map-mug")
    expect(page.get_by_test_id("preview")).to_have_attribute("src", "/v1/items/map-mug/thumbnail")
    expect(page.locator('[data-testid="match"][data-id="map-mug"]')).to_be_visible()
    expect(page.get_by_test_id("match")).to_have_count(3)
    assert recorded.errors == [] and recorded.blocked == []
    for item_id in ("map-cat", "map-mug", "map-rocket"):
        assert page.request.delete(f"{base_url}/v1/items/{item_id}").ok


def test_copies_are_grouped_and_keep_one_removes_the_others(page: Page, base_url: str) -> None:
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.goto(f"{base_url}/")
    cat = encode_jpeg(skdata.chelsea())
    for item_id, jpeg in (("copy-a", cat), ("copy-b", cat), ("alone", encode_jpeg(skdata.coffee()))):
        _add(page, base_url, item_id, jpeg)
    page.get_by_test_id("duplicates-button").click()
    group = page.get_by_test_id("duplicate-group")
    expect(group).to_have_count(1)
    expect(page.get_by_test_id("duplicates-status")).to_contain_text("1 group of copies among 3 of 3 items")
    expect(group.get_by_test_id("group-kind")).to_have_text("2 copies: same bytes")
    expect(group.get_by_test_id("group-member")).to_have_count(2)
    expect(group.get_by_test_id("member-detail").nth(1)).to_contain_text("pHash 0 bits apart")
    expect(group.get_by_test_id("member-detail").nth(1)).to_contain_text("decided by the file hash")
    kept = group.get_by_test_id("group-member").first.get_attribute("data-id")
    other = "copy-b" if kept == "copy-a" else "copy-a"
    group.get_by_test_id("keep-one").first.click()
    expect(page.get_by_test_id("undo-text")).to_have_text(f"Removed {other}.")
    assert len(asked) == 1 and other in asked[0]
    expect(group.get_by_test_id("group-member")).to_have_count(1)  # the kept one, alone now
    expect(group.locator(f'[data-id="{other}"]')).to_have_count(0)
    page.get_by_test_id("undo-commit").click()
    expect(page.get_by_test_id("undo")).to_be_hidden()
    assert page.request.get(f"{base_url}/v1/items/{other}").status == 404
    for item_id in (kept, "alone"):
        assert page.request.delete(f"{base_url}/v1/items/{item_id}").ok


def test_a_rotated_copy_says_the_keypoints_decided_it_and_how(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/")
    photo = skdata.astronaut()
    for item_id, pixels in (("upright", photo), ("turned", photo.transpose(1, 0, 2)[::-1])):  # a quarter turn
        _add(page, base_url, item_id, encode_jpeg(pixels))
    page.get_by_test_id("duplicates-button").click()
    group = page.get_by_test_id("duplicate-group")
    expect(group).to_have_count(1)
    detail = group.get_by_test_id("member-detail").nth(1)
    expect(detail).to_contain_text("decided by keypoints: ")
    expect(detail).to_contain_text("turned ")
    for item_id in ("upright", "turned"):
        assert page.request.delete(f"{base_url}/v1/items/{item_id}").ok
