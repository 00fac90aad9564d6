"""What an HTTP connection may hold: a head in ``http.header_timeout_s``, and no slot while idle.

uvicorn (0.54) reads a request head for as long as the caller takes: a head trickled one
line every few seconds kept its connection for ever, and its ``limit_concurrency`` counts
such connections, so a few dozen sockets that sent nothing made every request answer
503.  ``guarded_protocol(http)`` is uvicorn's h11 protocol with three more rules:

- a request head not complete ``http.header_timeout_s`` after the connection opened (or
  after the previous answer, on a kept-alive connection) closes the connection;
- an idle connection (no request in flight) is closed after ``http.keep_alive_s``
  (uvicorn's keep-alive timer, to the fraction of a second);
- past ``http.max_connections`` open connections, the one idle longest is closed to
  make room; a connection with a request in flight is never closed for this (if none
  is idle, the newcomer is).

Requests in flight are capped apart (``middleware.RequestCap``), with /healthz outside.
h11 is the protocol uvicorn runs when httptools is not installed, as here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import HttpConfig

__all__ = ["guarded_protocol"]

logger = logging.getLogger(__name__)


class _GuardedH11Protocol(H11Protocol):
    header_timeout_s = 10.0
    keep_alive_s = 5.0
    max_connections = 1024
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive = self.keep_alive_s  # type: ignore[assignment]  # typed int; call_later takes any
        self._idle_since = self.loop.time()
        self._await_head()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a complete head arrived: the request runs, the head timer stops
            self._stop_head_timer()

    def on_response_complete(self) -> None:
        self._idle_since = self.loop.time()
        self._await_head()  # first: a pipelined request in the buffer is started by super() and stops it
        super().on_response_complete()

    def idle(self) -> bool:
        """No request in flight: waiting for a head, or between requests."""
        return self.cycle is None or self.cycle.response_complete

    def close_idle(self, why: str) -> None:
        if self.transport.is_closing():
            return
        logger.debug("HTTP connection from %s closed: %s", _peer(self.client), why)  # an attack would flood INFO
        with contextlib.suppress(h11.LocalProtocolError):  # a head half received: the socket closes all the same
            self.conn.send(h11.ConnectionClosed())
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
        open_ = [c for c in self.connections if isinstance(c, _GuardedH11Protocol) and not c.transport.is_closing()]
        if len(open_) <= self.max_connections:
            return
        idle = [c for c in open_ if c is not self and c.idle()]
        if not idle:
            self.close_idle(f"{len(open_) - 1} connections are busy (http.max_connections)")
            return
        oldest = min(idle, key=lambda c: c._idle_since)
        oldest.close_idle(f"the longest idle of {len(open_)} connections (http.max_connections)")


def guarded_protocol(http: HttpConfig) -> type[H11Protocol]:
    """uvicorn's h11 protocol under ``http``'s header timeout, keep-alive and connection cap."""
    return type(
        "GuardedH11Protocol",
        (_GuardedH11Protocol,),
        {
            "header_timeout_s": http.header_timeout_s,
            "keep_alive_s": http.keep_alive_s,
            "max_connections": http.max_connections,
        },
    )


def _peer(client: tuple[str, int] | None) -> str:
    return "?" if client is None else f"{client[0]}:{client[1]}"
