"""Every translation between protobuf messages and the client's plain values, in one place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from image2sdr.v1 import image2sdr_pb2 as pb

from ._exceptions import error_from_status
from ._types import (
    Concept,
    Encoding,
    Info,
    Item,
    ItemError,
    Limits,
    Match,
    Provider,
    Sdr,
    StageTimings,
    TermMatch,
)

__all__ = [
    "add_to_index_message",
    "concepts_from_pb",
    "encode_options_message",
    "encoding_from_pb",
    "info_from_pb",
    "item_from_pb",
    "match_from_pb",
    "result_from_pb",
    "sdr_from_pb",
    "sdr_to_pb",
    "term_match_from_pb",
]


def sdr_from_pb(message: pb.Sdr) -> Sdr:
    return Sdr(size=message.size, dimensions=tuple(message.dimensions), active=tuple(message.active))


def sdr_to_pb(sdr: Sdr) -> pb.Sdr:
    return pb.Sdr(size=sdr.size, dimensions=sdr.dimensions, active=sdr.active)


def concepts_from_pb(messages: Iterable[pb.Concept]) -> tuple[Concept, ...]:
    return tuple(Concept(m.name, m.confidence, m.used, m.skip_reason) for m in messages)


def _timings_from_pb(message: pb.StageTimings) -> StageTimings:
    return StageTimings(message.decode_ms, message.concepts_ms, message.terms_ms, message.merge_ms, message.total_ms)


def encoding_from_pb(message: pb.EncodeResponse) -> Encoding:
    return Encoding(
        sdr=sdr_from_pb(message.sdr),
        concepts=concepts_from_pb(message.concepts),
        request_id=message.request_id,
        short=message.short,
        indexed=message.indexed,
        timings=_timings_from_pb(message.timings) if message.HasField("timings") else None,
    )


def result_from_pb(message: pb.EncodeResponse) -> Encoding | ItemError:
    """An EncodeStream answer: the encoding, or the item's in-band error."""
    if message.HasField("error"):
        return ItemError(message.request_id, error_from_status(message.error))
    return encoding_from_pb(message)


def encode_options_message(
    max_concepts: int | None, min_confidence: float | None, sparsity: float | None
) -> pb.EncodeOptions | None:
    """The options message, or None when every option is left to the server."""
    if max_concepts is None and min_confidence is None and sparsity is None:
        return None
    return pb.EncodeOptions(max_concepts=max_concepts, min_confidence=min_confidence, sparsity=sparsity)


def add_to_index_message(item_id: str | None, metadata: Mapping[str, str] | None) -> pb.AddToIndex | None:
    if item_id is None:
        if metadata:
            raise ValueError("metadata is stored with an indexed item: pass add_to_index=ID too")
        return None
    return pb.AddToIndex(id=item_id, metadata=dict(metadata or {}))


def match_from_pb(message: pb.Match) -> Match:
    return Match(message.id, message.overlap, concepts_from_pb(message.concepts), dict(message.metadata))


def item_from_pb(message: pb.Item) -> Item:
    return Item(message.id, sdr_from_pb(message.sdr), concepts_from_pb(message.concepts), dict(message.metadata))


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
    )
