"""Ordered, bounded, batched processing of a request stream (no gRPC in here).

EncodeStream's contract, in plain Python: answers come out in request order;
requests are read ahead only up to a bound, so a fast sender is held back by
flow control instead of filling the server's memory; whatever has arrived is
processed as one batch (one classifier call for many images); and when the
caller goes away the work stops.

A reader thread moves requests from the caller's iterator into a bounded
buffer; the consumer (the response generator) takes up to ``batch`` buffered
requests at a time, processes them together and yields their results in order.
A caller that sends nothing for ``idle_timeout_s`` while the server has nothing
left to do for it is told so (``StreamIdleError``) and its stream ends.

Nothing here polls: both threads wait on one condition, and ``cancel`` (which
the gRPC edge registers as the call's termination callback) wakes them both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from .errors import StreamIdleError

__all__ = ["OrderedBatcher"]

logger = logging.getLogger(__name__)

Request = TypeVar("Request")
Result = TypeVar("Result")


class _End:
    """The caller's requests ran out (``error`` None) or its side failed with ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class OrderedBatcher(Generic[Request, Result]):
    def __init__(
        self,
        requests: Iterator[Request],
        process: Callable[[Sequence[Request]], Sequence[Result]],
        *,
        in_flight: int,
        batch: int,
        idle_timeout_s: float = 0.0,
    ) -> None:
        self._requests = requests
        self._process = process
        self._batch = batch
        self._in_flight = in_flight
        self._idle_timeout_s = idle_timeout_s  # 0: wait for the caller forever
        self._buffer: deque[Request] = deque()
        self._end: _End | None = None  # set once by the reader, or by the idle timeout
        self._cancelled = False
        self._changed = threading.Condition()  # guards the three fields above
        self._reader = threading.Thread(target=self._read, name="stream-reader", daemon=True)

    def cancel(self) -> None:
        """Stop reading and processing; the iteration ends.  Safe from any thread, and more than once."""
        with self._changed:
            self._cancelled = True
            self._changed.notify_all()

    def __iter__(self) -> Iterator[Result]:
        self._reader.start()
        try:
            while True:
                pending, end = self._next_batch()
                if pending:
                    yield from self._process(pending)
                if end is not None:
                    if end.error is not None:
                        raise end.error
                    return
        finally:
            self.cancel()  # the caller left or we are done: the reader stops too

    def _next_batch(self) -> tuple[list[Request], _End | None]:
        with self._changed:
            self._wait_for_requests()
            if self._cancelled:
                return [], _End()
            taken = [self._buffer.popleft() for _ in range(min(self._batch, len(self._buffer)))]
            self._changed.notify_all()  # there is room for the reader again
            return taken, None if self._buffer else self._end

    def _wait_for_requests(self) -> None:
        # Only time spent waiting for the caller counts as idle: the clock starts
        # when everything it sent has been answered.
        deadline = time.monotonic() + self._idle_timeout_s if self._idle_timeout_s else None
        while not (self._buffer or self._end or self._cancelled):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._end = _End(
                    StreamIdleError(
                        f"the stream sent nothing for {self._idle_timeout_s:.0f} s (service.stream_idle_timeout_s); "
                        "it was closed to free its slot"
                    )
                )
                return
            self._changed.wait(remaining)

    def _read(self) -> None:
        end = _End()
        try:
            for request in self._requests:
                if not self._put(request):
                    return
        except Exception as exc:  # the caller's side failed or cancelled mid-stream
            logger.debug("request stream ended with %r", exc)
            end = _End(exc)
        with self._changed:
            if self._end is None:
                self._end = end
            self._changed.notify_all()

    def _put(self, request: Request) -> bool:
        # A full buffer blocks here, and so stops reading from the network:
        # that is the back-pressure.  Give up once the stream is cancelled.
        with self._changed:
            while len(self._buffer) >= self._in_flight and not self._cancelled:
                self._changed.wait()
            if self._cancelled:
                return False
            self._buffer.append(request)
            self._changed.notify_all()
            return True
