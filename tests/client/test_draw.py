"""The SDR as a picture (``image2sdr encode --png``): active bits dark on light, one square per bit."""

from __future__ import annotations

from image2sdr.client import Sdr
from image2sdr.client._draw import ACTIVE, BACKGROUND, sdr_image
from tests.helpers.fake_service import DIMS, SIZE


def test_sdr_picture_draws_active_bits_dark_on_light() -> None:
    sdr = Sdr(SIZE, DIMS, (0, 129, 16383))  # (row 0, col 0), (row 1, col 1), the last bit
    picture = sdr_image(sdr, scale=4)
    assert picture.size == (512, 512) and picture.mode == "L"
    assert picture.getpixel((0, 0)) == picture.getpixel((3, 3)) == ACTIVE
    assert picture.getpixel((4, 4)) == picture.getpixel((7, 7)) == ACTIVE
    assert picture.getpixel((511, 511)) == ACTIVE
    assert picture.getpixel((4, 0)) == picture.getpixel((100, 300)) == BACKGROUND
    dark = picture.tobytes().count(bytes([ACTIVE]))
    assert dark == 3 * 16


def test_sdr_picture_of_a_flat_sdr_is_nearly_square() -> None:
    picture = sdr_image(Sdr(10, (), (9,)), scale=1)
    assert picture.size == (4, 3) and picture.getpixel((1, 2)) == ACTIVE
