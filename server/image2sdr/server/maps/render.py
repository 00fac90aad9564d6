"""A laid-out map as one PNG: each item's thumbnail in its cell, or its SDR when it has none.

A thumbnail is fitted into its cell keeping its aspect ratio. An item added
without an image (or before thumbnails existed) is drawn as its SDR: its bits
on the 128 x 128 grid, tinted with a colour that the SDR's bits choose (a fixed
random projection of them to RGB), so items that share many bits share a
colour and a map of SDRs still reads as regions. Empty cells stay the
background colour.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from ..errors import InvalidInputError
from ..sdr import Sdr

__all__ = ["BACKGROUND", "MAX_SIDE", "cell_pixels_for", "check_canvas", "render"]

BACKGROUND = (24, 24, 28)
_TINT_SEED = 20260101
_tints: dict[int, npt.NDArray[np.float64]] = {}
_GAP = 1  # pixels between cells (at cells of 16 px and more)
MIN_CELL, MAX_CELL = 8, 256
MAX_SIDE = 16_384  # pixels on the map's longer side at most (drawn a row of cells at a time: see render)


def cell_pixels_for(columns: int, rows: int, map_pixels: int) -> int:
    """The cell side that makes the map's longer side about ``map_pixels`` (8..256, within MAX_SIDE)."""
    longer = max(columns, rows, 1)
    return max(MIN_CELL, min(MAX_CELL, map_pixels // longer, MAX_SIDE // longer))


def check_canvas(columns: int, rows: int, cell_pixels: int) -> None:
    """Refuse a cell size that would draw a map over MAX_SIDE pixels on its longer side."""
    longer = max(columns, rows) * cell_pixels
    if longer > MAX_SIDE:
        raise InvalidInputError(
            f"cells of {cell_pixels} px make a map {longer} px long; at most {MAX_SIDE}", field="cell_pixels"
        )


def render(
    cells: npt.NDArray[np.intp],
    columns: int,
    rows: int,
    *,
    cell_pixels: int,
    thumbnails: Sequence[bytes | None],
    sdrs: Sequence[Sdr],
) -> tuple[bytes, list[bool]]:
    """The map's PNG, and for each item whether its thumbnail was drawn (False: its SDR).

    The map is drawn and compressed one row of cells at a time: a whole 16,384-px canvas
    would be 1 GiB in Pillow (RGB is kept in 4 bytes a pixel); a row of cells is at most 12 MiB.
    """
    width = columns * cell_pixels
    by_row: list[list[int]] = [[] for _ in range(rows)]
    for item, cell in enumerate(cells.tolist()):
        by_row[cell // columns].append(item)
    drawn = [False] * len(thumbnails)
    png = _PngRows(width, rows * cell_pixels)
    band = np.empty((cell_pixels, width, 3), dtype=np.uint8)  # one row of cells, drawn again for each
    blank = np.tile(np.array(BACKGROUND, dtype=np.uint8), width)  # a row of background (a fast copy)
    for items in by_row:
        band.reshape(cell_pixels, -1)[:] = blank
        for item in items:
            drawn[item] = _draw(band, int(cells[item]) % columns, cell_pixels, thumbnails[item], sdrs[item])
        png.add(band)
    return png.finish(), drawn


def _draw(band: npt.NDArray[np.uint8], column: int, cell_pixels: int, thumbnail: bytes | None, sdr: Sdr) -> bool:
    """Draw one item in its cell of ``band`` (a row of cells, RGB); whether it was its thumbnail."""
    gap = _GAP if cell_pixels >= 16 else 0
    inner = cell_pixels - 2 * gap
    picture = _thumbnail(thumbnail, inner)
    drawn = picture is not None
    if picture is None:
        picture = _sdr_picture(sdr, inner)
    left = column * cell_pixels + gap + (inner - picture.width) // 2
    top = gap + (inner - picture.height) // 2
    band[top : top + picture.height, left : left + picture.width] = np.asarray(picture)
    return drawn


def _signed_sizes(rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """Per row, the sum of its bytes' sizes read as signed (|-128| is 128 as uint8): libpng's filter cost."""
    sizes = np.abs(rows.view(np.int8)).view(np.uint8)
    sums: npt.NDArray[np.int64] = sizes.sum(axis=1, dtype=np.int64)
    return sums


class _PngRows:
    """An 8-bit RGB PNG written a band of rows at a time (Pillow encodes only a whole image).

    PNG's container is three kinds of chunk (IHDR, IDAT, IEND) around one zlib stream of
    rows, each led by its filter type. Each row takes the filter that leaves the smallest
    sum of absolute (signed) bytes, libpng's rule, of None, Sub (each byte less the one a
    pixel to its left) and Up (less the byte above): the files come out the size of
    Pillow's (a 16 x 4 map of SDR pictures: 115.8 KB, Pillow 115.9 KB; Sub alone 153.8 KB).
    """

    def __init__(self, width: int, height: int) -> None:
        self._out = io.BytesIO()
        self._out.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))  # 8-bit RGB, no interlace
        self._zip = zlib.compressobj(6)
        self._above = np.zeros(width * 3, dtype=np.uint8)  # the row before the next band's first (none: zeros)

    def add(self, pixels: npt.NDArray[np.uint8]) -> None:
        """Rows of ``pixels`` (height x width x 3) after those added before."""
        flat = pixels.reshape(pixels.shape[0], -1)
        sub = flat.copy()
        np.subtract(flat[:, 3:], flat[:, :-3], out=sub[:, 3:])  # uint8 wraps modulo 256, as PNG wants
        up = np.empty_like(flat)
        np.subtract(flat[1:], flat[:-1], out=up[1:])
        np.subtract(flat[0], self._above, out=up[0])
        self._above = flat[-1].copy()
        candidates = (flat, sub, up)  # filter types 0, 1, 2
        costs = np.stack([_signed_sizes(candidate) for candidate in candidates])
        chosen = costs.argmin(axis=0)
        rows = np.empty((flat.shape[0], flat.shape[1] + 1), dtype=np.uint8)
        rows[:, 0] = chosen
        for kind, candidate in enumerate(candidates):
            picked = chosen == kind
            rows[picked, 1:] = candidate[picked]
        self._idat(self._zip.compress(rows.data))  # C-contiguous: zlib reads it in place

    def finish(self) -> bytes:
        self._idat(self._zip.flush())
        self._chunk(b"IEND", b"")
        return self._out.getvalue()

    def _idat(self, data: bytes) -> None:
        if data:
            self._chunk(b"IDAT", data)

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self._out.write(struct.pack(">I", len(data)) + kind + data)
        self._out.write(struct.pack(">I", zlib.crc32(kind + data)))


def _thumbnail(data: bytes | None, side: int) -> Image.Image | None:
    """The stored thumbnail fitted into ``side`` x ``side``; None when there is none (or it cannot be read)."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as opened:
            picture = opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        return None  # a damaged thumbnail costs its picture, not the map
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    return picture


def _sdr_picture(sdr: Sdr, side: int) -> Image.Image:
    """The SDR's bits as a square picture (its own grid when square, else the squarest that fits), tinted."""
    width = math.isqrt(sdr.size - 1) + 1 if sdr.size > 1 else 1
    height = -(-sdr.size // width)
    bits = np.zeros(width * height, dtype=np.float64)
    bits[sdr.positions.astype(np.intp)] = 1.0
    grid = Image.fromarray((bits.reshape(height, width) * 255).astype(np.uint8), "L")
    # Any active bit under a pixel lights it, however small the cell (an average would fade them away).
    shown = np.asarray(grid.resize((side, side), Image.Resampling.BOX), dtype=np.float64) > 0
    colour = _tint(sdr)
    picture = np.where(shown[:, :, None], np.minimum(colour * 1.6, 255.0), colour * 0.55)
    return Image.fromarray(picture.astype(np.uint8), "RGB")


def _tint(sdr: Sdr) -> npt.NDArray[np.float64]:
    """An RGB colour from the SDR's bits: a fixed +-1 projection per channel, so shared bits mean near colours."""
    signs = _tints.get(sdr.size)
    if signs is None:
        signs = np.random.default_rng(_TINT_SEED).choice([-1.0, 1.0], size=(3, sdr.size))
        _tints[sdr.size] = signs
    if not sdr.active:
        return np.full(3, 96.0)
    projected = signs[:, sdr.positions.astype(np.intp)].sum(axis=1) / math.sqrt(sdr.active)  # ~N(0, 1) each
    colour: npt.NDArray[np.float64] = np.clip(128.0 + 55.0 * projected, 16.0, 239.0)
    return colour
