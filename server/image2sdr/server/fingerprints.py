"""An image's fingerprint: SHA-256 of its bytes and a 64-bit perceptual hash of its pixels.

The SHA-256 finds the same file again; the pHash (``imagehash``: DCT of a
32x32 grayscale thumbnail, 64 bits) finds a near-exact copy (re-encoded,
resized) within a few bits. Copies that move pixels (crops, mirrors) are the
visual SDR's job, not the pHash's.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Fingerprint", "phash_distance"]


@dataclass(frozen=True)
class Fingerprint:
    sha256: str  # hex digest of the image bytes as received
    phash: int  # 64-bit pHash as an unsigned integer

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or not 0 <= self.phash < 1 << 64:
            raise ValueError("a fingerprint is a 64-hex-digit SHA-256 and a 64-bit pHash")


def phash_distance(a: int, b: int) -> int:
    """Bits in which two pHashes differ."""
    return (a ^ b).bit_count()
