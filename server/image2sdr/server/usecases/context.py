"""What long work needs to know of the call it serves: the time left, and whether the caller has gone.

Each edge fills one: the gRPC edge from its ``ServicerContext``, the HTTP edge from the
``X-Timeout-S`` header (``Deadline``), cancelling it when the client disconnects.  Nothing
here knows either transport.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from ..errors import DeadlineExceededError
from ..upstream import caller_deadline

__all__ = ["NO_DEADLINE", "CallContext", "Deadline", "caller_gone", "working_for"]


class CallContext(Protocol):
    def time_remaining(self) -> float | None:
        """Seconds until the caller's deadline; None: it set none."""

    def cancelled(self) -> bool:
        """Whether the caller has gone (cancelled, disconnected)."""


class Deadline:
    """A call with an optional timeout, cancelled by its edge when the caller goes (HTTP: it hung up)."""

    def __init__(self, timeout_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._at = None if timeout_s is None else clock() + timeout_s
        self._cancelled = threading.Event()  # set on the edge's thread, read on the worker's

    def time_remaining(self) -> float | None:
        return None if self._at is None else self._at - self._clock()

    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """The caller has gone: long work for it stops at its next check (``caller_gone``)."""
        self._cancelled.set()


NO_DEADLINE = Deadline()


def caller_gone(call: CallContext) -> bool:
    """Whether the caller cancelled or its deadline passed: work on its answer can stop."""
    remaining = call.time_remaining()
    return call.cancelled() or (remaining is not None and remaining <= 0)


@contextmanager
def working_for(call: CallContext) -> Iterator[None]:
    """Refuse work whose caller went before it started; bound upstream retries by the time left."""
    remaining = call.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceededError("deadline passed before the work started")
    if call.cancelled():
        raise DeadlineExceededError("the caller went before the work started")
    with caller_deadline(remaining):
        yield
