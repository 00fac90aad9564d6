"""Decoding every supported format and refusing every kind of bad image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from image2sdr.server.config import ImageConfig
from image2sdr.server.errors import (
    ImageDecodeError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidInputError,
    LimitExceededError,
    PixelLimitError,
)
from image2sdr.server.imaging import decode_image
from tests.helpers.images import png_with_header

LIMITS = ImageConfig()
CHELSEA = skdata.chelsea()  # 300 x 451 RGB


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_every_supported_format_decodes_to_rgb(fmt: str) -> None:
    decoded = decode_image(save(Image.fromarray(CHELSEA), fmt), LIMITS)
    assert decoded.format == fmt
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (451, 300)


def test_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    gif = save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    pixel = decode_image(gif, LIMITS).image.getpixel((5, 5))
    assert pixel[0] > 200 and pixel[2] < 50  # red, not the blue second frame


def test_exif_orientation_is_applied() -> None:
    image = Image.fromarray(CHELSEA)  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(save(image, "JPEG", exif=exif.tobytes()), LIMITS)
    assert decoded.image.size == (300, 451)  # shown portrait


def test_grey_palette_and_cmyk_become_rgb() -> None:
    image = Image.fromarray(CHELSEA)
    for converted, fmt in ((image.convert("L"), "PNG"), (image.convert("P"), "PNG"), (image.convert("CMYK"), "JPEG")):
        decoded = decode_image(save(converted, fmt), LIMITS)
        assert decoded.image.mode == "RGB"
        assert np.asarray(decoded.image).mean() > 40  # not black: content survived


def test_sixteen_bit_png_keeps_its_range() -> None:
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    decoded = decode_image(save(Image.fromarray(ramp), "PNG"), LIMITS)
    grey = np.asarray(decoded.image)[..., 0]
    # Scaled, not clipped: the dark half stays dark, the bright end is white.
    assert grey[0, 0] == 0 and grey[-1, -1] == 255
    assert 100 < grey[32, 0] < 160


def test_alpha_is_composited_over_white() -> None:
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # fully transparent black
    rgba.paste((255, 0, 0, 255), (0, 0, 16, 32))  # left half opaque red
    decoded = np.asarray(decode_image(save(rgba, "PNG"), LIMITS).image)
    assert tuple(decoded[5, 5]) == (255, 0, 0)
    assert tuple(decoded[5, 25]) == (255, 255, 255)


def test_jpeg_draft_decodes_large_photos_at_reduced_scale() -> None:
    big = Image.fromarray(CHELSEA).resize((1804, 1200))
    decoded = decode_image(save(big, "JPEG"), LIMITS, draft_side=256)
    assert min(decoded.image.size) >= 256
    assert decoded.image.size[0] < 1804
    assert (decoded.width, decoded.height) == (1804, 1200)


# -- bad input: each a typed error with a message that says what is wrong --


def test_not_an_image() -> None:
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(b"this is a text file, not a picture", LIMITS)


def test_empty_buffer() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"", LIMITS)


def test_truncated_file() -> None:
    jpeg = save(Image.fromarray(CHELSEA), "JPEG")
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(jpeg[: len(jpeg) // 2], LIMITS)


def test_truncated_header() -> None:
    png = save(Image.fromarray(CHELSEA), "PNG")
    with pytest.raises(ImageDecodeError):
        decode_image(png[:20], LIMITS)


def test_zero_pixel_dimensions() -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(png_with_header(0, 10), LIMITS)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = png_with_header(100_000, 100_000)  # 10 Gpx claimed in a few bytes
    with pytest.raises(PixelLimitError, match="pixels") as info:
        decode_image(bomb, LIMITS)
    assert info.value.limit == LIMITS.max_pixels
    assert info.value.actual == 10_000_000_000
    assert isinstance(info.value, LimitExceededError)


def test_real_bomb_under_a_low_limit() -> None:
    # A genuinely large image that compresses to almost nothing.
    bomb = save(Image.new("1", (8000, 8000)), "PNG")
    assert len(bomb) < 20_000
    with pytest.raises(PixelLimitError):
        decode_image(bomb, ImageConfig(max_pixels=10_000_000))


def test_one_by_one_image() -> None:
    with pytest.raises(ImageTooSmallError, match="at least 16"):
        decode_image(save(Image.new("RGB", (1, 1)), "PNG"), LIMITS)


def test_too_many_bytes() -> None:
    png = save(Image.fromarray(CHELSEA), "PNG")
    with pytest.raises(ImageTooLargeError, match="bytes"):
        decode_image(png, ImageConfig(max_bytes=1000))


def test_errors_name_the_field() -> None:
    with pytest.raises(InvalidInputError) as info:
        decode_image(b"junk", LIMITS)
    assert info.value.field == "image"
