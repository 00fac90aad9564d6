"""Core errors -> gRPC status codes with google.rpc details, chosen on purpose.

    InvalidInputError   -> INVALID_ARGUMENT    + BadRequest (the field at fault)
    LimitExceededError  -> RESOURCE_EXHAUSTED  + QuotaFailure (limit and actual size); BusyError + RetryInfo
    NotFoundError       -> NOT_FOUND           + ResourceInfo
    StreamIdleError     -> DEADLINE_EXCEEDED
    DeadlineExceededError -> DEADLINE_EXCEEDED (the caller went; the work was stopped)
    UpstreamKeyError    -> FAILED_PRECONDITION (the server's key was refused: retrying cannot help)
    UpstreamError       -> UNAVAILABLE         + RetryInfo (the provider's Retry-After when it sent one)
    other core errors   -> FAILED_PRECONDITION (the server's state, e.g. a closed index)
    MemoryError         -> RESOURCE_EXHAUSTED  (the server ran short; logged)
    anything else       -> INTERNAL, with a generic message (the detail goes to the log)

A known failure never surfaces as UNKNOWN.  Messages are the core's own,
which name the problem and never carry a secret.  Every string of a Status (its
message and each detail's) is cut to ``MAX_TEXT_BYTES`` of UTF-8, its start and end
kept around a note of what was left out: a core message echoes what the caller sent
(an id, a concept, a token), and gRPC carries the Status in headers, where a 10 kB
echo made the client see RESOURCE_EXHAUSTED "received metadata size exceeds hard
limit" instead of the error itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from google.protobuf import any_pb2, duration_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from ..errors import (
    BusyError,
    DeadlineExceededError,
    Image2SdrError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    StoppingError,
    StreamIdleError,
    UpstreamError,
    UpstreamKeyError,
)

__all__ = ["MAX_TEXT_BYTES", "RETRY_DELAY_S", "cut", "status_for"]

logger = logging.getLogger(__name__)

RETRY_DELAY_S = 1  # what RetryInfo suggests to a caller after UNAVAILABLE
# UTF-8 bytes of any one string in a Status. A Status holds a message and up to three
# strings per detail; even percent-encoded (grpc-message) and base64'd
# (grpc-status-details-bin) that stays far under gRPC's 8 KiB default header limit.
MAX_TEXT_BYTES = 512
_KEEP = (MAX_TEXT_BYTES - 48) // 2  # bytes kept at each end of a cut string; the rest is room for the note


def status_for(exc: BaseException, *, logged: bool = False) -> status_pb2.Status:
    """The google.rpc.Status that reports ``exc`` to a caller: the first row of the table it is an instance of.

    An unexpected exception is logged with its traceback, unless ``logged`` says that
    happened already (a failed map job is reported on every GetMap, logged once).
    """
    for kind, report in _TABLE:
        if isinstance(exc, kind):
            return report(exc)
    if isinstance(exc, MemoryError):  # the server ran short, not the caller's fault; it may retry later
        if not logged:
            logger.error("out of memory while serving a call", exc_info=exc)
        return _status(code_pb2.RESOURCE_EXHAUSTED, "the server is short of memory; retry later")
    if not logged:
        logger.error("internal error", exc_info=exc)
    return _status(code_pb2.INTERNAL, "internal error; the server log has the details")


def _invalid(exc: Any) -> status_pb2.Status:
    violation = error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=str(exc))
    return _status(code_pb2.INVALID_ARGUMENT, str(exc), error_details_pb2.BadRequest(field_violations=[violation]))


def _exhausted(exc: Any) -> status_pb2.Status:
    quota = error_details_pb2.QuotaFailure.Violation(
        subject=type(exc).__name__, description=f"{exc} (limit {exc.limit}, got {exc.actual})"
    )
    details: list[object] = [error_details_pb2.QuotaFailure(violations=[quota])]
    if isinstance(exc, BusyError):  # a slot frees soon: say when to try again
        wait = duration_pb2.Duration(seconds=max(RETRY_DELAY_S, math.ceil(exc.retry_after_s)))
        details.append(error_details_pb2.RetryInfo(retry_delay=wait))
    return _status(code_pb2.RESOURCE_EXHAUSTED, str(exc), *details)


def _not_found(exc: Any) -> status_pb2.Status:
    info = error_details_pb2.ResourceInfo(
        resource_type=exc.resource_type, resource_name=exc.resource, description=str(exc)
    )
    return _status(code_pb2.NOT_FOUND, str(exc), info)


def _unavailable(exc: Any) -> status_pb2.Status:
    wait = RETRY_DELAY_S if exc.retry_after_s is None else max(RETRY_DELAY_S, math.ceil(exc.retry_after_s))
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=wait))
    return _status(code_pb2.UNAVAILABLE, str(exc), retry)


# Most specific first: the first row whose type the error is an instance of answers.
_TABLE: tuple[tuple[type[BaseException], Callable[[Any], status_pb2.Status]], ...] = (
    (InvalidInputError, _invalid),
    (LimitExceededError, _exhausted),
    (NotFoundError, _not_found),
    (StreamIdleError, lambda exc: _status(code_pb2.DEADLINE_EXCEEDED, str(exc))),
    (DeadlineExceededError, lambda exc: _status(code_pb2.DEADLINE_EXCEEDED, str(exc))),
    (UpstreamKeyError, lambda exc: _status(code_pb2.FAILED_PRECONDITION, str(exc))),
    (UpstreamError, _unavailable),
    (StoppingError, lambda exc: _status(code_pb2.UNAVAILABLE, str(exc))),
    (Image2SdrError, lambda exc: _status(code_pb2.FAILED_PRECONDITION, str(exc))),
)


def cut(text: str) -> str:
    """``text`` when it fits ``MAX_TEXT_BYTES``; else its start and end around how much was cut."""
    raw = text.encode()
    if len(raw) <= MAX_TEXT_BYTES:
        return text
    head = raw[:_KEEP].decode(errors="ignore")  # "ignore": a character split at the cut is dropped
    tail = raw[-_KEEP:].decode(errors="ignore")
    return f"{head}...[{len(text) - len(head) - len(tail):,} characters cut]...{tail}"


def _cut_strings(message: Message) -> None:
    """Every string field of ``message`` (nested messages too) cut in place."""
    for field, value in message.ListFields():
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_STRING:
            if repeated:
                value[:] = [cut(item) for item in value]
            else:
                setattr(message, field.name, cut(value))
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            for item in value if repeated else (value,):
                _cut_strings(item)


def _status(code: int, message: str, *details: Message) -> status_pb2.Status:
    packed = []
    for detail in details:
        _cut_strings(detail)
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=code, message=cut(message), details=packed)
