"""Image files made in memory for tests: encoded arrays, and a PNG whose header lies about its size."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

__all__ = ["encode_jpeg", "encode_png", "half_size", "mirrored", "png_with_header", "sample_photo"]


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def encode_jpeg(pixels: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png_with_header(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR claims other dimensions (CRC fixed up)."""
    buffer = io.BytesIO()
    Image.new("L", (16, 16)).save(buffer, "PNG")
    raw = bytearray(buffer.getvalue())
    ihdr = 8 + 4 + 4  # signature, chunk length, chunk type
    raw[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(raw[ihdr - 4 : ihdr + 13]))
    raw[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(raw)


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def half_size(data: bytes, quality: int = 50) -> bytes:
    """A re-encoded copy at half the size: another file, the same picture."""
    pixels = _pixels(data)
    small = Image.fromarray(pixels).resize((pixels.shape[1] // 2, pixels.shape[0] // 2), Image.Resampling.BICUBIC)
    return encode_jpeg(np.asarray(small), quality)


def mirrored(data: bytes) -> bytes:
    """The picture flipped left to right: the same photo to a person, another pHash."""
    return encode_jpeg(np.ascontiguousarray(_pixels(data)[:, ::-1]))


def sample_photo(name: str) -> bytes:
    """One of scikit-image's sample photos (``chelsea``, ``coffee``, ...) as a JPEG; grey ones made RGB."""
    from skimage import data as skdata  # noqa: PLC0415 - a dev dependency, only some tests need it

    pixels = getattr(skdata, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return encode_jpeg(pixels)
