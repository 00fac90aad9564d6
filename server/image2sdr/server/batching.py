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

A batch may be processed in two stages (``Later``): the first on the consumer's
thread, the second (storing, answering) on a finishing thread of the stream's own
while the consumer processes the next batch.  One batch at most is being finished,
its results still come out in order, and none comes out before its second stage
is done; a stream with nothing more buffered gets them at once, not one batch late.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import StreamIdleError

__all__ = ["Later", "OrderedBatcher"]

logger = logging.getLogger(__name__)

Request = TypeVar("Request")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Later(Generic[Result]):
    """A batch's first stage done; ``finish`` gives its results, run while the next batch is processed."""

    finish: Callable[[], Sequence[Result]]


class _End:
    """The caller's requests ran out (``error`` None) or its side failed with ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class OrderedBatcher(Generic[Request, Result]):
    def __init__(
        self,
        requests: Iterator[Request],
        process: Callable[[Sequence[Request]], Sequence[Result] | Later[Result]],
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
        finisher = ThreadPoolExecutor(1, thread_name_prefix="stream-finish")
        finishing: Future[Sequence[Result]] | None = None  # the batch being finished, answered next
        try:
            while True:
                if finishing is not None and not self._buffered():  # nothing to overlap it with: answer now
                    yield from finishing.result()
                    finishing = None
                pending, end = self._next_batch()
                if pending:
                    try:
                        processed = self._process(pending)
                    except Exception:  # the batch before is finished: its answers go out before the error
                        if finishing is not None:
                            yield from finishing.result()
                        raise
                    previous, finishing = finishing, None
                    if isinstance(processed, Later):
                        # Queued behind the batch before on the one finishing thread (so in order), in
                        # the caller's context (its deadline); it runs while that batch is answered.
                        finishing = finisher.submit(contextvars.copy_context().run, processed.finish)
                    if previous is not None:
                        yield from previous.result()
                    if not isinstance(processed, Later):
                        yield from processed
                if end is not None:
                    if finishing is not None:
                        yield from finishing.result()
                    if end.error is not None:
                        raise end.error
                    return
        finally:
            self.cancel()  # the caller left or we are done: the reader stops too
            finisher.shutdown(wait=True)  # a batch being stored is stored before the stream is gone

    def _buffered(self) -> bool:
        with self._changed:
            return bool(self._buffer) and not self._cancelled

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
