"""ASGI middleware of the HTTP edge: the bearer token, every answered request counted, requests in flight capped."""

from __future__ import annotations

import time
from typing import Protocol

from google.rpc import code_pb2, status_pb2
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from ..auth import BearerToken
from .errors import status_response

__all__ = ["BearerTokenMiddleware", "Metrics", "ObservedMiddleware", "RequestCap"]

_UNAUTHENTICATED = "missing or invalid bearer token (header 'Authorization: Bearer ...')"
# And /static/...: probes, the page and the API docs need no secret (the docs describe the public
# proto; a browser opening /docs cannot send a bearer token for the description it loads).
_OPEN_PATHS = frozenset({"/healthz", "/", "/docs", "/redoc", "/openapi.json"})


class Metrics(Protocol):
    """What the edge needs of ``image2sdr.server.metrics.Metrics``."""

    def observe_request(self, protocol: str, method: str, code: str, seconds: float) -> None: ...

    def render(self) -> tuple[bytes, str]: ...


class BearerTokenMiddleware:
    """Every route but /healthz, / and /static/ needs the token (``image2sdr.server.auth`` compares it)."""

    def __init__(self, app: ASGIApp, token: BearerToken) -> None:
        self._app = app
        self._token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _open(scope["path"]) or self._allowed(scope):
            await self._app(scope, receive, send)
            return
        status = status_pb2.Status(code=code_pb2.UNAUTHENTICATED, message=_UNAUTHENTICATED)
        await status_response(status, 401, {"WWW-Authenticate": "Bearer"})(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        return any(key == b"authorization" and self._token.admits(value) for key, value in scope["headers"])


def _open(path: str) -> bool:
    return path in _OPEN_PATHS or path.startswith("/static/")


class ObservedMiddleware:
    """Each answered request counted by route (the RPC's name where there is one) and its HTTP status."""

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


STATIC = "static"  # every file under /static/: one label, however many files
UNKNOWN = "unknown"  # a path no route serves (or a method none takes): one label, whatever was asked


def _route_name(scope: Scope) -> str:
    """A bounded label: the route's name; for a call refused before routing (the token), the route it asked for.

    Never the path itself: a scanner asking for a million paths would make a million series.
    """
    if scope["path"].startswith("/static/"):
        return STATIC
    route = scope.get("route")
    if route is None:
        app = scope.get("app")
        for candidate in getattr(app, "routes", ()):
            if candidate.matches(scope)[0] == Match.FULL:
                route = candidate
                break
    return str(getattr(route, "name", None) or UNKNOWN)


class RequestCap:
    """At most ``limit`` requests in flight; more get 503 before their bodies are read. ``exempt`` paths never wait.

    Counts requests, not connections: a socket that sends nothing holds no place here
    (``connections`` closes it). /healthz is exempt, so a liveness probe tells a busy
    server from a dead one.
    """

    def __init__(self, app: ASGIApp, limit: int, exempt: frozenset[str] = frozenset()) -> None:
        self._app = app
        self._limit = limit
        self._exempt = exempt
        self._in_flight = 0  # touched on the event loop only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._exempt:
            await self._app(scope, receive, send)
            return
        if self._in_flight >= self._limit:
            status = status_pb2.Status(
                code=code_pb2.UNAVAILABLE,
                message=f"{self._in_flight} requests are in flight, the limit (http.max_concurrent, its waiting "
                "room and room for the page); retry later",
            )
            await status_response(status, 503, {"Retry-After": "1"})(scope, receive, send)
            return
        self._in_flight += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._in_flight -= 1
