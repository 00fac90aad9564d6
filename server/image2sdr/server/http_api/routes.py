"""The service's calls over HTTP: one route per RPC under /v1/, each onto the use case the gRPC servicer calls.

A POST body is the RPC's request message in the proto's JSON (``bodies.py``); an item or a listing comes
in a view (``VIEWS``), SDRs only when asked; the answer is the response message in JSON (``calls.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from google.protobuf.message import Message
from starlette.responses import Response

from image2sdr.v1 import image2sdr_pb2 as pb

from ..usecases.items import DEFAULT_PAGE_SIZE
from .bodies import Body, encode_request, json_body
from .calls import Calls, message_response
from .errors import bad_request
from .resources import add_resource_routes

__all__ = ["VIEWS", "add_rpc_routes"]


def add_rpc_routes(app: FastAPI) -> None:
    """The service's calls under /v1/, each onto its RPC's use case (the route's name is the RPC's)."""
    add = app.add_api_route
    add_resource_routes(app)  # first: GET /v1/items/{id} and /v1/maps/{id} would take their paths
    add("/v1/encode", _encode, methods=["POST"], name="Encode", openapi_extra=_encode_doc())
    for path, rpc, message_type in _JSON_ROUTES:
        add(path, _json_endpoint(rpc, message_type), methods=["POST"], name=rpc)  # body: openapi.py
    add("/v1/items", _list_items, methods=["GET"], name="ListItems")
    add("/v1/items:list", _list_items_filtered, methods=["POST"], name="ListItems")  # body: openapi.py
    add("/v1/items/{item_id:path}", _get_item, methods=["GET"], name="GetItem")
    add("/v1/items/{item_id:path}", _remove_item, methods=["DELETE"], name="RemoveItem")
    add("/v1/info", _info, methods=["GET"], name="Info")
    add("/v1/concepts", _list_concepts, methods=["GET"], name="ListConcepts")
    # :path, as for items: a name the API accepts may hold "/" ("cats/dogs", sent as cats%2Fdogs).
    add("/v1/concepts/{name:path}", _get_concept, methods=["GET"], name="GetConcept")
    add("/v1/concepts/{name:path}", _remove_concept, methods=["DELETE"], name="RemoveConcept")


# -- encode ------------------------------------------------------------------------------


async def _encode(
    request: Request, message: Annotated[pb.EncodeRequest | Callable[[], pb.EncodeRequest], Depends(encode_request)]
) -> Response:
    return await _calls(request).run("Encode", message, request)


def _calls(request: Request) -> Calls:
    calls: Calls = request.app.state.calls
    return calls


# -- the other RPCs -----------------------------------------------------------------------

# POST path -> (RPC, request message): the body is that message in JSON.
_JSON_ROUTES: tuple[tuple[str, str, type[Message]], ...] = (
    ("/v1/similar", "FindSimilar", pb.FindSimilarRequest),
    ("/v1/duplicates", "FindDuplicates", pb.FindDuplicatesRequest),
    ("/v1/text", "EncodeText", pb.EncodeTextRequest),
    ("/v1/terms", "SimilarTerms", pb.SimilarTermsRequest),
    ("/v1/items:exist", "ItemsExist", pb.ItemsExistRequest),
    ("/v1/maps", "CreateMap", pb.CreateMapRequest),
    ("/v1/explain", "Explain", pb.ExplainRequest),
    ("/v1/concepts", "DefineConcept", pb.DefineConceptRequest),
)


def _json_endpoint(rpc: str, message_type: type[Message]) -> Callable[[Request, bytes], Awaitable[Response]]:
    async def endpoint(request: Request, body: Body) -> Response:
        return await _calls(request).run(rpc, lambda: json_body(request, body, message_type()), request)

    return endpoint


# -- views: SDRs only when asked ------------------------------------------------------------

# Google's API design guide's view (AIP-157). BASIC: an item's id, concepts, metadata and
# fingerprint; FULL: with its SDRs and, from GetItem, its thumbnail. Both SDRs of 100 items
# listed were 430 KB of JSON; a listing shows ids and concepts, so BASIC is its default.
# GetItem's is FULL: one item is read whole (the SDRs are what it is for, as over gRPC),
# and a client reading items before views existed keeps what it read.
VIEWS = ("BASIC", "FULL")
_VIEW_DOC = "BASIC: no SDRs and no thumbnail (id, concepts, metadata, fingerprint); FULL: the whole item"


def _view_query(default: str) -> Any:
    return Query(description=f"{_VIEW_DOC}; absent: {default}", json_schema_extra={"enum": list(VIEWS)})


ListView = Annotated[str | None, _view_query("BASIC")]
GetView = Annotated[str | None, _view_query("FULL")]


def _full(view: str | None, default: str) -> bool:
    """Whether ``view`` (any case; absent: ``default``) asks for the whole item; another value is 400."""
    chosen = (view or default).strip().upper()
    if chosen not in VIEWS:
        raise bad_request(f"view: {view[:100] if view else view!r} is not a view; one of BASIC, FULL", "view")
    return chosen == "FULL"


def _basic(item: pb.Item) -> pb.Item:
    """``item`` without what the BASIC view leaves out: its SDRs and thumbnail."""
    for name in ("sdr", "visual", "thumbnail"):
        item.ClearField(name)
    return item


def _listing(full: bool) -> Callable[[Any], Response]:
    def respond(page: pb.ListItemsResponse) -> Response:
        if not full:
            for item in page.items:
                _basic(item)
        return message_response(page)

    return respond


async def _get_item(request: Request, item_id: str, view: GetView = None) -> Response:
    full = _full(view, "FULL")
    respond = message_response if full else lambda item: message_response(_basic(item))
    return await _calls(request).run("GetItem", pb.GetItemRequest(id=item_id), request, respond)


async def _remove_item(request: Request, item_id: str) -> Response:
    return await _calls(request).run("RemoveItem", pb.RemoveItemRequest(id=item_id), request)


_PAGE_SIZE = (
    f"items a page, 1..index.max_k (Info: limits.maxK; more is 400); 0 or absent: {DEFAULT_PAGE_SIZE}"
    " (index.max_k when that is smaller)"
)


async def _list_items(
    request: Request,
    page_size: Annotated[int, Query(ge=0, le=1_000_000, description=_PAGE_SIZE)] = 0,
    page_token: str = "",
    view: ListView = None,
) -> Response:
    full = _full(view, "BASIC")
    message = pb.ListItemsRequest(page_size=page_size, page_token=page_token)
    return await _calls(request).run("ListItems", message, request, _listing(full))


async def _list_items_filtered(request: Request, body: Body, view: ListView = None) -> Response:
    """POST /v1/items:list: a ListItemsRequest (with its filter) in the body, the view in the query."""
    full = _full(view, "BASIC")
    message = lambda: json_body(request, body, pb.ListItemsRequest())  # noqa: E731 (parsed in the worker)
    return await _calls(request).run("ListItems", message, request, _listing(full))


async def _info(request: Request) -> Response:
    return await _calls(request).run("Info", pb.InfoRequest(), request)


async def _list_concepts(request: Request) -> Response:
    return await _calls(request).run("ListConcepts", pb.ListConceptsRequest(), request)


async def _get_concept(request: Request, name: str) -> Response:
    return await _calls(request).run("GetConcept", pb.GetConceptRequest(name=name), request)


async def _remove_concept(request: Request, name: str) -> Response:
    return await _calls(request).run("RemoveConcept", pb.RemoveConceptRequest(name=name), request)


def _encode_doc() -> dict[str, Any]:
    binary = {"schema": {"type": "string", "format": "binary"}}
    form = {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {"type": "string", "format": "binary"},
            "id": {"type": "string", "description": "store the result under this item id"},
            "metadata": {"type": "string", "description": "a JSON object of strings, stored with the item"},
        },
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "image/*": binary,
                "application/octet-stream": binary,
                "multipart/form-data": {"schema": form},
                # application/json: an EncodeRequest, added from the proto by openapi.py
            },
        }
    }
