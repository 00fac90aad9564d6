"""keypoints.py on real photos: a rotated copy is verified with its rotation found, another photo is not."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from image2sdr.server import keypoints
from image2sdr.server.keypoints import ImageKeypoints, Keypoints

from .helpers.images import sample_photo


def _image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return _image(sample_photo("chelsea"))


@pytest.fixture(scope="module")
def stored(chelsea: Image.Image) -> Keypoints:
    found = keypoints.from_blob(keypoints.extract(chelsea).to_blob())
    assert found is not None
    return found


def _query(image: Image.Image) -> ImageKeypoints:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)  # a copy as it would be sent: re-encoded
    return keypoints.extract(_image(out.getvalue()))


def test_the_stored_blob_is_small_and_versioned(chelsea: Image.Image, stored: Keypoints) -> None:
    blob = keypoints.extract(chelsea).to_blob()
    assert len(blob) <= 4096
    assert len(stored) == keypoints.STORED
    assert keypoints.from_blob(bytes([keypoints.VERSION + 1]) + blob[1:]) is None  # a later layout: none
    assert keypoints.from_blob(blob[:-1]) is None  # damaged: none


def test_a_rotated_copy_is_verified_with_its_rotation(chelsea: Image.Image, stored: Keypoints) -> None:
    verdict = keypoints.verify(_query(chelsea.transpose(Image.Transpose.ROTATE_90)), stored)
    assert verdict.copy
    assert verdict.inliers >= keypoints.MIN_INLIERS
    assert verdict.transform is not None
    assert verdict.transform.rotation_degrees == pytest.approx(90, abs=2)
    assert verdict.transform.scale == pytest.approx(1.0, abs=0.05)
    assert not verdict.transform.mirrored


def test_a_crop_reports_the_part_kept(chelsea: Image.Image, stored: Keypoints) -> None:
    width, height = chelsea.size
    verdict = keypoints.verify(_query(chelsea.crop((width // 2, 0, width, height))), stored)
    assert verdict.copy and verdict.transform is not None
    left, top, right, bottom = verdict.transform.crop
    assert left == pytest.approx(0.5, abs=0.03) and right == pytest.approx(1.0, abs=0.03)
    assert top == pytest.approx(0.0, abs=0.03) and bottom == pytest.approx(1.0, abs=0.03)


def test_a_mirrored_copy_is_verified_through_the_query_mirror(chelsea: Image.Image, stored: Keypoints) -> None:
    verdict = keypoints.verify(_query(chelsea.transpose(Image.Transpose.FLIP_LEFT_RIGHT)), stored)
    assert verdict.copy and verdict.transform is not None and verdict.transform.mirrored


def test_a_different_photo_is_rejected(stored: Keypoints) -> None:
    for name in ("coffee", "astronaut"):
        verdict = keypoints.verify(_query(_image(sample_photo(name))), stored)
        assert not verdict.copy
        assert verdict.inliers < keypoints.MIN_INLIERS
