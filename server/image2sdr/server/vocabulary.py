"""Where an SDR turns back into words: the vocabulary SimilarTerms searches.

People decoded image SDRs with Cortical.io's similar_terms; here the
vocabulary is a word list (by default the names of every concept the local
classifier can report: the ImageNet classes and their WordNet ancestors), each
term's SDR comes from the configured term provider (and its cache), and the
nearest terms are found by exact overlap, a popcount over packed bits.
The vocabulary is built on first use (or on one background thread, ``warm``), so
start-up stays fast; its size is known without building it (``len``), so Info is too.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .errors import InvalidInputError
from .sdr import Sdr
from .terms.base import TermSource, normalize_term

__all__ = ["SYNONYMS_FILE", "Vocabulary", "concept_names", "default_terms", "read_terms", "synonym_names"]

logger = logging.getLogger(__name__)

_BATCH = 256  # terms per provider call while building
# WordNet 3.0's lemmas of each synset the hierarchy names (made by server/tools/wordnet_synonyms.py).
SYNONYMS_FILE = Path(__file__).with_name("wordnet_synonyms.json")


def default_terms(models_dir: Path) -> list[str]:
    """Every synset name in the exported ImageNet hierarchy, sorted."""
    doc = json.loads((models_dir / "imagenet_hierarchy.json").read_text(encoding="utf-8"))
    return sorted({synset["name"].lower() for synset in doc["synsets"].values()})


def concept_names(term: str, synonyms: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The stored concept names a (normalised) query term names: itself, then the concepts it is a synonym of.

    "basset hound" names "basset" (the hierarchy's name for that synset); a name
    given exactly (a custom concept merged into items, a Clarifai concept) names itself.
    """
    return tuple(dict.fromkeys((term, *synonyms.get(term, ()))))


@functools.cache
def synonym_names(models_dir: Path) -> Mapping[str, tuple[str, ...]]:
    """Each WordNet lemma of a synset in the hierarchy -> the concept names (as the roll-up stores them) it is one of.

    Read once per models directory (the hierarchy is ~360 kB).  Without the
    exported hierarchy (a service whose concepts come from elsewhere) there is
    nothing to map, and query terms name only themselves.
    """
    path = models_dir / "imagenet_hierarchy.json"
    if not path.is_file():
        return {}
    synsets = json.loads(path.read_text(encoding="utf-8"))["synsets"]
    lemmas = json.loads(SYNONYMS_FILE.read_text(encoding="utf-8"))["synonyms"]
    found: dict[str, dict[str, None]] = {}
    for key, synset in synsets.items():
        name = synset["name"].lower()
        for lemma in lemmas.get(key, ()):
            if lemma != name:
                found.setdefault(lemma, {})[name] = None
    return {lemma: tuple(sorted(names)) for lemma, names in found.items()}


def read_terms(path: Path) -> list[str]:
    """The distinct normalised terms of a word list: one per line, "#" starts a comment line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return sorted({normalize_term(line) for line in lines if line.strip() and not line.startswith("#")})


class Vocabulary:
    def __init__(self, terms: Sequence[str], source: TermSource) -> None:
        self._wanted = list(terms)
        self._source = source
        self._lock = threading.Lock()
        # Built together on first use, or not at all: a failed build (an upstream
        # down) leaves nothing half-made behind, and the next call tries again.
        self._built_once: tuple[list[str], npt.NDArray[np.uint8]] | None = None
        self._warming: threading.Thread | None = None
        self._starting = threading.Lock()  # not _lock: a build holds that one for seconds

    def __len__(self) -> int:
        """How many terms SimilarTerms answers from, known without building anything (Info reports it).

        Once built: the terms the provider gave an SDR.  Before: the terms listed, the
        same number for the local provider, which gives every term an SDR; a remote
        one (Cortical.io) may not know some of them, and the number falls to what it
        knows once the vocabulary is built.
        """
        built = self._built_once
        return len(self._wanted) if built is None else len(built[0])

    @property
    def built(self) -> bool:
        """Whether every term's SDR is at hand (SimilarTerms answers without waiting)."""
        return self._built_once is not None

    def warm(self) -> threading.Thread:
        """Build the vocabulary on one background thread, so the first SimilarTerms need not wait for it.

        For the server to call once it serves (never at import: a build asks the term
        provider for every term, ~4 s for the default 1,800 with the local one).  At most
        one thread: a second call returns the first one's.  A failure is logged, and the
        first SimilarTerms tries again.
        """
        with self._starting:
            if self._warming is None:
                self._warming = threading.Thread(target=self._warm, name="vocabulary", daemon=True)
                self._warming.start()
            return self._warming

    def nearest(self, query: Sdr, k: int) -> list[tuple[str, int]]:
        """The k terms sharing most bits with ``query``: overlap desc, then term asc."""
        if query.size != self._source.size:
            raise InvalidInputError(f"SDR has size {query.size}, the terms have {self._source.size}", field="sdr.size")
        terms, codes = self._built()
        overlaps = np.bitwise_count(codes & query.to_bits()).sum(axis=1, dtype=np.int64)
        # Sort key: overlap descending, then term ascending (terms are stored sorted).
        order = np.lexsort((np.arange(overlaps.size), -overlaps))[:k]
        return [(terms[i], int(overlaps[i])) for i in order]

    def _warm(self) -> None:
        try:
            self._built()
        except Exception:  # an upstream down, or the server closing its providers meanwhile
            logger.warning("vocabulary not built in the background; the first SimilarTerms tries again", exc_info=True)

    def _built(self) -> tuple[list[str], npt.NDArray[np.uint8]]:
        with self._lock:
            if self._built_once is None:
                self._built_once = self._build()
            return self._built_once

    def _build(self) -> tuple[list[str], npt.NDArray[np.uint8]]:
        terms: list[str] = []
        rows: list[npt.NDArray[np.uint8]] = []
        for start in range(0, len(self._wanted), _BATCH):
            chunk = self._wanted[start : start + _BATCH]
            for term, sdr in zip(chunk, self._source.term_sdrs(chunk), strict=True):
                if sdr is not None and sdr.active:
                    terms.append(term)
                    rows.append(sdr.to_bits())
        logger.info("vocabulary ready: %d terms", len(terms))
        if not rows:
            return terms, np.zeros((0, self._source.size // 8), np.uint8)
        return terms, np.stack(rows)
