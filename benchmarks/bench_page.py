"""The page's costs: bytes per 100 items listed, and time to first paint of the map and of the copies view.

A real server (HTTP on port 0, FAISS index on disk) holding ``ITEMS`` synthetic items:
random SDRs at the configured sparsity, each with its own picture (random 8 x 8 colour
blocks, so every pHash differs) stored as its thumbnail and fingerprint, and ``COPIES``
of them stored twice (same bytes, same visual SDR: the copies view's groups). The
encoder runs only for the upload: the point is the page and the HTTP face. Debian's
Chromium, driven by Playwright, opens the page and measures, from the click:

- the map: until every cell is placed and every thumbnail in view has loaded (the
  server's layout of the items included: CreateMap to DONE is printed apart);
- the copies view: until its first page (50 items) is shown, then until all items
  have been looked at ("Look further" to the end) and every group found;
- an upload: from choosing a photo (scikit-image's chelsea) to its concepts, terms
  and nearest items shown, the models warm.

    .venv/bin/python benchmarks/bench_page.py [ITEMS] [COPIES]   # default 1000 50
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from http_server import http_server
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from image2sdr.server.config import Config
from image2sdr.server.fingerprints import fingerprint
from image2sdr.server.index.values import VISUAL, Item
from image2sdr.server.sdr import Sdr
from image2sdr.server.thumbnails import make_thumbnail

CHROMIUM = "/usr/bin/chromium"
CONCEPTS = ("cat", "dog", "car", "tree", "house", "boat", "flower", "bird", "mountain", "cup")
# Every thumbnail in the map's view loaded (cells outside it load lazily as the user scrolls).
IN_VIEW_LOADED = """(count) => {
  const cells = document.querySelectorAll('[data-testid="map-cell"]');
  if (cells.length !== count) return false;
  const view = document.getElementById("map-view").getBoundingClientRect();
  return [...document.querySelectorAll("#map-grid img")].every((img) => {
    const box = img.getBoundingClientRect();
    const inView = box.bottom > view.top && box.top < view.bottom && box.right > view.left && box.left < view.right;
    return !inView || (img.complete && img.naturalWidth > 0);
  });
}"""


def items(count: int, copies: int, config: Config) -> list[Item]:
    rng = np.random.default_rng(25)
    size, active = config.sdr.size, int(config.sdr.size * config.sdr.sparsity)
    made: list[Item] = []
    for number in range(count - copies):
        blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        picture = Image.fromarray(blocks).resize((128, 128), Image.Resampling.NEAREST)
        data = io.BytesIO()
        picture.save(data, format="PNG")
        semantic, visual = (Sdr.trusted(np.sort(rng.choice(size, active, replace=False)), size) for _ in range(2))
        concepts = tuple((CONCEPTS[(number + k) % len(CONCEPTS)], 0.9 - 0.2 * k) for k in range(3))
        made.append(
            Item(
                f"item-{number:05d}",
                semantic,
                concepts,
                spaces={VISUAL: visual},
                fingerprint=fingerprint(data.getvalue(), picture),
                thumbnail=make_thumbnail(picture, 128, "webp", 80),
            )
        )
    for number in range(copies):  # the same picture stored again under another id
        original = made[number * (len(made) // copies)]
        made.append(
            Item(
                f"copy-{number:03d}-of-{original.id}",
                original.sdr,
                original.concepts,
                spaces=original.spaces,
                fingerprint=original.fingerprint,
                thumbnail=original.thumbnail,
            )
        )
    return made


def listing_bytes(base: str, view: str) -> int:
    with httpx.Client(base_url=base, timeout=60) as http:
        answer = http.get("/v1/items", params={"page_size": 100, "view": view})
        answer.raise_for_status()
        return len(answer.content)


def map_job_seconds(base: str) -> float:
    """CreateMap to DONE as the server counts it (the layout and its PNG), for the share of the paint it takes."""
    with httpx.Client(base_url=base, timeout=60) as http:
        job = http.post("/v1/maps", json={}).json()
        while job["state"] not in ("MAP_STATE_DONE", "MAP_STATE_FAILED"):
            time.sleep(0.1)
            job = http.get(f"/v1/maps/{job['id']}").json()
        return float(job["elapsedMs"]) / 1000


def map_paint(page: Page, count: int) -> tuple[float, float]:
    """Seconds from the click to the map in view, and from the job's cells placed (app.js's mark) to it."""
    started = time.perf_counter()
    page.get_by_test_id("map-button").click()
    page.wait_for_function(IN_VIEW_LOADED, arg=count, timeout=600_000, polling=50)
    since = page.evaluate("performance.now() - performance.getEntriesByName('map-drawn')[0].startTime") / 1000
    return time.perf_counter() - started, since


def copies_paint(page: Page) -> tuple[float, float, str]:
    started = time.perf_counter()
    page.get_by_test_id("duplicates-button").click()
    status = page.get_by_test_id("duplicates-status")
    status.filter(has_text="looked at").wait_for(timeout=600_000)
    first = time.perf_counter() - started
    more = page.get_by_test_id("duplicates-more")
    while more.is_enabled():
        seen = status.text_content()
        more.click()
        page.wait_for_function(
            "(seen) => document.getElementById('duplicates-status').textContent !== seen", arg=seen, timeout=600_000
        )
    return first, time.perf_counter() - started, status.text_content() or ""


def upload_to_results(page: Page, scratch: Path) -> float:
    """Seconds from choosing a photo to its concepts, terms and nearest items on screen (the encoder warm)."""
    from skimage import data as skdata  # noqa: PLC0415 (the dev extra's; only this measure needs it)

    photo = scratch / "chelsea.jpg"
    Image.fromarray(skdata.chelsea()).save(photo, quality=90)
    page.get_by_test_id("image-input").set_input_files(str(photo))  # the first: models warmed up
    page.get_by_test_id("match").first.wait_for(timeout=600_000)
    page.get_by_test_id("search-text").fill("cat")  # another query clears the panels
    page.get_by_test_id("search-button").click()
    page.get_by_test_id("sdr-caption").filter(has_text="cat").wait_for(timeout=600_000)
    again = scratch / "chelsea-again.jpg"  # another file: choosing the same one again changes nothing
    again.write_bytes(photo.read_bytes())
    started = time.perf_counter()
    page.get_by_test_id("image-input").set_input_files(str(again))
    page.get_by_test_id("sdr-caption").filter(has_text="chelsea-again.jpg:").wait_for(timeout=600_000)
    page.get_by_test_id("status").filter(has_text="Encoded chelsea-again.jpg in").wait_for(timeout=600_000)
    page.get_by_test_id("term").first.wait_for(timeout=600_000)
    page.get_by_test_id("match").first.wait_for(timeout=600_000)
    return time.perf_counter() - started


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    copies = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    with http_server() as served:
        server, base = served.server, served.base_url
        server.index.add_many(items(count, copies, served.config))
        print(f"{count} items, {copies} of them copies")
        for view in ("BASIC", "FULL"):  # BASIC: the default (no SDRs); real photos: bench_listing.py
            print(f"GET /v1/items?page_size=100&view={view}: {listing_bytes(base, view) / 1000:.1f} kB")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{base}/")
            print(f"upload to results: {upload_to_results(page, served.scratch):.2f} s")
            whole, drawn = map_paint(page, count)
            print(f"map: first paint {whole:.2f} s after the click, {drawn:.2f} s after its cells were placed")
            print(f"  (the server's CreateMap to DONE alone: {map_job_seconds(base):.2f} s)")
            first, whole, said = copies_paint(page)
            print(f"copies: first page shown {first:.2f} s after the click; all looked at in {whole:.2f} s ({said})")
            browser.close()


if __name__ == "__main__":
    main()
