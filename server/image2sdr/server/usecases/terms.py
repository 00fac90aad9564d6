"""Words and SDRs: the SDR of a term (EncodeText), and the terms nearest an SDR (SimilarTerms)."""

from __future__ import annotations

from ..errors import InvalidInputError
from ..sdr import Sdr
from ..terms.base import SimilarTermsSource, TermSource, normalize_term
from .parts import Parts, k_value

__all__ = ["encode_text", "similar_terms", "similar_terms_source"]


def similar_terms_source(terms: TermSource) -> SimilarTermsSource | None:
    """The term provider, when it can list a retina's nearest terms itself (the term cache forwards this)."""
    return terms if isinstance(terms, SimilarTermsSource) else None


def encode_text(parts: Parts, text: str) -> tuple[str, Sdr]:
    """The normalised term and its SDR; a term the provider does not know is the caller's error."""
    term = normalize_term(text)
    sdr = parts.encoder.term_sdr(term)
    if sdr is None:
        raise InvalidInputError(
            f"the {parts.encoder.term_source.name} term provider does not know {term!r}", field="text"
        )
    return term, sdr


def similar_terms(parts: Parts, sdr: Sdr | None, k: int) -> list[tuple[str, int]]:
    """(term, overlap) nearest ``sdr``, most shared first."""
    if sdr is None:
        raise InvalidInputError("sdr is required", field="sdr")
    count = k_value(k, parts.config.index.max_k)
    remote = None if parts.config.service.vocabulary_file else similar_terms_source(parts.encoder.term_source)
    # Cortical.io answers from its whole retina, unless a word list is configured.
    return remote.similar_terms(sdr, count) if remote is not None else parts.vocabulary.nearest(sdr, count)
