"""How well term-SDR overlap follows human word similarity, and what binarising costs.

Prints Spearman rho against the human ratings of WordSim-353 and SimLex-999 for

- dense cosine of the model's vectors (bare word: the reference in MODELS.md),
- a naive FlyHash SDR (each unit sums 16 random inputs of the vector centred on
  the mean of the test words themselves, as in MODELS.md; top-k),
- dense cosine of the vectors the local provider actually projects (quoted term),
- SDR overlap of the local provider, end to end through ``LocalTermSource``.

The last row minus the one before it is the loss from binarising.  Exits with 1
if the local provider misses the goal (WordSim-353 ≥ 0.72, SimLex-999 ≥ 0.46).

Usage: python benchmarks/bench_quality.py [--config FILE] [--data-dir DIR]
The models come from ``models_dir`` of the config (env IMAGE2SDR_MODELS_DIR
overrides it); the data sets from --data-dir, env IMAGE2SDR_BENCH_DATA,
``benchmarks/data`` or ``../shared/data`` beside the repository, first found.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

try:
    from scipy.stats import spearmanr
except ImportError:  # scipy is a dev dependency; spearman() ranks by hand without it
    spearmanr = None

ROOT = Path(__file__).resolve().parent.parent
try:
    import image2sdr.server  # noqa: F401
except ImportError:  # a plain checkout without `pip install -e server`
    sys.path.insert(0, str(ROOT / "server"))

from image2sdr.server.config import load_config  # noqa: E402
from image2sdr.server.terms.embedding import TextEmbedder  # noqa: E402
from image2sdr.server.terms.local import TEMPLATE, LocalTermSource  # noqa: E402

SETS = {"WordSim-353": "wordsim353.tsv", "SimLex-999": "simlex999.txt"}
GOAL = {"WordSim-353": 0.72, "SimLex-999": 0.46}
FLY_FAN_IN = 16  # inputs summed by each FlyHash unit (the MODELS.md baseline)

Pair = tuple[str, str, float]
Matrix = npt.NDArray[np.float64]


def find_data_dir(explicit: Path | None) -> Path:
    candidates = [explicit] if explicit else []
    if os.environ.get("IMAGE2SDR_BENCH_DATA"):
        candidates.append(Path(os.environ["IMAGE2SDR_BENCH_DATA"]))
    candidates += [ROOT / "benchmarks" / "data", ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate is not None and all((candidate / name).is_file() for name in SETS.values()):
            return candidate
    raise SystemExit(f"no directory with {', '.join(SETS.values())} among {[str(c) for c in candidates]}")


def load_pairs(path: Path) -> list[Pair]:
    """Tab-separated word, word, mean rating; '#' lines are comments (gensim's format)."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        first, second, score = line.split("\t")[:3]
        pairs.append((first.strip().lower(), second.strip().lower(), float(score)))
    return pairs


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    if spearmanr is not None:
        return float(spearmanr(x, y).statistic)
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def _ranks(values: Sequence[float]) -> Matrix:
    """1-based ranks, tied values sharing their average rank (as Spearman needs)."""
    _, inverse, counts = np.unique(np.asarray(values, dtype=np.float64), return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return (upper - (counts - 1) / 2.0)[inverse]


def score(pairs: list[Pair], index: dict[str, int], similarity: Callable[[int, int], float]) -> float:
    return spearman([similarity(index[a], index[b]) for a, b, _ in pairs], [s for _, _, s in pairs])


def cosine(vectors: Matrix) -> Callable[[int, int], float]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return lambda a, b: float(unit[a] @ unit[b])


def overlap(codes: npt.NDArray[np.bool_]) -> Callable[[int, int], float]:
    as_float = codes.astype(np.float32)
    return lambda a, b: float(as_float[a] @ as_float[b])


def flyhash(vectors: Matrix, *, seed: int, size: int, active: int) -> npt.NDArray[np.bool_]:
    """Naive FlyHash: unit j sums FLY_FAN_IN random inputs of the mean-centred vector; top-k win."""
    random = np.random.RandomState(seed)
    inputs = vectors.shape[1]
    wiring = np.zeros((inputs, size))
    for unit in range(size):
        wiring[random.choice(inputs, FLY_FAN_IN, replace=False), unit] = 1.0
    activations = (vectors - vectors.mean(axis=0)) @ wiring
    winners = np.argpartition(-activations, active, axis=1)[:, :active]
    codes = np.zeros(activations.shape, dtype=np.bool_)
    np.put_along_axis(codes, winners, True, axis=1)
    return codes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="YAML config (defaults apply without)")
    parser.add_argument("--data-dir", type=Path, help="directory holding the two data sets")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    data_dir = find_data_dir(args.data_dir)
    sets = {name: load_pairs(data_dir / file) for name, file in SETS.items()}
    words = sorted({w for pairs in sets.values() for a, b, _ in pairs for w in (a, b)})
    index = {word: i for i, word in enumerate(words)}

    local = config.terms.local
    started = time.perf_counter()
    embedder = TextEmbedder(config.models_dir, batch_size=local.batch_size, threads=local.threads)
    source = LocalTermSource(config.models_dir, local, config.sdr, embedder=embedder)
    bare = embedder.embed(words).astype(np.float64)
    quoted = embedder.embed([TEMPLATE.format(word) for word in words]).astype(np.float64)
    sdr_codes = np.zeros((len(words), config.sdr.size), dtype=np.bool_)
    for row, sdr in enumerate(source.term_sdrs(words)):
        assert sdr is not None  # the local provider knows every term
        sdr_codes[row, sdr.positions] = True
    fly = {"size": config.sdr.size, "active": config.sdr.active_bits, "seed": local.seed}
    rows: list[tuple[str, Callable[[int, int], float]]] = [
        ("dense cosine, bare word", cosine(bare)),
        ("naive FlyHash SDR, bare word (centred)", overlap(flyhash(bare, **fly))),
        (f"dense cosine, quoted ({TEMPLATE.format('w')})", cosine(quoted)),
        ("naive FlyHash SDR, quoted (centred)", overlap(flyhash(quoted, **fly))),
        ("local SDR overlap (this provider)", overlap(sdr_codes)),
    ]
    results = {label: {name: score(pairs, index, sim) for name, pairs in sets.items()} for label, sim in rows}
    elapsed = time.perf_counter() - started

    width = max(len(label) for label, _ in rows)
    print(f"Spearman rho vs human ratings; {len(words)} words, {elapsed:.1f} s")
    print(f"model {source.model}, version {source.version}")
    print(f"{'':{width}}  " + "  ".join(f"{name:>11}" for name in sets))
    for label, _ in rows:
        print(f"{label:{width}}  " + "  ".join(f"{results[label][name]:11.3f}" for name in sets))
    dense, ours = results[rows[2][0]], results[rows[-1][0]]
    print(f"{'loss from binarising':{width}}  " + "  ".join(f"{dense[n] - ours[n]:11.3f}" for n in sets))
    met = all(ours[name] >= GOAL[name] for name in sets)
    goal = ", ".join(f"{name} >= {GOAL[name]:.2f}" for name in sets)
    print(f"goal for the local SDR ({goal}): {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
