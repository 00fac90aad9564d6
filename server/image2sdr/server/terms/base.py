"""Where a term becomes an SDR: the interface every term-SDR provider implements.

A provider turns terms or phrases into SDRs of one fixed size.  It may not know
a term (a remote retina lacks the word): then it answers ``None`` for that term
with no exception, and the encoder skips the concept with a reason, never
merging an empty SDR.  Transport failures raise ``UpstreamError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..errors import InvalidTermError
from ..sdr import Sdr

__all__ = ["MAX_TERM_CHARS", "SimilarTermsSource", "TermSource", "normalize_term"]

MAX_TERM_CHARS = 200  # longer than any concept name or phrase a caller means as a term


def normalize_term(term: str, field: str = "term") -> str:
    """The form a term is looked up and cached under: "  Coffee\tMug " -> "coffee mug".

    ``field`` names the request field in the error (BadRequest field violation).
    """
    if not isinstance(term, str):
        raise InvalidTermError(f"a term must be a string, got {type(term).__name__}", field=field)
    normal = " ".join(term.split()).lower()
    if not normal:
        raise InvalidTermError("term is empty", field=field)
    if len(normal) > MAX_TERM_CHARS:
        raise InvalidTermError(f"term is {len(normal)} characters, the limit is {MAX_TERM_CHARS}", field=field)
    return normal


@runtime_checkable
class TermSource(Protocol):
    @property
    def name(self) -> str:
        """Provider name, e.g. "local" or "cortical"."""

    @property
    def model(self) -> str:
        """The model or retina, e.g. "all-MiniLM-L6-v2" or "en_associative"."""

    @property
    def version(self) -> str:
        """Changes whenever the same term could map to a different SDR (cache key part)."""

    @property
    def size(self) -> int:
        """Bits in every SDR this provider returns."""

    def term_sdrs(self, terms: Sequence[str]) -> list[Sdr | None]:
        """One SDR per term, in order; ``None`` where the provider does not know a term."""


@runtime_checkable
class SimilarTermsSource(Protocol):
    """A term provider that can also decode an SDR back into its nearest terms itself."""

    def similar_terms(self, sdr: Sdr, k: int) -> list[tuple[str, int]]:
        """The k nearest terms with their overlap with ``sdr``: overlap descending, then term ascending."""
