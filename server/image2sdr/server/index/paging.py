"""Page tokens: an engine's own cursor, bound to the digest of the filter it was given out for.

A token is ``<cursor>`` without a filter and ``<cursor>.<digest>`` under one. Continuing
a listing under another filter would skip or repeat items, so a token is only taken
back with the filter it came from; what the cursor says (a label, a (seq, key) pair)
is the engine's business, and the engine refuses a cursor it did not give out.
A token longer than any given out (``MAX_TOKEN_CHARS``) is refused before an engine
reads it: "l" and 4,301 digits once reached Python's int-string limit (a 500).
"""

from __future__ import annotations

from ..errors import InvalidInputError
from .filters import filter_digest
from .values import Filter

__all__ = ["MAX_TOKEN_CHARS", "BadCursorError", "page_cursor", "page_token", "refuse_token"]

# Longer than any token an engine gives out (FAISS "l" + at most 19 digits; Milvus "m" +
# 19 digits + "." + 32 hex digits; then "." + the filter's digest), shorter than anything
# that costs to read.
MAX_TOKEN_CHARS = 256


class BadCursorError(ValueError):
    """Raised by an engine for a cursor it never gave out (the layer above names the token)."""


def page_token(cursor: str, where: Filter | None) -> str:
    """The token continuing a listing at ``cursor`` ("" when there is no more)."""
    if not cursor:
        return ""
    digest = filter_digest(where)
    return f"{cursor}.{digest}" if digest else cursor


def page_cursor(token: object, where: Filter | None) -> str:
    """The engine's cursor inside ``token`` ("" for the first page); refused when bound to another filter."""
    if token == "":
        return ""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise refuse_token(token)
    digest = filter_digest(where)
    if not digest:
        return token
    cursor, dot, bound = token.rpartition(".")
    if not dot or bound != digest or not cursor:
        raise refuse_token(token)
    return cursor


def refuse_token(token: object) -> InvalidInputError:
    return InvalidInputError(
        f"page_token {str(token)[:80]!r} is not one this index gave out for this filter", field="page_token"
    )
