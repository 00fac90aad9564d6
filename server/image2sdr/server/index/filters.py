"""Filters: what a valid one is, what it means for one item, and the digest a page token is bound to.

Every engine answers a ``Filter`` its own way (SQLite filter tables, Milvus JSON
expressions); what the filter *is* and when it holds is written here once.
"""

from __future__ import annotations

import hashlib
import json

from ..errors import InvalidInputError
from .values import ConceptCondition, Filter, Item, StoredItem

__all__ = [
    "MAX_CONCEPT_NAME_BYTES",
    "MAX_FILTER_CONDITIONS",
    "MAX_FILTER_KEY_BYTES",
    "MAX_FILTER_VALUES",
    "RESERVED_KEY_PREFIX",
    "check_concept_name",
    "check_filter",
    "filter_digest",
    "passes",
]

RESERVED_KEY_PREFIX = "_"  # metadata keys the service keeps for fields of its own; not filterable
MAX_FILTER_KEY_BYTES = 256  # UTF-8 bytes of a key in a filter
MAX_FILTER_VALUES = 1024  # values allowed for one key
MAX_FILTER_CONDITIONS = 32  # metadata and concept conditions in one filter
MAX_CONCEPT_NAME_BYTES = 200  # UTF-8 bytes of a concept name (stored or custom)


def check_filter(where: object, max_value_bytes: int) -> Filter | None:
    """``where`` validated, or None when it filters nothing; InvalidInputError names the bad field.

    The same key twice is refused rather than guessed at (AND of two value sets
    is their intersection, which a caller can write as one condition).
    """
    if where is None:
        return None
    if not isinstance(where, Filter):
        raise InvalidInputError("filter must be a Filter", field="filter")
    if len(where.metadata) + len(where.concepts) > MAX_FILTER_CONDITIONS:
        raise InvalidInputError(f"a filter holds at most {MAX_FILTER_CONDITIONS} conditions", field="filter")
    seen: set[str] = set()
    for number, pair in enumerate(where.metadata):
        field = f"filter.metadata[{number}]"
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise InvalidInputError("a metadata condition is a (key, values) pair", field=field)
        key, values = pair
        _check_key(key, f"{field}.key")
        if key in seen:
            raise InvalidInputError(f"key {key!r} is in the filter twice; give its values once", field=f"{field}.key")
        seen.add(key)
        _check_values(key, values, max_value_bytes, f"{field}.values")
    for number, condition in enumerate(where.concepts):
        _check_condition(condition, f"filter.concepts[{number}]")
    return None if where.empty else where


def _check_condition(condition: object, field: str) -> None:
    if not isinstance(condition, ConceptCondition):
        raise InvalidInputError("a concept condition is a ConceptCondition", field=field)
    check_concept_name(condition.name, f"{field}.name")
    confidence = condition.min_confidence
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 <= confidence <= 1.0:
        raise InvalidInputError(
            f"min_confidence must be in [0, 1], got {confidence!r}", field=f"{field}.min_confidence"
        )


def _check_values(key: str, values: object, max_value_bytes: int, field: str) -> None:
    if not isinstance(values, tuple) or not values:
        raise InvalidInputError(f"key {key!r} needs at least one value", field=field)
    if len(values) > MAX_FILTER_VALUES:
        raise InvalidInputError(f"at most {MAX_FILTER_VALUES} values per key", field=field)
    for value in values:
        if not isinstance(value, str):
            raise InvalidInputError("filter values are strings", field=field)
        if len(value.encode()) > max_value_bytes:
            raise InvalidInputError(
                f"a filter value is longer than any stored one can be ({max_value_bytes} bytes)", field=field
            )


def _check_key(key: object, field: str) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidInputError("a filter key is a non-empty string", field=field)
    if len(key.encode()) > MAX_FILTER_KEY_BYTES:
        raise InvalidInputError(f"a filter key is at most {MAX_FILTER_KEY_BYTES} bytes", field=field)
    if key.startswith(RESERVED_KEY_PREFIX):
        raise InvalidInputError(
            f"keys starting with {RESERVED_KEY_PREFIX!r} are reserved for the service's own fields", field=field
        )


def check_concept_name(name: object, field: str) -> str:
    """A concept name: non-empty, at most ``MAX_CONCEPT_NAME_BYTES``, no control characters."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("a concept name is a non-empty string", field=field)
    if len(name.encode()) > MAX_CONCEPT_NAME_BYTES:
        raise InvalidInputError(f"a concept name is at most {MAX_CONCEPT_NAME_BYTES} bytes", field=field)
    if any(ord(character) < 32 for character in name):
        raise InvalidInputError("a concept name has no control characters", field=field)
    return name


def passes(item: Item | StoredItem, where: Filter | None) -> bool:
    """Whether ``item`` satisfies ``where``: every metadata condition and every concept condition holds."""
    if where is None:
        return True
    for key, values in where.metadata:
        if item.metadata.get(key) not in values:
            return False
    return all(
        any(term == condition.name and score >= condition.min_confidence for term, score in item.concepts)
        for condition in where.concepts
    )


def filter_digest(where: Filter | None) -> str:
    """A short, order-independent digest of a filter ("" for none): what a page token is bound to."""
    if where is None or where.empty:
        return ""
    canonical = json.dumps(
        [
            sorted([key, sorted(values)] for key, values in where.metadata),
            sorted([condition.name, float(condition.min_confidence)] for condition in where.concepts),
        ],
        ensure_ascii=False,
    )
    return hashlib.blake2b(canonical.encode(), digest_size=6).hexdigest()
