"""The use cases' answers (the core's values) -> response messages.

Every SDR of this service has the configured geometry; the stores (term cache, index)
keep only positions, so the dimensions are stamped here, not trusted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from image2sdr.v1 import image2sdr_pb2 as pb

from ..custom_concepts import Defined
from ..encoder import ConceptUse, Encoding
from ..explain import Explanation
from ..fingerprints import Fingerprint
from ..index.values import (
    SEMANTIC,
    VISUAL,
    Duplicate,
    DuplicateKind,
    DuplicateStage,
    DuplicateThresholds,
    Item,
    ItemPage,
    Match,
)
from ..keypoints import Transform
from ..maps.jobs import MapState, MapStatus
from ..queries import TermOverlap
from ..sdr import Sdr
from ..usecases.duplicates import DuplicatesAnswer
from ..usecases.encode import Encoded
from ..usecases.info import Provider, ServiceInfo
from ..usecases.items import StoredItem
from ..usecases.search import BLEND, SimilarAnswer
from .status import status_for

__all__ = [
    "custom_concept_message",
    "duplicates_response",
    "encode_response",
    "error_response",
    "explain_response",
    "info_response",
    "item_message",
    "item_page_message",
    "map_job_message",
    "sdr_message",
    "similar_response",
]

_SPACE_ENUMS = {SEMANTIC: pb.SPACE_SEMANTIC, VISUAL: pb.SPACE_VISUAL}
_KINDS = {
    DuplicateKind.SAME_BYTES: pb.DUPLICATE_KIND_SAME_BYTES,
    DuplicateKind.NEAR_EXACT: pb.DUPLICATE_KIND_NEAR_EXACT,
    DuplicateKind.TRANSFORMED: pb.DUPLICATE_KIND_TRANSFORMED,
}
_STAGES = {
    DuplicateStage.FILE_HASH: pb.DUPLICATE_STAGE_FILE_HASH,
    DuplicateStage.PHASH: pb.DUPLICATE_STAGE_PHASH,
    DuplicateStage.VISUAL: pb.DUPLICATE_STAGE_VISUAL,
    DuplicateStage.KEYPOINTS: pb.DUPLICATE_STAGE_KEYPOINTS,
}
_MAP_STATES = {
    MapState.QUEUED: pb.MAP_STATE_QUEUED,
    MapState.RUNNING: pb.MAP_STATE_RUNNING,
    MapState.DONE: pb.MAP_STATE_DONE,
    MapState.FAILED: pb.MAP_STATE_FAILED,
}


def sdr_message(sdr: Sdr, dimensions: Sequence[int]) -> pb.Sdr:
    return pb.Sdr(size=sdr.size, dimensions=list(dimensions), active=sdr.positions.tolist())


def _concept(use: ConceptUse) -> pb.Concept:
    return pb.Concept(name=use.name, confidence=use.confidence, used=use.used, skip_reason=use.reason)


def _stored_concepts(concepts: Sequence[tuple[str, float]]) -> list[pb.Concept]:
    return [pb.Concept(name=name, confidence=confidence, used=True) for name, confidence in concepts]


def _fingerprint(fingerprint: Fingerprint) -> pb.Fingerprint:
    return pb.Fingerprint(sha256=fingerprint.sha256, phash=fingerprint.phash)


def _thresholds(applied: DuplicateThresholds) -> pb.DuplicateThresholds:
    return pb.DuplicateThresholds(
        max_phash_distance=applied.max_phash_distance, min_visual_share=applied.min_visual_share
    )


def encode_response(request_id: str, encoded: Encoded, dimensions: Sequence[int]) -> pb.EncodeResponse:
    """The answer to an encoded request; ``encoded.stored`` is what the index did, when it was to be stored."""
    encoding, stored, timings = encoded.encoding, encoded.stored, encoded.encoding.timings
    response = pb.EncodeResponse(
        request_id=request_id,
        sdr=sdr_message(encoding.sdr, dimensions),
        concepts=[_concept(c) for c in encoding.concepts],
        short=encoding.short,
        timings=pb.StageTimings(
            decode_ms=timings.decode_ms,
            concepts_ms=timings.concepts_ms,
            terms_ms=timings.terms_ms,
            merge_ms=timings.merge_ms,
            total_ms=encoded.total_ms,
            appearance_ms=timings.appearance_ms,
        ),
        indexed=stored is not None and stored.stored,
        custom_concepts=[_concept(c) for c in encoding.custom],
    )
    _add_looks(response, encoding, dimensions)
    if stored is not None and stored.duplicate is not None:
        response.duplicate.CopyFrom(_duplicate(stored.duplicate, encoding.visual))
    if stored is not None:
        response.replaced.extend(stored.replaced)
    return response


def _add_looks(response: pb.EncodeResponse, encoding: Encoding, dimensions: Sequence[int]) -> None:
    if encoding.visual is not None:
        response.visual.CopyFrom(sdr_message(encoding.visual, dimensions))
    if encoding.fingerprint is not None:
        response.fingerprint.CopyFrom(_fingerprint(encoding.fingerprint))


def error_response(request_id: str, exc: BaseException) -> pb.EncodeResponse:
    """A stream item's in-band failure."""
    return pb.EncodeResponse(request_id=request_id, error=status_for(exc))


def _match(match: Match, space: str, explanation: Sequence[TermOverlap]) -> pb.Match:
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


def similar_response(answer: SimilarAnswer, dimensions: Sequence[int]) -> pb.FindSimilarResponse:
    explanations = answer.explanations or [[] for _ in answer.matches]
    response = pb.FindSimilarResponse(
        matches=[_match(m, answer.space, e) for m, e in zip(answer.matches, explanations, strict=True)]
    )
    if SEMANTIC in answer.queries:
        response.query.CopyFrom(sdr_message(answer.queries[SEMANTIC], dimensions))
    if VISUAL in answer.queries:
        response.visual_query.CopyFrom(sdr_message(answer.queries[VISUAL], dimensions))
        # Items without a visual SDR cannot be found by look; say how many were not searched.
        response.skipped_without_visual = answer.skipped_without_visual
    return response


def _duplicate(duplicate: Duplicate, query_visual: Sdr | None) -> pb.Duplicate:
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
        stage=_STAGES[duplicate.stage],
        inliers=duplicate.inliers,
        transform=_transform(duplicate.transform) if duplicate.transform is not None else None,
    )


def _transform(transform: Transform) -> pb.CopyTransform:
    left, top, right, bottom = transform.crop
    return pb.CopyTransform(
        rotation_degrees=transform.rotation_degrees,
        scale=transform.scale,
        crop_left=left,
        crop_top=top,
        crop_right=right,
        crop_bottom=bottom,
        mirrored=transform.mirrored,
    )


def duplicates_response(answer: DuplicatesAnswer) -> pb.FindDuplicatesResponse:
    response = pb.FindDuplicatesResponse(
        duplicates=[_duplicate(d, answer.query_visual) for d in answer.duplicates],
        thresholds=_thresholds(answer.thresholds),
    )
    if answer.fingerprint is not None:
        response.fingerprint.CopyFrom(_fingerprint(answer.fingerprint))
    return response


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
        message.fingerprint.CopyFrom(_fingerprint(item.fingerprint))
    return message


def stored_item_message(stored: StoredItem, dimensions: Sequence[int]) -> pb.Item:
    message = item_message(stored.item, dimensions)
    message.thumbnail = stored.thumbnail
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
        suggestions=[pb.ConceptSuggestion(id=item_id, confidence=conf) for item_id, conf in concept.suggestions],
        positive_ids=concept.positive_ids,
        negative_ids=concept.negative_ids,
    )
    background = concept.report.background
    if background is not None:
        message.background.CopyFrom(pb.ConceptBackground(**dataclasses.asdict(background)))
    visual = concept.sdrs.get(VISUAL)
    if visual is not None:
        message.visual.CopyFrom(sdr_message(visual, dimensions))
    return message


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


def _provider(provider: Provider) -> pb.Provider:
    return pb.Provider(name=provider.name, model=provider.model, version=provider.version)


def info_response(found: ServiceInfo) -> pb.InfoResponse:
    config = found.config
    return pb.InfoResponse(
        server_version=found.server_version,
        geometry=pb.Sdr(size=config.sdr.size, dimensions=list(config.sdr.dimensions)),
        sparsity=config.sdr.sparsity,
        active_bits=config.sdr.active_bits,
        visual_share=config.sdr.visual_share,
        concepts=_provider(found.concepts),
        terms=_provider(found.terms),
        index_kind=found.index_kind,
        index_size=found.index_size,
        index_visual_size=found.index_visual_size,
        custom_concepts=found.custom_concepts,
        duplicate_thresholds=_thresholds(found.duplicate_thresholds),
        limits=pb.Limits(
            max_message_bytes=config.service.max_message_bytes,
            max_image_bytes=config.image.max_bytes,
            max_pixels=config.image.max_pixels,
            min_image_side=config.image.min_side,
            max_k=config.index.max_k,
            stream_in_flight=config.service.stream_in_flight,
            max_map_items=config.maps.max_items,
        ),
        vocabulary_size=found.vocabulary_size,
        visual=None if found.visual is None else _provider(found.visual),
    )
