"""What a web page in the user's browser may do with the HTTP face: ``BrowserGuardMiddleware``.

A browser lets any page send a "simple" request (a form post: multipart/form-data,
no custom header) to any address, the user's own localhost included, without asking
the server first; and a page whose name an attacker re-points at 127.0.0.1 (DNS
rebinding) is same-origin with the server as far as the browser knows. So:

- **Host**: the Host header must name this server (``http.allowed_hosts``, plus
  localhost, 127.0.0.1, [::1] and ``http.host``); another is 400, whatever the path
  but ``/healthz`` (a probe that names the pod's address).
- **Origin**: with no token configured, a call that changes state (anything but GET,
  HEAD, OPTIONS) sent by a page of another origin is 403. A call is from the same
  site when its Origin (or, without one, its Referer) is this server's own origin or
  one of ``http.cors_origins``, or when it carries ``X-Requested-With`` (a header no
  foreign page can add without a CORS preflight, which only allowed origins pass; the
  page sends it). A call with neither Origin nor Referer is not from a browser (curl,
  a client library) and passes. With a token, the token decides: a foreign page
  cannot add an Authorization header without a preflight either.
- **Headers**: every answer says ``nosniff`` and may not be framed; the page (``/``
  and ``/static/``) also gets a Content-Security-Policy that admits its own script,
  style and connections and nothing else (images: its own, data: and blob: URLs).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from .errors import status_response

__all__ = ["LOCAL_HOSTS", "PAGE_POLICY", "REQUESTED_WITH", "BrowserGuardMiddleware", "allowed_hosts"]

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
REQUESTED_WITH = "X-Requested-With"  # the page's own fetches send it
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]"})
# The page: its own script and style, fetches to its own origin, thumbnails and maps from its
# own URLs (as blob: URLs when a token must be sent), the chosen file's preview as a blob: URL
# (data: stays allowed for images: the page's test fails on anything the policy blocks); no
# plugins, no <base>, no framing.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_OTHER_POLICY = "frame-ancestors 'none'"  # /docs loads Swagger UI's own scripts: only framing is refused


def allowed_hosts(configured: Iterable[str], listen_host: str) -> frozenset[str] | None:
    """The Host names served: ``configured`` plus the local names and ``listen_host``; None when "*" is among them."""
    names = {_normalised(name) for name in (*configured, *LOCAL_HOSTS)}
    if "*" in names:
        return None
    if _normalised(listen_host) not in _WILDCARD_ADDRESSES:
        names.add(_normalised(listen_host))
    return frozenset(names)


def _normalised(name: str) -> str:
    """A host name as compared: lower case, an IPv6 address in brackets."""
    name = name.strip().lower()
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


def _host_name(host: str) -> str:
    """The name in a Host header (``name``, ``name:port`` or ``[v6]:port``), lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0]


def _served(name: str, hosts: frozenset[str]) -> bool:
    return name in hosts or any(pattern.startswith("*.") and name.endswith(pattern[1:]) for pattern in hosts)


class BrowserGuardMiddleware:
    """The Host check, the origin check for state-changing calls (without a token), and the security headers."""

    def __init__(
        self, app: ASGIApp, *, hosts: frozenset[str] | None, cors_origins: Iterable[str], check_origin: bool
    ) -> None:
        self._app = app
        self._hosts = hosts  # None: any Host
        self._origins = frozenset(origin.rstrip("/").lower() for origin in cors_origins)
        self._check_origin = check_origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await status_response(*refusal)(scope, receive, _with_headers(send, scope["path"]))
            return
        await self._app(scope, receive, _with_headers(send, scope["path"]))

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[status_pb2.Status, int] | None:
        host = headers.get("host", "")
        if self._hosts is not None and scope["path"] != "/healthz" and not _served(_host_name(host), self._hosts):
            message = f"Host {host[:100]!r} is not a name this server answers to (http.allowed_hosts)"
            return _refused(code_pb2.INVALID_ARGUMENT, message, "Host"), 400
        if not self._check_origin or scope["method"] in _SAFE_METHODS or REQUESTED_WITH.lower() in headers:
            return None
        origin = _origin_of(headers)
        if origin is None or origin == f"{scope['scheme']}://{host.lower()}" or self._allowed(origin):
            return None
        message = (
            f"a call that changes state from another origin ({origin[:100]!r}) needs the bearer token,"
            f" an origin in http.cors_origins, or the {REQUESTED_WITH} header"
        )
        return _refused(code_pb2.PERMISSION_DENIED, message, "Origin"), 403

    def _allowed(self, origin: str) -> bool:
        return "*" in self._origins or origin in self._origins


def _origin_of(headers: Headers) -> str | None:
    """The calling page's origin, from Origin or else Referer; None when the caller sent neither (not a browser)."""
    origin = headers.get("origin")
    if origin is not None:
        return origin.strip().rstrip("/").lower()  # "null" (a sandboxed or privacy-hidden page) matches nothing
    referer = headers.get("referer")
    if referer is None:
        return None
    parts = urlsplit(referer.strip())
    return f"{parts.scheme}://{parts.netloc}".lower()


def _refused(code: int, message: str, header: str) -> status_pb2.Status:
    violation = error_details_pb2.BadRequest.FieldViolation(field=header, description=message)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return status_pb2.Status(code=code, message=message, details=[detail])


def _with_headers(send: Send, path: str) -> Send:
    """``send`` adding nosniff, no framing, and the page's CSP on the page."""
    page = path == "/" or path.startswith("/static/")

    async def sending(message: AsgiMessage) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers.setdefault("X-Content-Type-Options", "nosniff")
            headers.setdefault("X-Frame-Options", "DENY")
            headers.setdefault("Content-Security-Policy", PAGE_POLICY if page else _OTHER_POLICY)
        await send(message)

    return sending
