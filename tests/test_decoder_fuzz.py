"""Fuzzing the decoder with mutated real files: it answers an image or a typed error, nothing else.

Hypothesis mutates real files of every supported format (bytes flipped,
inserted, deleted, the file cut short or spliced with another) and the decoder
must either return 8-bit RGB or raise one of the core's input errors, which the
service reports as INVALID_ARGUMENT or RESOURCE_EXHAUSTED.  Any other exception
would be an INTERNAL answer and, in a stream, a failure of the whole batch.

The cases are derandomised, so `make test` runs the same bounded set every
time; IMAGE2SDR_FUZZ_EXAMPLES raises the count for a longer hunt.
"""

from __future__ import annotations

import io
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data as skdata

from image2sdr.server.config import ImageConfig
from image2sdr.server.errors import InvalidInputError, LimitExceededError
from image2sdr.server.imaging import decode_image
from tests.helpers.hostile import broken_colour_profile_png, odd_strip_offsets_tiff

# A low pixel limit keeps each case cheap: a mutated header may claim any size.
LIMITS = ImageConfig(max_pixels=4_000_000)
EXAMPLES = int(os.environ.get("IMAGE2SDR_FUZZ_EXAMPLES", "400"))


def _seeds() -> list[bytes]:
    photo = Image.fromarray(skdata.chelsea()).resize((48, 32))
    files = []
    for fmt, options in [
        ("JPEG", {"quality": 80}),
        ("PNG", {"icc_profile": b"\x00" * 64}),
        ("GIF", {}),
        ("WEBP", {}),
        ("BMP", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
    ]:
        buffer = io.BytesIO()
        photo.save(buffer, fmt, **options)
        files.append(buffer.getvalue())
    grey16 = Image.fromarray((np.arange(48 * 32).reshape(32, 48) * 40).astype(np.uint16))
    buffer = io.BytesIO()
    grey16.save(buffer, "PNG")
    files.append(buffer.getvalue())
    return [*files, broken_colour_profile_png(), odd_strip_offsets_tiff()]


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[max(at, 8) :]
        elif kind == "splice":
            other = draw(st.sampled_from(SEEDS))
            data[at:] = other[draw(st.integers(0, len(other) - 1)) :]
    return bytes(data)


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated())
def test_the_decoder_answers_an_image_or_a_typed_error(data: bytes) -> None:
    try:
        decoded = decode_image(data, LIMITS, draft_side=64)
    except (InvalidInputError, LimitExceededError):
        return
    assert decoded.image.mode == "RGB"
    assert decoded.image.size[0] > 0 and decoded.image.size[1] > 0
