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

Memory: decoding holds the decoded pixels and at most two converted copies,
so it is bounded by ``image.max_pixels`` (about 16 bytes per pixel at worst,
for alpha or 16-bit images); what happens after decoding (the classifier's
resize) is bounded by the classifier's input size, whatever the aspect ratio.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import ImageConfig
from .errors import ImageDecodeError, ImageTooLargeError, ImageTooSmallError, PixelLimitError

__all__ = ["FORMATS", "DecodedImage", "decode_image"]

logger = logging.getLogger(__name__)

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

# Our own limit is checked before decoding; Pillow's global bomb guard would
# only duplicate it with a warning at a different threshold.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class DecodedImage:
    data: bytes  # the caller's original bytes (what a remote provider is sent)
    image: Image.Image  # 8-bit RGB, orientation applied
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
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # not a copy: that would be one more full image
        rgb = _to_rgb(image)
    except MemoryError:
        raise
    except Exception as exc:  # whatever a damaged file makes Pillow raise: see the module docstring
        raise ImageDecodeError(f"image data is damaged or truncated: {_describe(exc)}", field="image") from exc
    return DecodedImage(data=data, image=rgb, format=image.format or "", width=width, height=height)


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
