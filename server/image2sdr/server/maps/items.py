"""Which stored items a map holds: all of them, a list of ids, those passing a filter, or a custom concept's.

The choice is read before the job starts, so that a bad choice (no items, more
than ``maps.max_items``, an unknown id) is the caller's error at once rather
than a failed job later, and the job lays out what was stored when it was asked.
Items come newest first (as ListItems gives them), or in the order of the ids given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..custom_concepts import ConceptSet
from ..errors import InvalidInputError, NotFoundError
from ..index.filters import DEFAULT_FILTER_LIMITS, FilterLimits, check_filter
from ..index.item_index import ItemIndex
from ..index.values import SEMANTIC, VISUAL, Filter, Item
from ..sdr import Sdr

__all__ = ["Chosen", "by_concept", "by_filter", "by_ids"]

PRESENT = 0.5  # a custom concept is present at its threshold: confidence 0.5


@dataclass(frozen=True)
class Chosen:
    ids: tuple[str, ...]
    sdrs: tuple[Sdr, ...]  # each item's SDR in the space mapped
    skipped_without_visual: int  # chosen, but without an SDR in the visual space


def by_ids(index: ItemIndex, ids: Sequence[str], space: str, limit: int) -> Chosen:
    """These items, in this order; an unknown id is NotFoundError, a repeated one INVALID_ARGUMENT."""
    _check_count(len(ids), limit, "ids")
    first: dict[str, int] = {}
    for position, item_id in enumerate(ids):
        if item_id in first:
            raise InvalidInputError(f"ids[{position}] repeats ids[{first[item_id]}] ({item_id!r})", field="ids")
        first[item_id] = position
    items = []
    for position, item_id in enumerate(ids):
        try:
            items.append(index.get(item_id))
        except InvalidInputError as exc:
            exc.field = f"ids[{position}]"
            raise
        except NotFoundError as exc:
            raise NotFoundError(f"{exc} (ids[{position}])", resource=item_id) from None
    return _in_space(items, space, "ids")


def by_filter(
    index: ItemIndex,
    where: Filter | None,
    space: str,
    limit: int,
    *,
    max_value_bytes: int,
    page_size: int,
    limits: FilterLimits = DEFAULT_FILTER_LIMITS,
) -> Chosen:
    """Every stored item passing ``where`` (None: every stored item), newest first, read ``page_size`` at a time."""
    field = "filter" if where is not None and not where.empty else "items"
    where = check_filter(where, max_value_bytes, limits)
    page = index.list_items(1, where=where)
    _check_count(page.total, limit, field)
    items: list[Item] = []
    token = ""
    while True:
        page = index.list_items(page_size, token, where=where)
        items.extend(page.items)
        token = page.next_page_token
        if not token or len(items) > limit:
            break
    _check_count(len(items), limit, field)  # items added since the count: still within the limit
    return _in_space(items, space, field)


def by_concept(index: ItemIndex, concept: ConceptSet, space: str, limit: int, max_k: int) -> Chosen:
    """The items a custom concept finds present (confidence >= 0.5), most confident first.

    Candidates are the concept's ``max_k`` nearest items by its own SDR in each
    space it has, then every candidate is scored as Encode would score it: an
    item the concept is present in but which is nearer to nothing of it than
    ``max_k`` others is not found, as in FindSimilar by concept.
    """
    (custom,) = concept.concepts
    candidates: dict[str, Item] = {}
    for searched in custom.spaces:
        for match in index.search(custom.sdrs[searched], k=max_k, space=searched):
            candidates.setdefault(match.id, match.item)
    items = list(candidates.values())
    if items:
        confidences = concept.confidences_many([_sdrs_of(item) for item in items])[:, 0]
        ranked = sorted(zip(confidences.tolist(), range(len(items)), strict=True), key=lambda pair: -pair[0])
        items = [items[position] for confidence, position in ranked if confidence >= PRESENT]
    _check_count(len(items), limit, "concept")
    return _in_space(items, space, "concept")


def _sdrs_of(item: Item) -> dict[str, Sdr]:
    visual = item.spaces.get(VISUAL)
    return {SEMANTIC: item.sdr} if visual is None else {SEMANTIC: item.sdr, VISUAL: visual}


def _in_space(items: Sequence[Item], space: str, field: str) -> Chosen:
    kept = [(item.id, sdr) for item in items if (sdr := item.in_space(space)) is not None]
    if not kept:
        raise InvalidInputError(
            f"none of the {len(items)} items chosen has an SDR in the {space} space",
            field=field if space == SEMANTIC else "space",
        )
    return Chosen(tuple(item_id for item_id, _ in kept), tuple(sdr for _, sdr in kept), len(items) - len(kept))


def _check_count(count: int, limit: int, field: str) -> None:
    if count == 0:
        raise InvalidInputError("a map needs at least one item; none was chosen", field=field)
    if count > limit:
        raise InvalidInputError(f"{count} items chosen; a map holds at most {limit} (maps.max_items)", field=field)
