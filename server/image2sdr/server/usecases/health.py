"""Whether the service is serving, and why not: state both edges read (gRPC health mirrors it, /healthz reads it).

A service whose index lives elsewhere (Milvus) can lose it while the process runs on;
``IndexWatch`` asks the index every so often and sets the state, so load balancers
stop sending calls and send them again once the index is back, without a restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..index.item_index import ItemIndex

__all__ = ["Health", "HealthState", "IndexWatch"]

logger = logging.getLogger(__name__)

_OUTAGE_EVERY_S = 1.0  # how often a watch asks an index that is down


@dataclass(frozen=True)
class HealthState:
    serving: bool
    reason: str = ""  # why not, when not serving


class Health:
    """The service's health; listeners (the gRPC health servicer) are told of every change."""

    def __init__(self) -> None:
        self._state = HealthState(True)
        self._stopping = False
        self._listeners: list[Callable[[HealthState], None]] = []
        self._lock = threading.Lock()

    def state(self) -> HealthState:
        with self._lock:
            return self._state

    def listen(self, listener: Callable[[HealthState], None]) -> None:
        """Call ``listener`` with the state now and on every change."""
        with self._lock:
            self._listeners.append(listener)
            state = self._state
        listener(state)

    def set(self, serving: bool, reason: str = "") -> None:
        """Set the state; once stopping, it stays NOT serving."""
        self._publish(HealthState(serving, reason), final=False)

    def stop(self) -> None:
        """The service is shutting down: not serving, for good."""
        self._publish(HealthState(False, "shutting down"), final=True)

    def _publish(self, state: HealthState, *, final: bool) -> None:
        with self._lock:
            if self._stopping or state == self._state:
                return
            self._stopping = final
            self._state = state
            listeners = list(self._listeners)
        for listener in listeners:
            listener(state)


class IndexWatch:
    """A daemon thread asking ``index.available()`` every ``every_s`` and setting ``health``."""

    def __init__(self, index: ItemIndex, health: Health, every_s: float) -> None:
        self._index = index
        self._health = health
        self._every_s = every_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="index-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def check(self) -> bool:
        """Ask the index once and publish the answer; returns it."""
        serving = self._index.available()
        if serving != self._health.state().serving:
            logger.warning("index %s", "is back: serving" if serving else "unavailable: not serving")
        self._health.set(serving, "" if serving else self._index.problem() or "the index is unavailable")
        return serving

    def next_check_in(self) -> float:
        """Seconds to the next check: ``every_s`` while serving, at most a second while not.

        Milvus answers again a few seconds after an outage; at the full interval a replica
        would stay NOT_SERVING for up to ``every_s`` more, and one call a second is nothing
        beside the calls it saves from being refused.
        """
        return self._every_s if self._health.state().serving else min(self._every_s, _OUTAGE_EVERY_S)

    def _run(self) -> None:
        while not self._stopped.wait(self.next_check_in()):
            try:
                self.check()
            except Exception:  # the watch must outlive any one failed check
                logger.exception("index health check failed")
