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
- copies: each original altered five ways (``real_images.ALTERATIONS``): half size +
  JPEG quality 30, 85 % centre crop, mirror, brightness x1.3, rotation by 90 degrees.

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

Usage: python benchmarks/bench_dupes.py [--distractors N] [--config FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import sparse

sys.path.insert(0, str(Path(__file__).parent))
import real_images

from image2sdr.client import DuplicateThresholds, EncodeItem, Encoding, Image2SdrClient, ItemError, Sdr
from image2sdr.server.concepts.local import LocalConceptSource
from image2sdr.server.config import Config, HttpConfig, ServiceConfig, load_config
from image2sdr.server.imaging import decode_image
from image2sdr.server.serve import create_server

ALTERATIONS = tuple(real_images.ALTERATIONS)
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
    copies: dict[str, bytes] = field(default_factory=dict)  # altered originals, looked up
    source: dict[str, str] = field(default_factory=dict)  # copy -> its original
    alteration: dict[str, str] = field(default_factory=dict)  # copy -> how it was altered

    @classmethod
    def build(cls, distractors: int) -> Corpus:
        corpus = cls(originals(), real_images.clipart(distractors))
        for name, data in corpus.photos.items():
            for how in ALTERATIONS:
                copy = f"{name}@{how}"
                corpus.copies[copy] = real_images.alter(data, how)
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
        f"{len(corpus.photos)} originals, {len(corpus.drawings)} distractors, {len(corpus.copies)} copies "
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
    return 0


def run(address: str, config: Config, corpus: Corpus, max_fp: float) -> None:
    photos, drawings, copies = corpus.photos, corpus.drawings, corpus.copies
    source, alteration = corpus.source, corpus.alteration
    encoded = Encoded()
    with Image2SdrClient(address, timeout=120, max_message_bytes=64 << 20) as client:
        started = time.perf_counter()
        encode_all(client, photos | drawings, store=True, into=encoded)
        encode_all(client, copies, store=False, into=encoded)
        info = client.info()
        print(
            f"stored {info.index_size} items ({info.index_visual_size} with a visual SDR), encoded the copies: "
            f"{time.perf_counter() - started:.0f} s; visual channel: "
            f"{info.visual.version if info.visual else 'off'}\n"
        )
        stored = list(photos | drawings)

        started = time.perf_counter()
        sweep = Sweep(pairs(encoded, list(copies), stored), pairs(encoded, list(photos), stored), source, alteration)
        phash_grid, share_grid = list(range(0, 22, 2)), [round(0.20 + 0.05 * i, 2) for i in range(15)]
        chosen = choose(sweep, phash_grid, share_grid, max_fp)
        defaults = info.duplicate_thresholds

        vectors = features(config, photos | drawings | copies)
        matrix = np.stack([vectors[name] for name in stored])
        rows: dict[str, dict[str, list[bool]]] = {
            m: {a: [] for a in ALTERATIONS}
            for m in ("semantic SDR", "visual SDR", "pHash alone", "dense cosine", "duplicate detector")
        }
        for copy, data in copies.items():
            original, how = source[copy], alteration[copy]
            rows["semantic SDR"][how].append(similar_hit(client, encoded, copy, original, "semantic"))
            rows["visual SDR"][how].append(similar_hit(client, encoded, copy, original, "visual"))
            rows["pHash alone"][how].append(phash_hit(encoded, stored, copy, original))
            rows["dense cosine"][how].append(dense_hit(vectors, matrix, stored, copy, original))
            rows["duplicate detector"][how].append(detector_hit(client, data, original, chosen))
        false_queries, false_pairs = 0, 0
        for name in photos:
            found = client.find_duplicates(id=name, k=100, thresholds=chosen)
            false_queries += bool(found)
            false_pairs += len(found)
    print(
        f"recall@1 per alteration ({len(photos)} copies each; the original must be the single best answer "
        f"among {len(stored)} stored images); measured in {time.perf_counter() - started:.0f} s"
    )
    print(f"{'':<22}" + "".join(f"{a:>12}" for a in ALTERATIONS))
    for method, hits in rows.items():
        print(f"{method:<22}" + "".join(f"{np.mean(hits[a]):>12.3f}" for a in ALTERATIONS))
    print(
        f"\nduplicate detector at pHash <= {chosen.max_phash_distance}, visual share >= "
        f"{chosen.min_visual_share:.2f} (the server's defaults now: {defaults.max_phash_distance}, "
        f"{defaults.min_visual_share or 0:.2f}):"
    )
    print(
        f"  false duplicates, each stored original asked by id: {false_queries} of {len(photos)} queries "
        f"({false_queries / len(photos):.2%}), {false_pairs} of {len(photos) * (len(stored) - 1)} pairs "
        f"({false_pairs / (len(photos) * (len(stored) - 1)):.4%})"
    )
    print(
        f"\nthreshold sweep (same rules, in process; FP queries: originals with a false duplicate; "
        f"chosen: widest pHash bound with none, then the lowest visual share within {max_fp:.0%}):"
    )
    print_sweep(sweep, phash_grid, share_grid, chosen)
    print("\nthe different images that look most alike (visual share of the first's bits, pHash bits apart):")
    for first, second, share, distance in closest_different(sweep.originals, 8):
        print(f"  {share:.3f}  {distance:>2}  {first}  ~  {second}")


if __name__ == "__main__":
    sys.exit(main())
