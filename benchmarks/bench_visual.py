"""`make bench-visual`: how well the visual SDR follows the classifier's pooled feature.

Images: real photos that registries ship (``real_images.py``: scikit-image,
Debian darknet's samples, MATE's nature wallpapers), four altered copies of each
(half size + JPEG quality 30, 85 % centre crop, mirror, brightness x1.3; a 90 degree
rotation is reported beside them) and openclipart drawings as distractors.  Each
image goes through the service's own decode and classifier (one inference per
batch gives the pooled feature), then through every candidate projection:

- dense Gaussian random projection + k-winners-take-all (the term SDRs' method,
  ``terms/projection.py``), on the raw feature, on the feature centred on the mean
  of the scikit-image photos, and centred and standardised by their spread;
- sparse Gaussian projections (each unit reads 32, 64 or 128 random inputs;
  ``appearance.VisualProjection``, 64 being the service's);
- FlyHash (each unit sums 16 random inputs with weight 1), raw and centred;

and the service's own end to end through ``Encoder`` (``Encoding.visual``, the
configured seed).  Printed per candidate, mean +- sd over seeds: Spearman rho
between SDR overlap and feature cosine over all pairs of images; recall@1 of each
alteration (the original must be the single best match among all originals and
distractors); the mean overlap of a copy with its original and with the best other
image; projection time per image in batches of 16 and alone.  Then the pHash
distances of the copies to their originals (``fingerprints.py``), with the
classifier's JPEG draft and with a full decode.

Usage: python benchmarks/bench_visual.py [--config FILE] [--distractors N] [--seeds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).parent))
import real_images

from image2sdr.server.appearance import FAN_IN, VisualProjection, ranked_winners
from image2sdr.server.concepts.local import RESIZE_SIDE, LocalConceptSource
from image2sdr.server.config import Config, load_config
from image2sdr.server.encoder import Encoder
from image2sdr.server.fingerprints import fingerprint, phash_distance
from image2sdr.server.imaging import decode_image
from image2sdr.server.terms.projection import gaussian_directions

Matrix = npt.NDArray[np.float64]
Codes = npt.NDArray[np.bool_]
FLY_FAN_IN = 16
ALTERATIONS = tuple(real_images.ALTERATIONS)
RHO_DISTRACTORS = 300  # distractors among the images whose pairs the rho is taken over


@dataclass
class Images:
    names: list[str]
    data: list[bytes]
    kind: list[str]  # "original", an alteration's name, or "distractor"
    original: list[int]  # for a copy: the row of its original; else -1


def build_images(distractors: int) -> Images:
    photos = real_images.photos()
    images = Images([], [], [], [])
    rows: dict[str, int] = {}
    for name, data in photos.items():
        rows[name] = len(images.names)
        images.names.append(name)
        images.data.append(data)
        images.kind.append("original")
        images.original.append(-1)
    for name, data in photos.items():
        for alteration in ALTERATIONS:
            images.names.append(f"{name} ({alteration})")
            images.data.append(real_images.alter(data, alteration))
            images.kind.append(alteration)
            images.original.append(rows[name])
    for name, data in real_images.clipart(distractors).items():
        images.names.append(name)
        images.data.append(data)
        images.kind.append("distractor")
        images.original.append(-1)
    return images


def features_of(config: Config, images: Images) -> Matrix:
    source = LocalConceptSource(config.models_dir, config.concepts.local)
    decoded = [decode_image(data, config.image, source.input_side) for data in images.data]
    rows = []
    for feature in source.features(decoded):
        if isinstance(feature, Exception):
            raise feature
        rows.append(feature)
    return np.asarray(rows, dtype=np.float64)


# -- candidates ------------------------------------------------------------------
# Each candidate is built once per seed into a function: features (n, 1280) -> the
# ``active`` winning units per image, strongest first (k-winners-take-all for all).

Winners = Callable[[Matrix], npt.NDArray[np.uint32]]


def unit_rows(vectors: Matrix) -> Matrix:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0.0, norms, 1.0)


def dense_gauss(
    seed: int, inputs: int, size: int, active: int, *, centre: Matrix | None = None, scale: Matrix | None = None
) -> Winners:
    """terms/projection.py's method: i.i.d. Gaussian directions (float64, dense), then k-WTA."""
    directions = gaussian_directions(seed, inputs, size)

    def winners(vectors: Matrix) -> npt.NDArray[np.uint32]:
        if centre is not None:
            vectors = vectors - centre
        if scale is not None:
            vectors = vectors / scale
        return ranked_winners(unit_rows(vectors) @ directions, active)

    return winners


def flyhash(seed: int, inputs: int, size: int, active: int, *, centre: Matrix | None = None) -> Winners:
    """Each unit sums FLY_FAN_IN random inputs (weight 1), then k-WTA."""
    columns = np.random.RandomState(seed).randint(0, inputs, size=(size, FLY_FAN_IN))
    rows = np.repeat(np.arange(size), FLY_FAN_IN)
    wiring = sparse.csr_matrix((np.ones(rows.size), (rows, columns.ravel())), shape=(size, inputs))

    def winners(vectors: Matrix) -> npt.NDArray[np.uint32]:
        if centre is not None:
            vectors = vectors - centre
        return ranked_winners(np.asarray((wiring @ unit_rows(vectors).T).T), active)

    return winners


def sparse_gauss(seed: int, inputs: int, size: int, active: int, *, fan_in: int) -> Winners:
    """appearance.VisualProjection with ``fan_in`` inputs per unit (64: the service's)."""
    return VisualProjection(seed=seed, inputs=inputs, size=size, active=active, fan_in=fan_in).rank


def codes_of(winners: npt.NDArray[np.uint32], size: int) -> Codes:
    codes = np.zeros((winners.shape[0], size), dtype=np.bool_)
    np.put_along_axis(codes, winners.astype(np.intp), True, axis=1)
    return codes


# -- measures ----------------------------------------------------------------------


def overlaps(codes: Codes) -> Matrix:
    as_float = codes.astype(np.float32)
    return (as_float @ as_float.T).astype(np.float64)


def cosines(vectors: Matrix) -> Matrix:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


def rho(similarity: Matrix, reference: Matrix, rows: npt.NDArray[np.intp]) -> float:
    upper = np.triu_indices(rows.size, k=1)
    sub = np.ix_(rows, rows)
    return float(spearmanr(similarity[sub][upper], reference[sub][upper]).statistic)


def recall_at_1(similarity: Matrix, images: Images, alteration: str) -> float:
    """Share of copies whose original scores strictly above every other gallery image."""
    gallery = np.array([i for i, kind in enumerate(images.kind) if kind in ("original", "distractor")])
    hits = []
    for row, kind in enumerate(images.kind):
        if kind == alteration:
            scores = similarity[row, gallery]
            own = similarity[row, images.original[row]]
            others = scores[gallery != images.original[row]]
            hits.append(own > others.max())
    return float(np.mean(hits))


def margins(similarity: Matrix, images: Images) -> tuple[float, float]:
    """Mean similarity of a copy (rotation aside) to its original, and to its best other gallery image."""
    gallery = np.array([i for i, kind in enumerate(images.kind) if kind in ("original", "distractor")])
    own, other = [], []
    for row, kind in enumerate(images.kind):
        if kind in ALTERATIONS and kind != "rotate 90":
            original = images.original[row]
            own.append(similarity[row, original])
            other.append(similarity[row, gallery[gallery != original]].max())
    return float(np.mean(own)), float(np.mean(other))


@dataclass
class Row:
    label: str
    rho: list[float]
    recall: dict[str, list[float]]
    own: list[float]
    other: list[float]
    us_batched: float = float("nan")
    us_single: float = float("nan")


def measure(label: str, similarity: Matrix, cosine: Matrix, images: Images, rho_rows: npt.NDArray[np.intp]) -> Row:
    own, other = margins(similarity, images)
    return Row(
        label,
        [rho(similarity, cosine, rho_rows)],
        {alteration: [recall_at_1(similarity, images, alteration)] for alteration in ALTERATIONS},
        [own],
        [other],
    )


def merge_rows(rows: list[Row]) -> Row:
    first = rows[0]
    return Row(
        first.label,
        [r.rho[0] for r in rows],
        {a: [r.recall[a][0] for r in rows] for a in ALTERATIONS},
        [r.own[0] for r in rows],
        [r.other[0] for r in rows],
        statistics.median(r.us_batched for r in rows),
        statistics.median(r.us_single for r in rows),
    )


def spread(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def print_table(rows: list[Row]) -> None:
    header = ["projection", "rho (overlap vs cosine)"] + [f"R@1 {a}" for a in ALTERATIONS] + ["copy / best other"]
    print(" | ".join(header) + " | µs/image, batch 16 / alone")
    for row in rows:
        cells = [row.label, spread(row.rho)] + [spread(row.recall[a], 2) for a in ALTERATIONS]
        cells.append(f"{statistics.mean(row.own):.3g} / {statistics.mean(row.other):.3g}")
        cells.append("" if np.isnan(row.us_batched) else f"{row.us_batched:.0f} / {row.us_single:.0f}")
        print(" | ".join(cells))


def timed(winners: Winners, vectors: Matrix) -> tuple[float, float]:
    """µs per image for the projection + k-WTA: in batches of 16, and one image per call (median of 64)."""
    winners(vectors[:16])  # warm caches
    started = time.perf_counter()
    for first in range(0, vectors.shape[0], 16):
        winners(vectors[first : first + 16])
    batched = (time.perf_counter() - started) * 1e6 / vectors.shape[0]
    single = []
    for row in range(64):
        started = time.perf_counter()
        winners(vectors[row : row + 1])
        single.append((time.perf_counter() - started) * 1e6)
    return batched, statistics.median(single)


Candidate = Callable[[int], Winners]  # seed -> projection


def candidates(mean: Matrix, std: Matrix, inputs: int, size: int, active: int) -> dict[str, Candidate]:
    shape = (inputs, size, active)
    return {
        "dense Gaussian + k-WTA (terms' method)": lambda seed: dense_gauss(seed, *shape),
        "... on centred features": lambda seed: dense_gauss(seed, *shape, centre=mean),
        "... centred and standardised": lambda seed: dense_gauss(seed, *shape, centre=mean, scale=std),
        "sparse Gaussian, 32 inputs/unit": lambda seed: sparse_gauss(seed, *shape, fan_in=32),
        f"sparse Gaussian, {FAN_IN} inputs/unit (chosen)": lambda seed: sparse_gauss(seed, *shape, fan_in=FAN_IN),
        "sparse Gaussian, 128 inputs/unit": lambda seed: sparse_gauss(seed, *shape, fan_in=128),
        f"FlyHash, {FLY_FAN_IN} inputs/unit": lambda seed: flyhash(seed, *shape),
        "... on centred features ": lambda seed: flyhash(seed, *shape, centre=mean),
    }


def phash_figures(config: Config, images: Images) -> None:
    """pHash distance of each copy to its original, with the classifier's draft and with a full decode."""
    for draft in (RESIZE_SIDE, None):
        hashes = [fingerprint(d, decode_image(d, config.image, draft).image).phash for d in images.data]
        label = f"draft to {draft} px" if draft else "full decode"
        cells = []
        for alteration in ALTERATIONS:
            rows = [r for r, kind in enumerate(images.kind) if kind == alteration]
            distances = [phash_distance(hashes[r], hashes[images.original[r]]) for r in rows]
            cells.append(f"{alteration} median {statistics.median(distances):.0f} max {max(distances)}")
        print(f"  {label:<18} " + "; ".join(cells))
        originals = [r for r, kind in enumerate(images.kind) if kind in ("original", "distractor")]
        pairs = [phash_distance(hashes[a], hashes[b]) for i, a in enumerate(originals) for b in originals[i + 1 :]]
        print(f"  {'':<18} different images: min {min(pairs)}, 1st percentile {np.percentile(pairs, 1):.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.add_argument("--distractors", type=int, default=1000, help="openclipart drawings in the gallery")
    parser.add_argument("--seeds", type=int, default=4, help="projection seeds per candidate (0..N-1)")
    args = parser.parse_args()
    config = load_config(args.config)
    size, active = config.sdr.size, config.sdr.active_bits

    started = time.perf_counter()
    images = build_images(args.distractors)
    vectors = features_of(config, images)
    originals = sum(kind == "original" for kind in images.kind)
    print(f"{originals} photos x {len(ALTERATIONS)} alterations, {args.distractors} distractors;")
    print(f"features in {time.perf_counter() - started:.1f} s; {size} bits, {active} active\n")

    rho_rows = np.array([i for i, kind in enumerate(images.kind) if kind != "distractor"], dtype=np.intp)
    rho_rows = np.concatenate([rho_rows, np.flatnonzero(np.array(images.kind) == "distractor")[:RHO_DISTRACTORS]])
    cosine = cosines(vectors)
    skimage_rows = [
        i for i, name in enumerate(images.names) if name.startswith("skimage/") and images.kind[i] == "original"
    ]
    stats_mean = vectors[skimage_rows].mean(axis=0)
    stats_std = vectors[skimage_rows].std(axis=0) + 1e-3

    rows = [
        measure("dense cosine, raw feature (anchor)", cosine, cosine, images, rho_rows),
        measure("dense cosine, centred feature", cosines(vectors - stats_mean), cosine, images, rho_rows),
    ]
    for label, make in candidates(stats_mean, stats_std, vectors.shape[1], size, active).items():
        per_seed = []
        for seed in range(args.seeds):
            winners = make(seed)
            row = measure(label, overlaps(codes_of(winners(vectors), size)), cosine, images, rho_rows)
            row.us_batched, row.us_single = timed(winners, vectors)
            per_seed.append(row)
        rows.append(merge_rows(per_seed))

    with tempfile.TemporaryDirectory() as scratch:
        encoder = Encoder.from_config(config.model_copy(update={"data_dir": Path(scratch)}))
        assert encoder.appearance is not None, "visual.enabled is off in this config"
        codes = np.zeros((len(images.data), size), dtype=np.bool_)
        for row, result in enumerate(encoder.encode_batch(images.data)):
            if isinstance(result, Exception) or result.visual is None:
                raise SystemExit(f"{images.names[row]}: {result}")
            codes[row, result.visual.positions] = True
        version = encoder.appearance.version
        encoder.close()
    rows.append(measure("this service (Encoding.visual)", overlaps(codes), cosine, images, rho_rows))

    print(
        f"rho over {rho_rows.size} images ({rho_rows.size * (rho_rows.size - 1) // 2} pairs); R@1 over"
        f" {originals} copies each, gallery {originals + args.distractors}; seeds 0..{args.seeds - 1}"
    )
    print_table(rows)
    print(f"\nvisual version: {version}")
    print("\npHash (fingerprints.py), distance of each copy to its original:")
    phash_figures(config, images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
