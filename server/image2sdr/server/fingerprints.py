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
re-encoded copies).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

__all__ = ["PHASH_BITS", "Fingerprint", "fingerprint", "phash", "phash_distance"]

PHASH_BITS = 64  # imagehash's default hash_size 8: an 8 x 8 block of DCT coefficients


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
    bits = imagehash.phash(image).hash.reshape(-1)  # row by row: str(ImageHash) reads the same bits as hex
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def phash_distance(a: int, b: int) -> int:
    """Bits in which two pHashes differ."""
    return (a ^ b).bit_count()
