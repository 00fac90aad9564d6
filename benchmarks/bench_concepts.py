"""`make bench-concepts`: custom concepts taught by a few examples, on held-out images.

PLACEHOLDER (the docstring is written once the figures are in).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).parent))
import real_images

from image2sdr.server.concepts.local import LocalConceptSource
from image2sdr.server.config import Config, load_config
from image2sdr.server.encoder import Encoder, Outcome
from image2sdr.server.sdr import Sdr

CLIPART_ROOT = "usr/share/openclipart/png"
# Concepts people could teach, each an openclipart folder (its subfolders too): some the
# classifier has words for (clocks, fruit, birds), some it has none for (flags, playing
# cards, smilies, road signs, weather symbols).
CONCEPTS: dict[str, tuple[str, ...]] = {
    "clock": ("signs_and_symbols/clocks",),
    "fruit": ("food/fruit",),
    "dessert": ("food/desserts",),
    "mammal": ("animals/mammals",),
    "bird": ("animals/birds",),
    "bug": ("animals/bugs",),
    "road vehicle": ("transportation/vehicles",),
    "boat": ("transportation/boating",),
    "music": ("recreation/music",),
    "house": ("buildings/homes",),
    "flower": ("plants/flowers",),
    "flag": ("signs_and_symbols/flags",),
    "road sign": ("transportation/roadsigns",),
    "smiley": ("people/smilies",),
    "playing card": ("recreation/games/cards",),
    "weather symbol": ("signs_and_symbols/weather",),
    "hat": ("people/clothing/hats",),
    "weapon": ("tools/weapons",),
}
OTHERS = 1500  # drawings outside every concept folder, spread over the sorted list
ENCODE_BATCH = 16


@dataclass
class Corpus:
    """Every image of the run: its name, its labels, its group, and what the encoder made of it."""

    names: list[str]
    labels: list[frozenset[str]]  # concepts the image belongs to (empty: an "other")
    unsure: list[frozenset[str]]  # concepts it may or may not show (filed loose in a concept's parent folder)
    groups: list[str]  # variants of one drawing (colour / _bw, _01 / _02) share a group
    semantic: list[Sdr]
    visual: list[Sdr]
    features: npt.NDArray[np.float32]  # (n, 1280) the classifier's pooled feature


# -- the images ------------------------------------------------------------------------


def _group(path: str) -> str:
    """Variants of one drawing share a group: they are never split between examples and held-out images."""
    stem = Path(path).stem.lower()
    return re.sub(r"([_\-. ]*(bw|r|\d+))+$", "", stem) or stem


def gather() -> tuple[list[str], list[bytes], list[frozenset[str]], list[frozenset[str]], list[str]]:
    """The drawings of every concept folder, OTHERS drawings outside them, and the real photos (as others).

    The package ships one drawing under several folders: files are told apart by content,
    and a drawing takes the labels of every folder it sits in.  A drawing filed loose in
    the parent of a concept's folder (``food/`` for ``food/fruit``) may well show the
    concept: it is *unsure* for that concept, neither a positive nor an other there.
    Drawings the service would refuse by default (over 50 MP, a side under 32 px) are passed over.
    """
    paths = real_images.debian_files("openclipart-png", f"{CLIPART_ROOT}/**/*.png")
    root = real_images.cache_dir() / "openclipart-png" / CLIPART_ROOT
    by_digest: dict[str, tuple[Path, set[str], set[str]]] = {}
    for path in paths:
        relative = path.relative_to(root).as_posix()
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        _, labels, unsure = by_digest.setdefault(digest, (path, set(), set()))
        labels.update(name for name, folders in CONCEPTS.items() if any(relative.startswith(f + "/") for f in folders))
        folder = relative.rpartition("/")[0]
        unsure.update(name for name, folders in CONCEPTS.items() if any(folder == f.rpartition("/")[0] for f in folders))
    labelled = [entry for entry in by_digest.values() if entry[1] and _usable(entry[0])]
    others = [entry for entry in by_digest.values() if not entry[1] and _usable(entry[0])]
    others.sort(key=lambda entry: entry[0].as_posix())
    others = others[:: max(1, len(others) // OTHERS)][:OTHERS]
    chosen = sorted(labelled + others, key=lambda entry: entry[0].as_posix())
    names = [path.relative_to(root).as_posix() for path, _, _ in chosen]
    data = [path.read_bytes() for path, _, _ in chosen]
    labels = [frozenset(found) for _, found, _ in chosen]
    unsure = [frozenset(maybe - found) for _, found, maybe in chosen]
    groups = [_group(name) for name in names]
    for name, photo in real_images.photos().items():
        names.append(name)
        data.append(photo)
        labels.append(frozenset())
        unsure.append(frozenset())
        groups.append(name)
    return names, data, labels, unsure, groups


def _usable(path: Path) -> bool:
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as image:
        width, height = image.size
    return width * height <= real_images.MAX_PIXELS and min(width, height) >= real_images.MIN_SIDE


# -- encoding, cached on disk ------------------------------------------------------------


def _cache_key(config: Config, encoder: Encoder, names: Sequence[str]) -> str:
    manifest = (config.models_dir / "manifest.json").read_text(encoding="utf-8")
    parts = [
        manifest,
        config.sdr.model_dump_json(),
        config.concepts.model_dump_json(exclude={"custom"}),
        encoder.appearance.version if encoder.appearance is not None else "",
        "\n".join(names),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def encode_all(config: Config, names: list[str], data: list[bytes]) -> tuple[list[Sdr], list[Sdr], np.ndarray]:
    """Semantic SDR, visual SDR and pooled feature of every image, from one classifier run (cached)."""
    with tempfile.TemporaryDirectory() as scratch:
        encoder = Encoder.from_config(config.model_copy(update={"data_dir": Path(scratch)}))
        try:
            path = real_images.cache_dir() / f"concepts-{_cache_key(config, encoder, names)}.npz"
            if path.is_file():
                return _load(path, config.sdr.size)
            semantic, visual, features = _encode(encoder, data)
        finally:
            encoder.close()
    _save(path, semantic, visual, features)
    return semantic, visual, features


def _encode(encoder: Encoder, data: list[bytes]) -> tuple[list[Sdr], list[Sdr], np.ndarray]:
    source = encoder.concept_source
    if not isinstance(source, LocalConceptSource):
        raise SystemExit("the benchmark needs the local concept provider (its pooled feature is the baseline)")
    captured: list[np.ndarray] = []
    observe = source.observe

    def recording(images, max_concepts, min_confidence):  # type: ignore[no-untyped-def]
        # The encoder reads concepts and the pooled feature from one inference: keep the feature too.
        observed = observe(images, max_concepts, min_confidence)
        for outcome in observed:
            if isinstance(outcome, Exception):
                raise outcome
            captured.append(outcome.features)
        return observed

    source.observe = recording  # type: ignore[method-assign]
    semantic: list[Sdr] = []
    visual: list[Sdr] = []
    started = time.perf_counter()
    for first in range(0, len(data), ENCODE_BATCH):
        outcomes: list[Outcome] = encoder.encode_batch(data[first : first + ENCODE_BATCH])
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
            if outcome.visual is None:
                raise SystemExit("the benchmark needs visual SDRs (visual.enabled: true)")
            semantic.append(outcome.sdr)
            visual.append(outcome.visual)
        if first // ENCODE_BATCH % 20 == 0:
            print(f"  encoded {len(semantic)}/{len(data)} in {time.perf_counter() - started:.0f} s", flush=True)
    return semantic, visual, np.asarray(captured, dtype=np.float32)


def _save(path: Path, semantic: list[Sdr], visual: list[Sdr], features: np.ndarray) -> None:
    arrays: dict[str, np.ndarray] = {"features": features}
    for label, sdrs in (("semantic", semantic), ("visual", visual)):
        arrays[f"{label}_positions"] = np.concatenate([sdr.positions for sdr in sdrs])
        arrays[f"{label}_counts"] = np.array([sdr.active for sdr in sdrs], dtype=np.int64)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as handle:
        np.savez(handle, **arrays)
    Path(handle.name).replace(path)


def _load(path: Path, size: int) -> tuple[list[Sdr], list[Sdr], np.ndarray]:
    with np.load(path) as arrays:
        found = []
        for label in ("semantic", "visual"):
            positions, counts = arrays[f"{label}_positions"], arrays[f"{label}_counts"]
            parts = np.split(positions, np.cumsum(counts)[:-1])
            found.append([Sdr.trusted(part, size) for part in parts])
        return found[0], found[1], arrays["features"]


def corpus(config: Config) -> Corpus:
    names, data, labels, unsure, groups = gather()
    labelled = sum(1 for found in labels if found)
    print(f"{len(names)} images: {labelled} in concept folders, {len(names) - labelled} others")
    semantic, visual, features = encode_all(config, names, data)
    return Corpus(names, labels, unsure, groups, semantic, visual, features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args()
    config = load_config(args.config)
    found = corpus(config)
    for name in CONCEPTS:
        members = [i for i, labels in enumerate(found.labels) if name in labels]
        unsure = sum(1 for maybe in found.unsure if name in maybe)
        print(f"{name}: {len(members)} images, {len({found.groups[i] for i in members})} groups, {unsure} unsure")


if __name__ == "__main__":
    main()
