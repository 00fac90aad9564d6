"""`make bench-dupes`: is an altered copy of a stored photo found again, and is a different photo left alone?

Measured from outside, through the proto: a real server on a loopback port (port 0),
called with the Python client.

Images (``real_images.py`` fetches the Debian packages with ``apt-get download`` and
unpacks them with ``dpkg -x`` into a cache; nothing is installed):
- originals: scikit-image's photos, Debian ``darknet``'s sample photos, the photographs
  among ``opencv-doc``'s sample images (one of each stereo or before/after pair), and
  the photographs among the wallpapers of ``plasma-workspace-wallpapers``,
  ``mate-backgrounds`` (nature) and ``lomiri-wallpapers-16.04``/``-20.04`` (Ubuntu
  Touch's community photos).  ``gnome-backgrounds``, ``ukui-wallpapers`` and
  ``sway-backgrounds`` were looked at and hold no photographs (renders and patterns).
- distractors: ``openclipart-png`` drawings, spread over all its categories.
- copies: each original altered 15 ways: the five of ``real_images.ALTERATIONS`` (half
  size + JPEG quality 30, 85 % centre crop, mirror, brightness x1.3, rotation by 90
  degrees) and issue 27's harder ones (``HARDER``): rotation by 180 and by +-10 degrees
  with a white fill, off-centre crops keeping 50 % and 30 % of the area, a 10 % frame,
  a caption band over the lower fifth, a perspective tilt, greyscale, a screenshot-like
  re-encode (0.7x, JPEG q75, shown at 1.1x).
- hard negatives (``negatives``): different photos of one scene or one kind, stored
  too: opencv-doc's stereo pairs, optical-flow and registration pairs, its chessboard
  calibration series, frames of its three videos (bursts), and tuxpaint's cut-out
  photos on white (product-like shots).  Each is asked FindDuplicates by its bytes;
  any answer but itself is a false duplicate.

The originals and distractors are stored (EncodeStream with add_to_index); each copy
is then looked up.  Recall@1 per alteration (the original must be the single best
answer; a tie with another item is a miss) for:
- semantic: FindSimilar by the copy's SDR (what the picture shows);
- visual: FindSimilar by the copy's visual SDR (SPACE_VISUAL);
- pHash: the stored image with the nearest 64-bit pHash (from EncodeResponse.fingerprint);
- dense: cosine of the classifier's pooled feature (the anchor; computed in process);
- detector: FindDuplicates by the copy's bytes, its first answer.
False positives: every stored original asked FindDuplicates by id; any answer is
another photo (or a drawing).  Printed both per query (originals with at least one
false duplicate) and per pair.  Then the threshold sweep the defaults were chosen
from (the detector's rules applied to the same pHashes and visual SDRs in process).

"before" is the thresholds alone (the rules without keypoints, in process, on the same
pHashes and visual SDRs); "after" is FindDuplicates through the server, keypoints included.

Usage: python benchmarks/bench_dupes.py [--distractors N] [--config FILE]
"""

from __future__ import annotations

import argparse
import io
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageOps
from scipy import sparse

sys.path.insert(0, str(Path(__file__).parent))
import real_images

from image2sdr.client import DuplicateThresholds, EncodeItem, Encoding, Image2SdrClient, ItemError, Sdr
from image2sdr.server import keypoints
from image2sdr.server.concepts.local import LocalConceptSource
from image2sdr.server.config import Config, HttpConfig, ServiceConfig, load_config
from image2sdr.server.imaging import decode_image
from image2sdr.server.index.duplicates import VERIFY
from image2sdr.server.index.faiss import STORE_FILE
from image2sdr.server.serve import create_server


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def _turned(degrees: float) -> Callable[[Image.Image], bytes]:
    def turn(image: Image.Image) -> bytes:
        return _jpeg(image.rotate(degrees, Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255)))

    return turn


def _cropped(share: float) -> Callable[[Image.Image], bytes]:
    """Off-centre: the top-right corner keeping ``share`` of the area (aspect kept)."""

    def crop(image: Image.Image) -> bytes:
        side = share**0.5
        width, height = round(image.width * side), round(image.height * side)
        return _jpeg(image.crop((image.width - width, 0, image.width, height)))

    return crop


def _framed(image: Image.Image) -> bytes:
    return _jpeg(ImageOps.expand(image, border=round(0.1 * max(image.size)), fill=(24, 24, 24)))


def _captioned(image: Image.Image) -> bytes:
    marked = image.copy()
    draw = ImageDraw.Draw(marked)
    top = round(image.height * 0.8)
    draw.rectangle((0, top, image.width, image.height), fill=(0, 0, 0))
    draw.text((image.width // 20, top + image.height // 20), "SALE -50% www.example.com", fill=(255, 255, 255))
    return _jpeg(marked)


def _tilted(image: Image.Image) -> bytes:
    w, h = image.size
    source = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    target = np.float32([[0.08 * w, 0.05 * h], [0.95 * w, 0], [w, h], [0, 0.95 * h]])
    matrix = cv2.getPerspectiveTransform(source, target)
    warped = cv2.warpPerspective(np.asarray(image), matrix, (w, h), borderValue=(255, 255, 255))
    return _jpeg(Image.fromarray(warped))


def _grey(image: Image.Image) -> bytes:
    return _jpeg(image.convert("L"))


def _screenshot(image: Image.Image) -> bytes:
    small = image.resize((round(image.width * 0.7), round(image.height * 0.7)), Image.Resampling.BILINEAR)
    with Image.open(io.BytesIO(_jpeg(small, 75))) as shot:
        shown = shot.convert("RGB").resize((round(image.width * 1.1), round(image.height * 1.1)))
    return _jpeg(shown, 85)


HARDER: dict[str, Callable[[Image.Image], bytes]] = {
    "rotate 180": _turned(180),
    "rotate +10": _turned(10),
    "rotate -10": _turned(-10),
    "crop 50%": _cropped(0.5),
    "crop 30%": _cropped(0.3),
    "frame 10%": _framed,
    "caption": _captioned,
    "tilt": _tilted,
    "greyscale": _grey,
    "screenshot": _screenshot,
}
ALTERATIONS = (*real_images.ALTERATIONS, *HARDER)
ROTATION = "rotate 90"
KIND_ORDER = {"same_bytes": 0, "near_exact": 1, "transformed": 2}
# The photographs of opencv-doc's examples: one of each pair of overlapping shots
# (stereo left/right, registration pairs such as aero1/aero3, before/after), no
# renders, paintings, drawings or text scans.
OPENCV_PHOTOS = (
    "data/aero1.jpg",
    "data/aloeL.jpg",
    "data/apple.jpg",
    "data/baboon.jpg",
    "data/basketball1.png",
    "data/board.jpg",
    "data/box_in_scene.png",
    "data/building.jpg",
    "data/butterfly.jpg",
    "data/chicky_512.png",
    "data/ela_original.jpg",
    "data/fruits.jpg",
    "data/graf1.png",
    "data/home.jpg",
    "data/left.jpg",
    "data/leuvenA.jpg",
    "data/licenseplate_motion.jpg",
    "data/messi5.jpg",
    "data/orange.jpg",
    "data/rubberwhale1.png",
    "data/squirrel_cls.jpg",
    "data/stuff.jpg",
    "dnn_superres/butterfly.png",
    "hfs/data/000.jpg",
    "hfs/data/001.jpg",
    "hfs/data/002.jpg",
    "reg/home.png",
    "alphamat/input_images/plant.jpg",
    *(f"text/scenetext0{i}.jpg" for i in range(1, 7)),
    *(f"text/scenetext_segmented_word0{i}.jpg" for i in range(1, 6)),
)
LOMIRI_PHOTOS = {
    "lomiri-wallpapers-16.04": (
        "Bridge_by_Sander_Klootwijk",
        "Dragonfly_by_Bolly",
        "Picture_0B_by_freespace",
        "Picture_1A_by_freespace",
        "Wine_by_Jakkub_Mede",
        "aitzgorri_by_Aitzol_Berasategi",
        "free_by_Peter_Nerlich",
        "friends_by_Aitzol_Berasategi",
        "greentock_by_Peter_Nerlich",
        "life_by_Aitzol_Berasategi",
        "picosdeeuropa_by_Aitzol_Berasategi",
        "seeding_by_Clements_Engelhardt",
        "sunset_by_Aitzol_Berasategi",
    ),
    "lomiri-wallpapers-20.04": ("Kleiber_by_Lukas_Baubkus",),
}
PLASMA_PHOTOS = (
    "BytheWater",
    "ColdRipple",
    "ColorfulCups",
    "DarkestHour",
    "EveningGlow",
    "FallenLeaf",
    "Grey",
    "Kite",
    "OneStandsOut",
    "Path",
    "summer_1am",
    "Volna",
)


# -- images ------------------------------------------------------------------------


def alter(data: bytes, how: str) -> bytes:
    if how in real_images.ALTERATIONS:
        return real_images.alter(data, how)
    with Image.open(io.BytesIO(data)) as image:
        return HARDER[how](image.convert("RGB"))


OPENCV_PAIRS = (
    ("aero1.jpg", "aero3.jpg"),
    ("aloeL.jpg", "aloeR.jpg"),
    ("Blender_Suzanne1.jpg", "Blender_Suzanne2.jpg"),
    ("basketball1.png", "basketball2.png"),
    ("graf1.png", "graf3.png"),
    ("left.jpg", "right.jpg"),
    ("leuvenA.jpg", "leuvenB.jpg"),
    ("rubberwhale1.png", "rubberwhale2.png"),
)
CHESSBOARDS = tuple(
    f"{side}{n:02d}.jpg" for side in ("left", "right") for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)
)
VIDEOS = ("vtest.avi", "tree.avi", "Megamind.avi")


def negatives() -> dict[str, bytes]:
    """Different photos of one scene or one kind (see the module docstring), as their files' bytes or JPEGs."""
    data = "usr/share/doc/opencv-doc/examples/data"
    found: dict[str, bytes] = {}
    for name in sorted({name for pair in OPENCV_PAIRS for name in pair} | set(CHESSBOARDS)):
        if f"data/{name}" in OPENCV_PHOTOS:  # stored already as an original: its pair's other half is the negative
            continue
        (path,) = real_images.debian_files("opencv-doc", f"{data}/{name}")
        found[f"scene/{name}"] = path.read_bytes()
    for video in VIDEOS:
        (path,) = real_images.debian_files("opencv-doc", f"{data}/{video}")
        capture = cv2.VideoCapture(str(path))
        for frame_number in range(80):
            ok, frame = capture.read()
            if not ok:
                break
            if frame_number % 10 == 0:  # a burst: frames a third of a second apart
                found[f"burst/{video}/{frame_number:02d}"] = _jpeg(Image.fromarray(frame[:, :, ::-1]))
        capture.release()
    for photo in real_images.labelled_photos()[:80]:
        found[f"white/{photo.name}"] = photo.image
    return found


def _largest(paths: Sequence[Path]) -> Path:
    return max(paths, key=lambda p: (p.stat().st_size, p.name))


def originals() -> dict[str, bytes]:
    found = real_images.skimage_photos()
    for path in real_images.debian_files("darknet", "usr/share/darknet/data/*.jpg"):
        found[f"darknet/{path.stem}"] = path.read_bytes()
    examples = "usr/share/doc/opencv-doc/examples"
    for relative in OPENCV_PHOTOS:
        (path,) = real_images.debian_files("opencv-doc", f"{examples}/{relative}")
        found[f"opencv/{relative}"] = path.read_bytes()
    for name in PLASMA_PHOTOS:
        folder = f"usr/share/wallpapers/{name}/contents/images"
        images = real_images.debian_files("plasma-workspace-wallpapers", f"{folder}/*")
        found[f"plasma/{name}"] = _largest(images).read_bytes()
    for path in real_images.debian_files("mate-backgrounds", "usr/share/backgrounds/mate/nature/*.jpg"):
        found[f"mate/{path.stem}"] = path.read_bytes()
    for package, names in LOMIRI_PHOTOS.items():
        for name in names:
            (path,) = real_images.debian_files(package, f"usr/share/backgrounds/{name}.jpg")
            found[f"lomiri/{name}"] = path.read_bytes()
    return found


@dataclass
class Encoded:
    """What the service answered for each image, by name."""

    sdr: dict[str, npt.NDArray[np.uint32]] = field(default_factory=dict)
    visual: dict[str, npt.NDArray[np.uint32]] = field(default_factory=dict)
    phash: dict[str, int] = field(default_factory=dict)
    size: int = 0
    dimensions: tuple[int, ...] = ()

    def keep(self, name: str, encoding: Encoding) -> None:
        self.size, self.dimensions = encoding.sdr.size, encoding.sdr.dimensions
        self.sdr[name] = np.asarray(encoding.sdr.active, dtype=np.uint32)
        if encoding.visual is not None:
            self.visual[name] = np.asarray(encoding.visual.active, dtype=np.uint32)
        if encoding.fingerprint is not None:
            self.phash[name] = encoding.fingerprint.phash


def encode_all(client: Image2SdrClient, images: dict[str, bytes], *, store: bool, into: Encoded) -> None:
    items = (EncodeItem(data, request_id=name, add_to_index=name if store else None) for name, data in images.items())
    for result in client.encode_stream(items):
        if isinstance(result, ItemError):
            raise SystemExit(f"{result.request_id}: {result.error.message}")
        into.keep(result.request_id, result)


# -- measures ----------------------------------------------------------------------


def single_best(ranked: Sequence[tuple[str, float]], expected: str) -> bool:
    """The expected item is first, and nothing else scores as well."""
    return bool(ranked) and ranked[0][0] == expected and (len(ranked) < 2 or ranked[1][1] < ranked[0][1])


def similar_hit(client: Image2SdrClient, encoded: Encoded, copy: str, original: str, space: str) -> bool:
    positions = (encoded.sdr if space == "semantic" else encoded.visual).get(copy)
    if positions is None:
        return False
    query = Sdr(encoded.size, encoded.dimensions, tuple(int(p) for p in positions))
    matches = client.find_similar(sdr=query, k=2, space=space)  # type: ignore[arg-type]
    return single_best([(m.id, m.overlap) for m in matches], original)


def phash_hit(encoded: Encoded, stored: list[str], copy: str, original: str) -> bool:
    hashes = np.array([encoded.phash[name] for name in stored], dtype=np.uint64)
    distances = np.array([int(x).bit_count() for x in hashes ^ np.uint64(encoded.phash[copy])])
    order = np.argsort(distances, kind="stable")
    return single_best([(stored[i], -float(distances[i])) for i in order[:2]], original)


def features(config: Config, images: dict[str, bytes]) -> dict[str, npt.NDArray[np.float64]]:
    source = LocalConceptSource(config.models_dir, config.concepts.local)
    names = list(images)
    out: dict[str, npt.NDArray[np.float64]] = {}
    for start in range(0, len(names), 64):  # a chunk at a time: decoded pixels are not all held at once
        chunk = names[start : start + 64]
        decoded = [decode_image(images[name], config.image, source.input_side) for name in chunk]
        for name, vector in zip(chunk, source.features(decoded), strict=True):
            if isinstance(vector, Exception):
                raise vector
            out[name] = np.asarray(vector, dtype=np.float64) / max(float(np.linalg.norm(vector)), 1e-12)
    return out


def dense_hit(
    vectors: dict[str, npt.NDArray[np.float64]],
    stored_matrix: npt.NDArray[np.float64],
    stored: list[str],
    copy: str,
    original: str,
) -> bool:
    scores = stored_matrix @ vectors[copy]
    order = np.argsort(-scores, kind="stable")[:2]
    return single_best([(stored[i], float(scores[i])) for i in order], original)


def detector_hit(client: Image2SdrClient, image: bytes, original: str, thresholds: DuplicateThresholds) -> bool:
    found = client.find_duplicates(image=image, k=1, thresholds=thresholds)
    return bool(found) and found[0].id == original


# -- the threshold sweep -------------------------------------------------------------


@dataclass
class Pairs:
    """Every (query, stored item) pair: pHash bits apart and visual share of the query's bits."""

    queries: list[str]
    stored: list[str]
    phash: npt.NDArray[np.int64]  # (queries, stored)
    share: npt.NDArray[np.float64]  # (queries, stored)


def _incidence(rows: list[npt.NDArray[np.uint32]], size: int) -> sparse.csr_matrix:
    indptr = np.cumsum([0, *(len(r) for r in rows)])
    indices = np.concatenate(rows) if rows else np.empty(0, dtype=np.uint32)
    return sparse.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(rows), size))


def pairs(encoded: Encoded, queries: list[str], stored: list[str]) -> Pairs:
    empty = np.empty(0, dtype=np.uint32)
    q_rows = [encoded.visual.get(name, empty) for name in queries]
    s_rows = [encoded.visual.get(name, empty) for name in stored]
    overlap = (_incidence(q_rows, encoded.size) @ _incidence(s_rows, encoded.size).T).toarray()
    bits = np.array([max(len(r), 1) for r in q_rows], dtype=np.float64)[:, None]
    q_hash = np.array([encoded.phash[name] for name in queries], dtype=np.uint64)
    s_hash = np.array([encoded.phash[name] for name in stored], dtype=np.uint64)
    xor = q_hash[:, None] ^ s_hash[None, :]
    distance = np.unpackbits(xor.view(np.uint8).reshape(*xor.shape, 8), axis=-1).sum(axis=-1).astype(np.int64)
    return Pairs(queries, stored, distance, overlap / bits)


def flagged(p: Pairs, max_phash: int | None, min_share: float | None) -> npt.NDArray[np.bool_]:
    near = p.phash <= max_phash if max_phash is not None else np.zeros_like(p.phash, dtype=np.bool_)
    moved = p.share >= min_share if min_share is not None else np.zeros_like(near)
    return near | moved


def top1(p: Pairs, max_phash: int | None, min_share: float | None) -> list[str | None]:
    """The detector's first answer per query: near-exact before transformed, then closest."""
    near = p.phash <= max_phash if max_phash is not None else np.zeros_like(p.phash, dtype=np.bool_)
    moved = (p.share >= min_share) & ~near if min_share is not None else np.zeros_like(near)
    # near-exact ranks by distance (0..64); transformed after all of them, by share descending.
    key = np.where(near, p.phash.astype(np.float64), np.where(moved, 100.0 - p.share, np.inf))
    best = np.argmin(key, axis=1)
    return [p.stored[j] if np.isfinite(key[i, j]) else None for i, j in enumerate(best)]


@dataclass
class Sweep:
    copies: Pairs  # altered copies vs stored
    originals: Pairs  # stored originals vs the other stored items
    source: dict[str, str]  # copy -> original
    alteration: dict[str, str]  # copy -> alteration

    def recall(self, max_phash: int | None, min_share: float | None) -> dict[str, float]:
        answers = top1(self.copies, max_phash, min_share)
        hits: dict[str, list[bool]] = {a: [] for a in ALTERATIONS}
        for copy, answer in zip(self.copies.queries, answers, strict=True):
            hits[self.alteration[copy]].append(answer == self.source[copy])
        return {a: float(np.mean(h)) for a, h in hits.items()}

    def false_positives(self, max_phash: int | None, min_share: float | None) -> tuple[float, float]:
        """(share of original queries with a false duplicate, share of different-photo pairs flagged)."""
        marks = flagged(self.originals, max_phash, min_share)
        for i, name in enumerate(self.originals.queries):
            marks[i, self.originals.stored.index(name)] = False  # itself
        pairs_total = marks.shape[0] * (marks.shape[1] - 1)
        return float(marks.any(axis=1).mean()), float(marks.sum() / pairs_total)


def closest_different(p: Pairs, count: int) -> list[tuple[str, str, float, int]]:
    """The pairs of different stored images that look most alike (visual share), each pair once."""
    found = []
    for i, query in enumerate(p.queries):
        for j in np.argsort(-p.share[i])[: count + 1]:
            other = p.stored[j]
            if other != query and (other not in p.queries or query < other):
                found.append((query, other, float(p.share[i, j]), int(p.phash[i, j])))
    return sorted(found, key=lambda pair: -pair[2])[:count]


def print_sweep(
    sweep: Sweep, phash_grid: Sequence[int], share_grid: Sequence[float], chosen: DuplicateThresholds
) -> None:
    header = f"{'thresholds':<24}" + "".join(f"{a:>12}" for a in ALTERATIONS) + f"{'FP queries':>12}{'FP pairs':>12}"
    print(header)

    def row(label: str, max_phash: int | None, min_share: float | None) -> None:
        recall = sweep.recall(max_phash, min_share)
        per_query, per_pair = sweep.false_positives(max_phash, min_share)
        cells = "".join(f"{recall[a]:>12.3f}" for a in ALTERATIONS)
        print(f"{label:<24}{cells}{per_query:>12.2%}{per_pair:>12.4%}")

    for t in phash_grid:
        row(f"pHash <= {t}", t, None)
    for s in share_grid:
        row(f"visual >= {s:.2f}", None, s)
    for s in share_grid:
        row(f"pHash <= {chosen.max_phash_distance}, vis >= {s:.2f}", chosen.max_phash_distance, s)


def choose(sweep: Sweep, phash_grid: Sequence[int], share_grid: Sequence[float], max_fp: float) -> DuplicateThresholds:
    """The widest pHash bound with no false duplicate among the originals, then the lowest visual share
    whose combined false-positive rate per query stays within ``max_fp``."""
    clean = [t for t in phash_grid if sweep.false_positives(t, None)[0] == 0.0]
    t = max(clean, default=0)
    fitting = [s for s in share_grid if sweep.false_positives(t, s)[0] <= max_fp]
    return DuplicateThresholds(t, min(fitting, default=max(share_grid)))


# -- main --------------------------------------------------------------------------------


@dataclass
class Corpus:
    photos: dict[str, bytes]  # the originals, stored
    drawings: dict[str, bytes]  # distractors, stored
    negatives: dict[str, bytes] = field(default_factory=dict)  # different shots of one scene or kind, stored
    copies: dict[str, bytes] = field(default_factory=dict)  # altered originals, looked up
    source: dict[str, str] = field(default_factory=dict)  # copy -> its original
    alteration: dict[str, str] = field(default_factory=dict)  # copy -> how it was altered

    @classmethod
    def build(cls, distractors: int) -> Corpus:
        corpus = cls(originals(), real_images.clipart(distractors), negatives())
        for name, data in corpus.photos.items():
            for how in ALTERATIONS:
                copy = f"{name}@{how}"
                corpus.copies[copy] = alter(data, how)
                corpus.source[copy], corpus.alteration[copy] = name, how
        return corpus


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="server config (default: the embedded defaults)")
    parser.add_argument("--distractors", type=int, default=1000, help="openclipart drawings stored too (1000)")
    parser.add_argument("--max-fp", type=float, default=0.01, help="false duplicates per query allowed (0.01)")
    parser.add_argument("--precision", choices=("fp32", "int8"), help="concepts.local.precision (default: config's)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    corpus = Corpus.build(args.distractors)
    print(
        f"{len(corpus.photos)} originals, {len(corpus.drawings)} distractors, {len(corpus.negatives)} hard "
        f"negatives, {len(corpus.copies)} copies "
        f"({len(ALTERATIONS)} alterations); images ready in {time.perf_counter() - started:.0f} s"
    )
    base = load_config(args.config) if args.config else Config()
    if args.precision:  # the same figures for the int8 classifier
        local = base.concepts.local.model_copy(update={"precision": args.precision})
        base = base.model_copy(update={"concepts": base.concepts.model_copy(update={"local": local})})
    print(f"classifier precision: {base.concepts.local.precision}")
    with tempfile.TemporaryDirectory(prefix="bench-dupes-") as data_dir:
        config = base.model_copy(
            update={
                "data_dir": Path(data_dir),
                "service": ServiceConfig(port=0, max_message_bytes=64 << 20),
                "http": HttpConfig(enabled=False),  # gRPC only: no second server on port 8080
            }
        )
        server = create_server(config)
        try:
            run(server.address, config, corpus, args.max_fp)
        finally:
            server.stop()
        store = Path(data_dir) / "index" / STORE_FILE
        if store.exists():
            with sqlite3.connect(store) as connection:
                count, mean, top = connection.execute(
                    "SELECT count(*), avg(length(points)), max(length(points)) FROM item_keypoints"
                ).fetchone()
            print(f"\nkeypoints on disk: {count} items, {mean:.0f} bytes each on average, {top} at most")
    return 0


def run(address: str, config: Config, corpus: Corpus, max_fp: float) -> None:
    photos, drawings, copies, hard = corpus.photos, corpus.drawings, corpus.copies, corpus.negatives
    source, alteration = corpus.source, corpus.alteration
    encoded = Encoded()
    with Image2SdrClient(address, timeout=120, max_message_bytes=64 << 20) as client:
        started = time.perf_counter()
        encode_all(client, photos | drawings | hard, store=True, into=encoded)
        stored_s = time.perf_counter() - started
        encode_all(client, copies, store=False, into=encoded)
        info = client.info()
        print(
            f"stored {info.index_size} items ({info.index_visual_size} with a visual SDR) in {stored_s:.0f} s, "
            f"encoded the copies: {time.perf_counter() - started:.0f} s; visual channel: "
            f"{info.visual.version if info.visual else 'off'}\n"
        )
        stored = list(photos | drawings | hard)

        started = time.perf_counter()
        sweep = Sweep(pairs(encoded, list(copies), stored), pairs(encoded, list(photos), stored), source, alteration)
        phash_grid, share_grid = list(range(0, 22, 2)), [round(0.20 + 0.05 * i, 2) for i in range(15)]
        chosen = choose(sweep, phash_grid, share_grid, max_fp)
        defaults = info.duplicate_thresholds
        applied = DuplicateThresholds(defaults.max_phash_distance, defaults.min_visual_share)

        vectors = features(config, photos | drawings | copies)
        matrix = np.stack([vectors[name] for name in photos | drawings])
        rows: dict[str, dict[str, list[bool]]] = {
            m: {a: [] for a in ALTERATIONS}
            for m in ("semantic SDR", "visual SDR", "pHash alone", "dense cosine", "duplicate detector")
        }
        seconds: list[float] = []
        for copy, data in copies.items():
            original, how = source[copy], alteration[copy]
            rows["semantic SDR"][how].append(similar_hit(client, encoded, copy, original, "semantic"))
            rows["visual SDR"][how].append(similar_hit(client, encoded, copy, original, "visual"))
            rows["pHash alone"][how].append(phash_hit(encoded, stored, copy, original))
            rows["dense cosine"][how].append(dense_hit(vectors, matrix, list(photos | drawings), copy, original))
            asked = time.perf_counter()
            rows["duplicate detector"][how].append(detector_hit(client, data, original, applied))
            seconds.append(time.perf_counter() - asked)
        before = sweep.recall(applied.max_phash_distance, applied.min_visual_share)
        unrelated_after = sum(
            any(d.id != name for d in client.find_duplicates(image=photos[name], k=100, thresholds=applied))
            for name in photos
        )
        false_after, hard_pairs_after = false_among(client, hard, applied)
    print(
        f"recall@1 per alteration ({len(photos)} copies each; the original must be the single best answer "
        f"among {len(stored)} stored images); measured in {time.perf_counter() - started:.0f} s"
    )
    print(f"{'':<22}" + "".join(f"{a:>12}" for a in ALTERATIONS))
    for method, hits in rows.items():
        label = "FindDuplicates (after)" if method == "duplicate detector" else method
        print(f"{label:<22}" + "".join(f"{np.mean(hits[a]):>12.3f}" for a in ALTERATIONS))
    print(f"{'thresholds (before)':<22}" + "".join(f"{before[a]:>12.3f}" for a in ALTERATIONS))
    print(
        f"\nFindDuplicates by image at the defaults (pHash <= {applied.max_phash_distance}, visual share >= "
        f"{applied.min_visual_share:.2f}): p50 {np.median(seconds) * 1000:.1f} ms, p90 "
        f"{np.percentile(seconds, 90) * 1000:.1f} ms per query through the server ({len(seconds)} queries)"
    )
    unrelated_before, _ = sweep.false_positives(applied.max_phash_distance, applied.min_visual_share)
    print(
        f"unrelated: each stored original asked by its bytes, an answer other than itself: before "
        f"{unrelated_before:.2%}, after {unrelated_after} of {len(photos)} ({unrelated_after / len(photos):.2%})"
    )
    among, flagged_queries = false_before(encoded, list(hard), stored, applied)
    tried = len(hard) * (len(stored) - 1)
    print(
        f"hard negatives ({len(hard)} images, each asked by its bytes among all {len(stored)} stored: {tried} "
        f"pairs tried): false duplicates before {among}"
        f" pairs ({flagged_queries} queries), after {hard_pairs_after} pairs ({false_after} queries)"
    )
    print(
        f"\nthreshold sweep (same rules, in process; FP queries: originals with a false duplicate; "
        f"chosen: widest pHash bound with none, then the lowest visual share within {max_fp:.0%}):"
    )
    print_sweep(sweep, phash_grid, share_grid, chosen)
    print("\nthe different images that look most alike (visual share of the first's bits, pHash bits apart):")
    for first, second, share, distance in closest_different(sweep.originals, 8):
        print(f"  {share:.3f}  {distance:>2}  {first}  ~  {second}")
    stage_costs(config, copies)


def false_before(
    encoded: Encoded, hard: list[str], stored: list[str], thresholds: DuplicateThresholds
) -> tuple[int, int]:
    """(false pairs, queries with a false duplicate) of the hard negatives among all stored: thresholds alone."""
    found = pairs(encoded, hard, stored)
    marks = flagged(found, thresholds.max_phash_distance, thresholds.min_visual_share)
    for i, name in enumerate(found.queries):
        marks[i, stored.index(name)] = False
    return int(marks.sum()), int(marks.any(axis=1).sum())


def false_among(client: Image2SdrClient, hard: dict[str, bytes], thresholds: DuplicateThresholds) -> tuple[int, int]:
    """(queries with a false duplicate, false pairs) among the hard negatives, each asked by its bytes."""
    queries, found_pairs = 0, 0
    for name, data in hard.items():
        others = [d for d in client.find_duplicates(image=data, k=100, thresholds=thresholds) if d.id != name]
        for duplicate in others:
            print(f"  false duplicate: {name} ~ {duplicate.id} ({duplicate.stage}, {duplicate.inliers} inliers)")
        queries += bool(others)
        found_pairs += len(others)
    return queries, found_pairs


def stage_costs(config: Config, copies: dict[str, bytes], sample: int = 200) -> None:
    """The keypoint stage's own cost, in process: a query's keypoints (decode threads), and one verification."""
    names = list(copies)[:: max(1, len(copies) // sample)]
    extract_ms, verify_ms = [], []
    stored = [keypoints.from_blob(keypoints.extract(_decoded(config, copies[n])).to_blob()) for n in names[:16]]
    for name in names:
        image = _decoded(config, copies[name])
        started = time.perf_counter()
        points = keypoints.extract(image)
        points.own  # noqa: B018  # detected when first read: timed here with the grey picture
        extract_ms.append((time.perf_counter() - started) * 1000)
        for theirs in stored:
            if theirs is not None:
                started = time.perf_counter()
                keypoints.verify(points, theirs)
                verify_ms.append((time.perf_counter() - started) * 1000)
    print(
        f"\nkeypoint stage ({len(names)} copies, in process): extract p50 {np.median(extract_ms):.1f} ms "
        f"(grey picture on the decode threads, ORB where first read), "
        f"one verification p50 {np.median(verify_ms):.2f} ms; "
        f"at most {VERIFY} verifications a query, whatever the index size"
    )


def _decoded(config: Config, data: bytes) -> Image.Image:
    """The pixels as the encoder decodes them (a JPEG drafted down to the classifier's side)."""
    return decode_image(data, config.image, 224).image


if __name__ == "__main__":
    sys.exit(main())
