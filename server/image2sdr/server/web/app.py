"""``create_app(servicer, config)``: the HTTP/JSON face of the service, over the gRPC servicer itself.

Each endpoint parses its body into the RPC's request message with ``json_format`` (the
proto's canonical JSON: lowerCamelCase names, bytes as base64, int64 as strings; an
unknown field is an error), calls the very servicer method the gRPC server calls, with
an ``HttpContext``, and answers with the response message in the same JSON.  So the two
APIs are one contract and one implementation; a failure is the same ``google.rpc.Status``
(see ``errors``).

FastAPI, on Starlette, served by uvicorn: it gives the OpenAPI description
(``/openapi.json``) and browsable docs (``/docs``) for free, Starlette underneath
brings the pieces used here (static files, CORS, the multipart parser), and FastAPI
and uvicorn are a well-kept pair, released together.

Endpoints are plain functions: FastAPI runs them in its threadpool, where the servicer's
blocking work belongs; at most ``http.max_concurrent`` are in the servicer at once, the
rest wait.  Bodies are read on the event loop first, capped at ``http.max_body_bytes``
(Content-Length checked before a byte is read, then counted while reading), so a slow
or huge upload holds neither a worker thread nor the gRPC side.

Deadlines: an optional ``X-Timeout-S`` header (seconds) plays grpc-timeout's part;
without it a call has no deadline.  The bearer token is gRPC's (``service.token_env``).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health_pb2
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Match
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from image2sdr.v1 import image2sdr_pb2 as pb

from ..api.servicer import SERVER_VERSION, Image2SdrServicer
from ..api.status import status_for
from ..config import Config
from .context import HttpContext
from .errors import (
    HttpApiError,
    bad_request,
    code_for_http,
    status_response,
    too_large,
    unsupported_media_type,
)

__all__ = ["STATIC_DIR", "TIMEOUT_HEADER", "Metrics", "create_app"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"  # the page: index.html, app.js, style.css
TIMEOUT_HEADER = "X-Timeout-S"
MAX_TIMEOUT_S = 86_400.0  # a deadline further away than a day is a mistake (and overflows timers)
WAITING_PER_SLOT = 4  # calls that may wait per http.max_concurrent slot; more are refused with 429
_UNAUTHENTICATED = "missing or invalid bearer token (header 'Authorization: Bearer ...')"
_OPEN_PATHS = frozenset({"/healthz", "/"})  # and /static/...: probes and the page need no secret
_IMAGE_TYPES = "image/* or application/octet-stream (the image), multipart/form-data (field 'image'), or JSON"

_M = TypeVar("_M", bound=Message)


class Metrics(Protocol):
    """What the app needs of ``image2sdr.server.metrics.Metrics``."""

    def observe_request(self, protocol: str, method: str, code: str, seconds: float) -> None: ...

    def render(self) -> tuple[bytes, str]: ...


class HealthChecker(Protocol):
    """``grpc_health``'s HealthServicer: /healthz asks it as a gRPC health check would."""

    def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse: ...


def create_app(
    servicer: Image2SdrServicer,
    config: Config,
    metrics: Metrics | None = None,
    *,
    health: HealthChecker | None = None,
) -> FastAPI:
    """The app for one server; ``health`` answers /healthz (unset: always SERVING)."""
    app = FastAPI(
        title="image2sdr",
        version=SERVER_VERSION,
        summary="Images to semantic SDRs, and search by SDR overlap.",
        description=_DESCRIPTION,
        redoc_url=None,
    )
    app.state.calls = _Calls(servicer, config.http.max_concurrent)
    app.state.max_body_bytes = config.http.max_body_bytes
    app.state.body_timeout_s = config.http.body_timeout_s
    app.state.health = health
    app.state.metrics = metrics
    _add_routes(app, serve_metrics=metrics is not None and config.http.metrics)
    _add_error_handlers(app)
    # add_middleware wraps what is there: the last added runs first.
    token = os.environ.get(config.service.token_env, "")
    if token:
        app.add_middleware(_BearerToken, token=token)
    if config.http.cors_origins:  # a preflight carries no token: answered before the check
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.http.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", TIMEOUT_HEADER],
        )
    if metrics is not None:  # outermost: refusals are counted too
        app.add_middleware(_Observed, metrics=metrics)
    return app


_DESCRIPTION = f"""
The gRPC service `image2sdr.v1.Image2Sdr` over HTTP/JSON: the same request and response
messages in the proto's canonical JSON mapping (lowerCamelCase field names, bytes as
base64, int64 as strings, enums by name; an unknown field is refused).

* **Errors** are a `google.rpc.Status` in JSON, as gRPC sends in `grpc-status-details-bin`
  (details keep their `@type`); the HTTP status follows the gRPC code (400 INVALID_ARGUMENT,
  404 NOT_FOUND, 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, ...).
  A body over the server's limit is 413, a content type an endpoint does not read 415.
* **Token**: when the server has one, every route but `/healthz`, `/` and `/static/` needs
  `Authorization: Bearer <token>`; without it, 401.
* **Deadline**: an optional `{TIMEOUT_HEADER}` header, in seconds; past it the call ends
  with 504. Without it a call has no deadline.
* `POST /v1/encode` takes the image itself (`Content-Type: image/*` or
  `application/octet-stream`, options as query parameters), a multipart form (file field
  `image`, optional fields `id` and `metadata`, a JSON object), or an `EncodeRequest` in JSON.
"""


# -- calling the servicer -----------------------------------------------------------------


class _Calls:
    """Runs servicer methods for HTTP calls: at most ``limit`` at once, at most ``4 * limit`` waiting.

    A call waits for its slot on the event loop, not on a thread, so waiting calls hold
    no worker and ``/healthz`` and ``/metrics`` stay answerable under load; past the
    waiting room it is refused at once with 429 (RESOURCE_EXHAUSTED), as gRPC refuses
    calls past ``maximum_concurrent_rpcs``. The request message is parsed in the worker,
    after the slot is taken: a large JSON body costs nothing until its turn.
    """

    def __init__(self, servicer: Image2SdrServicer, limit: int) -> None:
        self._servicer = servicer
        self._limit = limit
        self._max_waiting = WAITING_PER_SLOT * limit
        self._waiting = 0  # touched on the event loop only
        self._slots: anyio.Semaphore | None = None  # made on the loop, at the first call
        self._threads: anyio.CapacityLimiter | None = None

    async def run(self, rpc: str, message: Message | Callable[[], Message], request: Request) -> Response:
        """Call ``rpc`` as gRPC would; the answer in canonical JSON."""
        context = _context_for(request)
        if self._slots is None or self._threads is None:
            self._slots, self._threads = anyio.Semaphore(self._limit), anyio.CapacityLimiter(self._limit)
        await self._take(self._slots, context.time_remaining())
        try:
            return await anyio.to_thread.run_sync(self._call, rpc, message, context, limiter=self._threads)
        finally:
            self._slots.release()

    async def _take(self, slots: anyio.Semaphore, remaining: float | None) -> None:
        if self._waiting >= self._max_waiting:
            raise HttpApiError(
                status_pb2.Status(
                    code=code_pb2.RESOURCE_EXHAUSTED,
                    message=f"{self._waiting} calls are waiting for one of http.max_concurrent ({self._limit}) "
                    "slots; retry later",
                )
            )
        self._waiting += 1
        try:
            with anyio.fail_after(None if remaining is None else max(0.0, remaining)):
                await slots.acquire()
        except TimeoutError:
            raise HttpApiError(
                status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message="deadline passed waiting for a free slot")
            ) from None
        finally:
            self._waiting -= 1

    def _call(self, rpc: str, message: Message | Callable[[], Message], context: HttpContext) -> Response:
        request = message() if callable(message) else message
        try:
            answer = getattr(self._servicer, rpc)(request, context)
        except HttpApiError:
            raise
        except Exception as exc:  # the servicer reports its own errors; this is a bug, logged
            raise HttpApiError(status_for(exc)) from exc
        return _message_response(answer)


def _context_for(request: Request) -> HttpContext:
    client = request.client
    host = client.host if client else "unknown"
    peer = f"ipv6:[{host}]:{client.port}" if client and ":" in host else f"ipv4:{host}:{client.port if client else 0}"
    # Everything but the token, which nothing behind this point needs (and no log should hold).
    metadata = tuple((k, v) for k, v in request.headers.items() if k != "authorization")
    return HttpContext(peer=peer, metadata=metadata, timeout_s=_timeout(request))


def _timeout(request: Request) -> float | None:
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT_S):
        raise bad_request(f"{TIMEOUT_HEADER} must be a number of seconds in (0, {MAX_TIMEOUT_S}]", TIMEOUT_HEADER)
    return seconds


def _message_response(message: Message, status: int = 200) -> JSONResponse:
    return JSONResponse(json_format.MessageToDict(message), status_code=status)


# -- bodies -------------------------------------------------------------------------------


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 once it passes http.max_body_bytes (declared or counted)."""
    limit: int = request.app.state.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit, int(declared))
    chunks, size = [], 0
    seconds: float = request.app.state.body_timeout_s
    try:
        with anyio.fail_after(seconds):  # a sender that stalls gives its connection back
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(limit, None)
                chunks.append(chunk)
    except TimeoutError:
        status = status_pb2.Status(
            code=code_pb2.DEADLINE_EXCEEDED, message=f"the body took longer than http.body_timeout_s ({seconds:g} s)"
        )
        raise HttpApiError(status, http=408) from None
    return b"".join(chunks)


Body = Annotated[bytes, Depends(_read_body)]


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _parse(body: bytes, message: _M) -> _M:
    """``body`` (JSON, empty for {}) parsed into ``message``; a bad body is 400 naming what is wrong."""
    name = message.DESCRIPTOR.full_name
    try:
        data = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError; RecursionError: deep nesting
        raise bad_request(
            f"the body is not JSON ({type(exc).__name__}); send a {name} in canonical JSON", "body"
        ) from None
    if not isinstance(data, dict):
        raise bad_request(f"the body must be a JSON object: a {name}", "body")
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise bad_request(str(exc), "body") from None
    return message


def _json_body(request: Request, body: bytes, message: _M) -> _M:
    kind = _media_type(request)
    if body.strip() and kind != "application/json":
        raise unsupported_media_type(kind, "application/json")
    return _parse(body, message)


async def _form(request: Request, body: bytes) -> FormData:
    """A multipart body, already read (and so capped), parsed."""

    async def once() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(request.headers, once(), max_files=1, max_fields=8)
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise bad_request(f"unreadable multipart form: {exc.message}", "body") from None


# -- POST /v1/encode ----------------------------------------------------------------------

Positive = Annotated[int | None, Query(ge=0, le=1_000_000)]
Share = Annotated[float | None, Query(ge=0.0, le=1.0)]


async def _encode_request(
    request: Request,
    body: Body,
    *,
    max_concepts: Positive = None,
    min_confidence: Share = None,
    sparsity: Share = None,
    visual_share: Share = None,
    add: Annotated[str | None, Query(description="store the result under this item id")] = None,
    on_duplicate: Annotated[str | None, Query(description="KEEP, SKIP or REPLACE (with add)")] = None,
) -> pb.EncodeRequest:
    """The EncodeRequest of any of the three bodies; query options go with the image and form ones."""
    kind = _media_type(request)
    options = {
        "max_concepts": max_concepts,
        "min_confidence": min_confidence,
        "sparsity": sparsity,
        "visual_share": visual_share,
    }
    if kind == "application/json":
        given = [
            name for name, value in {**options, "add": add, "on_duplicate": on_duplicate}.items() if value is not None
        ]
        if given:  # not silently dropped: the JSON body says it all
            raise bad_request(f"with a JSON body, {given[0]} goes in the EncodeRequest, not the query", given[0])
        return await anyio.to_thread.run_sync(_parse, body, pb.EncodeRequest())  # off the event loop
    message = pb.EncodeRequest()
    if kind == "multipart/form-data":
        await _from_form(request, body, message)
    elif kind.startswith("image/") or kind == "application/octet-stream":
        message.image = body
    else:
        raise unsupported_media_type(kind, _IMAGE_TYPES)
    for name, value in options.items():
        if value is not None:
            setattr(message.options, name, value)
    if add is not None:
        message.add_to_index.id = add
    if on_duplicate is not None:
        message.add_to_index.on_duplicate = _on_duplicate(on_duplicate, add)
    return message


async def _from_form(request: Request, body: bytes, message: pb.EncodeRequest) -> None:
    """The 2018 prototype's form: file ``image``, optional ``id`` and ``metadata`` (a JSON object)."""
    form = await _form(request, body)
    try:
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise bad_request("the form needs a file field 'image'", "image")
        message.image = await image.read()
        item_id, metadata = form.get("id"), form.get("metadata")
        if isinstance(item_id, str) and item_id:
            message.add_to_index.id = item_id
        if isinstance(metadata, str) and metadata:
            if not item_id:
                raise bad_request("metadata is stored with an item: give its id too", "metadata")
            _add_metadata(metadata, message.add_to_index)
    finally:
        await form.close()


def _add_metadata(text: str, target: pb.AddToIndex) -> None:
    """The form's ``metadata`` field (a JSON object of strings) into ``target.metadata``."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise bad_request("metadata must be a JSON object of strings", "metadata")
    try:
        json_format.ParseDict({"metadata": value}, target)
    except json_format.ParseError as exc:
        raise bad_request(f"metadata: {exc}", "metadata") from None


def _on_duplicate(name: str, add: str | None) -> pb.OnDuplicate:
    if add is None:
        raise bad_request("on_duplicate goes with add (the id to store under)", "on_duplicate")
    full = name.upper() if name.upper().startswith("ON_DUPLICATE_") else f"ON_DUPLICATE_{name.upper()}"
    try:
        return pb.OnDuplicate.Value(full)  # the enum wrapper maps names to numbers; it is not a type to call
    except ValueError:
        raise bad_request(f"on_duplicate is KEEP, SKIP or REPLACE, not {name!r}", "on_duplicate") from None


async def _encode(request: Request, message: Annotated[pb.EncodeRequest, Depends(_encode_request)]) -> Response:
    return await _calls(request).run("Encode", message, request)


def _calls(request: Request) -> _Calls:
    calls: _Calls = request.app.state.calls
    return calls


# -- the other RPCs -----------------------------------------------------------------------

# POST path -> (RPC, request message): the body is that message in JSON.
_JSON_ROUTES: tuple[tuple[str, str, type[Message]], ...] = (
    ("/v1/similar", "FindSimilar", pb.FindSimilarRequest),
    ("/v1/duplicates", "FindDuplicates", pb.FindDuplicatesRequest),
    ("/v1/text", "EncodeText", pb.EncodeTextRequest),
    ("/v1/terms", "SimilarTerms", pb.SimilarTermsRequest),
    ("/v1/items:list", "ListItems", pb.ListItemsRequest),
    ("/v1/items:exist", "ItemsExist", pb.ItemsExistRequest),
    ("/v1/maps", "CreateMap", pb.CreateMapRequest),
    ("/v1/explain", "Explain", pb.ExplainRequest),
    ("/v1/concepts", "DefineConcept", pb.DefineConceptRequest),
)


def _json_endpoint(rpc: str, message_type: type[Message]) -> Callable[[Request, bytes], Awaitable[Response]]:
    async def endpoint(request: Request, body: Body) -> Response:
        return await _calls(request).run(rpc, lambda: _json_body(request, body, message_type()), request)

    return endpoint


async def _get_item(request: Request, item_id: str) -> Response:
    return await _calls(request).run("GetItem", pb.GetItemRequest(id=item_id), request)


async def _remove_item(request: Request, item_id: str) -> Response:
    return await _calls(request).run("RemoveItem", pb.RemoveItemRequest(id=item_id), request)


async def _list_items(
    request: Request,
    page_size: Annotated[int, Query(ge=0, le=1_000_000, description="0: the server's max_k")] = 0,
    page_token: str = "",
) -> Response:
    return await _calls(request).run(
        "ListItems", pb.ListItemsRequest(page_size=page_size, page_token=page_token), request
    )


async def _info(request: Request) -> Response:
    return await _calls(request).run("Info", pb.InfoRequest(), request)


async def _get_map(request: Request, job_id: str) -> Response:
    return await _calls(request).run("GetMap", pb.GetMapRequest(id=job_id), request)


async def _list_concepts(request: Request) -> Response:
    return await _calls(request).run("ListConcepts", pb.ListConceptsRequest(), request)


async def _get_concept(request: Request, name: str) -> Response:
    return await _calls(request).run("GetConcept", pb.GetConceptRequest(name=name), request)


async def _remove_concept(request: Request, name: str) -> Response:
    return await _calls(request).run("RemoveConcept", pb.RemoveConceptRequest(name=name), request)


# -- service routes -----------------------------------------------------------------------


async def _healthz(request: Request) -> JSONResponse:
    """As a gRPC health check of the whole server ("" service) would answer."""
    health: HealthChecker | None = request.app.state.health
    if health is None:
        return JSONResponse({"status": "SERVING"})
    context = HttpContext(peer="")
    answer = health.Check(health_pb2.HealthCheckRequest(service=""), context)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return JSONResponse({"status": name}, status_code=200 if name == "SERVING" else 503)


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
    add("/v1/encode", _encode, methods=["POST"], name="Encode", openapi_extra=_encode_doc())
    for path, rpc, message_type in _JSON_ROUTES:
        add(path, _json_endpoint(rpc, message_type), methods=["POST"], name=rpc, openapi_extra=_json_doc(message_type))
    add("/v1/items", _list_items, methods=["GET"], name="ListItems")
    add("/v1/items/{item_id:path}", _get_item, methods=["GET"], name="GetItem")
    add("/v1/items/{item_id:path}", _remove_item, methods=["DELETE"], name="RemoveItem")
    add("/v1/info", _info, methods=["GET"], name="Info")
    add("/v1/maps/{job_id}", _get_map, methods=["GET"], name="GetMap")
    add("/v1/concepts", _list_concepts, methods=["GET"], name="ListConcepts")
    # :path, as for items: a name the API accepts may hold "/" ("cats/dogs", sent as cats%2Fdogs).
    add("/v1/concepts/{name:path}", _get_concept, methods=["GET"], name="GetConcept")
    add("/v1/concepts/{name:path}", _remove_concept, methods=["DELETE"], name="RemoveConcept")
    add("/healthz", _healthz, methods=["GET"], name="healthz")
    if serve_metrics:
        add("/metrics", _metrics, methods=["GET"], name="metrics", include_in_schema=False)
    add("/", _page, methods=["GET"], name="page", include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")


def _json_doc(message_type: type[Message]) -> dict[str, Any]:
    name = message_type.DESCRIPTOR.full_name
    schema = {"type": "object", "description": f"a {name} in the proto's canonical JSON mapping"}
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": schema}}}}


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
                **_json_doc(pb.EncodeRequest)["requestBody"]["content"],
            },
        }
    }


# -- errors -------------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HttpApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_parameters)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _framework_error)  # type: ignore[arg-type]


async def _api_error(request: Request, error: HttpApiError) -> Response:
    return status_response(error.status, error.http)


async def _invalid_parameters(request: Request, error: RequestValidationError) -> Response:
    """A query or path parameter FastAPI refused: 400 with a BadRequest naming it."""
    first = error.errors()[0] if error.errors() else {}
    where = [str(part) for part in first.get("loc", ()) if part not in ("query", "path", "header")]
    field = ".".join(where) or "request"
    return await _api_error(request, bad_request(f"{field}: {first.get('msg', 'invalid')}", field))


async def _framework_error(request: Request, error: StarletteHTTPException) -> Response:
    """Starlette's own answers (no such route, a method the route lacks) as a Status too."""
    status = status_pb2.Status(code=code_for_http(error.status_code), message=str(error.detail))
    return status_response(status, error.status_code, dict(error.headers or {}))


# -- middleware ---------------------------------------------------------------------------


class _BearerToken:
    """Every route but /healthz, / and /static/ needs the token; compared in constant time."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._expected = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _open(scope["path"]) or self._allowed(scope):
            await self._app(scope, receive, send)
            return
        status = status_pb2.Status(code=code_pb2.UNAUTHENTICATED, message=_UNAUTHENTICATED)
        await status_response(status, 401, {"WWW-Authenticate": "Bearer"})(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        for key, value in scope["headers"]:
            if key == b"authorization" and value[:7].lower() == b"bearer ":
                return hmac.compare_digest(value[7:].strip(), self._expected)
        return False


def _open(path: str) -> bool:
    return path in _OPEN_PATHS or path.startswith("/static/")


class _Observed:
    """Each answered request counted by route (the RPC's name where there is one) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started, code = time.perf_counter(), 500

        async def sending(message: AsgiMessage) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            self._metrics.observe_request("http", _route_name(scope), str(code), elapsed)


def _route_name(scope: Scope) -> str:
    """The route's name; for a call refused before routing (the token), the route it asked for."""
    route = scope.get("route")
    if route is None:
        app = scope.get("app")
        for candidate in getattr(app, "routes", ()):
            if candidate.matches(scope)[0] == Match.FULL:
                route = candidate
                break
    return str(getattr(route, "name", None) or "unmatched")
