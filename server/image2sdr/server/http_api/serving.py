"""``HttpServer``: uvicorn serving the app on a thread of its own, beside the gRPC server.

The socket is bound here, before the thread starts, so a port in use is a ``ConfigError``
from ``start`` (as on the gRPC side) and port 0 is known at once.  uvicorn is told not
to configure logging (``log_config=None``: the process's own setup applies) and keeps
no access log (requests are counted in /metrics; an access line never holds headers,
so never the Authorization one).  TLS: ``service.tls``, the gRPC side's files.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
import threading
import time

import uvicorn
from fastapi import FastAPI

from ..config import HttpConfig, TlsConfig
from ..errors import ConfigError
from .calls import WAITING_PER_SLOT
from .connections import guarded_protocol
from .middleware import RequestCap

__all__ = ["HttpServer"]

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
_SPARE_REQUESTS = 32
_UNCAPPED = frozenset({"/healthz"})  # a liveness probe must not read a busy server as a dead one


class HttpServer:
    """A started uvicorn server; ``stop`` lets requests in flight finish within the grace period."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, port: int) -> None:
        self._server = server
        self._thread = thread
        self.port = port

    @classmethod
    def start(cls, app: FastAPI, http: HttpConfig, tls: TlsConfig, grace_s: float) -> HttpServer:
        """Bind ``http.host:http.port`` (0: a free port) and serve ``app`` there until ``stop``."""
        listener = _bind(http.host, http.port)
        # The handler slots, their waiting room, and room for /metrics and the page.
        in_flight = http.max_concurrent * (1 + WAITING_PER_SLOT) + _SPARE_REQUESTS
        config = uvicorn.Config(
            # Requests beyond the handler slots and their waiting room get 503 before their bodies
            # are read, so memory stays bounded; /healthz is answered whatever the count. uvicorn's
            # own limit_concurrency is left off: it counts idle connections too, and 72 sockets
            # that sent nothing made every request answer 503, /healthz included.
            RequestCap(app, in_flight, exempt=_UNCAPPED),
            http=guarded_protocol(http),  # header timeout, idle connections closed, connection cap
            loop="uvloop",  # the event loop in C: with asyncio's, the loop's own work took CPU the encoder needed
            log_config=None,
            access_log=False,
            timeout_keep_alive=max(1, math.ceil(http.keep_alive_s)),
            timeout_graceful_shutdown=max(1, math.ceil(grace_s)),
            ssl_certfile=tls.cert_file,
            ssl_keyfile=tls.key_file,
            ssl_ca_certs=tls.client_ca_file,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls.client_ca_file else ssl.CERT_NONE,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="http", daemon=True)
        thread.start()
        started = cls(server, thread, listener.getsockname()[1])
        started._wait_until_started(listener)
        logger.info("HTTP serving on %s:%d (%s)", http.host, started.port, "TLS" if tls.cert_file else "plaintext")
        return started

    def stop(self, grace_s: float) -> None:
        """Refuse new connections, let the calls in flight finish within ``grace_s``, then end."""
        self.begin_stop()
        self.join(grace_s)

    def begin_stop(self) -> None:
        self._server.should_exit = True

    def join(self, grace_s: float) -> None:
        self._thread.join(grace_s + 2)  # uvicorn notices should_exit within 0.1 s
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5)

    def _wait_until_started(self, listener: socket.socket) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop(0)
                listener.close()
                raise ConfigError("the HTTP server did not start (see the log; http.* and service.tls)")
            time.sleep(0.01)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigError(f"cannot listen for HTTP on {host}:{port}: {exc.strerror}") from exc
    # asyncio turns Nagle off only on sockets whose proto says TCP, and create_server's says 0;
    # accepted sockets inherit this. Without it uvicorn's header and body writes wait for the
    # client's delayed ACK: every keep-alive answer took 44 ms instead of 2 (measured).
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return listener
