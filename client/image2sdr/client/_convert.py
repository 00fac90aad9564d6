"""Every translation between protobuf messages and the client's plain values, in one place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from image2sdr.v1 import image2sdr_pb2 as pb

from ._exceptions import Image2SdrError, error_from_status
from ._query import Expression, Filter
from ._types import (
    Concept,
    ConceptBackground,
    ConceptFit,
    ConceptSuggestion,
    CopyTransform,
    CustomConcept,
    Duplicate,
    DuplicateKind,
    DuplicateStage,
    DuplicateThresholds,
    Encoding,
    Explanation,
    Fingerprint,
    Info,
    Item,
    ItemError,
    ItemPage,
    Limits,
    MapCell,
    MapJob,
    MapState,
    Match,
    OnDuplicate,
    Provider,
    Sdr,
    Space,
    StageTimings,
    TermMatch,
    TermOverlap,
)

__all__ = [
    "SPACES",
    "add_to_index_message",
    "concepts_from_pb",
    "custom_concept_from_pb",
    "duplicate_from_pb",
    "encode_options_message",
    "encoding_from_pb",
    "explanation_from_pb",
    "expression_to_pb",
    "filter_to_pb",
    "fingerprint_from_pb",
    "info_from_pb",
    "item_from_pb",
    "item_page_from_pb",
    "match_from_pb",
    "result_from_pb",
    "sdr_from_pb",
    "sdr_to_pb",
    "space_to_pb",
    "term_match_from_pb",
    "thresholds_from_pb",
    "thresholds_to_pb",
]

SPACES: dict[str, pb.Space] = {
    "semantic": pb.SPACE_SEMANTIC,
    "visual": pb.SPACE_VISUAL,
    "blend": pb.SPACE_BLEND,
}
_SPACE_NAMES = {value: name for name, value in SPACES.items()}
_ON_DUPLICATE: dict[str, pb.OnDuplicate] = {
    "keep": pb.ON_DUPLICATE_KEEP,
    "skip": pb.ON_DUPLICATE_SKIP,
    "replace": pb.ON_DUPLICATE_REPLACE,
}
_STAGES: dict[int, DuplicateStage] = {
    pb.DUPLICATE_STAGE_FILE_HASH: "file_hash",
    pb.DUPLICATE_STAGE_PHASH: "phash",
    pb.DUPLICATE_STAGE_VISUAL: "visual",
    pb.DUPLICATE_STAGE_KEYPOINTS: "keypoints",
}
_KINDS: dict[int, DuplicateKind] = {
    pb.DUPLICATE_KIND_SAME_BYTES: "same_bytes",
    pb.DUPLICATE_KIND_NEAR_EXACT: "near_exact",
    pb.DUPLICATE_KIND_TRANSFORMED: "transformed",
}


def sdr_from_pb(message: pb.Sdr) -> Sdr:
    return Sdr(size=message.size, dimensions=tuple(message.dimensions), active=tuple(message.active))


def sdr_to_pb(sdr: Sdr) -> pb.Sdr:
    return pb.Sdr(size=sdr.size, dimensions=sdr.dimensions, active=sdr.active)


def concepts_from_pb(messages: Iterable[pb.Concept]) -> tuple[Concept, ...]:
    return tuple(Concept(m.name, m.confidence, m.used, m.skip_reason) for m in messages)


def _timings_from_pb(message: pb.StageTimings) -> StageTimings:
    return StageTimings(
        message.decode_ms,
        message.concepts_ms,
        message.terms_ms,
        message.merge_ms,
        message.total_ms,
        message.appearance_ms,
    )


def fingerprint_from_pb(message: pb.Fingerprint) -> Fingerprint:
    return Fingerprint(message.sha256, message.phash)


def encoding_from_pb(message: pb.EncodeResponse) -> Encoding:
    return Encoding(
        sdr=sdr_from_pb(message.sdr),
        concepts=concepts_from_pb(message.concepts),
        request_id=message.request_id,
        short=message.short,
        indexed=message.indexed,
        timings=_timings_from_pb(message.timings) if message.HasField("timings") else None,
        visual=sdr_from_pb(message.visual) if message.HasField("visual") else None,
        fingerprint=fingerprint_from_pb(message.fingerprint) if message.HasField("fingerprint") else None,
        duplicate=duplicate_from_pb(message.duplicate) if message.HasField("duplicate") else None,
        replaced=tuple(message.replaced),
        custom_concepts=concepts_from_pb(message.custom_concepts),
    )


def result_from_pb(message: pb.EncodeResponse) -> Encoding | ItemError:
    """An EncodeStream answer: the encoding, or the item's in-band error."""
    if message.HasField("error"):
        return ItemError(message.request_id, error_from_status(message.error))
    return encoding_from_pb(message)


def encode_options_message(
    max_concepts: int | None,
    min_confidence: float | None,
    sparsity: float | None,
    visual_share: float | None = None,
    merge_custom_concepts: bool = False,
) -> pb.EncodeOptions | None:
    """The options message, or None when every option is left to the server."""
    given = (max_concepts, min_confidence, sparsity, visual_share)
    if all(option is None for option in given) and not merge_custom_concepts:
        return None
    return pb.EncodeOptions(
        max_concepts=max_concepts,
        min_confidence=min_confidence,
        sparsity=sparsity,
        visual_share=visual_share,
        merge_custom_concepts=merge_custom_concepts,
    )


def add_to_index_message(
    item_id: str | None,
    metadata: Mapping[str, str] | None,
    on_duplicate: OnDuplicate = "keep",
    thresholds: DuplicateThresholds | None = None,
) -> pb.AddToIndex | None:
    if item_id is None:
        if metadata:
            raise ValueError("metadata is stored with an indexed item: pass add_to_index=ID too")
        if on_duplicate != "keep":
            raise ValueError("on_duplicate applies to an indexed item: pass add_to_index=ID too")
        return None
    if on_duplicate not in _ON_DUPLICATE:
        raise ValueError(f"on_duplicate is one of {sorted(_ON_DUPLICATE)}, got {on_duplicate!r}")
    return pb.AddToIndex(
        id=item_id,
        metadata=dict(metadata or {}),
        on_duplicate=_ON_DUPLICATE[on_duplicate],
        duplicate_thresholds=thresholds_to_pb(thresholds),
    )


def space_to_pb(space: Space) -> pb.Space:
    if space not in SPACES:
        raise ValueError(f"space is one of {sorted(SPACES)}, got {space!r}")
    return SPACES[space]


def thresholds_to_pb(thresholds: DuplicateThresholds | None) -> pb.DuplicateThresholds | None:
    if thresholds is None:
        return None
    return pb.DuplicateThresholds(
        max_phash_distance=thresholds.max_phash_distance, min_visual_share=thresholds.min_visual_share
    )


def thresholds_from_pb(message: pb.DuplicateThresholds) -> DuplicateThresholds:
    return DuplicateThresholds(
        max_phash_distance=message.max_phash_distance if message.HasField("max_phash_distance") else None,
        min_visual_share=message.min_visual_share if message.HasField("min_visual_share") else None,
    )


def match_from_pb(message: pb.Match) -> Match:
    return Match(
        message.id,
        message.overlap,
        concepts_from_pb(message.concepts),
        dict(message.metadata),
        scored_by=tuple(_SPACE_NAMES.get(space, str(space)) for space in message.scored_by),
        semantic_overlap=message.semantic_overlap if message.HasField("semantic_overlap") else None,
        visual_overlap=message.visual_overlap if message.HasField("visual_overlap") else None,
        score=message.score,
        explanation=tuple(TermOverlap(t.term, t.overlap, t.negated) for t in message.explanation),
    )


def duplicate_from_pb(message: pb.Duplicate) -> Duplicate:
    return Duplicate(
        id=message.id,
        kind=_KINDS.get(message.kind, "transformed"),  # a kind from a newer server is at least a copy
        phash_distance=message.phash_distance,
        visual_overlap=message.visual_overlap,
        visual_share=message.visual_share,
        concepts=concepts_from_pb(message.concepts),
        metadata=dict(message.metadata),
        stage=_STAGES.get(message.stage, ""),
        inliers=message.inliers,
        transform=_transform_from_pb(message.transform) if message.HasField("transform") else None,
    )


def _transform_from_pb(message: pb.CopyTransform) -> CopyTransform:
    crop = (message.crop_left, message.crop_top, message.crop_right, message.crop_bottom)
    return CopyTransform(message.rotation_degrees, message.scale, crop, message.mirrored)


def item_from_pb(message: pb.Item) -> Item:
    return Item(
        message.id,
        sdr_from_pb(message.sdr),
        concepts_from_pb(message.concepts),
        dict(message.metadata),
        visual=sdr_from_pb(message.visual) if message.HasField("visual") else None,
        fingerprint=fingerprint_from_pb(message.fingerprint) if message.HasField("fingerprint") else None,
        thumbnail=message.thumbnail,
    )


def item_page_from_pb(message: pb.ListItemsResponse) -> ItemPage:
    return ItemPage(tuple(item_from_pb(item) for item in message.items), message.next_page_token, message.total)


def term_match_from_pb(message: pb.TermMatch) -> TermMatch:
    return TermMatch(message.term, message.overlap)


def _provider_from_pb(message: pb.Provider) -> Provider:
    return Provider(message.name, message.model, message.version)


def _limits_from_pb(message: pb.Limits) -> Limits:
    return Limits(
        max_message_bytes=message.max_message_bytes,
        max_image_bytes=message.max_image_bytes,
        max_pixels=message.max_pixels,
        min_image_side=message.min_image_side,
        max_k=message.max_k,
        stream_in_flight=message.stream_in_flight,
        max_map_items=message.max_map_items,
    )


def info_from_pb(message: pb.InfoResponse) -> Info:
    return Info(
        server_version=message.server_version,
        size=message.geometry.size,
        dimensions=tuple(message.geometry.dimensions),
        sparsity=message.sparsity,
        active_bits=message.active_bits,
        concepts=_provider_from_pb(message.concepts),
        terms=_provider_from_pb(message.terms),
        index_kind=message.index_kind,
        index_size=message.index_size,
        limits=_limits_from_pb(message.limits),
        vocabulary_size=message.vocabulary_size,
        visual=_provider_from_pb(message.visual) if message.HasField("visual") else None,
        visual_share=message.visual_share,
        duplicate_thresholds=thresholds_from_pb(message.duplicate_thresholds),
        index_visual_size=message.index_visual_size,
        custom_concepts=message.custom_concepts,
    )


def filter_to_pb(where: Filter | None) -> pb.Filter | None:
    """The filter message, or None for no filter (an empty ``Filter`` is none either)."""
    if where is None:
        return None
    if not isinstance(where, Filter):
        raise TypeError(f"where= takes a Filter, not {type(where).__name__}")
    return pb.Filter(
        metadata=[pb.MetadataCondition(key=key, values=values) for key, values in where.conditions],
        concepts=[pb.ConceptCondition(name=c.name, min_confidence=c.min_confidence) for c in where.concept_conditions],
    )


def expression_to_pb(expression: Expression) -> pb.ConceptExpression:
    return pb.ConceptExpression(all=expression.all, any=expression.any, none=expression.none)


def custom_concept_from_pb(message: pb.CustomConcept) -> CustomConcept:
    fit = message.fit
    return CustomConcept(
        name=message.name,
        sdr=sdr_from_pb(message.sdr),
        visual=sdr_from_pb(message.visual) if message.HasField("visual") else None,
        threshold=message.threshold,
        scale=message.scale,
        positives=message.positives,
        negatives=message.negatives,
        fit=ConceptFit(fit.precision, fit.recall, fit.f1),
        updated_ms=message.updated_ms,
        background=_background_from_pb(message.background) if message.HasField("background") else None,
        suggestions=tuple(ConceptSuggestion(s.id, s.confidence) for s in message.suggestions),
        positive_ids=tuple(message.positive_ids),
        negative_ids=tuple(message.negative_ids),
    )


def _background_from_pb(message: pb.ConceptBackground) -> ConceptBackground:
    return ConceptBackground(message.items, message.flagged, message.precision, message.recall, message.prevalence)


def explanation_from_pb(message: pb.ExplainResponse) -> Explanation:
    return Explanation(
        target=message.target,
        score=message.score,
        columns=message.columns,
        rows=message.rows,
        heat=tuple(message.heat),
        patch=message.patch,
        stride=message.stride,
        variants=message.variants,
        png=message.png,
        elapsed_ms=message.elapsed_ms,
    )


_MAP_STATES: dict[int, MapState] = {
    pb.MAP_STATE_QUEUED: "queued",
    pb.MAP_STATE_RUNNING: "running",
    pb.MAP_STATE_DONE: "done",
    pb.MAP_STATE_FAILED: "failed",
}


def map_job_from_pb(message: pb.MapJob) -> MapJob:
    space = _SPACE_NAMES.get(message.space, "semantic")
    state = _MAP_STATES.get(message.state)
    error = error_from_status(message.error) if message.HasField("error") else None
    if state is None:  # a state from a newer server: not one to keep polling for
        state, error = "failed", error or Image2SdrError(f"map job in state {message.state}, unknown to this client")
    return MapJob(
        id=message.id,
        state=state,
        progress=message.progress,
        stage=message.stage,
        space=space,  # type: ignore[arg-type]
        items=message.items,
        columns=message.columns,
        rows=message.rows,
        cells=tuple(MapCell(cell.id, cell.column, cell.row, cell.thumbnail) for cell in message.cells),
        png=message.png,
        cell_pixels=message.cell_pixels,
        created_ms=message.created_ms,
        elapsed_ms=message.elapsed_ms,
        neighbourhood_kept=message.neighbourhood_kept,
        skipped_without_visual=message.skipped_without_visual,
        error=error,
    )
