"""Checks and rules both index engines share: what an item, a search and a duplicate must be.

``SdrIndex`` (SQLite + FAISS) and ``MilvusIndex`` validate the same way and
classify copies the same way, so a request refused by one is refused by the
other with the same error, and the contract tests hold for both.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..config import IndexConfig
from ..errors import (
    IdTooLongError,
    InvalidIdError,
    InvalidInputError,
    InvalidSdrError,
    MetadataTooLargeError,
    TooManyConceptsError,
)
from ..fingerprints import Fingerprint, phash_distance
from ..sdr import Sdr
from .protocol import (
    SEMANTIC,
    VISUAL,
    AddOutcome,
    ConceptCondition,
    Duplicate,
    DuplicateKind,
    DuplicateThresholds,
    Filter,
    Item,
    OnDuplicate,
)
from .store import StoredItem

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_FILTER_CONDITIONS",
    "MAX_FILTER_KEY_BYTES",
    "MAX_FILTER_VALUES",
    "MAX_THUMBNAIL_BYTES",
    "RESERVED_KEY_PREFIX",
    "ItemChecks",
    "check_concept_name",
    "check_document",
    "check_filter",
    "check_id",
    "check_metadata",
    "check_thumbnail",
    "compare",
    "duplicate_order",
    "filter_digest",
    "is_int",
    "page_label",
    "page_token",
    "screen",
]


class ItemChecks:
    """Validation of items and searches against one index's config, SDR size and spaces."""

    def __init__(self, config: IndexConfig, sdr_size: int, spaces: Sequence[str]) -> None:
        self.config = config
        self.sdr_size = sdr_size
        self.spaces = tuple(spaces)

    def thresholds(self, given: DuplicateThresholds | None) -> DuplicateThresholds:
        if given is None:
            return DuplicateThresholds(self.config.duplicate_max_phash_distance, self.config.duplicate_min_visual_share)
        distance, share = given.max_phash_distance, given.min_visual_share
        if isinstance(distance, bool) or not isinstance(distance, int) or not 0 <= distance <= 64:
            raise InvalidInputError(
                f"max_phash_distance must be in [0, 64], got {distance!r}", field="max_phash_distance"
            )
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise InvalidInputError(f"min_visual_share must be in [0, 1], got {share!r}", field="min_visual_share")
        return given

    def prepare(self, items: Sequence[Item]) -> list[StoredItem]:
        last: dict[str, StoredItem] = {}
        for number, item in enumerate(items):
            if not isinstance(item, Item):
                raise InvalidInputError(f"items[{number}] is not an Item", field=f"items[{number}]")
            check_id(item.id, self.config.max_id_length)
            self.sdr(item.sdr, "sdr")
            sdrs = {SEMANTIC: item.sdr.positions}
            for space, sdr in item.spaces.items():
                if space == SEMANTIC or space not in self.spaces:
                    others = ", ".join(self.spaces[1:]) or "none"
                    raise InvalidInputError(f"unknown space {space!r} (others kept: {others})", field="spaces")
                self.sdr(sdr, f"spaces[{space}]")
                sdrs[space] = sdr.positions
            concepts = check_concepts(item.concepts, self.config.max_concepts)
            metadata = check_metadata(item.metadata, self.config.max_metadata_bytes)
            last.pop(item.id, None)  # keep insertion order of the surviving occurrence
            fingerprint = item.fingerprint
            if fingerprint is not None and not isinstance(fingerprint, Fingerprint):
                raise InvalidInputError("fingerprint must be a Fingerprint", field="fingerprint")
            thumbnail = check_thumbnail(item.thumbnail)
            last[item.id] = StoredItem(item.id, sdrs, concepts, metadata, fingerprint, thumbnail)
        return list(last.values())

    def sdr(self, sdr: object, name: str) -> None:
        if not isinstance(sdr, Sdr):
            raise InvalidSdrError(f"{name} is not an Sdr", field=name)
        if sdr.size != self.sdr_size:
            raise InvalidSdrError(
                f"{name} has size {sdr.size}, this index holds SDRs of size {self.sdr_size}", field=name
            )
        positions = sdr.positions
        # Sdr.from_positions validated already; Sdr(...) built directly did not.
        if positions.ndim != 1 or (positions.size and int(positions[-1]) >= self.sdr_size):
            raise InvalidSdrError(f"{name} positions must lie in [0, {self.sdr_size})", field=name)
        if positions.size > 1 and not bool((np.diff(positions.astype(np.int64)) > 0).all()):
            raise InvalidSdrError(f"{name} positions must be sorted ascending without duplicates", field=name)

    def search(self, k: object, min_overlap: object, space: object) -> None:
        if space not in self.spaces:
            kept = ", ".join(self.spaces)
            raise InvalidInputError(f"unknown space {space!r}; this index keeps {kept}", field="space")
        if not is_int(k) or not 1 <= k <= self.config.max_k:  # type: ignore[operator]
            raise InvalidInputError(f"k must be an integer in [1, {self.config.max_k}], got {k!r}", field="k")
        if not is_int(min_overlap) or min_overlap < 0:  # type: ignore[operator]
            raise InvalidInputError(f"min_overlap must be an integer >= 0, got {min_overlap!r}", field="min_overlap")


def check_thumbnail(thumbnail: object) -> bytes | None:
    """An item's thumbnail as stored: bytes up to MAX_THUMBNAIL_BYTES; empty is none."""
    if thumbnail is None:
        return None
    if not isinstance(thumbnail, bytes):
        raise InvalidInputError("thumbnail must be bytes", field="thumbnail")
    if len(thumbnail) > MAX_THUMBNAIL_BYTES:
        raise InvalidInputError(
            f"thumbnail is {len(thumbnail)} bytes, at most {MAX_THUMBNAIL_BYTES}", field="thumbnail"
        )
    return thumbnail or None


def compare(
    fingerprint: Fingerprint | None,
    visual: Sdr | None,
    other: StoredItem,
    limits: DuplicateThresholds,
    sdr_size: int,
) -> Duplicate | None:
    """Whether ``other`` copies the query, and as what (the strongest kind that applies)."""
    distance = -1
    if fingerprint is not None and other.fingerprint is not None:
        distance = phash_distance(fingerprint.phash, other.fingerprint.phash)
    overlap = -1
    positions = other.sdrs.get(VISUAL)
    if visual is not None and positions is not None:
        overlap = int(np.intersect1d(visual.positions, positions, assume_unique=True).size)
    kind: DuplicateKind | None = None
    if fingerprint is not None and other.fingerprint is not None and fingerprint.sha256 == other.fingerprint.sha256:
        kind = DuplicateKind.SAME_BYTES
    elif 0 <= distance <= limits.max_phash_distance:
        kind = DuplicateKind.NEAR_EXACT
    elif visual is not None and visual.active and overlap >= max(1, math.ceil(limits.min_visual_share * visual.active)):
        kind = DuplicateKind.TRANSFORMED
    if kind is None:
        return None
    item = Item(other.id, Sdr.trusted(other.sdrs[SEMANTIC], sdr_size), other.concepts, other.metadata)
    return Duplicate(other.id, kind, distance, overlap, item)


def screen(
    prepared: Sequence[StoredItem],
    policy: OnDuplicate,
    limits: DuplicateThresholds,
    stored_copies: Callable[[Fingerprint, Sdr | None], list[Duplicate]],
    sdr_size: int,
) -> tuple[list[AddOutcome], list[str]]:
    """What an add does with each item under ``policy``: (outcomes, ids to delete).

    ``stored_copies(fingerprint, visual)`` finds copies among the stored items; each
    item is also held against the ones accepted before it in the same batch.
    """
    if policy is OnDuplicate.KEEP:
        return [AddOutcome(item.id, stored=True) for item in prepared], []
    outcomes: list[AddOutcome] = []
    removed: list[str] = []
    accepted: list[StoredItem] = []
    for item in prepared:
        found = _copies_of(item, accepted, limits, stored_copies, sdr_size)
        if not found:
            outcomes.append(AddOutcome(item.id, stored=True))
            accepted.append(item)
        elif policy is OnDuplicate.SKIP:
            outcomes.append(AddOutcome(item.id, stored=False, duplicate=found[0]))
        else:  # REPLACE: the copies go, this one is stored
            gone = tuple(duplicate.id for duplicate in found if duplicate.id != item.id)
            removed.extend(gone)
            accepted = [other for other in accepted if other.id not in gone]
            outcomes = [
                AddOutcome(o.id, stored=False, duplicate=o.duplicate) if o.stored and o.id in gone else o
                for o in outcomes
            ]
            outcomes.append(AddOutcome(item.id, stored=True, duplicate=found[0], replaced=gone))
            accepted.append(item)
    return outcomes, removed


def _copies_of(
    item: StoredItem,
    accepted: Sequence[StoredItem],
    limits: DuplicateThresholds,
    stored_copies: Callable[[Fingerprint, Sdr | None], list[Duplicate]],
    sdr_size: int,
) -> list[Duplicate]:
    """Copies of one new item among the stored items and the ones accepted before it in its batch."""
    if item.fingerprint is None:
        return []
    visual = item.sdrs.get(VISUAL)
    query = Sdr.trusted(visual, sdr_size) if visual is not None else None
    found = stored_copies(item.fingerprint, query)
    for other in accepted:
        duplicate = compare(item.fingerprint, query, other, limits, sdr_size)
        if duplicate is not None:
            found.append(duplicate)
    return sorted(found, key=duplicate_order)


def page_label(token: object, where: Filter | None = None) -> int | None:
    """The label a page token continues below; None for the first page.

    A token given out under a filter carries the filter's digest (``l<label>.<digest>``):
    continuing it under another filter would skip or repeat items, so it is refused.
    """
    if token == "":
        return None
    if isinstance(token, str) and token.startswith("l"):
        label, _, digest = token[1:].partition(".")
        if label.isascii() and label.isdigit() and int(label) < 1 << 63 and digest == filter_digest(where):
            return int(label)
    raise InvalidInputError(
        f"page_token {str(token)[:80]!r} is not one this index gave out for this filter", field="page_token"
    )


def page_token(label: int, where: Filter | None = None) -> str:
    """The token continuing a listing below ``label`` (see ``page_label``)."""
    digest = filter_digest(where)
    return f"l{label}.{digest}" if digest else f"l{label}"


# -- filters --------------------------------------------------------------------

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
        field = f"filter.concepts[{number}]"
        if not isinstance(condition, ConceptCondition):
            raise InvalidInputError("a concept condition is a ConceptCondition", field=field)
        check_concept_name(condition.name, f"{field}.name")
        confidence = condition.min_confidence
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 <= confidence <= 1.0:
            raise InvalidInputError(
                f"min_confidence must be in [0, 1], got {confidence!r}", field=f"{field}.min_confidence"
            )
    return None if where.empty else where


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


MAX_DOCUMENT_BYTES = 1 << 20  # UTF-8 bytes of a custom concept's document, at most
# A thumbnail's bytes, at most: a 512 px JPEG at quality 100 (the config's largest) is ~0.2 MiB.
MAX_THUMBNAIL_BYTES = 1 << 20


def check_document(document: object) -> str:
    """A custom concept's document: text (opaque to the index) of at most ``MAX_DOCUMENT_BYTES`` UTF-8 bytes."""
    if not isinstance(document, str):
        raise InvalidInputError("a concept's document is a string", field="document")
    try:
        size = len(document.encode())
    except UnicodeEncodeError:
        raise InvalidInputError("a concept's document is not valid Unicode text", field="document") from None
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidInputError(
            f"a concept's document is at most {MAX_DOCUMENT_BYTES} bytes, got {size}", field="document"
        )
    return document


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


def duplicate_order(duplicate: Duplicate) -> tuple[int, int, int, str]:
    """Strongest kind first; then nearest pHash, then most visual bits shared; then by id."""
    kinds = list(DuplicateKind)
    distance = duplicate.phash_distance if duplicate.phash_distance >= 0 else 65
    return kinds.index(duplicate.kind), distance, -duplicate.visual_overlap, duplicate.id


def is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_id(item_id: object, max_length: int) -> None:
    if not isinstance(item_id, str):
        raise InvalidIdError(f"an item id must be a string, got {type(item_id).__name__}", field="id")
    if not item_id.strip():
        raise InvalidIdError("an item id must not be empty", field="id")
    if len(item_id) > max_length:
        raise IdTooLongError(f"item id is {len(item_id)} characters, at most {max_length}", field="id")
    if "\x00" in item_id:
        raise InvalidIdError("an item id must not contain NUL", field="id")


def check_concepts(concepts: object, max_concepts: int) -> tuple[tuple[str, float], ...]:
    if isinstance(concepts, (str, bytes)) or not isinstance(concepts, Sequence):
        raise InvalidInputError("concepts must be a sequence of (term, confidence) pairs", field="concepts")
    if len(concepts) > max_concepts:
        raise TooManyConceptsError(
            f"{len(concepts)} concepts, at most {max_concepts}", limit=max_concepts, actual=len(concepts)
        )
    checked = []
    for number, pair in enumerate(concepts):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not isinstance(pair[0], str) or not pair[0]:
            raise InvalidInputError(f"concepts[{number}] must be a (non-empty term, confidence) pair", field="concepts")
        if isinstance(pair[1], bool) or not isinstance(pair[1], (int, float)) or not math.isfinite(pair[1]):
            raise InvalidInputError(f"concepts[{number}] confidence must be a finite number", field="concepts")
        checked.append((pair[0], float(pair[1])))
    return tuple(checked)


def check_metadata(metadata: object, max_bytes: int) -> dict[str, str]:
    if not isinstance(metadata, Mapping):
        raise InvalidInputError("metadata must be a mapping of strings to strings", field="metadata")
    size = 0
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidInputError("metadata keys and values must be strings", field="metadata")
        size += len(key.encode()) + len(value.encode())
    if size > max_bytes:
        raise MetadataTooLargeError(f"metadata is {size} bytes, at most {max_bytes}", limit=max_bytes, actual=size)
    return dict(metadata)
