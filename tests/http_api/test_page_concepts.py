"""The page's refinement loop for custom concepts, in a real browser (Playwright, Debian's Chromium).

A real server on port 0 (HTTP face on port 0, the session's encoder) holds a few real
photos and enough other items (random SDRs, no thumbnail) for the concept's background
estimate (50 at least).  A concept defined from stored ids shows in the page; its panel
says what it flags and lists its suggestions; one is marked yes, one no, and the refit
defines it again with those added to its kept examples: the panel then shows the new
counts and fresh suggestions, and the stored definition holds the labelled ids.  A
concept whose positives were given as images (not kept) says so and cannot be refitted.

Its own server, not test_page's: that module's tests count the items they store.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from skimage import data as skdata

from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.index import Item
from image2sdr.server.sdr import Sdr
from image2sdr.server.serve import create_server
from tests.helpers.encoders import shared_encoder
from tests.helpers.images import encode_jpeg, half_size, mirrored

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 60_000
CONCEPT = "cat from the page"
FILLERS = 56  # items beside the photos: the background needs 50 (background.MIN_BACKGROUND)
CHELSEA = encode_jpeg(skdata.chelsea())
CATS = (CHELSEA, mirrored(CHELSEA), half_size(CHELSEA))

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason=f"no {CHROMIUM}: run `make chromium` (Debian's chromium package) to drive the page in a browser",
)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[str]:
    service = ServiceConfig(port=0, shutdown_grace_s=0.5)
    data_dir = tmp_path_factory.mktemp("page-concepts")
    config = Config(data_dir=data_dir, models_dir=models_dir, service=service, http=HttpConfig(port=0))
    server = create_server(config, encoder=shared_encoder(models_dir))
    photos = {
        "cat": CATS[0],
        "cat-mirrored": CATS[1],
        "cat-small": CATS[2],
        "mug": encode_jpeg(skdata.coffee()),
        "rocket": encode_jpeg(skdata.rocket()),
    }
    for item_id, jpeg in photos.items():
        answer = httpx.post(
            f"http://127.0.0.1:{server.http_port}/v1/encode?add={item_id}",
            content=jpeg,
            headers={"Content-Type": "image/jpeg"},
        )
        assert answer.status_code == 200, answer.text
    rng = np.random.default_rng(0)

    def noise() -> Sdr:
        bits = np.sort(rng.choice(config.sdr.size, config.sdr.active_bits, replace=False))
        return Sdr.from_positions(bits, config.sdr.size)

    server.index.add_many([Item(f"other-{n}", noise(), spaces={"visual": noise()}) for n in range(FILLERS)])
    yield f"http://127.0.0.1:{server.http_port}"
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    yield opened
    context.close()


def test_suggestions_marked_yes_and_no_refit_the_concept(page: Page, base_url: str) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    body = {
        "name": CONCEPT,
        "positives": [{"id": i} for i in ("cat", "cat-mirrored", "cat-small")],
        "negatives": [{"id": i} for i in ("mug", "rocket")],
    }
    defined = page.request.post(f"{base_url}/v1/concepts", data=body, headers={"X-Requested-With": "test"}).json()
    suggested = [s["id"] for s in defined["suggestions"]]
    assert len(suggested) == 10 and defined["background"]["items"] == FILLERS

    page.goto(f"{base_url}/")
    page.locator(f'[data-testid="custom-concept"][data-name="{CONCEPT}"]').click()
    summary = page.get_by_test_id("custom-summary")
    share = defined["background"].get("flagged", 0.0)
    flagged = f"Flags {share * 100:.1f} % of {FILLERS} stored items (about {round(share * FILLERS)})"
    expect(summary).to_contain_text(flagged)
    expect(summary).to_contain_text("3 positive, 2 negative examples")
    cards = page.get_by_test_id("suggestion")
    expect(cards).to_have_count(10)
    assert [cards.nth(n).get_attribute("data-id") for n in range(10)] == suggested
    yes, no = suggested[0], suggested[1]
    cards.nth(0).get_by_test_id("label-yes").check()
    cards.nth(1).get_by_test_id("label-no").check()
    page.get_by_test_id("custom-refit").click()

    expect(summary).to_contain_text("4 positive, 3 negative examples")
    expect(page.get_by_test_id("status")).to_contain_text(f"Refitted {CONCEPT}")
    stored = page.request.get(f"{base_url}/v1/concepts/{CONCEPT}").json()
    assert stored["positiveIds"] == ["cat", "cat-mirrored", "cat-small", yes]
    assert stored["negativeIds"] == ["mug", "rocket", no]
    fresh = [s["id"] for s in stored["suggestions"]]
    expect(cards).to_have_count(len(fresh))
    assert [cards.nth(n).get_attribute("data-id") for n in range(len(fresh))] == fresh
    assert not {yes, no} & set(fresh)  # labelled: never suggested again

    # Positives given as images are not kept: the page says so and does not refit without them.
    pictures = [{"image": base64.b64encode(jpeg).decode()} for jpeg in CATS]
    body = {"name": "cat from pictures", "positives": pictures, "negatives": [{"id": "mug"}]}
    assert page.request.post(f"{base_url}/v1/concepts", data=body, headers={"X-Requested-With": "test"}).ok
    page.get_by_test_id("custom-refresh").click()
    page.locator('[data-testid="custom-concept"][data-name="cat from pictures"]').click()
    expect(page.get_by_test_id("custom-note")).to_contain_text("3 positive examples given as images")
    expect(page.get_by_test_id("custom-refit")).to_be_disabled()
    assert errors == []
