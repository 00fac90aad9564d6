"""Ordered, bounded, batched processing of a request stream (no gRPC in here).

EncodeStream's contract, in plain Python: answers come out in request order;
requests are read ahead only up to a bound, so a fast sender is held back by
flow control instead of filling the server's memory; whatever has arrived is
processed as one batch (one classifier call for many images); and when the
caller goes away the work stops.

A reader thread moves requests from the caller's iterator into a bounded
queue; the consumer (the response generator) takes up to ``batch`` queued
requests at a time, processes them together and yields their results in order.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

__all__ = ["OrderedBatcher"]

logger = logging.getLogger(__name__)

Request = TypeVar("Request")
Result = TypeVar("Result")

_POLL_S = 0.1  # how often blocked threads look whether the stream is over


class _End:
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
        is_active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._requests = requests
        self._process = process
        self._batch = batch
        self._is_active = is_active
        self._queue: queue.Queue[Request | _End] = queue.Queue(maxsize=in_flight)
        self._stopped = threading.Event()
        self._reader = threading.Thread(target=self._read, name="stream-reader", daemon=True)

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
            self._stopped.set()  # the caller left or we are done: the reader stops too

    def _next_batch(self) -> tuple[list[Request], _End | None]:
        first = self._take_blocking()
        if isinstance(first, _End):
            return [], first
        pending = [first]
        while len(pending) < self._batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _End):
                return pending, item
            pending.append(item)
        return pending, None

    def _take_blocking(self) -> Request | _End:
        while True:
            if not self._is_active():
                return _End()
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue

    def _read(self) -> None:
        end = _End()
        try:
            for request in self._requests:
                if not self._put(request):
                    return
        except Exception as exc:  # the caller's side failed or cancelled mid-stream
            logger.debug("request stream ended with %r", exc)
            end = _End(exc) if self._is_active() else _End()
        self._put(end)

    def _put(self, item: Request | _End) -> bool:
        # A full queue blocks here, and so stops reading from the network:
        # that is the back-pressure.  Give up once the consumer has gone.
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False
