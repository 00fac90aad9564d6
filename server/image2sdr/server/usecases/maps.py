"""Maps: lay stored items out on a grid by similarity, as a job (CreateMap starts it, GetMap reports it).

The items are chosen now (by ids, a custom concept, a filter, or all of them): a bad
choice is the caller's error before any job starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..custom_concepts import ConceptSet
from ..errors import InvalidInputError
from ..index.filters import FilterLimits, check_filter
from ..index.values import SEMANTIC, Filter
from ..maps import items as map_items
from ..maps.jobs import MapJobs, MapRequest, MapStatus
from ..maps.layout import grid_shape
from ..maps.render import check_canvas
from .parts import Parts
from .search import ByCustomConcept

__all__ = ["MAX_CELL_PIXELS", "MIN_CELL_PIXELS", "ByIds", "MapAsked", "create_map", "get_map"]

MIN_CELL_PIXELS, MAX_CELL_PIXELS = 8, 256


@dataclass(frozen=True)
class ByIds:
    ids: Sequence[str]


@dataclass(frozen=True)
class MapAsked:
    """What a map is asked for: which items (None: every stored item), in which space, on what grid."""

    items: ByIds | ByCustomConcept | Filter | None = None
    space: str = SEMANTIC
    columns: int = 0  # 0: chosen from the item count
    rows: int = 0
    cell_pixels: int = 0  # 0: the configured map width over the columns


def create_map(parts: Parts, jobs: MapJobs, asked: MapAsked) -> MapStatus:
    side = asked.cell_pixels
    if side != 0 and not MIN_CELL_PIXELS <= side <= MAX_CELL_PIXELS:
        raise InvalidInputError(
            f"cell_pixels must be 0 or in [{MIN_CELL_PIXELS}, {MAX_CELL_PIXELS}], got {side}", field="cell_pixels"
        )
    chosen = _chosen(parts, asked)
    columns, rows = grid_shape(len(chosen.ids), asked.columns, asked.rows)
    if side:
        check_canvas(columns, rows, side)
    job = MapRequest(
        chosen.ids, chosen.sdrs, asked.space, columns, rows, side, chosen.skipped_without_visual, parts.index.thumbnails
    )
    return jobs.create(job)


def get_map(jobs: MapJobs, job_id: str) -> MapStatus:
    return jobs.get(job_id)


def _chosen(parts: Parts, asked: MapAsked) -> map_items.Chosen:
    """The items a map is asked for, read now."""
    limit, index_config, space, items = parts.config.maps.max_items, parts.config.index, asked.space, asked.items
    if isinstance(items, ByIds):
        return map_items.by_ids(parts.index, list(items.ids), space, limit)
    if isinstance(items, ByCustomConcept):
        concept = ConceptSet([parts.library.get(items.name, "concept").concept], parts.config.sdr.size)
        return map_items.by_concept(parts.index, concept, space, limit, index_config.max_k)
    limits = FilterLimits.of(index_config)
    chosen = check_filter(items, index_config.max_metadata_bytes, limits) if items is not None else None
    return map_items.by_filter(
        parts.index,
        chosen,
        space,
        limit,
        max_value_bytes=index_config.max_metadata_bytes,
        limits=limits,
        page_size=index_config.max_k,
    )
