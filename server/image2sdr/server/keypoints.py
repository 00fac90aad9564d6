"""Where an image becomes keypoints, and where two sets of keypoints are checked for one picture.

The cascade's last stage (``index/duplicates.py``): the file hash, the pHash
and the visual SDR find candidates cheaply; only the few best are verified
here, geometrically.  A copy that was rotated, cropped, framed, captioned or
tilted keeps many of its original's local features *at positions one transform
explains*; a different shot of the same scene (a stereo pair, a burst, the same
product photographed twice) shares features too, but parallax and motion scatter
them, so no single transform explains enough of them exactly.

Method
------
ORB (oriented FAST corners, rotated BRIEF: 32-byte binary descriptors) on the
grey image scaled to ``SIDE`` px on its longer side.  Chosen by measurement over
SIFT (``make bench-dupes``): SIFT's 128-float descriptors would need uint8
quantisation and still take 128 bytes each, so 4 KB per item would hold 28 of
them; ORB's 32 bytes hold ``STORED`` = 96 with their coordinates.  A query keeps
up to ``QUERY_FEATURES``; what is stored is ``STORED`` of them spread over a
4 x 4 grid (the strongest of each cell in turn), so a crop keeping a third of
the picture still finds the stored points inside it.

Verification matches each stored descriptor with its two nearest in the query
(Hamming) and keeps those passing Lowe's ratio test, then fits a homography by
RANSAC (``cv2.USAC_MAGSAC``).  A copy is at least ``MIN_INLIERS`` inliers, that
are at least ``MIN_INLIER_RATIO`` of the matches (or ``FEW_INLIERS`` that are nearly
all of them: a heavy crop keeps few stored points, every one in place; on 37 photos
this took the 30 % crop from 0.54 to 0.68 and let no other pair through), under a plausible transform
(scale within 1/8..8, a convex quadrilateral, not folded).  The ORB descriptor
is not mirror-invariant: a query also keeps the keypoints of its mirror image,
tried when the picture as sent fails.

The blob (``to_blob``; what the index stores, at most 4 KB):
``VERSION`` (1 byte), width and height of the scaled image (2 x uint16), the
count n (uint16), n x (x, y) in 1/8 px (uint16), n x 32 descriptor bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "MIN_INLIERS",
    "SIDE",
    "STORED",
    "VERSION",
    "ImageKeypoints",
    "Keypoints",
    "Transform",
    "Verdict",
    "extract",
    "from_blob",
    "verify",
]

VERSION = 1  # the blob's first byte; a blob of another version is read as none (the item is judged the old way)
SIDE = 512  # px: the longer side of the grey image keypoints are found on
QUERY_FEATURES = 500  # keypoints a query keeps
STORED = 96  # keypoints an item stores: 7 + 96 * 36 = 3463 bytes; base64 (Milvus) 4620 chars
DESCRIPTOR_BYTES = 32
_GRID = 4  # cells per side over which the stored keypoints are spread
_FIXED = 8  # coordinates are stored in 1/8 px
_HEADER = struct.Struct("<BHHH")
RATIO = 0.8  # Lowe's ratio test: the nearest descriptor clearly nearer than the second
MIN_INLIERS = 12  # matches one transform must explain for a copy
MIN_INLIER_RATIO = 0.3  # of the matches passing the ratio test
# Fewer inliers suffice when nearly every match is one: a heavy crop keeps few stored points, all in place.
FEW_INLIERS, FEW_INLIER_RATIO = 8, 0.8
REPROJECTION_PX = 4.0  # at SIDE px: a copy's points land within this of where the transform puts them
_MAX_SCALE = 8.0


@dataclass(frozen=True)
class Keypoints:
    """Keypoints of one image scaled to ``SIDE``: positions (n, 2) float32 and ORB descriptors (n, 32) uint8."""

    width: int
    height: int
    points: npt.NDArray[np.float32]
    descriptors: npt.NDArray[np.uint8]

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def to_blob(self) -> bytes:
        """The stored form: at most ``STORED`` keypoints spread over the picture (see the module docstring)."""
        chosen = self if len(self) <= STORED else self.subset(_spread(self, STORED))
        fixed = np.clip(np.rint(chosen.points * _FIXED), 0, 65535).astype("<u2")
        header = _HEADER.pack(VERSION, chosen.width, chosen.height, len(chosen))
        return header + fixed.tobytes() + np.ascontiguousarray(chosen.descriptors, dtype=np.uint8).tobytes()

    def subset(self, rows: npt.NDArray[np.intp]) -> Keypoints:
        return Keypoints(self.width, self.height, self.points[rows], self.descriptors[rows])


class ImageKeypoints:
    """A picture's keypoints: as sent, and its mirror image's (ORB does not see a mirrored copy).

    Both are detected from ``grey`` when first asked: the decode threads only make the
    small grey picture, and ORB (~5 ms) runs where the keypoints are used, which for a
    stream's stored images is its storing thread, off the path of the next batch; the
    mirror image's are made only when a verification asks (most copies verify at once).
    A stored item asked by id has only its stored keypoints (no ``grey``: no mirror).
    """

    def __init__(self, own: Keypoints | None = None, grey: npt.NDArray[np.uint8] | None = None) -> None:
        if own is None and grey is None:
            raise ValueError("ImageKeypoints needs keypoints or a picture to find them in")
        self.grey = grey
        self._own = own
        self._mirror: Keypoints | None = None

    @property
    def own(self) -> Keypoints:
        if self._own is None:  # two threads may both make it: the same keypoints, one kept
            assert self.grey is not None
            self._own = _orb(self.grey, QUERY_FEATURES)
        return self._own

    @property
    def can_mirror(self) -> bool:
        return self.grey is not None

    @property
    def mirrored(self) -> Keypoints | None:
        if self.grey is None:
            return None
        if self._mirror is None:
            self._mirror = _orb(np.ascontiguousarray(self.grey[:, ::-1]), QUERY_FEATURES)
        return self._mirror

    def to_blob(self) -> bytes:
        return self.own.to_blob()


@dataclass(frozen=True)
class Transform:
    """How a stored picture maps onto the query: rotation (degrees, counter-clockwise), scale, the part kept.

    ``crop`` is (left, top, right, bottom) of the stored picture that the query shows,
    as fractions of its width and height: (0, 0, 1, 1) when all of it is there.
    """

    rotation_degrees: float
    scale: float
    crop: tuple[float, float, float, float]
    mirrored: bool = False


@dataclass(frozen=True)
class Verdict:
    """What the geometry says: a copy or not, the inliers found, and the transform (None: no fit)."""

    copy: bool
    inliers: int
    matches: int
    transform: Transform | None = None


def extract(image: Image.Image) -> ImageKeypoints:
    """The keypoints of ``image`` (up to ``QUERY_FEATURES``, and its mirror image's), detected when first read."""
    return ImageKeypoints(grey=_grey(image))


def from_blob(blob: bytes) -> Keypoints | None:
    """Keypoints read back from ``to_blob``'s bytes; None for another version or a damaged blob."""
    if len(blob) < _HEADER.size or blob[0] != VERSION:
        return None
    _, width, height, count = _HEADER.unpack_from(blob)
    if len(blob) != _HEADER.size + count * (4 + DESCRIPTOR_BYTES) or not width or not height:
        return None
    start = _HEADER.size
    fixed = np.frombuffer(blob, dtype="<u2", count=2 * count, offset=start).reshape(count, 2)
    descriptors = np.frombuffer(blob, dtype=np.uint8, offset=start + 4 * count).reshape(count, DESCRIPTOR_BYTES)
    return Keypoints(width, height, (fixed / np.float32(_FIXED)).astype(np.float32), descriptors)


def verify(query: ImageKeypoints, stored: Keypoints) -> Verdict:
    """Whether the query shows the stored picture: the picture as sent first, then its mirror image."""
    own = _verify(query.own, stored, mirrored=False)
    mirrored = None if own.copy else query.mirrored
    if mirrored is None:
        return own
    mirror = _verify(mirrored, stored, mirrored=True)
    return mirror if mirror.copy or mirror.inliers > own.inliers else own


def _grey(image: Image.Image) -> npt.NDArray[np.uint8]:
    grey = image.convert("L")
    scale = SIDE / max(grey.width, grey.height)
    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    if size != grey.size:
        grey = grey.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(grey, dtype=np.uint8)


def _orb(grey: npt.NDArray[np.uint8], features: int) -> Keypoints:
    detector = cv2.ORB.create(nfeatures=features, edgeThreshold=15, patchSize=31, fastThreshold=10)
    found, descriptors = detector.detectAndCompute(grey, None)
    height, width = grey.shape
    if descriptors is None or not found:
        return Keypoints(width, height, np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8))
    points = np.array([point.pt for point in found], dtype=np.float32)
    response = np.array([point.response for point in found], dtype=np.float32)
    order = np.argsort(-response, kind="stable")  # strongest first: a subset takes from the front
    return Keypoints(width, height, points[order], np.asarray(descriptors, dtype=np.uint8)[order])


def _spread(keypoints: Keypoints, count: int) -> npt.NDArray[np.intp]:
    """``count`` rows taken round-robin from the cells of a grid, strongest first in each (rows are so ordered)."""
    cells = np.minimum(
        (keypoints.points[:, 0] * _GRID // keypoints.width).astype(np.intp), _GRID - 1
    ) * _GRID + np.minimum((keypoints.points[:, 1] * _GRID // keypoints.height).astype(np.intp), _GRID - 1)
    rank = np.zeros(len(keypoints), dtype=np.intp)  # a row's place within its cell
    seen: dict[int, int] = {}
    for row, cell in enumerate(cells.tolist()):
        rank[row] = seen.get(cell, 0)
        seen[cell] = rank[row] + 1
    order = np.lexsort((np.arange(len(keypoints)), rank))
    return np.sort(order[:count])


def _verify(query: Keypoints, stored: Keypoints, *, mirrored: bool) -> Verdict:
    if len(query) < 2 or len(stored) < min(MIN_INLIERS, FEW_INLIERS):
        return Verdict(False, 0, 0)
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(stored.descriptors, query.descriptors, k=2)
    good = [pair[0] for pair in pairs if len(pair) == 2 and pair[0].distance < RATIO * pair[1].distance]
    if len(good) < min(MIN_INLIERS, FEW_INLIERS):
        return Verdict(False, 0, len(good))
    source = stored.points[[match.queryIdx for match in good]]
    target = query.points[[match.trainIdx for match in good]]
    homography, mask = cv2.findHomography(source, target, cv2.USAC_MAGSAC, REPROJECTION_PX, maxIters=2000)
    if homography is None or mask is None:
        return Verdict(False, 0, len(good))
    inliers = int(mask.sum())
    transform = _transform(np.asarray(homography, dtype=np.float64), stored, query, mirrored)
    enough = inliers >= MIN_INLIERS and inliers >= MIN_INLIER_RATIO * len(good)
    few_but_sure = inliers >= FEW_INLIERS and inliers >= FEW_INLIER_RATIO * len(good)
    copy = transform is not None and (enough or few_but_sure)
    return Verdict(copy, inliers, len(good), transform)


def _transform(
    homography: npt.NDArray[np.float64], stored: Keypoints, query: Keypoints, mirrored: bool
) -> Transform | None:
    """The rotation, scale and crop of a plausible homography (stored -> query); None for an implausible one."""
    corners = np.array([[0, 0], [query.width, 0], [query.width, query.height], [0, query.height]], np.float32)
    try:
        inverse = np.linalg.inv(homography)
    except np.linalg.LinAlgError:
        return None
    back = np.asarray(cv2.perspectiveTransform(corners.reshape(-1, 1, 2), inverse), np.float32).reshape(-1, 2)
    if not np.isfinite(back).all() or not _convex(back):
        return None
    linear = homography[:2, :2] / homography[2, 2]
    determinant = float(np.linalg.det(linear))
    if determinant <= 0:  # folded: a mirror image is its own query, never a fit
        return None
    scale = math.sqrt(determinant)
    if not 1 / _MAX_SCALE <= scale <= _MAX_SCALE:
        return None
    rotation = math.degrees(math.atan2(linear[1, 0] - linear[0, 1], linear[0, 0] + linear[1, 1]))
    left, top = np.clip(back.min(axis=0) / (stored.width, stored.height), 0.0, 1.0)
    right, bottom = np.clip(back.max(axis=0) / (stored.width, stored.height), 0.0, 1.0)
    if right <= left or bottom <= top:
        return None
    crop = (round(float(left), 4), round(float(top), 4), round(float(right), 4), round(float(bottom), 4))
    return Transform(round(-rotation, 2), round(scale, 4), crop, mirrored)


def _convex(quad: npt.NDArray[np.float32]) -> bool:
    """Whether four corners, in order, make a convex quadrilateral (a homography that does not twist)."""
    edges = np.roll(quad, -1, axis=0) - quad
    turns = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    return bool((turns > 0).all() or (turns < 0).all())
