"""An image's fingerprint: SHA-256 of its bytes and a 64-bit perceptual hash of its pixels.

The SHA-256 finds the same file again; the pHash (``imagehash``: DCT of a
32x32 grayscale thumbnail, 64 bits) finds a near-exact copy (re-encoded,
resized) within a few bits. Copies that move pixels (crops, mirrors) are the
visual SDR's job, not the pHash's.

The pHash is taken from the image as the encoder decoded it, which for a JPEG
may be drafted down (DCT scaling) to the classifier's size: the same bytes
always decode to the same pixels, so the same bytes always give the same hash,
and a 32x32 thumbnail cannot tell a drafted decode from a full one by more
than a bit or two (``make bench-visual`` measures it beside resized and
re-encoded copies).  An image with a side above ``PHASH_MAX_SIDE`` is box-reduced
by whole factors first, which bounds the cost of huge or very thin images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

__all__ = ["PHASH_BITS", "PHASH_MAX_SIDE", "Fingerprint", "fingerprint", "phash", "phash_distance"]

PHASH_BITS = 64  # imagehash's default hash_size 8: an 8 x 8 block of DCT coefficients
# Sides above this are first box-reduced by whole factors: a 32 x 32 thumbnail needs no
# more, and imagehash's plain LANCZOS resize of a 16 x 3,000,000 image (which the pixel
# limit admits) took 0.87 s.  Images this small or smaller hash exactly as imagehash does.
PHASH_MAX_SIDE = 1024


@dataclass(frozen=True)
class Fingerprint:
    sha256: str  # hex digest of the image bytes as received
    phash: int  # 64-bit pHash as an unsigned integer

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or not 0 <= self.phash < 1 << 64:
            raise ValueError("a fingerprint is a 64-hex-digit SHA-256 and a 64-bit pHash")


def fingerprint(data: bytes, image: Image.Image) -> Fingerprint:
    """The fingerprint of ``data`` (the bytes as received) and ``image`` (what they decoded to)."""
    return Fingerprint(sha256=hashlib.sha256(data).hexdigest(), phash=phash(image))


def phash(image: Image.Image) -> int:
    """imagehash's pHash as an unsigned 64-bit integer: the first DCT bit is the most significant."""
    factors = (-(-image.width // PHASH_MAX_SIDE), -(-image.height // PHASH_MAX_SIDE))
    if factors != (1, 1):
        image = image.reduce(factors)
    bits = imagehash.phash(image).hash.reshape(-1)  # row by row: str(ImageHash) reads the same bits as hex
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def phash_distance(a: int, b: int) -> int:
    """Bits in which two pHashes differ."""
    return (a ^ b).bit_count()
