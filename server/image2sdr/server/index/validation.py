"""What an item, a search and a listing must be before any engine sees them.

``ItemRules`` holds one index's limits (its config, SDR size and spaces); the
functions below it check one value each. Every refusal is an ``InvalidInputError``
(or a ``LimitExceededError`` for a size limit) naming the field at fault.
"""

from __future__ import annotations

import math
import types
import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from ..config import IndexConfig
from ..errors import (
    IdTooLongError,
    InvalidIdError,
    InvalidInputError,
    InvalidSdrError,
    MetadataTooLargeError,
    TooManyConceptsError,
)
from ..fingerprints import Fingerprint
from ..sdr import Sdr
from .values import SEMANTIC, DuplicateThresholds, Item, StoredItem

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_THUMBNAIL_BYTES",
    "ItemRules",
    "check_concepts",
    "check_document",
    "check_id",
    "check_metadata",
    "check_name_characters",
    "check_thumbnail",
    "is_int",
]

MAX_DOCUMENT_BYTES = 1 << 20  # UTF-8 bytes of a custom concept's document, at most
# A thumbnail's bytes, at most: a 512 px JPEG at quality 100 (the config's largest) is ~0.2 MiB.
MAX_THUMBNAIL_BYTES = 1 << 20
# Unicode categories no stored name may hold: controls (Cc: C0, DEL, C1), format characters
# (Cf: zero-width joiners and spaces, bidi overrides such as U+202E), line and paragraph
# separators (Zl, Zp). Each makes a name that looks like another, or reorders what is printed
# after it, in every log, listing and page that shows it.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


class ItemRules:
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
        """The items as stored; an id given twice keeps its last occurrence (as if added one by one)."""
        last: dict[str, StoredItem] = {}
        for number, item in enumerate(items):
            if not isinstance(item, Item):
                raise InvalidInputError(f"items[{number}] is not an Item", field=f"items[{number}]")
            self.new_id(item.id)
            sdrs = self._sdrs(item)
            concepts = check_concepts(item.concepts, self.config.max_concepts)
            metadata = check_metadata(item.metadata, self.config.max_metadata_bytes)
            fingerprint = item.fingerprint
            if fingerprint is not None and not isinstance(fingerprint, Fingerprint):
                raise InvalidInputError("fingerprint must be a Fingerprint", field="fingerprint")
            thumbnail = check_thumbnail(item.thumbnail)
            last.pop(item.id, None)  # keep insertion order of the surviving occurrence
            last[item.id] = StoredItem(item.id, sdrs, concepts, metadata, fingerprint, thumbnail, item.keypoints)
        return list(last.values())

    def _sdrs(self, item: Item) -> dict[str, npt.NDArray[np.uint32]]:
        self.sdr(item.sdr, "sdr")
        sdrs = {SEMANTIC: item.sdr.positions}
        for space, sdr in item.spaces.items():
            if space == SEMANTIC or space not in self.spaces:
                others = ", ".join(self.spaces[1:]) or "none"
                raise InvalidInputError(f"unknown space {space!r} (others kept: {others})", field="spaces")
            self.sdr(sdr, f"spaces[{space}]")
            sdrs[space] = sdr.positions
        return sdrs

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

    def space(self, space: object) -> str:
        if space not in self.spaces:
            raise InvalidInputError(
                f"unknown space {space!r}; this index keeps {', '.join(self.spaces)}", field="space"
            )
        return str(space)

    def search(self, k: object, min_overlap: object, space: object) -> None:
        self.space(space)
        if not is_int(k) or not 1 <= k <= self.config.max_k:  # type: ignore[operator]
            raise InvalidInputError(f"k must be an integer in [1, {self.config.max_k}], got {k!r}", field="k")
        if not is_int(min_overlap) or min_overlap < 0:  # type: ignore[operator]
            raise InvalidInputError(f"min_overlap must be an integer >= 0, got {min_overlap!r}", field="min_overlap")

    def page_size(self, page_size: object) -> None:
        if not is_int(page_size) or not 1 <= page_size <= self.config.max_k:  # type: ignore[operator]
            raise InvalidInputError(
                f"page_size must be an integer in [1, {self.config.max_k}], got {page_size!r}", field="page_size"
            )

    def blend_weight(self, weight: object) -> float:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise InvalidInputError(f"blend_weight must be in [0, 1], got {weight!r}", field="blend_weight")
        return float(weight)

    def id(self, item_id: object) -> str:
        check_id(item_id, self.config.max_id_length)
        return str(item_id)

    def new_id(self, item_id: object) -> str:
        """An id to store under: ``id``'s rules and no control, format or separator character.

        Reads keep ``id``'s rules alone, so an item stored by an earlier release under
        such an id can still be read and removed.
        """
        return check_name_characters(self.id(item_id), "id")


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


def check_name_characters(name: str, field: str) -> str:
    """``name`` when it holds no character of ``REFUSED_CATEGORIES``; else INVALID_ARGUMENT naming the first.

    One rule for every name the API stores (item ids, metadata keys, concept names) and for
    terms; the error names the code point and its place, never the whole value.
    """
    for position, character in enumerate(name):
        category = unicodedata.category(character)
        if category in REFUSED_CATEGORIES:
            described = unicodedata.name(character, "a control character")
            raise InvalidInputError(
                f"U+{ord(character):04X} ({described}, Unicode category {category}) at character {position}: "
                "names hold no control, format or separator characters (categories Cc, Cf, Zl, Zp)",
                field=field,
            )
    return name


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
        check_name_characters(key, "metadata")
        size += len(key.encode()) + len(value.encode())
    if size > max_bytes:
        raise MetadataTooLargeError(f"metadata is {size} bytes, at most {max_bytes}", limit=max_bytes, actual=size)
    return dict(metadata)


EMPTY_METADATA: Mapping[str, str] = types.MappingProxyType({})
