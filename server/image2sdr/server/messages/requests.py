"""Request messages -> the use cases' requests (the core's values); the field at fault named in errors.

Nothing here decides anything the use cases decide; what is checked here belongs to the
wire form: an enum value this release does not know, an SDR's geometry against the
service's, an option's range as the proto states it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from image2sdr.v1 import image2sdr_pb2 as pb

from ..config import SdrConfig
from ..encoder import EncodeOptions
from ..errors import InvalidInputError
from ..index.values import SEMANTIC, VISUAL, ConceptCondition, Filter, OnDuplicate
from ..queries import Expression
from ..sdr import Sdr
from ..usecases.custom_concepts import DefineRequest, ExampleImage, ExampleItem
from ..usecases.duplicates import DuplicatesRequest
from ..usecases.encode import EncodeRequest, StoreAs
from ..usecases.explanations import ByClassifierConcept, ExplainRequest
from ..usecases.maps import ByIds, MapAsked
from ..usecases.parts import AskedThresholds
from ..usecases.search import (
    BLEND,
    ByCustomConcept,
    ByExpression,
    ById,
    ByImage,
    BySdr,
    ByText,
    SimilarQuery,
    SimilarRequest,
)

__all__ = [
    "define_request",
    "duplicates_request",
    "encode_options",
    "encode_request",
    "explain_request",
    "map_asked",
    "sdr_from_message",
    "similar_request",
    "where",
]

_SPACES = {pb.SPACE_UNSPECIFIED: SEMANTIC, pb.SPACE_SEMANTIC: SEMANTIC, pb.SPACE_VISUAL: VISUAL, pb.SPACE_BLEND: BLEND}
# Explain's `like` and a map use one space: a blend has no single SDR.
_ONE_SPACE = {pb.SPACE_UNSPECIFIED: SEMANTIC, pb.SPACE_SEMANTIC: SEMANTIC, pb.SPACE_VISUAL: VISUAL}
_ON_DUPLICATE = {
    pb.ON_DUPLICATE_UNSPECIFIED: OnDuplicate.KEEP,
    pb.ON_DUPLICATE_KEEP: OnDuplicate.KEEP,
    pb.ON_DUPLICATE_SKIP: OnDuplicate.SKIP,
    pb.ON_DUPLICATE_REPLACE: OnDuplicate.REPLACE,
}


def encode_options(message: pb.EncodeOptions) -> EncodeOptions:
    visual_share = message.visual_share if message.HasField("visual_share") else None
    if visual_share is not None and not 0.0 <= visual_share <= 1.0:  # NaN fails too
        raise InvalidInputError(f"visual_share must be in [0, 1], got {visual_share:g}", field="options.visual_share")
    return EncodeOptions(
        max_concepts=message.max_concepts if message.HasField("max_concepts") else None,
        min_confidence=message.min_confidence if message.HasField("min_confidence") else None,
        sparsity=message.sparsity if message.HasField("sparsity") else None,
        visual_share=visual_share,
    )


def _options(request: pb.EncodeRequest | pb.FindSimilarRequest | pb.ExplainRequest) -> EncodeOptions | None:
    return encode_options(request.options) if request.HasField("options") else None


def _merge(request: pb.EncodeRequest | pb.FindSimilarRequest) -> bool:
    return request.HasField("options") and request.options.merge_custom_concepts


def asked_thresholds(message: pb.DuplicateThresholds) -> AskedThresholds:
    return AskedThresholds(
        message.max_phash_distance if message.HasField("max_phash_distance") else None,
        message.min_visual_share if message.HasField("min_visual_share") else None,
    )


def encode_request(request: pb.EncodeRequest) -> EncodeRequest:
    options = _options(request)
    store = None
    if request.HasField("add_to_index"):
        target = request.add_to_index
        on_duplicate = _ON_DUPLICATE.get(target.on_duplicate)
        if on_duplicate is None:
            raise InvalidInputError(
                f"on_duplicate {target.on_duplicate} is not one of {sorted(_ON_DUPLICATE)}",
                field="add_to_index.on_duplicate",
            )
        store = StoreAs(target.id, dict(target.metadata), on_duplicate, asked_thresholds(target.duplicate_thresholds))
    return EncodeRequest(request.image, options, _merge(request), store)


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


def where(message: pb.Filter) -> Filter | None:
    """A request's filter as the core's value (the use case checks it); None when it sets no condition."""
    if not message.metadata and not message.concepts:
        return None
    metadata = tuple((condition.key, tuple(condition.values)) for condition in message.metadata)
    concepts = tuple(ConceptCondition(c.name, float(c.min_confidence)) for c in message.concepts)
    return Filter(metadata, concepts)


def _space(value: int, spaces: Mapping[Any, str], message: str) -> str:
    space = spaces.get(value)
    if space is None:  # a value from a newer contract, or a number made up
        raise InvalidInputError(message.format(value=value, known=sorted(spaces)), field="space")
    return space


def similar_request(request: pb.FindSimilarRequest, geometry: SdrConfig) -> SimilarRequest:
    space = _space(request.space, _SPACES, "space {value} is not one of {known}")
    visual = sdr_from_message(request.visual_sdr, geometry, "visual_sdr") if request.HasField("visual_sdr") else None
    return SimilarRequest(
        query=_similar_query(request, geometry),
        k=request.k,
        min_overlap=request.min_overlap,
        space=space,
        blend_weight=request.blend_weight if request.HasField("blend_weight") else None,
        visual_sdr=visual,
        where=where(request.filter),
        options=_options(request),
        merge_custom=_merge(request),
    )


def _expression(message: pb.ConceptExpression) -> Expression:
    return Expression(tuple(message.all), tuple(message.any), tuple(message.none))


# FindSimilar's query, by the oneof's field name.
_QUERIES: dict[str, Callable[[pb.FindSimilarRequest, SdrConfig], SimilarQuery]] = {
    "image": lambda request, _: ByImage(request.image),
    "sdr": lambda request, geometry: BySdr(sdr_from_message(request.sdr, geometry, "sdr")),
    "id": lambda request, _: ById(request.id),
    "text": lambda request, _: ByText(request.text),
    "expression": lambda request, _: ByExpression(_expression(request.expression)),
    "concept": lambda request, _: ByCustomConcept(request.concept),
}


def _similar_query(request: pb.FindSimilarRequest, geometry: SdrConfig) -> SimilarQuery | None:
    kind = request.WhichOneof("query")
    return None if kind is None else _QUERIES[kind](request, geometry)


def duplicates_request(request: pb.FindDuplicatesRequest) -> DuplicatesRequest:
    kind = request.WhichOneof("query")
    query = ById(request.id) if kind == "id" else ByImage(request.image) if kind == "image" else None
    return DuplicatesRequest(query, request.k, asked_thresholds(request.thresholds))


def _example(message: pb.ConceptExample) -> ExampleImage | ExampleItem | None:
    kind = message.WhichOneof("example")
    return ExampleImage(message.image) if kind == "image" else ExampleItem(message.id) if kind == "id" else None


def define_request(request: pb.DefineConceptRequest) -> DefineRequest:
    return DefineRequest(
        request.name, [_example(e) for e in request.positives], [_example(e) for e in request.negatives]
    )


def map_asked(request: pb.CreateMapRequest) -> MapAsked:
    space = _space(request.space, _ONE_SPACE, "space {value} cannot be mapped: SPACE_SEMANTIC or SPACE_VISUAL")
    kind = request.WhichOneof("items")
    items: ByIds | ByCustomConcept | Filter | None = None
    if kind == "ids":
        items = ByIds(list(request.ids.ids))
    elif kind == "concept":
        items = ByCustomConcept(request.concept)
    elif kind == "filter":
        items = where(request.filter)
    return MapAsked(items, space, request.columns, request.rows, request.cell_pixels)


def explain_request(request: pb.ExplainRequest) -> ExplainRequest:
    space = _space(request.space, _ONE_SPACE, "Explain's like compares SPACE_SEMANTIC or SPACE_VISUAL SDRs")
    kind = request.WhichOneof("target")
    target: ByClassifierConcept | ByCustomConcept | ById | None = None
    if kind == "concept":
        target = ByClassifierConcept(request.concept)
    elif kind == "custom_concept":
        target = ByCustomConcept(request.custom_concept)
    elif kind == "like":
        target = ById(request.like)
    return ExplainRequest(
        image=request.image,
        target=target,
        space=space,
        options=_options(request),
        patch=request.patch if request.HasField("patch") else None,
        stride=request.stride if request.HasField("stride") else None,
    )
