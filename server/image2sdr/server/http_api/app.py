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

    app.py         create_app: the service routes (/healthz, /metrics, the page), error handlers, middleware order
    routes.py      the RPC routes under /v1/ and their views (BASIC, FULL)
    resources.py   the pictures at their own URLs: thumbnails, map images
    docs_pages.py  /docs and /redoc, their files from the package
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

from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from google.rpc import code_pb2, status_pb2
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from ..auth import token_from_env
from ..config import Config
from ..messages.status import status_for
from ..usecases import UseCases
from ..version import SERVER_VERSION
from .bodies import refuse_unknown_query
from .browser import REQUESTED_WITH, BrowserGuardMiddleware, allowed_hosts
from .calls import TIMEOUT_HEADER, Calls
from .docs_pages import DOCS_ASSETS, add_docs
from .errors import HttpApiError, bad_request, code_for_http, status_http, status_response
from .middleware import BearerTokenMiddleware, Metrics, ObservedMiddleware
from .openapi import ProtoDocumentedApp
from .routes import VIEWS, add_rpc_routes

__all__ = ["DOCS_ASSETS", "STATIC_DIR", "TIMEOUT_HEADER", "VIEWS", "create_app"]

STATIC_DIR = Path(__file__).parent / "static"  # the page: index.html, app.js, style.css


def create_app(cases: UseCases, config: Config, metrics: Metrics | None = None) -> FastAPI:
    """The app for one service: its routes over ``cases``, with ``config.http``'s limits and the token."""
    app = ProtoDocumentedApp(  # /openapi.json: schemas from the proto (openapi.py)
        title="image2sdr",
        version=SERVER_VERSION,
        summary="Images to semantic SDRs, and search by SDR overlap.",
        description=_DESCRIPTION,
        docs_url=None,  # served by docs_pages.add_docs, from package files
        redoc_url=None,
        dependencies=[Depends(refuse_unknown_query)],  # a query parameter no route takes is 400, not ignored
    )
    app.state.cases = cases
    app.state.calls = Calls(cases, config.http.max_concurrent)
    app.state.max_body_bytes = config.http.max_body_bytes
    app.state.max_json_values = config.http.max_json_values
    app.state.body_timeout_s = config.http.body_timeout_s
    app.state.metrics = metrics
    add_docs(app)  # before the page's routes: /static/docs is matched before /static
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
    add_rpc_routes(app)
    add("/healthz", _healthz, methods=["GET"], name="healthz")
    if serve_metrics:
        add("/metrics", _metrics, methods=["GET"], name="metrics", include_in_schema=False)
    add("/", _page, methods=["GET"], name="page", include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")


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
