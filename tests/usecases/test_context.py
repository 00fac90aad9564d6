"""The call context the edges fill: deadlines on a fake clock, and work refused once they pass."""

from __future__ import annotations

import pytest

from image2sdr.server.errors import DeadlineExceededError
from image2sdr.server.usecases import NO_DEADLINE, Deadline, caller_gone, working_for


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_deadline_counts_down_on_its_clock() -> None:
    clock = Clock()
    call = Deadline(2.0, clock)
    assert call.time_remaining() == 2.0 and not caller_gone(call)
    clock.now += 1.5
    assert call.time_remaining() == 0.5 and not caller_gone(call)
    clock.now += 0.5
    assert caller_gone(call)
    assert NO_DEADLINE.time_remaining() is None and not caller_gone(NO_DEADLINE)


def test_work_whose_deadline_passed_is_refused_before_it_starts() -> None:
    clock = Clock()
    call = Deadline(1.0, clock)
    with working_for(call):
        pass
    clock.now += 1.0
    with pytest.raises(DeadlineExceededError, match="before the work started"), working_for(call):
        pytest.fail("the work ran")


def test_a_cancelled_caller_is_gone_whatever_its_deadline() -> None:
    class Cancelled(Deadline):
        def cancelled(self) -> bool:
            return True

    assert caller_gone(Cancelled())


def test_an_edge_cancels_a_deadline_when_its_caller_goes() -> None:
    call = Deadline(None)
    with working_for(call):
        assert not caller_gone(call)
        call.cancel()  # the HTTP client hung up while the work ran: it stops at its next check
        assert call.cancelled() and caller_gone(call)
    with pytest.raises(DeadlineExceededError, match="caller went before the work started"), working_for(call):
        pytest.fail("the work ran")
