"""Explain: time per explanation at the default patch and stride, and whether the heatmap points the right way.

On scikit-image's photos (chelsea, astronaut, coffee, rocket, ...), each explained
for its strongest concept with the embedded classifier (the core, no socket):

- time per explanation (median over the photos), and per occluded image;
- the sanity figure: the score's fall when a patch-sized square centred on the
  hottest cell is hidden, against one at a random place (``DRAWS`` per photo), as
  medians over photos and draws.  The hidden squares are placed freely (not on the
  patch grid), so the hottest one is not simply one of the images already scored.

Run: ``make bench-explain``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

from image2sdr.server.concepts.local import LocalConceptSource
from image2sdr.server.config import Config, LocalConceptsConfig
from image2sdr.server.explain import ConceptTarget, Explanation, explain, plan_grid, working_image
from image2sdr.server.imaging import DecodedImage, decode_image

REPO = Path(__file__).resolve().parent.parent
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "camera")  # real photos of distinct scenes
DRAWS = 8  # random squares per photo
SEED = 14


def jpeg(name: str) -> bytes:
    import io  # noqa: PLC0415

    pixels = getattr(skdata, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., :3]).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def hidden_at(work: Image.Image, image: DecodedImage, centre: tuple[float, float], side: int, fill: int) -> Image.Image:
    """``work`` with a square of ``side`` px (of the image as sent) centred at ``centre`` painted grey."""
    scale = work.width / image.width
    half = side * scale / 2
    x, y = centre[0] * scale, centre[1] * scale
    pixels = np.asarray(work).copy()
    top, left = max(0, round(y - half)), max(0, round(x - half))
    pixels[top : round(y + half), left : round(x + half)] = fill
    return Image.fromarray(pixels)


def falls(
    target: ConceptTarget, image: DecodedImage, found: Explanation, rng: np.random.Generator, fill: int
) -> tuple[float, list[float]]:
    """(fall at the hottest cell, falls at DRAWS random places), for a square of the patch's size."""
    work = working_image(image.image)
    grid, side = found.grid, found.grid.patch
    row, column = np.unravel_index(int(np.argmax(found.heat)), found.heat.shape)
    hottest = ((column + 0.5) * grid.stride, (row + 0.5) * grid.stride)
    places = [hottest] + [
        (float(rng.uniform(side / 2, image.width - side / 2)), float(rng.uniform(side / 2, image.height - side / 2)))
        for _ in range(DRAWS)
    ]
    hidden = [hidden_at(work, image, place, side, fill) for place in places]
    scores = target.scores([DecodedImage(b"", h, "PNG", h.width, h.height) for h in hidden])
    drops = [found.score - float(score) for score in scores]
    return drops[0], drops[1:]


def main() -> int:
    config = Config(models_dir=REPO / "models")
    source = LocalConceptSource(config.models_dir, LocalConceptsConfig())
    rng = np.random.default_rng(SEED)
    times, per_image, hot, random = [], [], [], []
    print(f"{'photo':<22} {'concept':<16} {'score':>6} {'variants':>8} {'ms':>7} {'hot fall':>8} {'rand fall':>9}")
    for name in PHOTOS:
        image = decode_image(jpeg(name), config.image, source.input_side)
        (concepts,) = source.concepts([image], config.concepts.max_concepts, 0.0)
        assert not isinstance(concepts, Exception)
        # The most specific of the strongest: the last concept within 0.05 of the first (a leaf, not "animal").
        top = [c for c in concepts if c.confidence >= concepts[0].confidence - 0.05][-1].name
        target = ConceptTarget.checked(source, top, image, config.concepts.max_concepts, 0.0)
        grid = plan_grid(image.width, image.height, config.explain, None, None)
        source.concepts([image], 1, 0.0)  # warm
        started = time.perf_counter()
        found = explain(image, target, grid, config.explain.fill)
        elapsed = (time.perf_counter() - started) * 1000
        times.append(elapsed)
        per_image.append(elapsed / (grid.variants + 1))
        hot_fall, random_falls = falls(target, image, found, rng, config.explain.fill)
        hot.append(hot_fall)
        random.extend(random_falls)
        print(
            f"{name:<22} {top[:16]:<16} {found.score:6.3f} {grid.variants:8d} {elapsed:7.0f} "
            f"{hot_fall:8.3f} {statistics.median(random_falls):9.3f}"
        )
    print()
    print(
        f"time per explanation (default patch {config.explain.patch_share} x shorter side, stride "
        f"{config.explain.stride_share} x patch): median {statistics.median(times):.0f} ms over {len(PHOTOS)} photos "
        f"({statistics.median(per_image):.1f} ms per image scored)"
    )
    print(f"score fall, hottest square hidden: median {statistics.median(hot):.3f} (mean {statistics.mean(hot):.3f})")
    print(
        f"score fall, random square hidden:  median {statistics.median(random):.3f} "
        f"(mean {statistics.mean(random):.3f}; {len(random)} draws)"
    )
    wins = sum(
        h > statistics.median(r) for h, r in zip(hot, np.array_split(np.array(random), len(PHOTOS)), strict=True)
    )
    print(f"photos where the hottest square costs more than the median random one: {wins}/{len(PHOTOS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
