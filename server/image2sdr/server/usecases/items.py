"""Stored items: read one (with its thumbnail), remove one, ask which ids exist, list them a page at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidInputError
from ..index.filters import FilterLimits, check_filter
from ..index.values import Filter, Item, ItemPage
from .parts import Parts

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_IDS_PER_CALL",
    "StoredItem",
    "get_item",
    "items_exist",
    "list_items",
    "remove_item",
]

MAX_IDS_PER_CALL = 1000  # ItemsExist: ids per call (the proto says so too)
DEFAULT_PAGE_SIZE = 100  # what a page size of 0 (unset) means


@dataclass(frozen=True)
class StoredItem:
    item: Item
    thumbnail: bytes  # empty: none stored


def get_item(parts: Parts, item_id: str) -> StoredItem:
    item = parts.index.get(item_id)
    # Read after the item: one removed in between has none, and the item still answers.
    return StoredItem(item, parts.index.thumbnails([item_id]).get(item_id, b""))


def remove_item(parts: Parts, item_id: str) -> None:
    parts.index.remove(item_id)


def items_exist(parts: Parts, ids: Sequence[str]) -> list[bool]:
    if len(ids) > MAX_IDS_PER_CALL:
        raise InvalidInputError(f"{len(ids)} ids in one call, at most {MAX_IDS_PER_CALL}; ask in batches", field="ids")
    try:
        return list(parts.index.contains(list(ids)))
    except InvalidInputError as exc:  # an id no item could have
        exc.field = "ids"
        raise


def list_items(parts: Parts, page_size: int, page_token: str, where: Filter | None = None) -> ItemPage:
    """A page of items, newest first; the index checks the size against max_k and the token."""
    index_config = parts.config.index
    chosen = check_filter(where, index_config.max_metadata_bytes, FilterLimits.of(index_config)) if where else None
    size = min(DEFAULT_PAGE_SIZE, index_config.max_k) if page_size == 0 else page_size
    return parts.index.list_items(size, page_token, where=chosen)
