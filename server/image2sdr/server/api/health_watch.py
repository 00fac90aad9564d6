"""Health that follows the index: NOT_SERVING while its engine (a Milvus server) cannot serve.

Load balancers and Kubernetes readiness probes read the gRPC health service; a
replica whose Milvus is unreachable should get no traffic, and should get it back
on its own once Milvus returns, without a restart.
"""

from __future__ import annotations

import logging
import threading

from grpc_health.v1 import health, health_pb2

from ..index.protocol import ItemIndex

__all__ = ["HealthWatch"]

logger = logging.getLogger(__name__)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthWatch:
    """A daemon thread asking ``index.available()`` every ``every_s`` and setting the health status."""

    def __init__(
        self, index: ItemIndex, servicer: health.HealthServicer, names: tuple[str, ...], every_s: float
    ) -> None:
        self._index = index
        self._servicer = servicer
        self._names = names
        self._every_s = every_s
        self._stopped = threading.Event()
        self._serving = True
        self._thread = threading.Thread(target=self._run, name="index-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (before shutdown sets NOT_SERVING for good, so it is not set back)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def check(self) -> bool:
        """Ask the index once and publish the answer; returns it."""
        serving = self._index.available()
        if serving != self._serving:
            logger.warning(
                "index %s: health is now %s",
                "is back" if serving else "unavailable",
                "SERVING" if serving else "NOT_SERVING",
            )
        self._serving = serving
        if not self._stopped.is_set():
            for name in self._names:
                self._servicer.set(name, _SERVING if serving else _NOT_SERVING)
        return serving

    def _run(self) -> None:
        while not self._stopped.wait(self._every_s):
            try:
                self.check()
            except Exception:  # the watch must outlive any one failed check
                logger.exception("index health check failed")
