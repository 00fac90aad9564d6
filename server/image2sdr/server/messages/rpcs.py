"""Each RPC of ``image2sdr.v1.Image2Sdr`` as a function: request message in, use case called, response out.

Both edges speak these messages (gRPC in binary, HTTP in the proto's canonical JSON) and
call the same function for the same RPC, so the two APIs are one contract and one
implementation.  Each function is ``(use cases, request, call context) -> response``;
``UNARY`` names them by RPC.  A failure is the core's error, raised: each edge reports it
with ``status.status_for``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from image2sdr.v1 import image2sdr_pb2 as pb

from ..usecases import CallContext, UseCases
from . import requests as read
from . import responses as write

__all__ = ["UNARY", "encode_batch", "encode_then_store"]


def _encode(cases: UseCases, request: pb.EncodeRequest, call: CallContext) -> pb.EncodeResponse:
    encoded = cases.encode(read.encode_request(request))
    return write.encode_response(request.request_id, encoded, cases.config.sdr.dimensions)


def encode_batch(cases: UseCases, requests: Sequence[pb.EncodeRequest | Exception]) -> list[pb.EncodeResponse]:
    """EncodeStream's unit of work: each item answered on its own, in order (an Exception: it did not parse).

    Whatever goes wrong with one item (it did not parse, its options or target are bad,
    its image is damaged, the server failed on it) is that item's in-band error.
    """
    return encode_then_store(cases, requests)()


def encode_then_store(
    cases: UseCases, requests: Sequence[pb.EncodeRequest | Exception]
) -> Callable[[], list[pb.EncodeResponse]]:
    """``encode_batch`` in two halves: this call encodes; the function it returns stores and answers.

    A stream runs the second half of one batch (the index's writes, the answers'
    protobuf) while it encodes the next.
    """
    answers: list[pb.EncodeResponse | None] = [None] * len(requests)
    accepted: list[tuple[int, str]] = []
    asked = []
    for slot, request in enumerate(requests):
        if isinstance(request, Exception):
            answers[slot] = write.error_response("", request)
            continue
        try:
            asked.append(read.encode_request(request))
        except Exception as exc:
            answers[slot] = write.error_response(request.request_id, exc)
            continue
        accepted.append((slot, request.request_id))
    encoded = cases.encode_only(asked)
    dimensions = cases.config.sdr.dimensions

    def store() -> list[pb.EncodeResponse]:
        for (slot, request_id), outcome in zip(accepted, encoded.store(), strict=True):
            if isinstance(outcome, Exception):
                answers[slot] = write.error_response(request_id, outcome)
            else:
                answers[slot] = write.encode_response(request_id, outcome, dimensions)
        return [answer for answer in answers if answer is not None]

    return store


def _encode_text(cases: UseCases, request: pb.EncodeTextRequest, call: CallContext) -> pb.EncodeTextResponse:
    term, sdr = cases.encode_text(request.text)
    return pb.EncodeTextResponse(term=term, sdr=write.sdr_message(sdr, cases.config.sdr.dimensions))


def _similar_terms(cases: UseCases, request: pb.SimilarTermsRequest, call: CallContext) -> pb.SimilarTermsResponse:
    sdr = read.sdr_from_message(request.sdr, cases.config.sdr, "sdr") if request.HasField("sdr") else None
    nearest = cases.similar_terms(sdr, request.k)
    return pb.SimilarTermsResponse(terms=[pb.TermMatch(term=t, overlap=o) for t, o in nearest])


def _find_similar(cases: UseCases, request: pb.FindSimilarRequest, call: CallContext) -> pb.FindSimilarResponse:
    answer = cases.find_similar(read.similar_request(request, cases.config.sdr))
    return write.similar_response(answer, cases.config.sdr.dimensions)


def _find_duplicates(
    cases: UseCases, request: pb.FindDuplicatesRequest, call: CallContext
) -> pb.FindDuplicatesResponse:
    return write.duplicates_response(cases.find_duplicates(read.duplicates_request(request)))


def _get_item(cases: UseCases, request: pb.GetItemRequest, call: CallContext) -> pb.Item:
    return write.stored_item_message(cases.get_item(request.id), cases.config.sdr.dimensions)


def _remove_item(cases: UseCases, request: pb.RemoveItemRequest, call: CallContext) -> pb.RemoveItemResponse:
    cases.remove_item(request.id)
    return pb.RemoveItemResponse()


def _items_exist(cases: UseCases, request: pb.ItemsExistRequest, call: CallContext) -> pb.ItemsExistResponse:
    return pb.ItemsExistResponse(exists=cases.items_exist(list(request.ids)))


def _list_items(cases: UseCases, request: pb.ListItemsRequest, call: CallContext) -> pb.ListItemsResponse:
    page = cases.list_items(request.page_size, request.page_token, read.where(request.filter))
    return write.item_page_message(page, cases.config.sdr.dimensions)


def _create_map(cases: UseCases, request: pb.CreateMapRequest, call: CallContext) -> pb.MapJob:
    return write.map_job_message(cases.create_map(read.map_asked(request)))


def _get_map(cases: UseCases, request: pb.GetMapRequest, call: CallContext) -> pb.MapJob:
    return write.map_job_message(cases.get_map(request.id))


def _define_concept(cases: UseCases, request: pb.DefineConceptRequest, call: CallContext) -> pb.CustomConcept:
    defined = cases.define_concept(read.define_request(request), call)
    return write.custom_concept_message(defined, cases.config.sdr.dimensions)


def _get_concept(cases: UseCases, request: pb.GetConceptRequest, call: CallContext) -> pb.CustomConcept:
    return write.custom_concept_message(cases.get_concept(request.name), cases.config.sdr.dimensions)


def _list_concepts(cases: UseCases, request: pb.ListConceptsRequest, call: CallContext) -> pb.ListConceptsResponse:
    dimensions = cases.config.sdr.dimensions
    return pb.ListConceptsResponse(
        concepts=[write.custom_concept_message(defined, dimensions) for defined in cases.list_concepts()]
    )


def _remove_concept(cases: UseCases, request: pb.RemoveConceptRequest, call: CallContext) -> pb.RemoveConceptResponse:
    cases.remove_concept(request.name)
    return pb.RemoveConceptResponse()


def _explain(cases: UseCases, request: pb.ExplainRequest, call: CallContext) -> pb.ExplainResponse:
    return write.explain_response(cases.explain(read.explain_request(request), call))


def _info(cases: UseCases, request: pb.InfoRequest, call: CallContext) -> pb.InfoResponse:
    return write.info_response(cases.info())


# RPC name -> its function; EncodeStream (a stream of Encode) is ``encode_batch``.
UNARY: dict[str, Callable[[UseCases, Any, CallContext], Any]] = {
    "Encode": _encode,
    "EncodeText": _encode_text,
    "SimilarTerms": _similar_terms,
    "FindSimilar": _find_similar,
    "FindDuplicates": _find_duplicates,
    "GetItem": _get_item,
    "RemoveItem": _remove_item,
    "ItemsExist": _items_exist,
    "ListItems": _list_items,
    "CreateMap": _create_map,
    "GetMap": _get_map,
    "DefineConcept": _define_concept,
    "GetConcept": _get_concept,
    "ListConcepts": _list_concepts,
    "RemoveConcept": _remove_concept,
    "Explain": _explain,
    "Info": _info,
}
