"""``LongCalls``: how many long calls (Explain, DefineConcept with images, CreateMap) run at once.

A long call keeps a worker thread (and a core) for seconds; enough of them at once would
hold every worker, and health checks and short calls would wait behind them.  So long
calls share ``service.long_calls`` slots, both edges together, and a call that finds them
all taken is refused at once (``BusyError``: RESOURCE_EXHAUSTED with RetryInfo) rather than
queued on a worker it would hold while waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import BusyError

__all__ = ["LongCalls"]

RETRY_AFTER_S = 1.0  # what a refused long call is told to wait: a slot frees when any one ends


class LongCalls:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running = 0
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    @contextmanager
    def slot(self, what: str) -> Iterator[None]:
        """Hold one slot while the block runs, or raise BusyError at once when none is free."""
        with self._lock:
            if self._running >= self.limit:
                raise BusyError(
                    f"{self._running} long calls (Explain, DefineConcept with images, CreateMap) are running, "
                    f"the limit (service.max_long_calls); {what} was not started: retry later",
                    limit=self.limit,
                    actual=self._running + 1,
                    retry_after_s=RETRY_AFTER_S,
                )
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
