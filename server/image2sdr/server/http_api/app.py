"""``create_app(cases, config)``: the HTTP/JSON face of the service, over the use cases.

Each endpoint parses its body into the RPC's request message with ``json_format`` (the
proto's canonical JSON: lowerCamelCase names, bytes as base64, int64 as strings; an
unknown field is an error), calls the very function the gRPC servicer calls for that
RPC (``messages.rpcs``), and answers with the response message in the same JSON.  So
the two APIs are one contract and one implementation; a failure is the same
``google.rpc.Status`` (see ``errors``).

FastAPI, on Starlette, served by uvicorn: it gives the paths and parameters of the
OpenAPI description (``/openapi.json``; the bodies' schemas come from the proto, see
``openapi``) and the docs pages (``/docs``, ``/redoc``, their files from the
fastapi-offline package, so they work with no network), Starlette underneath
brings the pieces used here (static files, CORS, the multipart parser), and FastAPI
and uvicorn are a well-kept pair, released together.

    app.py         create_app: routes, the docs pages, error handlers, middleware order
    openapi.py     /openapi.json: request, response and error schemas from the proto's descriptors
    calls.py       Calls: a slot per call, the waiting room, the deadline header, the worker thread
    bodies.py      bodies read under http.max_body_bytes, parsed (JSON under http.max_json_values, multipart, image)
    browser.py     what a web page may do: the Host check, the origin check, the page's security headers
    middleware.py  the bearer token, the request metrics
    errors.py      gRPC code -> HTTP status; failures answered as google.rpc.Status JSON

Deadlines: an optional ``X-Timeout-S`` header (seconds) plays grpc-timeout's part;
without it a call has no deadline.  The bearer token is gRPC's (``service.token_env``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import fastapi_offline
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from image2sdr.v1 import image2sdr_pb2 as pb

from ..auth import token_from_env
from ..config import Config
from ..messages.status import status_for
from ..usecases import UseCases
from ..usecases.items import DEFAULT_PAGE_SIZE
from ..version import SERVER_VERSION
from .bodies import Body, encode_request, json_body, refuse_unknown_query
from .browser import REQUESTED_WITH, BrowserGuardMiddleware, allowed_hosts
from .calls import TIMEOUT_HEADER, Calls, message_response
from .errors import HttpApiError, bad_request, code_for_http, status_http, status_response
from .middleware import BearerTokenMiddleware, Metrics, ObservedMiddleware
from .openapi import ProtoDocumentedApp
from .resources import add_resource_routes

__all__ = ["DOCS_ASSETS", "STATIC_DIR", "TIMEOUT_HEADER", "VIEWS", "create_app"]

STATIC_DIR = Path(__file__).parent / "static"  # the page: index.html, app.js, style.css
# Swagger UI's and ReDoc's scripts and styles, as fastapi-offline ships them (no CDN: the
# docs work with no network). Served under /static/ like the page's own files, which need
# no token: a browser cannot add one to a <script> it loads.
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
_DOCS_ASSETS_URL = "/static/docs"


def create_app(cases: UseCases, config: Config, metrics: Metrics | None = None) -> FastAPI:
    """The app for one service: its routes over ``cases``, with ``config.http``'s limits and the token."""
    app = ProtoDocumentedApp(  # /openapi.json: schemas from the proto (openapi.py)
        title="image2sdr",
        version=SERVER_VERSION,
        summary="Images to semantic SDRs, and search by SDR overlap.",
        description=_DESCRIPTION,
        docs_url=None,  # served by _add_docs, from package files
        redoc_url=None,
        dependencies=[Depends(refuse_unknown_query)],  # a query parameter no route takes is 400, not ignored
    )
    app.state.cases = cases
    app.state.calls = Calls(cases, config.http.max_concurrent)
    app.state.max_body_bytes = config.http.max_body_bytes
    app.state.max_json_values = config.http.max_json_values
    app.state.body_timeout_s = config.http.body_timeout_s
    app.state.metrics = metrics
    _add_docs(app)  # before the page's routes: /static/docs is matched before /static
    _add_routes(app, serve_metrics=metrics is not None and config.http.metrics)
    _add_error_handlers(app)
    # add_middleware wraps what is there: the last added runs first.
    token = token_from_env(config.service)
    if token is not None:
        app.add_middleware(BearerTokenMiddleware, token=token)
    if config.http.cors_origins:  # a preflight carries no token: answered before the check
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.http.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", TIMEOUT_HEADER, REQUESTED_WITH],
        )
    app.add_middleware(
        BrowserGuardMiddleware,
        hosts=allowed_hosts(config.http.allowed_hosts, config.http.host),
        cors_origins=config.http.cors_origins,
        check_origin=token is None,  # with a token, the token decides (a foreign page cannot send one)
    )
    if metrics is not None:  # outermost: refusals are counted too
        app.add_middleware(ObservedMiddleware, metrics=metrics)
    return app


_DESCRIPTION = f"""
The gRPC service `image2sdr.v1.Image2Sdr` over HTTP/JSON: the same request and response
messages in the proto's canonical JSON mapping (lowerCamelCase field names, bytes as
base64, int64 as strings, enums by name; an unknown field is refused).

* **Errors** are a `google.rpc.Status` in JSON, as gRPC sends in `grpc-status-details-bin`
  (details keep their `@type`); the HTTP status follows the gRPC code (400 INVALID_ARGUMENT
  and FAILED_PRECONDITION, 404 NOT_FOUND, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, ...).
  RESOURCE_EXHAUSTED is 413 when what was sent is over a limit (a body, an image's bytes or
  pixels, an item's metadata: the QuotaFailure names it; do not retry) and 429 when the
  server is busy (retry later). A content type an endpoint does not read is 415.
* **Token**: when the server has one, every route but `/healthz`, `/` and `/static/` needs
  `Authorization: Bearer <token>`; without it, 401.
* **Browsers**: the `Host` header must name the server (`http.allowed_hosts`, localhost by
  default; another is 400). Without a token, a POST or DELETE whose `Origin` (or `Referer`)
  is another site's is 403 unless that origin is in `http.cors_origins` or the call carries
  `{REQUESTED_WITH}`; callers that send neither header (curl, client libraries) are not browsers.
* **JSON** bodies may hold at most `http.max_json_values` values and keys (counted before
  parsing; more: 413).
* **Deadline**: an optional `{TIMEOUT_HEADER}` header, in seconds; past it the call ends
  with 504. Without it a call has no deadline.
* `POST /v1/encode` takes the image itself (`Content-Type: image/*` or
  `application/octet-stream`, options as query parameters), a multipart form (file field
  `image`, optional fields `id` and `metadata`, a JSON object), or an `EncodeRequest` in JSON.
"""


# -- routes ------------------------------------------------------------------------------


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


# -- service routes -----------------------------------------------------------------------


async def _healthz(request: Request) -> JSONResponse:
    """As a gRPC health check of the whole server would answer; when not serving, why."""
    cases: UseCases = request.app.state.cases
    state = cases.health.state()
    if state.serving:
        return JSONResponse({"status": "SERVING"})
    return JSONResponse({"status": "NOT_SERVING", "reason": state.reason}, status_code=503)


def _metrics(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    body, content_type = metrics.render()
    return Response(body, headers={"content-type": content_type})


def _page(request: Request) -> Response:
    index = STATIC_DIR / "index.html"
    if not index.is_file():
        raise HttpApiError(status_pb2.Status(code=code_pb2.NOT_FOUND, message="the page is not installed"))
    return FileResponse(index)


def _add_routes(app: FastAPI, *, serve_metrics: bool) -> None:
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
    add("/healthz", _healthz, methods=["GET"], name="healthz")
    if serve_metrics:
        add("/metrics", _metrics, methods=["GET"], name="metrics", include_in_schema=False)
    add("/", _page, methods=["GET"], name="page", include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")


def _add_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc (ReDoc) over /openapi.json, their files served from the package."""
    app.add_api_route("/docs", _swagger_ui, methods=["GET"], name="docs", include_in_schema=False)
    app.add_api_route("/redoc", _redoc, methods=["GET"], name="redoc", include_in_schema=False)
    app.mount(_DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")


def _swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{_DOCS_ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{_DOCS_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{_DOCS_ASSETS_URL}/favicon.png",
    )


def _redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{_DOCS_ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{_DOCS_ASSETS_URL}/favicon.png",
        with_google_fonts=False,  # fonts from Google are a network fetch too
    )


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


# -- errors ---------------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HttpApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_parameters)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _framework_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


async def _api_error(request: Request, error: HttpApiError) -> Response:
    return status_response(error.status, error.http)


async def _invalid_parameters(request: Request, error: RequestValidationError) -> Response:
    """A query or path parameter FastAPI refused: 400 with a BadRequest naming it."""
    first = error.errors()[0] if error.errors() else {}
    where = [str(part) for part in first.get("loc", ()) if part not in ("query", "path", "header")]
    field = ".".join(where) or "request"
    return await _api_error(request, bad_request(f"{field}: {first.get('msg', 'invalid')}", field))


async def _unexpected(request: Request, error: Exception) -> Response:
    """Anything no other handler took: a Status (INTERNAL for a bug), never Starlette's plain-text 500.

    Starlette re-raises it after this answer is sent, so uvicorn logs the traceback once (``logged``).
    """
    status = status_for(error, logged=True)
    return status_response(status, status_http(status))


async def _framework_error(request: Request, error: StarletteHTTPException) -> Response:
    """Starlette's own answers (no such route, a method the route lacks) as a Status too."""
    status = status_pb2.Status(code=code_for_http(error.status_code), message=str(error.detail))
    return status_response(status, error.status_code, dict(error.headers or {}))
