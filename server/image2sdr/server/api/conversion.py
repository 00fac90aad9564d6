"""Protobuf messages <-> the core's plain values, in both directions.

Nothing here decides anything: each function maps one message to one value or
back.  What is checked on the way in (an SDR's geometry, ``k``) is checked
against the config the service runs with, and a violation names the request
field at fault, for the BadRequest details.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from image2sdr.v1 import image2sdr_pb2 as pb

from ..config import IndexConfig, SdrConfig
from ..custom_concepts import Defined
from ..encoder import ConceptUse, EncodeOptions, Encoding
from ..errors import InvalidInputError
from ..explain import Explanation
from ..fingerprints import PHASH_BITS, Fingerprint
from ..index.checks import check_filter
from ..index.protocol import (
    SEMANTIC,
    VISUAL,
    AddOutcome,
    ConceptCondition,
    Duplicate,
    DuplicateKind,
    DuplicateThresholds,
    Filter,
    Item,
    ItemPage,
    Match,
    OnDuplicate,
)
from ..maps.jobs import MapState, MapStatus
from ..queries import Expression, TermOverlap
from ..sdr import Sdr
from .status import status_for

__all__ = [
    "BLEND",
    "DEFAULT_BLEND_WEIGHT",
    "DEFAULT_K",
    "DEFAULT_PAGE_SIZE",
    "AddPolicy",
    "add_policy",
    "blend_weight",
    "concept_message",
    "custom_concept_message",
    "duplicate_message",
    "encode_options",
    "encode_response",
    "error_response",
    "explain_options",
    "explain_response",
    "explain_sizes",
    "explain_space",
    "expression",
    "fingerprint_message",
    "item_message",
    "item_page_message",
    "k_value",
    "match_message",
    "page_size",
    "sdr_from_message",
    "sdr_message",
    "search_space",
    "stored_item",
    "thresholds",
    "thresholds_message",
    "where",
]

DEFAULT_K = 10  # what k = 0 (unset) means
DEFAULT_PAGE_SIZE = 100  # what ListItems' page_size = 0 (unset) means
DEFAULT_BLEND_WEIGHT = 0.5  # what an unset blend_weight means: both overlaps count alike
BLEND = "blend"  # FindSimilar's third space: not an index space, both of them weighted

_SPACES = {pb.SPACE_UNSPECIFIED: SEMANTIC, pb.SPACE_SEMANTIC: SEMANTIC, pb.SPACE_VISUAL: VISUAL, pb.SPACE_BLEND: BLEND}
_SPACE_ENUMS = {SEMANTIC: pb.SPACE_SEMANTIC, VISUAL: pb.SPACE_VISUAL}
_ON_DUPLICATE = {
    pb.ON_DUPLICATE_UNSPECIFIED: OnDuplicate.KEEP,
    pb.ON_DUPLICATE_KEEP: OnDuplicate.KEEP,
    pb.ON_DUPLICATE_SKIP: OnDuplicate.SKIP,
    pb.ON_DUPLICATE_REPLACE: OnDuplicate.REPLACE,
}
_KINDS = {
    DuplicateKind.SAME_BYTES: pb.DUPLICATE_KIND_SAME_BYTES,
    DuplicateKind.NEAR_EXACT: pb.DUPLICATE_KIND_NEAR_EXACT,
    DuplicateKind.TRANSFORMED: pb.DUPLICATE_KIND_TRANSFORMED,
}


@dataclass(frozen=True)
class AddPolicy:
    """What an add does about copies already stored; ``thresholds`` is None under KEEP (nothing is checked)."""

    on_duplicate: OnDuplicate = OnDuplicate.KEEP
    thresholds: DuplicateThresholds | None = None


# -- requests -> core --------------------------------------------------------------


def encode_options(request: pb.EncodeRequest | pb.FindSimilarRequest) -> EncodeOptions | None:
    """The request's options; None when it sets none and stores nothing (the configured values apply).

    Only an encoding that will be stored (``add_to_index``) asks for its thumbnail:
    queries, examples and Explain's variants would make one for nothing.
    """
    stored = isinstance(request, pb.EncodeRequest) and request.HasField("add_to_index")
    if not request.HasField("options"):
        return EncodeOptions(thumbnail=True) if stored else None
    message = request.options
    visual_share = message.visual_share if message.HasField("visual_share") else None
    if visual_share is not None and not 0.0 <= visual_share <= 1.0:  # NaN fails too
        raise InvalidInputError(f"visual_share must be in [0, 1], got {visual_share:g}", field="options.visual_share")
    return EncodeOptions(
        max_concepts=message.max_concepts if message.HasField("max_concepts") else None,
        min_confidence=message.min_confidence if message.HasField("min_confidence") else None,
        sparsity=message.sparsity if message.HasField("sparsity") else None,
        visual_share=visual_share,
        thumbnail=stored,
    )


def search_space(request: pb.FindSimilarRequest) -> str:
    """The space a FindSimilar searches: ``semantic``, ``visual`` or ``blend``."""
    space = _SPACES.get(request.space)
    if space is None:  # a value from a newer contract, or a number made up
        raise InvalidInputError(f"space {request.space} is not one of {sorted(_SPACES)}", field="space")
    return space


def blend_weight(request: pb.FindSimilarRequest, space: str) -> float:
    """The visual overlap's weight in a blended search; set for any other space, it is a mistake."""
    if not request.HasField("blend_weight"):
        return DEFAULT_BLEND_WEIGHT
    weight = request.blend_weight
    if space != BLEND:
        raise InvalidInputError("blend_weight applies to SPACE_BLEND only", field="blend_weight")
    if not 0.0 <= weight <= 1.0:  # NaN fails too
        raise InvalidInputError(f"blend_weight must be in [0, 1], got {weight:g}", field="blend_weight")
    return float(weight)


def thresholds(message: pb.DuplicateThresholds, defaults: IndexConfig, field: str) -> DuplicateThresholds:
    """The request's thresholds, each unset one taken from the config; ``field`` names the message in errors."""
    distance = defaults.duplicate_max_phash_distance
    if message.HasField("max_phash_distance"):
        distance = message.max_phash_distance
        if distance > PHASH_BITS:
            raise InvalidInputError(
                f"max_phash_distance must be in [0, {PHASH_BITS}], got {distance}", field=f"{field}.max_phash_distance"
            )
    share = defaults.duplicate_min_visual_share
    if message.HasField("min_visual_share"):
        share = message.min_visual_share
        if not 0.0 <= share <= 1.0:  # NaN fails too
            raise InvalidInputError(
                f"min_visual_share must be in [0, 1], got {share:g}", field=f"{field}.min_visual_share"
            )
    return DuplicateThresholds(max_phash_distance=distance, min_visual_share=float(share))


def add_policy(request: pb.EncodeRequest, defaults: IndexConfig) -> AddPolicy:
    """What ``add_to_index`` asks to be done about stored copies (KEEP when it is unset)."""
    if not request.HasField("add_to_index"):
        return AddPolicy()
    target = request.add_to_index
    on_duplicate = _ON_DUPLICATE.get(target.on_duplicate)
    if on_duplicate is None:
        raise InvalidInputError(
            f"on_duplicate {target.on_duplicate} is not one of {sorted(_ON_DUPLICATE)}",
            field="add_to_index.on_duplicate",
        )
    checked = thresholds(target.duplicate_thresholds, defaults, "add_to_index.duplicate_thresholds")
    return AddPolicy(on_duplicate, None if on_duplicate is OnDuplicate.KEEP else checked)


def where(message: pb.Filter, max_value_bytes: int) -> Filter | None:
    """A request's filter, checked now (before any image is encoded); None when it sets no condition."""
    metadata = tuple((condition.key, tuple(condition.values)) for condition in message.metadata)
    concepts = tuple(ConceptCondition(c.name, float(c.min_confidence)) for c in message.concepts)
    return check_filter(Filter(metadata, concepts), max_value_bytes)


def expression(message: pb.ConceptExpression) -> Expression:
    return Expression(tuple(message.all), tuple(message.any), tuple(message.none))


def k_value(k: int, max_k: int) -> int:
    if k == 0:
        return min(DEFAULT_K, max_k)
    if k > max_k:
        raise InvalidInputError(f"k must be in [1, {max_k}], got {k}", field="k")
    return k


def page_size(size: int, max_k: int) -> int:
    """ListItems' page size: unset is the default; any other value is the index's to check (field ``page_size``)."""
    return min(DEFAULT_PAGE_SIZE, max_k) if size == 0 else size


def sdr_from_message(message: pb.Sdr, geometry: SdrConfig, field: str) -> Sdr:
    """A caller's SDR, held to the service's size and dimensions; ``field`` names it in errors."""
    if message.size != geometry.size:
        raise InvalidInputError(f"SDR size is {message.size}, this service uses {geometry.size}", field=f"{field}.size")
    if message.dimensions and tuple(message.dimensions) != geometry.dimensions:
        raise InvalidInputError(
            f"SDR dimensions {list(message.dimensions)} differ from {list(geometry.dimensions)}",
            field=f"{field}.dimensions",
        )
    try:
        return Sdr.from_positions(message.active, geometry.size, geometry.dimensions)
    except InvalidInputError as exc:
        exc.field = f"{field}.active"
        raise


def stored_item(request: pb.EncodeRequest, encoding: Encoding, max_concepts: int) -> Item:
    """What an EncodeRequest with ``add_to_index`` stores: its SDRs, concepts used, metadata, fingerprint, thumbnail.

    ``max_concepts`` is index.max_concepts: labels (nsfw/sfw) that would pass it are left out.
    """
    target = request.add_to_index
    return Item(
        target.id,
        encoding.sdr,
        # Custom concepts merged into the SDR are stored with the classifier's: searchable by tag.
        encoding.stored_concepts(max_concepts),
        dict(target.metadata),
        spaces={} if encoding.visual is None else {VISUAL: encoding.visual},
        fingerprint=encoding.fingerprint,
        thumbnail=encoding.thumbnail,
    )


# -- core -> responses -------------------------------------------------------------


def sdr_message(sdr: Sdr, dimensions: Sequence[int]) -> pb.Sdr:
    # Every SDR of this service has the configured geometry; the stores (term cache,
    # index) keep only positions, so the dimensions are stamped here, not trusted.
    return pb.Sdr(size=sdr.size, dimensions=list(dimensions), active=sdr.positions.tolist())


def concept_message(use: ConceptUse) -> pb.Concept:
    return pb.Concept(name=use.name, confidence=use.confidence, used=use.used, skip_reason=use.reason)


def fingerprint_message(fingerprint: Fingerprint) -> pb.Fingerprint:
    return pb.Fingerprint(sha256=fingerprint.sha256, phash=fingerprint.phash)


def encode_response(
    request: pb.EncodeRequest,
    encoding: Encoding,
    dimensions: Sequence[int],
    total_ms: float,
    stored: AddOutcome | None = None,
) -> pb.EncodeResponse:
    """The answer to an encoded request; ``stored`` is what the index did with it, when it asked to be stored."""
    timings = encoding.timings
    response = pb.EncodeResponse(
        request_id=request.request_id,
        sdr=sdr_message(encoding.sdr, dimensions),
        concepts=[concept_message(c) for c in encoding.concepts],
        short=encoding.short,
        timings=pb.StageTimings(
            decode_ms=timings.decode_ms,
            concepts_ms=timings.concepts_ms,
            terms_ms=timings.terms_ms,
            merge_ms=timings.merge_ms,
            total_ms=total_ms,
            appearance_ms=timings.appearance_ms,
        ),
        indexed=stored is not None and stored.stored,
        custom_concepts=[concept_message(c) for c in encoding.custom],
    )
    if encoding.visual is not None:
        response.visual.CopyFrom(sdr_message(encoding.visual, dimensions))
    if encoding.fingerprint is not None:
        response.fingerprint.CopyFrom(fingerprint_message(encoding.fingerprint))
    if stored is not None and stored.duplicate is not None:
        response.duplicate.CopyFrom(duplicate_message(stored.duplicate, encoding.visual))
    if stored is not None:
        response.replaced.extend(stored.replaced)
    return response


def error_response(request_id: str, exc: BaseException) -> pb.EncodeResponse:
    """A stream item's in-band failure."""
    return pb.EncodeResponse(request_id=request_id, error=status_for(exc))


def _stored_concepts(concepts: Sequence[tuple[str, float]]) -> list[pb.Concept]:
    return [pb.Concept(name=name, confidence=confidence, used=True) for name, confidence in concepts]


def match_message(match: Match, space: str, explanation: Sequence[TermOverlap] = ()) -> pb.Match:
    """One FindSimilar answer; ``space`` is the one searched (``blend``: both scored it)."""
    overlaps = dict(match.overlaps) or {space: match.overlap}
    scored = (SEMANTIC, VISUAL) if space == BLEND else (space,)
    return pb.Match(
        id=match.id,
        overlap=match.overlap,
        concepts=_stored_concepts(match.item.concepts),
        metadata=dict(match.item.metadata),
        scored_by=[_SPACE_ENUMS[name] for name in scored],
        semantic_overlap=overlaps.get(SEMANTIC) if SEMANTIC in scored else None,
        visual_overlap=overlaps.get(VISUAL) if VISUAL in scored else None,
        score=match.score if space == BLEND else float(match.overlap),
        explanation=[pb.TermOverlap(term=t.term, overlap=t.overlap, negated=t.negated) for t in explanation],
    )


def duplicate_message(duplicate: Duplicate, query_visual: Sdr | None) -> pb.Duplicate:
    """A stored copy; its visual share is taken of the query's visual bits (as the threshold is)."""
    bits = 0 if query_visual is None else query_visual.active
    share = duplicate.visual_overlap / bits if bits and duplicate.visual_overlap >= 0 else 0.0
    return pb.Duplicate(
        id=duplicate.id,
        kind=_KINDS[duplicate.kind],
        phash_distance=duplicate.phash_distance,
        visual_overlap=duplicate.visual_overlap,
        visual_share=share,
        concepts=_stored_concepts(duplicate.item.concepts),
        metadata=dict(duplicate.item.metadata),
    )


def thresholds_message(applied: DuplicateThresholds) -> pb.DuplicateThresholds:
    return pb.DuplicateThresholds(
        max_phash_distance=applied.max_phash_distance, min_visual_share=applied.min_visual_share
    )


def item_message(item: Item, dimensions: Sequence[int]) -> pb.Item:
    message = pb.Item(
        id=item.id,
        sdr=sdr_message(item.sdr, dimensions),
        concepts=_stored_concepts(item.concepts),
        metadata=dict(item.metadata),
    )
    visual = item.in_space(VISUAL)
    if visual is not None:
        message.visual.CopyFrom(sdr_message(visual, dimensions))
    if item.fingerprint is not None:
        message.fingerprint.CopyFrom(fingerprint_message(item.fingerprint))
    return message


def item_page_message(page: ItemPage, dimensions: Sequence[int]) -> pb.ListItemsResponse:
    return pb.ListItemsResponse(
        items=[item_message(item, dimensions) for item in page.items],
        next_page_token=page.next_page_token,
        total=page.total,
    )


def custom_concept_message(defined: Defined, dimensions: Sequence[int]) -> pb.CustomConcept:
    concept = defined.concept
    message = pb.CustomConcept(
        name=concept.name,
        sdr=sdr_message(concept.sdrs[SEMANTIC], dimensions),
        threshold=concept.threshold,
        scale=concept.scale,
        positives=concept.positives,
        negatives=concept.negatives,
        fit=pb.ConceptFit(precision=concept.report.precision, recall=concept.report.recall, f1=concept.report.f1),
        updated_ms=defined.updated_ms,
    )
    visual = concept.sdrs.get(VISUAL)
    if visual is not None:
        message.visual.CopyFrom(sdr_message(visual, dimensions))
    return message


# Explain's `like` compares one space with one stored SDR; a blend has no single overlap to explain.
_EXPLAIN_SPACES = {pb.SPACE_UNSPECIFIED: SEMANTIC, pb.SPACE_SEMANTIC: SEMANTIC, pb.SPACE_VISUAL: VISUAL}


def explain_space(request: pb.ExplainRequest) -> str:
    """The space a `like` explanation compares in; any other target takes the default only."""
    space = _EXPLAIN_SPACES.get(request.space)
    if space is None:
        raise InvalidInputError("Explain's like compares SPACE_SEMANTIC or SPACE_VISUAL SDRs", field="space")
    if space != SEMANTIC and request.WhichOneof("target") != "like":
        raise InvalidInputError("space applies to a `like` target only", field="space")
    return space


def explain_options(request: pb.ExplainRequest) -> EncodeOptions | None:
    """The options of the encodings behind a score, checked as Encode checks them."""
    return encode_options(pb.EncodeRequest(options=request.options)) if request.HasField("options") else None


def explain_sizes(request: pb.ExplainRequest) -> tuple[int | None, int | None]:
    """(patch, stride) in pixels; None where unset (a share of the image's shorter side)."""
    patch = request.patch if request.HasField("patch") else None
    stride = request.stride if request.HasField("stride") else None
    return patch, stride


def explain_response(explanation: Explanation) -> pb.ExplainResponse:
    grid = explanation.grid
    return pb.ExplainResponse(
        target=explanation.target,
        score=explanation.score,
        columns=grid.columns,
        rows=grid.rows,
        heat=explanation.heat.ravel().tolist(),
        patch=grid.patch,
        stride=grid.stride,
        variants=grid.variants,
        png=explanation.png,
        elapsed_ms=explanation.elapsed_ms,
    )


_MAP_SPACES = {pb.SPACE_UNSPECIFIED: SEMANTIC, pb.SPACE_SEMANTIC: SEMANTIC, pb.SPACE_VISUAL: VISUAL}
_MAP_STATES = {
    MapState.QUEUED: pb.MAP_STATE_QUEUED,
    MapState.RUNNING: pb.MAP_STATE_RUNNING,
    MapState.DONE: pb.MAP_STATE_DONE,
    MapState.FAILED: pb.MAP_STATE_FAILED,
}
MIN_CELL_PIXELS, MAX_CELL_PIXELS = 8, 256


def map_space(request: pb.CreateMapRequest) -> str:
    """The space a map lays items out in: semantic or visual (a blend has no single SDR to embed)."""
    space = _MAP_SPACES.get(request.space)
    if space is None:
        raise InvalidInputError(
            f"space {request.space} cannot be mapped: SPACE_SEMANTIC or SPACE_VISUAL", field="space"
        )
    return space


def map_cell_pixels(request: pb.CreateMapRequest) -> int:
    """The cell side asked for; 0 leaves it to the map width (maps.map_pixels)."""
    side = request.cell_pixels
    if side != 0 and not MIN_CELL_PIXELS <= side <= MAX_CELL_PIXELS:
        raise InvalidInputError(
            f"cell_pixels must be 0 or in [{MIN_CELL_PIXELS}, {MAX_CELL_PIXELS}], got {side}", field="cell_pixels"
        )
    return side


def map_job_message(status: MapStatus) -> pb.MapJob:
    """A job as GetMap reports it: cells and PNG once done, the failure's status once failed."""
    request = status.request
    message = pb.MapJob(
        id=status.id,
        state=_MAP_STATES[status.state],
        progress=status.progress,
        stage=status.stage,
        space=_SPACE_ENUMS[request.space],
        items=len(request.ids),
        created_ms=status.created_ms,
        elapsed_ms=status.elapsed_ms,
        skipped_without_visual=request.skipped_without_visual,
    )
    if status.error is not None:
        message.error.CopyFrom(status_for(status.error, logged=True))  # MapJobs logged it when it failed
    result = status.result
    if result is None:
        return message
    layout = result.layout
    message.columns, message.rows = layout.columns, layout.rows
    message.cell_pixels = result.cell_pixels
    message.neighbourhood_kept = layout.neighbourhood_kept
    message.png = result.png
    message.cells.extend(
        pb.MapCell(id=item_id, column=cell % layout.columns, row=cell // layout.columns, thumbnail=drawn)
        for item_id, cell, drawn in zip(request.ids, layout.cells.tolist(), result.drawn, strict=True)
    )
    return message
