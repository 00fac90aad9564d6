"""Milvus's failures told by their nature, and outages told once: what no retry can mend, and what a wait may.

Refused credentials, a collection missing and a request Milvus refuses as malformed are
raised at once by ``calls.MilvusCalls._failure``; everything else is an outage, retried
within the call's budget and logged by ``Outage`` once when it begins and once when it
ends (with the count of requests that failed meanwhile). Messages keep Milvus's words and
lose gRPC's transport debris (``plain``); URIs lose their credentials (``without_credentials``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "Outage",
    "is_auth_error",
    "is_missing_collection",
    "is_request_error",
    "plain",
    "quiet_pymilvus",
    "without_credentials",
]

logger = logging.getLogger(__name__)


def without_credentials(uri: str) -> str:
    """``uri`` with any user:password part masked, for errors and logs."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Outage:
    """Whether Milvus is answering, told in the log once per change: when it stops, and when it answers again."""

    def __init__(self, shown_uri: str) -> None:
        self._uri = shown_uri
        self._lock = threading.Lock()
        self._since: float | None = None  # monotonic start of the outage under way, if one is
        self._failures = 0

    def failed(self, reason: str) -> None:
        with self._lock:
            self._failures += 1
            if self._since is not None:
                return
            self._since = time.monotonic()
        logger.warning(
            "Milvus at %s is not answering (%s): calls are retried, health is NOT_SERVING", self._uri, reason
        )

    def ended(self) -> None:
        if self._since is None:  # nearly always: no lock on the fast path
            return
        with self._lock:
            if self._since is None:
                return
            lasted, failures = time.monotonic() - self._since, self._failures
            self._since, self._failures = None, 0
        logger.warning(
            "Milvus at %s answers again after %.1f s; %d requests failed meanwhile", self._uri, lasted, failures
        )


def quiet_pymilvus() -> None:
    """pymilvus logs every failed request at ERROR, and every failed reconnect at WARNING, each with a
    traceback, to stderr through a handler of its own: ~500 of them per replica in a 2-minute outage.

    Each failure reaches this engine, which tells it once (``Outage``) or raises it to the caller.
    """
    for name in ("pymilvus", "pymilvus.milvus_client"):  # the two pymilvus gives a level of its own
        logging.getLogger(name).setLevel(logging.CRITICAL)


_RPC_BLOB = re.compile(r"<_\w*RpcError\b.*?>", re.DOTALL)  # grpc's repr of a failed call
_DETAILS = re.compile(r'details = "([^"]*)"')
_DEBUG = re.compile(r"[\s,;]*debug_error_string\s*=.*", re.DOTALL)


def plain(message: str) -> str:
    """A Milvus or gRPC error message without gRPC's transport debris: a failed call's repr becomes its details."""

    def details(blob: re.Match[str]) -> str:
        found = _DETAILS.search(blob.group(0))
        return found.group(1) if found else ""

    cleaned = _DEBUG.sub("", _RPC_BLOB.sub(details, message))
    return " ".join(cleaned.split()).strip(" ,;:") or "no answer"


# Milvus's answers to credentials it does not accept: gRPC UNAUTHENTICATED / PERMISSION_DENIED
# from its interceptor (2.3), or its own codes (merr: 1400 not authenticated, 1401 not permitted).
_AUTH_CODES = frozenset({1400, 1401, 1402, 1403, 1404})
_AUTH_WORDS = re.compile(
    r"auth(entication|orization)? (check )?fail|unauthenticated|not authenticated|permission denied|privilege not",
    re.IGNORECASE,
)


def is_auth_error(exc: Exception) -> bool:
    """Whether Milvus refused this server's credentials (a missing or wrong token): no retry can help.

    gRPC's status codes are told by name: the core does not import grpc (pymilvus does).
    """
    code = getattr(exc, "code", None)
    code = code() if callable(code) else code  # a grpc.RpcError's code is a method, a MilvusException's a value
    if getattr(code, "name", None) in _AUTH_STATUSES or code in _AUTH_CODES:
        return True
    return bool(_AUTH_WORDS.search(str(getattr(exc, "message", None) or exc)))


_AUTH_STATUSES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})


def is_missing_collection(exc: Exception) -> bool:
    from pymilvus.exceptions import MilvusException  # noqa: PLC0415

    return isinstance(exc, MilvusException) and exc.code == _COLLECTION_NOT_FOUND


_COLLECTION_NOT_FOUND = 100  # Milvus's ErrCollectionNotFound


def is_request_error(exc: Exception) -> bool:
    """Whether Milvus (or pymilvus) refused the request itself: a bug here, not an outage to wait out."""
    from pymilvus.exceptions import DataTypeNotMatchException, MilvusException, ParamError  # noqa: PLC0415

    if isinstance(exc, (ParamError, DataTypeNotMatchException)):
        return True
    return isinstance(exc, MilvusException) and exc.code == _INVALID_PARAMETER


_INVALID_PARAMETER = 1100  # Milvus's ErrParameterInvalid (a bad expression, a wrong field)
