"""Core errors -> gRPC status codes with google.rpc details, chosen on purpose.

    InvalidInputError   -> INVALID_ARGUMENT    + BadRequest (the field at fault)
    LimitExceededError  -> RESOURCE_EXHAUSTED  + QuotaFailure (limit and actual size)
    NotFoundError       -> NOT_FOUND           + ResourceInfo
    UpstreamError       -> UNAVAILABLE         + RetryInfo
    anything else       -> INTERNAL, with a generic message (the detail goes to the log)

A known failure never surfaces as UNKNOWN.  Messages are the core's own,
which name the problem and never carry a secret.
"""

from __future__ import annotations

import logging

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from .errors import Image2SdrError, InvalidInputError, LimitExceededError, NotFoundError, UpstreamError

__all__ = ["RETRY_DELAY_S", "status_for"]

logger = logging.getLogger(__name__)

RETRY_DELAY_S = 1  # what RetryInfo suggests to a caller after UNAVAILABLE


def status_for(exc: BaseException) -> status_pb2.Status:
    """The google.rpc.Status that reports ``exc`` to a caller."""
    if isinstance(exc, InvalidInputError):
        violation = error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=str(exc))
        return _status(code_pb2.INVALID_ARGUMENT, str(exc), error_details_pb2.BadRequest(field_violations=[violation]))
    if isinstance(exc, LimitExceededError):
        quota = error_details_pb2.QuotaFailure.Violation(
            subject=type(exc).__name__, description=f"{exc} (limit {exc.limit}, got {exc.actual})"
        )
        return _status(code_pb2.RESOURCE_EXHAUSTED, str(exc), error_details_pb2.QuotaFailure(violations=[quota]))
    if isinstance(exc, NotFoundError):
        info = error_details_pb2.ResourceInfo(resource_type="item", resource_name=exc.resource, description=str(exc))
        return _status(code_pb2.NOT_FOUND, str(exc), info)
    if isinstance(exc, UpstreamError):
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=RETRY_DELAY_S))
        return _status(code_pb2.UNAVAILABLE, str(exc), retry)
    if isinstance(exc, Image2SdrError):
        return _status(code_pb2.FAILED_PRECONDITION, str(exc))
    logger.error("internal error", exc_info=exc)
    return _status(code_pb2.INTERNAL, "internal error; the server log has the details")


def _status(code: int, message: str, *details: object) -> status_pb2.Status:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=code, message=message, details=packed)
