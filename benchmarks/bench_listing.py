"""Bytes per 100 items listed over HTTP, by view: BASIC (the listings' default, no SDRs) and FULL.

A real server (HTTP on port 0, FAISS index on disk, the real models) holding 100 real
photos added over HTTP (``POST /v1/encode?add=``): the 37 of ``real_images.photos()``
and their mirrored and 85 %-cropped copies, the first 100.  Prints the size of
``GET /v1/items?page_size=100`` in each view, and of one ``GET /v1/items/{id}``.

    .venv/bin/python benchmarks/bench_listing.py
"""

from __future__ import annotations

import httpx
from http_server import http_server
from real_images import alter, photos

ITEMS = 100


def hundred_photos() -> dict[str, bytes]:
    found = photos()
    more = {f"{name} {how}": alter(data, how) for how in ("mirror", "crop 85%") for name, data in found.items()}
    return dict(list((found | more).items())[:ITEMS])


def main() -> None:
    with http_server() as served, httpx.Client(base_url=served.base_url, timeout=120) as http:
        for number, image in enumerate(hundred_photos().values()):
            added = http.post(f"/v1/encode?add=photo-{number:03d}", content=image, headers=_OCTETS)
            added.raise_for_status()
        print(f"{ITEMS} real photos stored")
        for view in ("BASIC", "FULL"):
            page = http.get("/v1/items", params={"page_size": ITEMS, "view": view})
            page.raise_for_status()
            assert len(page.json()["items"]) == ITEMS
            one = http.get("/v1/items/photo-000", params={"view": view})
            print(
                f"view={view}: GET /v1/items?page_size={ITEMS} {len(page.content) / 1000:.1f} kB; "
                f"GET /v1/items/{{id}} {len(one.content) / 1000:.1f} kB"
            )


_OCTETS = {"Content-Type": "application/octet-stream"}

if __name__ == "__main__":
    main()
