"""An image's first stage, on the decode threads: pixels, classifier input, fingerprint, thumbnail, keypoints.

The classifier's input (resized, cropped, scaled: ``LocalConceptSource.prepare``),
the fingerprint, the thumbnail (when the image is stored) and the keypoints (when
it is stored or asked for its copies: ``keypoints.py``) are made here while
the decoded image is at hand, on as many threads as ``image.decode_threads``,
rather than on the one thread that then runs the classifier; an image that fails
any of it fails alone (MemoryError included), and the batch goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..concepts.local import PreparedImage
from ..config import Config
from ..fingerprints import Fingerprint, fingerprint
from ..imaging import DecodedImage, decode_image
from ..keypoints import ImageKeypoints, extract
from ..thumbnails import Thumbnail, shrink
from .values import EncodeOptions

__all__ = ["Decoded", "Prepare", "Wanted", "timed_decode", "wanted"]

# What the classifier makes of a decoded image before inference (None: it has nothing to make).
Prepare = Callable[[DecodedImage], DecodedImage]


@dataclass(frozen=True)
class Wanted:
    """What an image needs beside its pixels: a thumbnail (it will be stored), keypoints (stored, or a copy query)."""

    thumbnail: bool = False
    keypoints: bool = False


@dataclass(frozen=True)
class Decoded:
    image: DecodedImage | Exception
    ms: float
    fingerprint: Fingerprint | None = None  # None when the image did not decode
    fingerprint_ms: float = 0.0  # the fingerprint's, the thumbnail's and the keypoints'
    thumbnail: Thumbnail | None = None  # its pixels; encoded when stored
    keypoints: ImageKeypoints | None = None


def timed_decode(data: bytes, config: Config, side: int | None, extras: Wanted, prepare: Prepare | None) -> Decoded:
    # The classifier's input, fingerprint, thumbnail and keypoints are made here, on the decode threads.
    started = time.perf_counter()
    try:
        image = decode_image(data, config.image, side)
        if prepare is not None:
            image = prepare(image)
    except Exception as exc:  # MemoryError included: this image fails, the batch goes on
        return Decoded(exc, (time.perf_counter() - started) * 1000)
    decoded = time.perf_counter()
    try:
        found = fingerprint(data, image.image)
        small = _thumbnail(image, config) if extras.thumbnail else None
        points = extract(image.image) if extras.keypoints and config.index.keypoints else None
    except Exception as exc:  # as for decoding: this image fails alone
        return Decoded(exc, (decoded - started) * 1000)
    if isinstance(image, PreparedImage) and image.reduced is not None:
        image = replace(image, reduced=None)  # not held while the batch waits for the classifier
    return Decoded(image, (decoded - started) * 1000, found, (time.perf_counter() - decoded) * 1000, small, points)


def wanted(options: EncodeOptions | None) -> Wanted:
    """A stored image gets a thumbnail and keypoints; a copy query keypoints alone."""
    if options is None:
        return Wanted()
    return Wanted(thumbnail=options.thumbnail, keypoints=options.thumbnail or options.keypoints)


def _thumbnail(image: DecodedImage, config: Config) -> Thumbnail | None:
    """The image's thumbnail for the index, shrunk now and encoded when stored; None when they are off.

    A JPEG decoded at a reduced scale (draft) keeps both sides at least the
    classifier's input side (224 px or so): a thumbnail larger than that comes out
    at the drafted size, never enlarged.
    """
    index = config.index
    if not index.thumbnails:
        return None
    source = image.image
    if isinstance(image, PreparedImage) and image.reduced is not None and max(image.reduced.size) >= index.thumbnails:
        # The classifier's scaled copy (short side 256) makes the same thumbnail for a quarter of
        # the resize: 0.2 ms instead of 0.8 from a 640 x 427 photo.
        source = image.reduced
    return Thumbnail(shrink(source, index.thumbnails), index.thumbnail_format, index.thumbnail_quality)
