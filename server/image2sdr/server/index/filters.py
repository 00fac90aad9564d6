"""Filters: what a valid one is, what it means for one item, and the digest a page token is bound to.

Every engine answers a ``Filter`` its own way (SQLite filter tables, Milvus JSON
expressions); what the filter *is* and when it holds is written here once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..config import IndexConfig
from ..errors import InvalidInputError
from .validation import check_name_characters
from .values import ConceptCondition, Filter, Item, StoredItem

__all__ = [
    "DEFAULT_FILTER_LIMITS",
    "MAX_CONCEPT_NAME_BYTES",
    "MAX_FILTER_CONDITIONS",
    "MAX_FILTER_KEY_BYTES",
    "MAX_FILTER_VALUES",
    "RESERVED_KEY_PREFIX",
    "FilterLimits",
    "check_concept_name",
    "check_filter",
    "filter_digest",
    "passes",
]

RESERVED_KEY_PREFIX = "_"  # metadata keys the service keeps for fields of its own; not filterable
MAX_FILTER_KEY_BYTES = 256  # UTF-8 bytes of a key in a filter
MAX_FILTER_VALUES = 1024  # values allowed for one key (index.max_filter_values_per_key's default)
MAX_FILTER_CONDITIONS = 32  # metadata and concept conditions in one filter (index.max_filter_conditions's default)
MAX_CONCEPT_NAME_BYTES = 200  # UTF-8 bytes of a concept name (stored or custom)


@dataclass(frozen=True)
class FilterLimits:
    """What one filter may hold (``index.max_filter_*``): every value costs a lookup, so all are counted first."""

    conditions: int = MAX_FILTER_CONDITIONS  # metadata and concept conditions
    values_per_key: int = MAX_FILTER_VALUES
    values: int = 4096  # over all keys
    bytes: int = 65_536  # UTF-8 bytes of every key, value and concept name

    @classmethod
    def of(cls, config: IndexConfig) -> FilterLimits:
        return cls(
            config.max_filter_conditions,
            config.max_filter_values_per_key,
            config.max_filter_values,
            config.max_filter_bytes,
        )


DEFAULT_FILTER_LIMITS = FilterLimits()


def check_filter(where: object, max_value_bytes: int, limits: FilterLimits = DEFAULT_FILTER_LIMITS) -> Filter | None:
    """``where`` validated, or None when it filters nothing; InvalidInputError names the bad field.

    The counts are checked first, in one pass that reads no value twice, so a filter
    over the limits costs microseconds. The same key twice is refused rather than
    guessed at (AND of two value sets is their intersection, which a caller can
    write as one condition).
    """
    if where is None:
        return None
    if not isinstance(where, Filter):
        raise InvalidInputError("filter must be a Filter", field="filter")
    _check_counts(where, limits)
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
        _check_values(key, values, max_value_bytes, f"{field}.values", limits.values_per_key)
    for number, condition in enumerate(where.concepts):
        _check_condition(condition, f"filter.concepts[{number}]")
    return None if where.empty else where


def _check_counts(where: Filter, limits: FilterLimits) -> None:
    """Conditions, values and bytes within ``limits``, counted before anything is looked up."""
    conditions = len(where.metadata) + len(where.concepts)
    if conditions > limits.conditions:
        raise InvalidInputError(
            f"the filter has {conditions} conditions, index.max_filter_conditions allows {limits.conditions}",
            field="filter",
        )
    pairs = [pair for pair in where.metadata if isinstance(pair, tuple) and len(pair) == 2]
    values = sum(len(given) for _, given in pairs if isinstance(given, tuple))
    if values > limits.values:
        raise InvalidInputError(
            f"the filter has {values} values, index.max_filter_values allows {limits.values}", field="filter"
        )
    texts = [key for key, _ in pairs] + [value for _, given in pairs if isinstance(given, tuple) for value in given]
    texts += [condition.name for condition in where.concepts if isinstance(condition, ConceptCondition)]
    size = sum(len(text.encode()) for text in texts if isinstance(text, str))
    if size > limits.bytes:
        raise InvalidInputError(
            f"the filter is {size} bytes of keys, values and names, index.max_filter_bytes allows {limits.bytes}",
            field="filter",
        )


def _check_condition(condition: object, field: str) -> None:
    if not isinstance(condition, ConceptCondition):
        raise InvalidInputError("a concept condition is a ConceptCondition", field=field)
    check_concept_name(condition.name, f"{field}.name")
    confidence = condition.min_confidence
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 <= confidence <= 1.0:
        raise InvalidInputError(
            f"min_confidence must be in [0, 1], got {confidence!r}", field=f"{field}.min_confidence"
        )


def _check_values(key: str, values: object, max_value_bytes: int, field: str, limit: int) -> None:
    if not isinstance(values, tuple) or not values:
        raise InvalidInputError(f"key {key!r} needs at least one value", field=field)
    if len(values) > limit:
        raise InvalidInputError(
            f"{len(values)} values for one key, index.max_filter_values_per_key allows {limit}", field=field
        )
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
    check_name_characters(key, field)


def check_concept_name(name: object, field: str) -> str:
    """A concept name: non-empty, at most ``MAX_CONCEPT_NAME_BYTES``, no control or format characters."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("a concept name is a non-empty string", field=field)
    if len(name.encode()) > MAX_CONCEPT_NAME_BYTES:
        raise InvalidInputError(f"a concept name is at most {MAX_CONCEPT_NAME_BYTES} bytes", field=field)
    return check_name_characters(name, field)


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
