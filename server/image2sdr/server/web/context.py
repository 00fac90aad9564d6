"""``HttpContext``: what the servicer uses of ``grpc.ServicerContext``, for a call that came over HTTP.

The servicer's unary methods ask their context for the time left (``_check_deadline``,
``caller_deadline``), whether the caller is still there (Explain stops between batches
once it has gone), and end a failed call with ``abort`` or ``abort_with_status``; the
health servicer sets a code.  Here the deadline is the optional ``X-Timeout-S`` header
(seconds, like grpc-timeout), and an abort raises ``RpcAborted``, which ``errors`` turns
into the HTTP answer.  Nothing else of the gRPC context is used by a unary method.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NoReturn

import grpc
from google.rpc import status_pb2

from .errors import RpcAborted, status_of

__all__ = ["HttpContext"]


class HttpContext:
    """One HTTP call, seen by the servicer as a gRPC one."""

    def __init__(
        self,
        *,
        peer: str,
        metadata: tuple[tuple[str, str], ...] = (),
        timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._peer = peer
        self._metadata = metadata
        self._clock = clock
        self._deadline = None if timeout_s is None else clock() + timeout_s
        self.code: grpc.StatusCode | None = None  # set_code: the health servicer's NOT_FOUND
        self.details = ""

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - self._clock()

    def is_active(self) -> bool:
        # The answer goes to a worker thread's caller; a dropped connection is not seen from
        # here, so a call stays active until its deadline (which the servicer checks too).
        remaining = self.time_remaining()
        return remaining is None or remaining > 0

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise RpcAborted(status_pb2.Status(code=int(code.value[0]), message=details))

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        raise RpcAborted(status_of(status))
