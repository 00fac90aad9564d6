"""Ordered, bounded, batched processing of a request stream (no gRPC in here).

EncodeStream's contract, in plain Python: answers come out in request order;
requests are read ahead only up to a bound, so a fast sender is held back by
flow control instead of filling the server's memory; whatever has arrived is
processed as one batch (one classifier call for many images); and when the
caller goes away the work stops.

A reader thread moves requests from the caller's iterator into a bounded
queue; the consumer (the response generator) takes up to ``batch`` queued
requests at a time, processes them together and yields their results in order.
A caller that sends nothing for ``idle_timeout_s`` while the server has nothing
left to do for it is told so (``StreamIdleError``) and its stream ends.

``StreamSlots`` shares the open streams out: so many in all, and so many per
peer host, so one caller cannot hold every slot.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from .errors import StreamIdleError, StreamLimitError

__all__ = ["OrderedBatcher", "StreamSlots", "peer_host"]

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
        idle_timeout_s: float = 0.0,
    ) -> None:
        self._requests = requests
        self._process = process
        self._batch = batch
        self._is_active = is_active
        self._idle_timeout_s = idle_timeout_s  # 0: wait for the caller forever
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
        # Only time spent waiting for the caller counts as idle: the clock starts
        # when everything it sent has been answered.
        idle_since = time.monotonic()
        while True:
            if not self._is_active():
                return _End()
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                pass
            idle = time.monotonic() - idle_since
            if self._idle_timeout_s and idle >= self._idle_timeout_s:
                return _End(
                    StreamIdleError(
                        f"the stream sent nothing for {idle:.0f} s (service.stream_idle_timeout_s); "
                        "it was closed to free its slot"
                    )
                )

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


class StreamSlots:
    """How many streams may be open: ``total`` in all and ``per_peer`` per peer host.

    A peer is the caller's host (its port changes with every connection, so
    counting per connection would be no limit at all).  Behind a proxy every
    caller is the proxy: set ``per_peer`` to 0 there.
    """

    def __init__(self, total: int, per_peer: int) -> None:
        self.total = total
        self.per_peer = min(per_peer, total) if per_peer else total
        self._open: Counter[str] = Counter()
        self._total = 0
        self._lock = threading.Lock()

    def acquire(self, peer: str) -> None:
        """Take a slot for ``peer``, or raise StreamLimitError saying which limit is reached."""
        with self._lock:
            if self._total >= self.total:
                raise StreamLimitError(
                    f"{self.total} streams are open, the limit (service.max_streams); retry later",
                    limit=self.total,
                    actual=self.total + 1,
                )
            if self._open[peer] >= self.per_peer:
                raise StreamLimitError(
                    f"this client already has {self.per_peer} streams open, its share "
                    "(service.max_streams_per_peer); retry later",
                    limit=self.per_peer,
                    actual=self.per_peer + 1,
                )
            self._open[peer] += 1
            self._total += 1

    def release(self, peer: str) -> None:
        with self._lock:
            self._open[peer] -= 1
            self._total -= 1
            if self._open[peer] <= 0:
                del self._open[peer]

    def open_streams(self) -> int:
        with self._lock:
            return self._total


def peer_host(peer: str) -> str:
    """The host part of a gRPC peer string: "ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7"."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = address.rpartition(":")
        return f"{kind}:{host}" if port.isdigit() else peer
    return peer  # unix sockets and the like: the whole string
