"""
The exceptions the client raises: one per family of gRPC status codes.

Image2SdrError              any failed call: .code, .message, .details (google.rpc)
 ├── InvalidArgument        INVALID_ARGUMENT, OUT_OF_RANGE: not an image, bad SDR, option,
 │                          filter or page token (.field_violations from google.rpc.BadRequest)
 ├── NotFound               NOT_FOUND: unknown item id or custom concept name
 │                          (.resource_name from ResourceInfo)
 ├── AlreadyExists          ALREADY_EXISTS
 ├── ResourceExhausted      RESOURCE_EXHAUSTED: a message, byte or pixel limit
 │                          (.quota_violations from QuotaFailure)
 ├── FailedPrecondition     FAILED_PRECONDITION, ABORTED: the service is not in a state to do it
 ├── Unavailable            UNAVAILABLE: server unreachable or an upstream is down; retry
 │                          (.retry_delay from RetryInfo)
 ├── DeadlineExceeded       DEADLINE_EXCEEDED: the call's timeout passed
 ├── Unauthenticated        UNAUTHENTICATED: missing or wrong bearer token
 ├── PermissionDenied       PERMISSION_DENIED
 ├── Cancelled              CANCELLED
 ├── Unimplemented          UNIMPLEMENTED: a server too old for this client
 └── Internal               INTERNAL, UNKNOWN, DATA_LOSS: a bug on the server; its log has more

Calls raise these ``from`` the ``grpc.RpcError`` they translate, so the original
stays in ``__cause__``.  ``EncodeStream`` reports a failed item in-band: the
client hands it over as an ``ItemError`` whose ``error`` is one of these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Image2SdrError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "QuotaViolation",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "error_from_rpc_error",
    "error_from_status",
]

STATUS_DETAILS_KEY = "grpc-status-details-bin"  # the trailer a google.rpc.Status rides in

# The google.rpc detail messages a status may carry; anything else stays a packed Any.
_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.BadRequest,
    error_details_pb2.QuotaFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.ErrorInfo,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.RequestInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
    error_details_pb2.DebugInfo,
)


@dataclass(frozen=True)
class FieldViolation:
    field: str  # the request field at fault, e.g. "image" or "sdr.active"
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    subject: str  # which limit, e.g. "PixelLimitError"
    description: str


class Image2SdrError(Exception):
    """A call failed; ``code`` says how, ``details`` carries the google.rpc details."""

    codes: ClassVar[tuple[grpc.StatusCode, ...]] = ()

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, details: Sequence[Message] = ()) -> None:
        super().__init__(message)
        self.message = message
        # Unset: the family's own code, so client-side errors read like the server's.
        self.code = code or (self.codes[0] if self.codes else grpc.StatusCode.UNKNOWN)
        self.details = tuple(details)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code.name})"

    def detail(self, kind: type[Any]) -> Any | None:
        """The first detail of message type ``kind`` (e.g. ``error_details_pb2.RetryInfo``), or None."""
        return next((detail for detail in self.details if isinstance(detail, kind)), None)

    @property
    def field_violations(self) -> tuple[FieldViolation, ...]:
        request = self.detail(error_details_pb2.BadRequest)
        if request is None:
            return ()
        return tuple(FieldViolation(v.field, v.description) for v in request.field_violations)

    @property
    def quota_violations(self) -> tuple[QuotaViolation, ...]:
        failure = self.detail(error_details_pb2.QuotaFailure)
        if failure is None:
            return ()
        return tuple(QuotaViolation(v.subject, v.description) for v in failure.violations)

    @property
    def resource_name(self) -> str | None:
        info = self.detail(error_details_pb2.ResourceInfo)
        return None if info is None else str(info.resource_name)

    @property
    def retry_delay(self) -> float | None:
        """Seconds the server suggests waiting before a retry (RetryInfo), or None."""
        info = self.detail(error_details_pb2.RetryInfo)
        return None if info is None else float(info.retry_delay.ToTimedelta().total_seconds())


class InvalidArgument(Image2SdrError):
    codes = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE)


class NotFound(Image2SdrError):
    codes = (grpc.StatusCode.NOT_FOUND,)


class AlreadyExists(Image2SdrError):
    codes = (grpc.StatusCode.ALREADY_EXISTS,)


class ResourceExhausted(Image2SdrError):
    codes = (grpc.StatusCode.RESOURCE_EXHAUSTED,)


class FailedPrecondition(Image2SdrError):
    codes = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED)


class Unavailable(Image2SdrError):
    codes = (grpc.StatusCode.UNAVAILABLE,)


class DeadlineExceeded(Image2SdrError):
    codes = (grpc.StatusCode.DEADLINE_EXCEEDED,)


class Unauthenticated(Image2SdrError):
    codes = (grpc.StatusCode.UNAUTHENTICATED,)


class PermissionDenied(Image2SdrError):
    codes = (grpc.StatusCode.PERMISSION_DENIED,)


class Cancelled(Image2SdrError):
    codes = (grpc.StatusCode.CANCELLED,)


class Unimplemented(Image2SdrError):
    codes = (grpc.StatusCode.UNIMPLEMENTED,)


class Internal(Image2SdrError):
    codes = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS)


_BY_CODE: dict[grpc.StatusCode, type[Image2SdrError]] = {
    code: family for family in Image2SdrError.__subclasses__() for code in family.codes
}
_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def error_from_status(status: status_pb2.Status) -> Image2SdrError:
    """The typed exception for a google.rpc.Status (an in-band stream error, or a trailer)."""
    code = _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return _family(code)(status.message, code=code, details=_unpack(status.details))


def error_from_rpc_error(exc: grpc.RpcError) -> Image2SdrError:
    """The typed exception for a failed call, with the details of its status trailer."""
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    message = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    status = _status_trailer(exc)
    details = _unpack(status.details) if status is not None else ()
    return _family(code)(message or code.name, code=code, details=details)


def _family(code: grpc.StatusCode) -> type[Image2SdrError]:
    return _BY_CODE.get(code, Internal)


def _status_trailer(exc: grpc.RpcError) -> status_pb2.Status | None:
    trailers = exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else None
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None  # a garbled trailer must not hide the error it came with
    return None


def _unpack(packed: Sequence[any_pb2.Any]) -> tuple[Message, ...]:
    return tuple(_unpack_one(holder) for holder in packed)


def _unpack_one(holder: any_pb2.Any) -> Message:
    for kind in _DETAIL_TYPES:
        if holder.Is(kind.DESCRIPTOR):
            detail = kind()
            holder.Unpack(detail)
            return detail
    return holder
