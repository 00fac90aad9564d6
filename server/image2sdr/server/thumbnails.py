"""Small thumbnails of indexed images, for maps (CreateMap) and GetItem.

The encoder makes one from the image it has already decoded, when
``index.thumbnails`` (the longest side, in pixels) is above 0; the index keeps
its bytes beside the item. An item added without an image has none, and a map
draws it as its SDR instead.

Measured on six scikit-image sample photos (astronaut, coffee, chelsea, rocket,
immunohistochemistry, hubble_deep_field; quality 80): at the default 96 px,
WebP 0.8-3.4 kB (mean 2.1 kB), JPEG 1.3-3.7 kB (mean 2.5 kB); at 256 px, WebP
4.4-18 kB (mean 10 kB), JPEG 6.2-19 kB (mean 12.5 kB). About 0.7 ms per thumbnail
from a 640 px decoded photo (shrink 0.2 ms from the classifier's copy, WebP 0.5 ms). 1M items at the default: ~2 GB.
"""

from __future__ import annotations

import functools
import io

from PIL import Image, features

from .errors import ConfigError

__all__ = ["FORMATS", "Thumbnail", "check_format", "make_thumbnail", "shrink"]

FORMATS = {"webp": "WEBP", "jpeg": "JPEG"}  # config name: Pillow's


def check_format(fmt: str) -> None:
    """Raise ConfigError when this Pillow cannot write ``fmt`` (a build without libwebp)."""
    if fmt not in FORMATS:
        raise ConfigError(f"thumbnail format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "webp" and not features.check("webp"):
        raise ConfigError("this Pillow was built without WebP: set index.thumbnail_format: jpeg")


def make_thumbnail(image: Image.Image, side: int, fmt: str, quality: int) -> bytes:
    """``image`` shrunk so its longest side is ``side`` pixels (never enlarged), as WebP or JPEG bytes.

    The aspect ratio is kept; each side is at least one pixel.
    """
    check_format(fmt)
    return Thumbnail(shrink(image, side), fmt, quality).data


class Thumbnail:
    """A thumbnail's pixels, encoded (WebP or JPEG) when first read.

    The encoder shrinks the image while it has it decoded; the encoding (0.9 ms of
    WebP a thumbnail, more than the shrink) is left to whoever stores it, which for
    a stream is its finishing thread, off the path of the next batch.
    """

    def __init__(self, small: Image.Image, fmt: str, quality: int) -> None:
        self.small = small  # RGB, already at the thumbnail's size
        self.fmt = fmt
        self.quality = quality

    @functools.cached_property
    def data(self) -> bytes:
        buffer = io.BytesIO()
        # WebP's method 2: 0.46 ms a 96 px thumbnail of the benchmark's 240 photos, 1,464 bytes on
        # average; the default effort (4) took 0.81 ms for 1,422 bytes (3 % less), 6 twice that.
        options = {"method": 2} if self.fmt == "webp" else {"optimize": True}
        self.small.save(buffer, FORMATS[self.fmt], quality=self.quality, **options)
        return buffer.getvalue()


def shrink(image: Image.Image, side: int) -> Image.Image:
    """``image`` as RGB with its longest side at most ``side`` pixels, the aspect ratio kept."""
    if side < 1:
        raise ValueError(f"a thumbnail's side must be at least 1 pixel, got {side}")
    width, height = image.size
    scale = min(1.0, side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = image if image.mode == "RGB" else image.convert("RGB")
    if size != small.size:
        # reducing_gap: shrink by whole factors first (cheap box filter), then Lanczos on twice
        # the target, as Pillow's own thumbnail() does: indistinguishable at this size. A gap of 3
        # took 2.9 ms a 640 x 427 photo, more than decoding it; 2 takes 0.8 ms.
        small = small.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    return small
