"""Real photos and drawings that package registries ship, for the appearance benchmarks.

- scikit-image's sample photos (in its wheel; colour and greyscale),
- Debian ``darknet``'s sample photos (dog, eagle, giraffe, horses, kite, person, scream),
- Debian ``mate-backgrounds``' nature photographs,
- Debian ``openclipart-png``'s drawings (8,000+; distractors),
- Debian ``tuxpaint-stamps-default``'s photos (animals, fruit, vegetables, flowers, vehicles, cut out on a
  transparent background), labelled by kind in ``labelled_photos.json`` (``labelled_photos``).

The Debian packages are fetched with ``apt-get download`` (no root needed) and
unpacked with ``dpkg -x`` into a cache directory (env IMAGE2SDR_BENCH_CACHE,
default ``~/.cache/image2sdr-bench``), never installed.  Every list is sorted, so a
run sees the same images in the same order on every machine.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance
from skimage import data as skdata

# The export venv's tools cannot import benchmarks: the photo list lives with them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server" / "tools"))
from sample_photos import SKIMAGE_PHOTOS

__all__ = [
    "ALTERATIONS",
    "LABELS_FILE",
    "LabelledPhoto",
    "alter",
    "cache_dir",
    "clipart",
    "debian_files",
    "labelled_photos",
    "ordinary_photos",
    "photos",
    "skimage_photos",
]


def cache_dir() -> Path:
    path = Path(os.environ.get("IMAGE2SDR_BENCH_CACHE", Path.home() / ".cache" / "image2sdr-bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def debian_files(package: str, pattern: str) -> list[Path]:
    """Files matching ``pattern`` inside a Debian package, unpacked once into the cache."""
    root = cache_dir() / package
    if not (root / ".unpacked").is_file():
        debs = cache_dir() / "debs"
        debs.mkdir(exist_ok=True)
        if not list(debs.glob(f"{package}_*.deb")):
            subprocess.run(["apt-get", "download", package], cwd=debs, check=True, capture_output=True)
        (deb,) = debs.glob(f"{package}_*.deb")
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        (root / ".unpacked").touch()
    return sorted(root.glob(pattern))


def _jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def skimage_photos() -> dict[str, bytes]:
    return {f"skimage/{name}": _jpeg(getattr(skdata, name)()) for name in SKIMAGE_PHOTOS} | {
        "skimage/motorcycle": _jpeg(skdata.stereo_motorcycle()[0])
    }


def photos() -> dict[str, bytes]:
    """Every real photo: scikit-image, darknet's samples, MATE's nature wallpapers (as shipped)."""
    found = skimage_photos()
    for path in debian_files("darknet", "usr/share/darknet/data/*.jpg"):
        found[f"darknet/{path.stem}"] = path.read_bytes()
    for path in debian_files("mate-backgrounds", "usr/share/backgrounds/mate/nature/*.jpg"):
        found[f"mate/{path.stem}"] = path.read_bytes()
    return found


ORDINARY_SIDE = 500  # the long side of an ImageNet-size photo (~500 x 375)


def ordinary_photos(originals: dict[str, bytes], count: int, side: int = ORDINARY_SIDE) -> dict[str, bytes]:
    """``count`` real photos of ordinary size, as a caller would send them (JPEG, quality 90).

    Each of ``originals`` with its long side brought to ``side`` pixels (never enlarged),
    then, until there are ``count``, the four quadrants of the large ones (long side at
    least twice ``side``: the wallpapers), each brought to ``side`` the same way: other
    framings of real photographs at the size the issue measures, not copies of one.
    """
    found: dict[str, bytes] = {}
    large: list[tuple[str, Image.Image]] = []
    for name, data in sorted(originals.items()):
        image = _rgb(data)
        found[name] = _at_most(image, side)
        if max(image.size) >= 2 * side:
            large.append((name, image))
    for quadrant in range(4):
        for name, image in large:
            if len(found) >= count:
                break
            w, h = image.size
            left, top = (quadrant % 2) * w // 2, (quadrant // 2) * h // 2
            found[f"{name}#{quadrant}"] = _at_most(image.crop((left, top, left + w // 2, top + h // 2)), side)
    return dict(list(found.items())[:count])


def _at_most(image: Image.Image, side: int) -> bytes:
    scale = min(1.0, side / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return _jpeg(np.asarray(image.resize(size, Image.Resampling.LANCZOS) if size != image.size else image))


LABELS_FILE = Path(__file__).with_name("labelled_photos.json")


@dataclass(frozen=True)
class LabelledPhoto:
    name: str  # package/path stem, unique
    kind: str  # coarse: "bird", "fruit", "flower", ...; "other" for kinds too small to score
    imagenet: str | None  # the ImageNet-1k class name when one fits (as the hierarchy names it)
    image: bytes  # a JPEG, the cut-out flattened on white


def labelled_photos() -> list[LabelledPhoto]:
    """The labelled photos of ``labelled_photos.json``, their packages fetched on first use, in the file's order."""
    doc = json.loads(LABELS_FILE.read_text(encoding="utf-8"))
    found: list[LabelledPhoto] = []
    for entry in doc["photos"]:
        debian_files(entry["package"], "usr/share")  # unpacked once
        path = cache_dir() / entry["package"] / entry["path"].lstrip("/")
        name = f"{entry['package']}/{Path(entry['path']).parent.name}/{Path(entry['path']).stem}"
        found.append(LabelledPhoto(name, entry["kind"], entry["imagenet"], _flattened(path.read_bytes())))
    return found


def _flattened(data: bytes) -> bytes:
    """A cut-out photo on white, as a JPEG: what a catalog would store, without a transparent background."""
    with Image.open(io.BytesIO(data)) as image:
        rgba = image.convert("RGBA")
    backdrop = Image.new("RGBA", rgba.size, "white")
    backdrop.alpha_composite(rgba)
    return _jpeg(np.asarray(backdrop.convert("RGB")))


MAX_PIXELS = 50_000_000  # the service's default image.max_pixels
MIN_SIDE = 32


def clipart(count: int) -> dict[str, bytes]:
    """``count`` openclipart drawings spread evenly over the sorted list (all categories).

    Drawings the service would refuse by default (over 50 MP; a side under 32 px) are passed over.
    """
    paths = debian_files("openclipart-png", "usr/share/openclipart/png/**/*.png")
    step = max(1, len(paths) // count)
    found: dict[str, bytes] = {}
    for path in paths[::step] + paths:
        if len(found) == count:
            break
        name = f"clipart/{path.parent.name}/{path.stem}"
        with Image.open(path) as image:
            width, height = image.size
        if name not in found and width * height <= MAX_PIXELS and min(width, height) >= MIN_SIDE:
            found[name] = path.read_bytes()
    return found


def _rgb(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def _half_q30(image: Image.Image) -> bytes:
    small = image.resize((max(16, image.width // 2), max(16, image.height // 2)), Image.Resampling.BICUBIC)
    return _jpeg(np.asarray(small), quality=30)


def _crop85(image: Image.Image) -> bytes:
    w, h = image.size
    dw, dh = round(w * 0.075), round(h * 0.075)
    return _jpeg(np.asarray(image.crop((dw, dh, w - dw, h - dh))))


def _mirror(image: Image.Image) -> bytes:
    return _jpeg(np.asarray(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))


def _brighter(image: Image.Image) -> bytes:
    return _jpeg(np.asarray(ImageEnhance.Brightness(image).enhance(1.3)))


def _rotate90(image: Image.Image) -> bytes:
    return _jpeg(np.asarray(image.transpose(Image.Transpose.ROTATE_90)))


ALTERATIONS = {
    "half+q30": _half_q30,
    "crop 85%": _crop85,
    "mirror": _mirror,
    "bright x1.3": _brighter,
    "rotate 90": _rotate90,
}


def alter(data: bytes, alteration: str) -> bytes:
    """The altered copy of an image, as a JPEG (quality 90, or 30 for half+q30)."""
    return ALTERATIONS[alteration](_rgb(data))
