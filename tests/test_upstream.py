"""Retries of remote providers: bounded by their budget and by the caller's deadline."""

from __future__ import annotations

import pytest

from image2sdr.server.errors import UpstreamError
from image2sdr.server.upstream import RateLimiter, Retryable, RetryPolicy, call_with_retries, caller_deadline

POLICY = RetryPolicy("Example", timeout_s=5.0, total_s=30.0, backoff_s=0.5)


def _always_down(timeouts: list[float]) -> object:
    def attempt(timeout_s: float) -> object:
        timeouts.append(timeout_s)
        raise Retryable("HTTP 503")

    return attempt


def test_without_a_caller_deadline_the_policy_budget_applies() -> None:
    tries: list[float] = []
    slept: list[float] = []

    def flaky(timeout_s: float) -> str:
        tries.append(timeout_s)
        if len(tries) < 4:
            raise Retryable("HTTP 503")
        return "answer"

    assert call_with_retries(flaky, POLICY, RateLimiter(1000.0), sleep=slept.append) == "answer"
    assert tries == [POLICY.timeout_s] * 4 and len(slept) == 3  # full attempts, three backoffs


def test_a_caller_with_no_time_left_gets_one_short_attempt_and_no_retries() -> None:
    timeouts: list[float] = []
    slept: list[float] = []
    with caller_deadline(0.2), pytest.raises(UpstreamError, match="Example"):
        call_with_retries(_always_down(timeouts), POLICY, RateLimiter(1000.0), sleep=slept.append)  # type: ignore[arg-type]
    assert len(timeouts) >= 1 and max(timeouts) <= 0.2  # each attempt fits in what the caller has left
    assert sum(slept) <= 0.2


class _QueueRunsOutAfterOneTurn(RateLimiter):
    def __init__(self) -> None:
        super().__init__(1000.0)
        self.turns = 0

    def acquire(self, deadline: float) -> bool:
        self.turns += 1
        return self.turns == 1


def test_a_budget_spent_waiting_to_retry_reports_the_outage_not_a_busy_queue() -> None:
    def down(timeout_s: float) -> str:
        raise Retryable("HTTP 503")

    with pytest.raises(UpstreamError, match=r"Example unavailable: HTTP 503 \(gave up after 1 attempt"):
        call_with_retries(down, POLICY, _QueueRunsOutAfterOneTurn(), sleep=lambda s: None)
