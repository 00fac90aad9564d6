"""Where bytes become an image: decoding, limits and colour normalisation.

Every provider receives images through here, so bad input is refused the same
way whichever provider is configured.  The pixel limit is checked on the
header, before the pixel data is allocated, which is what stops a
decompression bomb (a few KB of PNG that inflates to gigabytes).

Supported: JPEG, PNG, GIF (first frame), WebP, BMP, TIFF (first page).  EXIF
orientation is applied; grey, palette, CMYK, 16-bit and alpha images all come
out as 8-bit RGB (alpha composited over white, as a viewer shows it).

A damaged file can make Pillow raise almost anything (IndexError from a broken
colour profile, TypeError from oddly typed TIFF tags, struct.error, ...), so
every failure while reading one image is that image's ``ImageDecodeError``:
one bad file never costs more than its own answer.  Only MemoryError passes
through, because it says something about the server, not about the file.

Memory, per image and in the whole process:

- Decoding holds the decoded pixels and a converted copy or two (``decode_cost``:
  2 to 17 bytes a pixel by mode, from the header, after a JPEG's draft).  That cost
  is taken from one process-wide ``DecodeBudget`` (``image.decode_budget_mb``) before
  the pixels are read and given back when the image is decoded: an image that alone
  needs more than the budget is refused (RESOURCE_EXHAUSTED, naming the option),
  others wait for their turn until their caller's deadline.
- What is kept is small whatever was sent: an image of more than
  ``image.working_pixels`` is box-reduced (``Image.reduce``) by the smallest whole
  factor that brings it under, right after decoding, so a batch waiting for the
  classifier holds at most that many pixels an image (a 6 KB bilevel 7000 x 7000 PNG
  used to be held as 196 MB of RGB).  Images at or under it, which is every JPEG
  decoded at the classifier's draft size and ordinary photos in other formats, are
  untouched: their pixels, so their SDRs, are what they were bit for bit.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import ImageConfig
from .errors import (
    DeadlineExceededError,
    ImageDecodeError,
    ImageTooLargeError,
    ImageTooSmallError,
    LimitExceededError,
    PixelLimitError,
)
from .upstream import caller_deadline_at

__all__ = [
    "FORMATS",
    "DecodeBudget",
    "DecodedImage",
    "decode_budget",
    "decode_cost",
    "decode_image",
    "reduce_factor",
]

logger = logging.getLogger(__name__)

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

# Our own limit is checked before decoding; Pillow's global bomb guard would
# only duplicate it with a warning at a different threshold.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class DecodedImage:
    data: bytes  # the caller's original bytes (what a remote provider is sent)
    image: Image.Image  # 8-bit RGB, orientation applied, at most image.working_pixels
    format: str  # "JPEG", "PNG", ...
    width: int  # of the original image, before any draft reduction
    height: int


def decode_image(data: bytes, limits: ImageConfig, draft_side: int | None = None) -> DecodedImage:
    """Decode ``data`` into RGB, or raise a typed error that says what is wrong.

    ``draft_side`` lets JPEG decode at a reduced scale (DCT scaling) as long as
    both sides stay >= ``draft_side``: a 12 MP photo classified at 224 px needs
    neither the time nor the memory of a full decode.
    """
    _check_bytes(data, limits)
    image = _open(data)
    width, height = image.size
    _check_dimensions(width, height, limits)
    try:
        if draft_side and image.format == "JPEG":
            image.draft("RGB", _draft_size(width, height, draft_side))
        image.seek(0)  # GIF / TIFF: the first frame or page
    except MemoryError:
        raise
    except Exception as exc:  # see the module docstring
        raise ImageDecodeError(f"image data is damaged or truncated: {_describe(exc)}", field="image") from exc
    with decode_budget(limits).held(_charged(image, limits), caller_deadline_at()):
        rgb = _decoded(image, limits.working_pixels)
    return DecodedImage(data=data, image=rgb, format=image.format or "", width=width, height=height)


def _decoded(image: Image.Image, working_pixels: int) -> Image.Image:
    """The opened image's pixels as RGB, reduced to at most ``working_pixels``."""
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # not a copy: that would be one more full image
        return _to_rgb(_reduced(image, working_pixels))
    except MemoryError:
        raise
    except Exception as exc:  # whatever a damaged file makes Pillow raise: see the module docstring
        raise ImageDecodeError(f"image data is damaged or truncated: {_describe(exc)}", field="image") from exc


class DecodeBudget:
    """Bytes of decoding in flight, shared by every decode of the process: each waits for its share.

    Each decode holds one share at a time and gives it back before anything else
    waits on it, so no two decodes can wait on each other.
    """

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self._clock = clock
        self._used = 0
        self._changed = threading.Condition()

    @property
    def in_use(self) -> int:
        with self._changed:
            return self._used

    @contextmanager
    def held(self, cost: int, until: float | None = None) -> Iterator[None]:
        """Hold ``cost`` bytes (at most the capacity) for the block; wait no later than ``until`` (clock time)."""
        cost = min(cost, self.capacity)  # the caller refused what can never fit; see decode_cost
        with self._changed:
            while self._used + cost > self.capacity:
                left = None if until is None else until - self._clock()
                if left is not None and left <= 0:
                    raise DeadlineExceededError(
                        f"deadline passed waiting for {_mib(cost)} MiB of the decode budget "
                        f"({_mib(self._used)} of {_mib(self.capacity)} MiB in use)"
                    )
                self._changed.wait(left)
            self._used += cost
        try:
            yield
        finally:
            with self._changed:
                self._used -= cost
                self._changed.notify_all()


_budgets: dict[int, DecodeBudget] = {}
_budgets_lock = threading.Lock()


def decode_budget(limits: ImageConfig) -> DecodeBudget:
    """The process's budget for ``image.decode_budget_mb``: every decode under the same setting shares it."""
    capacity = limits.decode_budget_mb << 20
    with _budgets_lock:
        return _budgets.setdefault(capacity, DecodeBudget(capacity))


# Bytes a pixel that decoding an image of each mode holds at its peak: Pillow's own pixels
# (1 byte for 1/L/P, 2 for I;16, 4 for the rest: Pillow keeps RGB in 4) and the copies on
# the way to RGB (alpha composited over white takes three).  A rotated copy (EXIF
# orientation) is not counted: cameras write it in JPEGs, which are decoded at draft size.
_COST = {"1": 5, "L": 5, "P": 17, "RGB": 4, "RGBA": 16, "CMYK": 8, "YCbCr": 8, "I;16": 11, "I": 17, "F": 17}
_DEFAULT_COST = 20  # LA, PA, La, RGBa, and anything rarer


def decode_cost(width: int, height: int, mode: str) -> int:
    """Bytes that decoding a ``width`` x ``height`` image of ``mode`` holds at its peak (an upper bound)."""
    cost = _COST.get("I;16" if mode.startswith("I;16") else mode, _DEFAULT_COST)
    return width * height * cost


def _charged(image: Image.Image, limits: ImageConfig) -> int:
    """The opened image's decode cost; an image that would need more than the whole budget is refused."""
    cost = decode_cost(image.width, image.height, image.mode)
    capacity = limits.decode_budget_mb << 20
    if cost > capacity:
        raise LimitExceededError(
            f"decoding this {image.width}x{image.height} {image.mode} image needs about {_mib(cost)} MiB, "
            f"more than image.decode_budget_mb ({limits.decode_budget_mb})",
            limit=capacity,
            actual=cost,
        )
    return cost


def _mib(size: int) -> int:
    return -(-size // (1 << 20))


def reduce_factor(width: int, height: int, working_pixels: int) -> int:
    """The smallest whole factor that box-reduces ``width`` x ``height`` to at most ``working_pixels``."""
    factor = max(1, math.isqrt(max(0, width * height - 1) // working_pixels))
    while -(-width // factor) * -(-height // factor) > working_pixels:
        factor += 1
    return factor


def _reduced(image: Image.Image, working_pixels: int) -> Image.Image:
    factor = reduce_factor(image.width, image.height, working_pixels)
    if factor == 1:
        return image  # the same pixels as ever: see the module docstring
    return _reducible(image).reduce(factor)


def _reducible(image: Image.Image) -> Image.Image:
    """``image`` in a mode Image.reduce takes (L, RGB, RGBA), with its alpha kept for _to_rgb."""
    mode = image.mode
    if mode in ("L", "RGB", "RGBA"):
        return image
    if mode == "1":
        return image.convert("L")  # 1 byte a pixel, as the bilevel image itself takes in Pillow
    if mode in ("LA", "La", "PA") or (mode == "P" and "transparency" in image.info):
        return image.convert("RGBA")
    return _to_rgb(image)


def _describe(exc: Exception) -> str:
    # Pillow's messages name the problem ("image file is truncated"); a bare
    # IndexError says only "index out of range", so its type is kept too.
    if isinstance(exc, (OSError, ValueError, SyntaxError, EOFError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _check_bytes(data: bytes, limits: ImageConfig) -> None:
    if not data:
        raise ImageDecodeError("image is empty (0 bytes)", field="image")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"image is {len(data)} bytes, the limit is {limits.max_bytes}",
            limit=limits.max_bytes,
            actual=len(data),
        )


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on odd EXIF; the decode below decides
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"not an image in a supported format ({', '.join(FORMATS)})", field="image") from exc
    except MemoryError:
        raise
    except Exception as exc:  # see the module docstring
        raise ImageDecodeError(f"cannot read the image header: {_describe(exc)}", field="image") from exc
    return image


def _check_dimensions(width: int, height: int, limits: ImageConfig) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})", field="image")
    if width * height > limits.max_pixels:
        raise PixelLimitError(
            f"image is {width}x{height} = {width * height} pixels, the limit is {limits.max_pixels}",
            limit=limits.max_pixels,
            actual=width * height,
        )
    if min(width, height) < limits.min_side:
        raise ImageTooSmallError(
            f"image is {width}x{height}; both sides must be at least {limits.min_side} pixels",
            field="image",
        )


def _draft_size(width: int, height: int, side: int) -> tuple[int, int]:
    # draft() picks the smallest scale whose result is >= the requested size, so
    # asking for the aspect-correct size with short side == `side` is enough.
    scale = side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("RGB",):
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(image)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        return _flatten_alpha(image)
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's convert("RGB") clips 16-bit values at 255 (a white image);
    # scale the full range down to 8 bits instead.
    values = np.asarray(image)
    top = float(values.max(initial=0))
    peak = 65535.0 if image.mode.startswith("I;16") or top > 255 else 255.0
    if image.mode == "F":
        peak = max(top, 1.0) if top > 1.0 else 1.0
    grey = np.empty(values.shape, dtype=np.uint8)
    # Row blocks of ~1M pixels: float64 of a whole 50 MP image would be 400 MB per temporary.
    rows = max(1, (1 << 20) // max(1, values.shape[1]))
    for start in range(0, values.shape[0], rows):
        block = values[start : start + rows].astype(np.float64)
        grey[start : start + rows] = np.clip(block / peak * 255.0 + 0.5, 0, 255)
    return Image.fromarray(grey).convert("RGB")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image).convert("RGB")
