"""Fingerprints of real photos: SHA-256 of the bytes, pHash of the decoded pixels."""

from __future__ import annotations

import io

import imagehash
import pytest
from PIL import Image
from skimage import data as skdata

from image2sdr.server.config import ImageConfig
from image2sdr.server.fingerprints import PHASH_MAX_SIDE, Fingerprint, fingerprint, phash, phash_distance
from image2sdr.server.imaging import decode_image
from tests.helpers.images import encode_jpeg

DRAFT_SIDE = 256  # what the local classifier asks imaging.decode_image for


def fingerprint_of(data: bytes, draft_side: int | None = DRAFT_SIDE) -> Fingerprint:
    return fingerprint(data, decode_image(data, ImageConfig(), draft_side).image)


def resized_copy(data: bytes, scale: float, quality: int) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def large_photo() -> bytes:
    """A 2048 x 1364 JPEG: decoded with a draft (DCT scaling) down to a 512 px short side."""
    return resized_copy(encode_jpeg(skdata.chelsea()), 4.54, 90)


def test_same_bytes_same_fingerprint(photos: dict[str, bytes], large_photo: bytes) -> None:
    for data in [*photos.values(), large_photo]:
        first, again = fingerprint_of(data), fingerprint_of(bytes(data))
        assert first == again
        assert len(first.sha256) == 64 and 0 <= first.phash < 1 << 64


def test_different_bytes_differ(photos: dict[str, bytes]) -> None:
    prints = [fingerprint_of(data) for data in photos.values()]
    assert len({p.sha256 for p in prints}) == len(prints)
    # Different photos: their pHashes are far apart (20+ bits between any two of 1000+ real images).
    for i, a in enumerate(prints):
        for b in prints[i + 1 :]:
            assert phash_distance(a.phash, b.phash) > 16


def test_a_resized_reencoded_copy_keeps_its_phash_within_a_few_bits(photos: dict[str, bytes]) -> None:
    for data in photos.values():
        original = fingerprint_of(data)
        for scale, quality in ((0.5, 30), (0.75, 60), (1.5, 95)):
            copy = fingerprint_of(resized_copy(data, scale, quality))
            assert copy.sha256 != original.sha256
            assert phash_distance(copy.phash, original.phash) <= 6


def test_the_classifiers_draft_does_not_move_the_phash(large_photo: bytes) -> None:
    drafted = decode_image(large_photo, ImageConfig(), DRAFT_SIDE).image
    full = decode_image(large_photo, ImageConfig(), None).image
    assert drafted.width < full.width  # the draft did reduce it
    assert phash_distance(phash(drafted), phash(full)) <= 2


def test_phash_is_imagehash_read_as_an_unsigned_integer(photos: dict[str, bytes]) -> None:
    image = decode_image(photos["coffee"], ImageConfig()).image
    assert max(image.size) <= PHASH_MAX_SIDE
    assert phash(image) == int(str(imagehash.phash(image)), 16)
    assert phash_distance(0, (1 << 64) - 1) == 64


def test_a_large_image_is_reduced_first_and_keeps_its_hash_within_a_few_bits(large_photo: bytes) -> None:
    image = decode_image(large_photo, ImageConfig()).image  # 2048 x 1364, no draft
    assert phash(image) == int(str(imagehash.phash(image.reduce((2, 2)))), 16)
    assert phash_distance(phash(image), int(str(imagehash.phash(image)), 16)) <= 2
    thin = Image.new("RGB", (16, 3_000_000), (120, 30, 200))  # passes the pixel limit; hashed from 16 x 1024
    assert phash(thin) == int(str(imagehash.phash(thin.reduce((1, 2930)))), 16)


@pytest.mark.parametrize(("sha", "value"), [("ab", 0), ("0" * 64, -1), ("0" * 64, 1 << 64)])
def test_a_fingerprint_checks_its_fields(sha: str, value: int) -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        Fingerprint(sha, value)
