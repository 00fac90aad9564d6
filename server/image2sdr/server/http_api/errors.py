"""Failed HTTP calls: one exception, answered as a ``google.rpc.Status`` in JSON.

HttpApiError             an answer that is a google.rpc.Status (code, message, details)

The HTTP status comes from the gRPC code by the standard mapping (google/rpc/code.proto,
as grpc-gateway applies it), unless the edge itself knows better (413 for a body over
http.max_body_bytes, 415 for a content type no endpoint reads).  RESOURCE_EXHAUSTED is
two things to an HTTP client: what was sent is over a limit (an image's bytes or pixels,
an item's metadata or concepts: its QuotaFailure names the limit) is 413, which no retry
mends; the server is busy (no slot, a full queue) is 429, which a client retries later.  The body is the very
Status a gRPC caller gets in ``grpc-status-details-bin``, details with their ``@type``,
so one client-side decoder serves both protocols.
"""

from __future__ import annotations

from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from starlette.responses import JSONResponse

from ..errors import (
    ImageTooLargeError,
    InvalidInputError,
    LimitExceededError,
    MetadataTooLargeError,
    PixelLimitError,
    TooManyConceptsError,
)
from ..messages.status import cut, status_for

__all__ = [
    "EDGE_STATUSES",
    "TOO_LARGE",
    "HttpApiError",
    "bad_request",
    "http_status",
    "status_http",
    "status_response",
    "too_large",
    "unsupported_media_type",
]

# google/rpc/code.proto's "HTTP Mapping" lines.
_HTTP_STATUS = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}
TOO_LARGE = 413  # Content Too Large: what was sent is over a limit (RFC 9110 15.5.14)
# Statuses the edge answers itself, beside those of the codes: a body that stopped coming
# (408), one over a limit (413), one of a type the endpoint does not read (415), a client
# that went before its body was in (499: nobody reads it), a picture the caller already
# holds (304: If-None-Match named its ETag).
EDGE_STATUSES = frozenset({304, 408, TOO_LARGE, 415, 499})
# A QuotaFailure with one of these subjects (status_for names the error's type) is about
# the size of what the caller sent; any other RESOURCE_EXHAUSTED is the server's load.
_SIZE_LIMITS = frozenset(
    kind.__name__ for kind in (ImageTooLargeError, PixelLimitError, MetadataTooLargeError, TooManyConceptsError)
)
# The other way, for the answers Starlette makes itself (no such route, wrong method).
_CODE_FOR_HTTP = {404: code_pb2.NOT_FOUND, 405: code_pb2.UNIMPLEMENTED, 401: code_pb2.UNAUTHENTICATED}


class HttpApiError(Exception):
    """A call that failed: the Status to send, and the HTTP status it goes with."""

    def __init__(self, status: status_pb2.Status, http: int | None = None) -> None:
        status.message = cut(status.message)  # the edge's own messages echo what was sent too
        super().__init__(status.message)
        self.status = status
        self.http = status_http(status) if http is None else http


def http_status(code: int) -> int:
    """The HTTP status for a google.rpc code (500 for a code this table does not know)."""
    return _HTTP_STATUS.get(code, 500)


def status_http(status: status_pb2.Status) -> int:
    """The HTTP status for a Status: its code's, but 413 for a RESOURCE_EXHAUSTED about the size of what was sent."""
    if status.code == code_pb2.RESOURCE_EXHAUSTED and _size_limited(status):
        return TOO_LARGE
    return http_status(status.code)


def _size_limited(status: status_pb2.Status) -> bool:
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            if any(violation.subject in _SIZE_LIMITS for violation in quota.violations):
                return True
    return False


def code_for_http(http: int) -> int:
    """A google.rpc code for an HTTP status the framework chose (a route it does not know, a wrong method)."""
    return int(_CODE_FOR_HTTP.get(http, code_pb2.INVALID_ARGUMENT if http < 500 else code_pb2.INTERNAL))


def bad_request(message: str, field: str) -> HttpApiError:
    """400 INVALID_ARGUMENT with a BadRequest field violation, as the servicer reports one."""
    return HttpApiError(status_for(InvalidInputError(message, field=field)))


def too_large(limit: int, actual: int | None) -> HttpApiError:
    """413 RESOURCE_EXHAUSTED with a QuotaFailure: the body passed http.max_body_bytes."""
    seen = "more than that" if actual is None else f"{actual} bytes"
    error = LimitExceededError(
        f"request body over http.max_body_bytes ({limit} bytes): {seen}", limit=limit, actual=actual or limit + 1
    )
    return HttpApiError(status_for(error), TOO_LARGE)


def unsupported_media_type(content_type: str, accepted: str) -> HttpApiError:
    """415 INVALID_ARGUMENT: a body this endpoint does not read."""
    message = f"content type {content_type or '(none)'!r} is not accepted here; send {accepted}"
    return HttpApiError(status_for(InvalidInputError(message, field="Content-Type")), 415)


def status_response(status: status_pb2.Status, http: int, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON answer for a Status (canonical proto JSON: lowerCamelCase, details with ``@type``)."""
    return JSONResponse(json_format.MessageToDict(status), status_code=http, headers=headers)
