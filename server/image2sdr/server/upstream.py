"""What every remote provider shares: its key, a rate limit with a queue, and retries.

- ``Secret`` holds an API key.  Its ``repr`` and ``str`` are masked, so a key
  cannot reach a log line, an error message or a traceback's locals by
  accident; only ``reveal()`` gives it out, where a request header is built.
- ``RateLimiter`` spaces requests evenly (``rate_per_s``).  Callers queue in
  arrival order: each reserves the next free slot under a lock and sleeps
  outside it.  A caller whose slot lies past its deadline gives up at once
  instead of waiting for a turn it cannot use.
- ``call_with_retries`` runs one request until it succeeds, fails for good,
  or the time budget is spent.  Transient failures (``Retryable``: throttling,
  an unavailable server, a timeout) are retried with exponential backoff and
  full jitter, so many callers that failed together do not retry together.
  A server's own Retry-After is honoured as it is, up to the budget; a wait
  longer than what is left ends the call at once, and the caller is told the
  server's wait (``UpstreamError.retry_after_s``) instead of a guess.
  When the budget runs out the caller gets ``UpstreamError`` (UNAVAILABLE),
  whose message says which provider failed, how often and why.
- ``caller_deadline`` narrows that budget to what the gRPC caller has left, so
  no upstream work goes on for an answer nobody is waiting for.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from .errors import ConfigError, UpstreamError

__all__ = [
    "RateLimiter",
    "RetryPolicy",
    "Retryable",
    "Secret",
    "call_deadline",
    "call_with_retries",
    "caller_deadline",
    "caller_deadline_at",
    "read_key",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BACKOFF_S = 8.0  # no delay of our own choosing is longer than this (a server's Retry-After may be)
MIN_ATTEMPT_S = 0.05  # an attempt gets at least this long, even at the end of the budget
# Only names that look like ordinary variable names are echoed in errors: a
# key pasted into api_key_env by mistake is not.
_PRINTABLE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


class Secret:
    """An API key that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the key masked (for upstream error bodies)."""
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def read_key(variable: str, setting: str) -> Secret:
    """The key in environment variable ``variable``; ``setting`` names the config field for the error."""
    value = os.environ.get(variable, "").strip()
    if not value:
        shown = variable if _PRINTABLE_NAME.match(variable) else "the variable it names"
        raise ConfigError(f"{setting} names {shown}, which is not set or empty; export the API key there")
    return Secret(value)


class RateLimiter:
    """At most ``rate_per_s`` requests per second, evenly spaced; callers queue in arrival order."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / rate_per_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0  # earliest start of the next request

    def acquire(self, deadline: float) -> bool:
        """Wait for this caller's turn; False (without waiting) if it would come after ``deadline``."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            if start > deadline:
                return False
            self._next = start + self._interval
        if start > now:
            self._sleep(start - now)
        return True


class Retryable(Exception):
    """A transient failure: worth another attempt after a backoff."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s  # the server's own hint (HTTP Retry-After), if any


@dataclass(frozen=True)
class RetryPolicy:
    provider: str  # named in every error and log line, e.g. "Clarifai"
    timeout_s: float  # one attempt at most
    total_s: float  # queueing, attempts and delays together at most
    backoff_s: float  # first delay; doubles per retry, full jitter


# time.monotonic() by which the current caller (an RPC) wants its answer; None: no deadline.
_caller_deadline: ContextVar[float | None] = ContextVar("caller_deadline", default=None)


@contextmanager
def caller_deadline(remaining_s: float | None, *, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Upstream calls made inside this block give up when ``remaining_s`` have passed on ``clock``."""
    token = _caller_deadline.set(None if remaining_s is None else clock() + remaining_s)
    try:
        yield
    finally:
        _caller_deadline.reset(token)


def caller_deadline_at() -> float | None:
    """time.monotonic() by which the current caller wants its answer (None: it set no deadline)."""
    return _caller_deadline.get()


def call_deadline(total_s: float, now: float) -> float:
    """When a call starting at ``now`` must be over: its budget, or the caller's deadline if sooner."""
    wanted_by = _caller_deadline.get()
    return now + total_s if wanted_by is None else min(now + total_s, wanted_by)


def call_with_retries(
    attempt: Callable[[float], T],
    policy: RetryPolicy,
    limiter: RateLimiter,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``attempt(timeout_s)`` until it returns or raises something other than ``Retryable``."""
    started = clock()
    deadline = call_deadline(policy.total_s, started)
    tries = 0
    failure: Retryable | None = None
    while True:
        if not limiter.acquire(deadline):
            if failure is not None:  # the budget ran out while waiting to retry, not in a long queue
                raise _gave_up(policy, failure, tries, clock() - started) from failure
            raise UpstreamError(
                f"{policy.provider} is busy: the rate-limit queue is longer than the {policy.total_s:g} s budget"
            )
        tries += 1
        try:
            return attempt(max(min(policy.timeout_s, deadline - clock()), MIN_ATTEMPT_S))
        except Retryable as exc:
            failure = exc
            delay = _backoff(policy.backoff_s, tries, exc.retry_after_s)
            if clock() + delay >= deadline:
                raise _gave_up(policy, exc, tries, clock() - started) from exc
            logger.warning("%s: %s; retry %d in %.2f s", policy.provider, exc, tries, delay)
            sleep(delay)


def _gave_up(policy: RetryPolicy, exc: Retryable, tries: int, elapsed_s: float) -> UpstreamError:
    wait = f"; it asks for {exc.retry_after_s:g} s before the next try" if exc.retry_after_s else ""
    return UpstreamError(
        f"{policy.provider} unavailable: {exc} (gave up after {tries} attempt{'s' if tries > 1 else ''}"
        f" in {elapsed_s:.1f} s{wait})",
        retry_after_s=exc.retry_after_s,
    )


def _backoff(first_s: float, tries: int, retry_after_s: float | None) -> float:
    delay = random.uniform(0.0, min(MAX_BACKOFF_S, first_s * 2 ** (tries - 1)))  # jitter, not crypto
    if retry_after_s is not None:  # the server knows its own load: never retry sooner than it asks
        delay = max(delay, retry_after_s)
    return delay
