"""What an HTTP connection may hold: a head in ``http.header_timeout_s``, and no slot while idle.

uvicorn (0.54) reads a request head for as long as the caller takes: a head trickled one
line every few seconds kept its connection for ever, and its ``limit_concurrency`` counts
such connections, so a few dozen sockets that sent nothing made every request answer
503.  ``guarded_protocol(http)`` is uvicorn's httptools protocol with three more rules:

- a request head not complete ``http.header_timeout_s`` after the connection opened (or
  after the previous answer, on a kept-alive connection) closes the connection;
- an idle connection (no request in flight) is closed after ``http.keep_alive_s``
  (uvicorn's keep-alive timer, to the fraction of a second);
- past ``http.max_connections`` open connections, the one idle longest is closed to
  make room; a connection with a request in flight is never closed for this (if none
  is idle, the newcomer is).

Requests in flight are capped apart (``middleware.RequestCap``), with /healthz outside.
httptools, not h11: h11 parses in Python, and at 4 concurrent encodes its event loop took
a quarter of a core the classifier needed (HTTP was 0.88 of gRPC's throughput).
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..config import HttpConfig

__all__ = ["guarded_protocol"]

logger = logging.getLogger(__name__)

# Which connection went idle first: uvloop's clock moves once per loop turn, so connections
# accepted in one turn would tie on a timestamp.
_IDLE_ORDER = itertools.count()


class _GuardedProtocol(HttpToolsProtocol):
    header_timeout_s = 10.0
    keep_alive_s = 5.0
    max_connections = 1024
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive = self.keep_alive_s  # type: ignore[assignment]  # typed int; call_later takes any
        self._idle_since = next(_IDLE_ORDER)
        self._await_head()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._stop_head_timer()  # a complete head arrived: the request runs (or waits behind the one in flight)

    def on_response_complete(self) -> None:
        self._idle_since = next(_IDLE_ORDER)
        self._await_head()  # a pipelined request started by super() is in flight: the timer leaves it be
        super().on_response_complete()

    def idle(self) -> bool:
        """No request in flight: waiting for a head, or between requests."""
        return self.cycle is None or self.cycle.response_complete

    def close_idle(self, why: str) -> None:
        if self.transport.is_closing():
            return
        logger.debug("HTTP connection from %s closed: %s", _peer(self.client), why)  # an attack would flood INFO
        self.transport.close()

    def _await_head(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_overdue)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self.idle():
            self.close_idle(f"no complete request head within {self.header_timeout_s:g} s (http.header_timeout_s)")

    def _make_room(self) -> None:
        # A connection closed a moment ago stays in the set until the loop reports it lost: not counted.
        open_ = [c for c in self.connections if isinstance(c, _GuardedProtocol) and not c.transport.is_closing()]
        if len(open_) <= self.max_connections:
            return
        idle = [c for c in open_ if c is not self and c.idle()]
        if not idle:
            self.close_idle(f"{len(open_) - 1} connections are busy (http.max_connections)")
            return
        oldest = min(idle, key=lambda c: c._idle_since)
        oldest.close_idle(f"the longest idle of {len(open_)} connections (http.max_connections)")


def guarded_protocol(http: HttpConfig) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol under ``http``'s header timeout, keep-alive and connection cap."""
    return type(
        "GuardedProtocol",
        (_GuardedProtocol,),
        {
            "header_timeout_s": http.header_timeout_s,
            "keep_alive_s": http.keep_alive_s,
            "max_connections": http.max_connections,
        },
    )


def _peer(client: tuple[str, int] | None) -> str:
    return "?" if client is None else f"{client[0]}:{client[1]}"
