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


class _Clock:
    """A clock that moves only when something sleeps or an attempt uses up its time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_caller_with_no_time_left_gets_one_short_attempt_and_no_retries() -> None:
    clock = _Clock()
    timeouts: list[float] = []

    def times_out(timeout_s: float) -> object:
        timeouts.append(timeout_s)
        clock.sleep(timeout_s)  # the attempt runs until its timeout
        raise Retryable("no answer")

    slept: list[float] = []
    with caller_deadline(0.2, clock=clock), pytest.raises(UpstreamError, match="Example unavailable"):
        call_with_retries(times_out, POLICY, RateLimiter(1000.0, clock=clock), clock=clock, sleep=slept.append)
    assert timeouts == [pytest.approx(0.2)]  # one attempt, cut to what the caller has left
    assert slept == []  # and no retry: there is no time left for one


def test_a_retry_after_longer_than_our_own_backoff_is_honoured() -> None:
    clock = _Clock()
    attempts: list[float] = []

    def busy_once(timeout_s: float) -> str:
        attempts.append(clock())
        if len(attempts) == 1:
            raise Retryable("HTTP 429", retry_after_s=12.0)  # above MAX_BACKOFF_S, within the 30 s budget
        return "answer"

    limiter = RateLimiter(1000.0, clock=clock, sleep=clock.sleep)
    assert call_with_retries(busy_once, POLICY, limiter, clock=clock, sleep=clock.sleep) == "answer"
    assert attempts[1] - attempts[0] >= 12.0


def test_a_retry_after_beyond_the_budget_gives_up_at_once_and_passes_the_wait_on() -> None:
    clock = _Clock()
    slept: list[float] = []

    def busy(timeout_s: float) -> str:
        raise Retryable("HTTP 429", retry_after_s=60.0)

    with pytest.raises(UpstreamError) as given_up:
        call_with_retries(busy, POLICY, RateLimiter(1000.0, clock=clock), clock=clock, sleep=slept.append)
    assert slept == [] and given_up.value.retry_after_s == 60.0


def test_the_budget_runs_on_the_injected_clock() -> None:
    clock = _Clock()
    timeouts: list[float] = []

    def down(timeout_s: float) -> str:
        timeouts.append(timeout_s)
        clock.sleep(timeout_s)
        raise Retryable("HTTP 503")

    limiter = RateLimiter(1000.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(UpstreamError, match="gave up"):
        call_with_retries(down, POLICY, limiter, clock=clock, sleep=clock.sleep)
    # 30 s of budget on the fake clock: attempts of 5 s plus backoffs, never past the budget.
    assert 4 <= len(timeouts) <= 6 and clock() - 1000.0 <= POLICY.total_s + 0.1


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
