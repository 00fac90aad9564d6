"""The embedded term-SDR provider, with the real exported model (no mocks).

``models_dir`` comes from conftest (IMAGE2SDR_MODELS_DIR or ./models).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from image2sdr.server.config import LocalTermsConfig, SdrConfig
from image2sdr.server.errors import InvalidTermError, ModelsMissingError
from image2sdr.server.sdr import Sdr
from image2sdr.server.terms.base import TermSource, normalize_term
from image2sdr.server.terms.embedding import TextEmbedder
from image2sdr.server.terms.local import LocalTermSource
from image2sdr.server.terms.projection import SdrProjection, k_winners

ROOT = Path(__file__).resolve().parents[2]  # the repository
TERMS = ["cat", "kitten", "carburetor", "coffee mug", "hard hat", "helmet", "banana", "no person"]


@pytest.fixture(scope="module")
def embedder(models_dir: Path) -> TextEmbedder:
    return TextEmbedder(models_dir, batch_size=64, threads=1)


@pytest.fixture(scope="module")
def source(models_dir: Path, embedder: TextEmbedder) -> LocalTermSource:
    return LocalTermSource(models_dir, LocalTermsConfig(threads=1), SdrConfig(), embedder=embedder)


def _sdrs(source: LocalTermSource, terms: list[str]) -> dict[str, Sdr]:
    result = source.term_sdrs(terms)
    assert all(sdr is not None for sdr in result)
    return {term: sdr for term, sdr in zip(terms, result, strict=True) if sdr is not None}


def test_is_a_term_source(source: LocalTermSource) -> None:
    assert isinstance(source, TermSource)
    assert (source.name, source.model, source.size) == ("local", "all-MiniLM-L6-v2", 16384)


def test_every_sdr_has_exact_size_and_sparsity(source: LocalTermSource) -> None:
    for term, sdr in _sdrs(source, TERMS).items():
        assert sdr.size == 16384 and sdr.dimensions == (128, 128), term
        assert sdr.active == 328 == round(16384 * 0.02), term
        assert sdr.positions.dtype == np.uint32
        assert (np.diff(sdr.positions.astype(np.int64)) > 0).all(), term  # sorted and unique
        assert int(sdr.positions[-1]) < 16384
        assert Sdr.from_positions(sdr.positions, 16384) == sdr  # passes the caller-side checks


_CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from image2sdr.server.config import LocalTermsConfig, SdrConfig
from image2sdr.server.terms.local import LocalTermSource
config = LocalTermsConfig(threads=int(sys.argv[3]), batch_size=int(sys.argv[4]))
source = LocalTermSource(Path(sys.argv[2]), config, SdrConfig())
terms = json.loads(sys.argv[5])
print(json.dumps({"version": source.version,
                  "sdrs": [sdr.positions.tolist() for sdr in source.term_sdrs(terms)]}))
"""


def test_same_term_same_sdr_in_separate_processes(source: LocalTermSource, models_dir: Path) -> None:
    terms = json.dumps(TERMS)
    outputs = []
    # Different thread counts and batch sizes, as two differently configured machines would use.
    for threads, batch_size in ((1, 64), (2, 3)):
        completed = subprocess.run(
            [sys.executable, "-c", _CHILD, str(ROOT / "server"), str(models_dir), str(threads), str(batch_size), terms],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        outputs.append(json.loads(completed.stdout))
    assert outputs[0] == outputs[1]
    assert outputs[0]["version"] == source.version
    here = [sdr.positions.tolist() for sdr in _sdrs(source, TERMS).values()]
    assert outputs[0]["sdrs"] == here


def test_related_terms_share_far_more_bits_than_unrelated(source: LocalTermSource) -> None:
    sdrs = _sdrs(source, ["cat", "kitten", "carburetor", "dog", "puppy", "spreadsheet"])
    assert sdrs["cat"].overlap(sdrs["kitten"]) > 3 * sdrs["cat"].overlap(sdrs["carburetor"])
    assert sdrs["dog"].overlap(sdrs["puppy"]) > 3 * sdrs["dog"].overlap(sdrs["spreadsheet"])


def test_multi_word_phrases(source: LocalTermSource) -> None:
    sdrs = _sdrs(source, ["coffee mug", "cup", "giraffe", "hard hat", "helmet", "banana"])
    assert sdrs["coffee mug"].overlap(sdrs["cup"]) > 2 * sdrs["coffee mug"].overlap(sdrs["giraffe"])
    assert sdrs["hard hat"].overlap(sdrs["helmet"]) > sdrs["hard hat"].overlap(sdrs["banana"])
    # The phrase is embedded as a whole, not as one of its words.
    assert sdrs["coffee mug"] != source.term_sdrs(["mug"])[0]


def test_terms_are_normalised(source: LocalTermSource) -> None:
    assert normalize_term("  Coffee \t\n MUG ") == "coffee mug"
    plain, messy = source.term_sdrs(["coffee mug", "  Coffee \t MUG "])
    assert plain == messy


@pytest.mark.parametrize("bad", ["", "   \t\n", "x" * 201, "a " * 150, None, 42])
def test_bad_terms_raise_invalid_term_error(source: LocalTermSource, bad: object) -> None:
    with pytest.raises(InvalidTermError) as caught:
        source.term_sdrs(["cat", bad])  # type: ignore[list-item]
    assert caught.value.field == "terms"


def test_longest_allowed_term_works(source: LocalTermSource) -> None:
    (sdr,) = source.term_sdrs(["y" * 200])
    assert sdr is not None and sdr.active == 328


def test_batch_result_equals_one_by_one(source: LocalTermSource) -> None:
    terms = [*TERMS, "cat", "tabby cat", "espresso", "mountain bike", "a very long phrase about a red umbrella"]
    batched = source.term_sdrs(terms)
    single = [source.term_sdrs([term])[0] for term in terms]
    assert batched == single
    assert source.term_sdrs([]) == []


def test_version_names_what_decides_the_bits(models_dir: Path, embedder: TextEmbedder) -> None:
    base = LocalTermSource(models_dir, LocalTermsConfig(seed=1), SdrConfig(), embedder=embedder)
    reseeded = LocalTermSource(models_dir, LocalTermsConfig(seed=2), SdrConfig(), embedder=embedder)
    sparser = LocalTermSource(models_dir, LocalTermsConfig(seed=1), SdrConfig(sparsity=0.01), embedder=embedder)
    assert len({base.version, reseeded.version, sparser.version}) == 3
    assert embedder.fingerprint in base.version
    assert base.term_sdrs(["cat"]) != reseeded.term_sdrs(["cat"])
    (sparse,) = sparser.term_sdrs(["cat"])
    assert sparse is not None and sparse.active == 164


def test_missing_models_name_make_models(tmp_path: Path) -> None:
    with pytest.raises(ModelsMissingError, match="make models"):
        TextEmbedder(tmp_path)


def test_k_winners_breaks_ties_by_index_and_ignores_last_bits() -> None:
    flat = np.zeros((1, 100))
    assert k_winners(flat, 5).tolist() == [[0, 1, 2, 3, 4]]
    activations = np.random.RandomState(0).standard_normal((4, 1000))
    nudged = activations * (1.0 + 1e-13)
    assert np.array_equal(k_winners(activations, 20), k_winners(nudged, 20))
    expected = np.sort(np.argsort(-activations, axis=1, kind="stable")[:, :20], axis=1)
    assert np.array_equal(k_winners(activations, 20), expected)


def test_projection_is_fixed_by_its_seed() -> None:
    vectors = np.random.RandomState(1).standard_normal((3, 8))
    first = SdrProjection(seed=7, inputs=8, size=256, active=10).project(vectors)
    again = SdrProjection(seed=7, inputs=8, size=256, active=10).project(vectors)
    other = SdrProjection(seed=8, inputs=8, size=256, active=10).project(vectors)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    # Scale does not matter (k-WTA sees only the direction), so neither does the model's norm.
    assert np.array_equal(first, SdrProjection(seed=7, inputs=8, size=256, active=10).project(vectors * 3.0))
