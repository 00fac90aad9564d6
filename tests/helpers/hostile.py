"""Image files a hostile caller sends: small on the wire, costly or odd to decode.

Each reproduces something seen from outside: thin images that pass the pixel
limit, and damaged files that make Pillow raise exceptions other than the
usual OSError/ValueError (IndexError from a broken colour profile, TypeError
from oddly typed TIFF strip offsets).
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

__all__ = ["broken_colour_profile_png", "odd_strip_offsets_tiff", "png", "thin_png"]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def thin_png(width: int, height: int) -> bytes:
    """A bilevel stripe: a few KB of PNG for millions of pixels (16 x 3,000,000 is 8.6 KB)."""
    return png(Image.new("1", (width, height), 1))


def broken_colour_profile_png() -> bytes:
    """A PNG whose iCCP chunk, after the pixel data, ends at its name: Pillow raises IndexError."""
    good = png(Image.new("RGB", (32, 32), (200, 40, 40)))
    data = b"iCCP" + b"profile\x00"
    chunk = struct.pack(">I", len(data) - 4) + data + struct.pack(">I", zlib.crc32(data))
    end = good.rfind(b"IEND") - 4
    return good[:end] + chunk + good[end:]


def odd_strip_offsets_tiff() -> bytes:
    """A TIFF whose StripOffsets tag is typed RATIONAL: Pillow raises TypeError."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (40, 200, 40)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        at = ifd + 2 + 12 * entry
        if struct.unpack("<H", data[at : at + 2])[0] == 273:  # StripOffsets
            data[at + 2 : at + 4] = struct.pack("<H", 5)  # 5 = RATIONAL
    return bytes(data)
