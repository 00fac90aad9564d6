"""Protobuf messages <-> the core's plain values, in both directions.

Nothing here decides anything: each function maps one message to one value or
back.  What is checked on the way in (an SDR's geometry, ``k``) is checked
against the config the service runs with, and a violation names the request
field at fault, for the BadRequest details.
"""

from __future__ import annotations

from collections.abc import Sequence

from image2sdr.v1 import image2sdr_pb2 as pb

from ..config import SdrConfig
from ..encoder import ConceptUse, EncodeOptions, Encoding
from ..errors import InvalidInputError
from ..index.protocol import Item, Match
from ..sdr import Sdr
from .status import status_for

__all__ = [
    "DEFAULT_K",
    "concept_message",
    "encode_options",
    "encode_response",
    "error_response",
    "item_message",
    "k_value",
    "match_message",
    "sdr_from_message",
    "sdr_message",
    "stored_item",
]

DEFAULT_K = 10  # what k = 0 (unset) means


# -- requests -> core --------------------------------------------------------------


def encode_options(request: pb.EncodeRequest | pb.FindSimilarRequest) -> EncodeOptions | None:
    """The request's options; None when it sets none (the configured values apply)."""
    if not request.HasField("options"):
        return None
    message = request.options
    return EncodeOptions(
        max_concepts=message.max_concepts if message.HasField("max_concepts") else None,
        min_confidence=message.min_confidence if message.HasField("min_confidence") else None,
        sparsity=message.sparsity if message.HasField("sparsity") else None,
    )


def k_value(k: int, max_k: int) -> int:
    if k == 0:
        return min(DEFAULT_K, max_k)
    if k > max_k:
        raise InvalidInputError(f"k must be in [1, {max_k}], got {k}", field="k")
    return k


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


def stored_item(request: pb.EncodeRequest, encoding: Encoding) -> Item:
    """What an EncodeRequest with ``add_to_index`` stores: the SDR, the concepts used, the metadata."""
    target = request.add_to_index
    return Item(
        target.id,
        encoding.sdr,
        tuple((c.name, c.confidence) for c in encoding.used),
        dict(target.metadata),
    )


# -- core -> responses -------------------------------------------------------------


def sdr_message(sdr: Sdr, dimensions: Sequence[int]) -> pb.Sdr:
    # Every SDR of this service has the configured geometry; the stores (term cache,
    # index) keep only positions, so the dimensions are stamped here, not trusted.
    return pb.Sdr(size=sdr.size, dimensions=list(dimensions), active=sdr.positions.tolist())


def concept_message(use: ConceptUse) -> pb.Concept:
    return pb.Concept(name=use.name, confidence=use.confidence, used=use.used, skip_reason=use.reason)


def encode_response(
    request: pb.EncodeRequest, encoding: Encoding, dimensions: Sequence[int], total_ms: float
) -> pb.EncodeResponse:
    """The answer to an encoded request (stored already, when it asked to be)."""
    timings = encoding.timings
    return pb.EncodeResponse(
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
        ),
        indexed=request.HasField("add_to_index"),
    )


def error_response(request_id: str, exc: BaseException) -> pb.EncodeResponse:
    """A stream item's in-band failure."""
    return pb.EncodeResponse(request_id=request_id, error=status_for(exc))


def _stored_concepts(concepts: Sequence[tuple[str, float]]) -> list[pb.Concept]:
    return [pb.Concept(name=name, confidence=confidence, used=True) for name, confidence in concepts]


def match_message(match: Match) -> pb.Match:
    return pb.Match(
        id=match.id,
        overlap=match.overlap,
        concepts=_stored_concepts(match.item.concepts),
        metadata=dict(match.item.metadata),
    )


def item_message(item: Item, dimensions: Sequence[int]) -> pb.Item:
    return pb.Item(
        id=item.id,
        sdr=sdr_message(item.sdr, dimensions),
        concepts=_stored_concepts(item.concepts),
        metadata=dict(item.metadata),
    )
