"""Long calls share a few slots: one more is refused at once, with when to retry."""

from __future__ import annotations

import pytest

from image2sdr.server.config import ServiceConfig
from image2sdr.server.errors import BusyError
from image2sdr.server.usecases.slots import LongCalls


def test_a_long_call_past_the_share_is_refused_at_once_and_a_slot_comes_back() -> None:
    calls = LongCalls(2)
    with calls.slot("Explain"), calls.slot("CreateMap"):
        assert calls.running == 2
        with pytest.raises(BusyError, match=r"service\.max_long_calls") as refused, calls.slot("Explain"):
            pytest.fail("a third long call ran")
        assert (refused.value.limit, refused.value.actual, refused.value.retry_after_s) == (2, 3, 1.0)
    with pytest.raises(RuntimeError), calls.slot("Explain"):
        raise RuntimeError("the call failed")  # its slot is given back all the same
    assert calls.running == 0


def test_the_share_leaves_workers_for_short_calls() -> None:
    assert ServiceConfig().long_calls == 4  # half of the 16 - 8 workers streams leave
    assert ServiceConfig(workers=4, max_streams=2).long_calls == 1
    assert ServiceConfig(workers=2, max_streams=1).long_calls == 1  # at least one
    assert ServiceConfig(max_long_calls=6).long_calls == 6
    with pytest.raises(ValueError, match="short calls need a worker"):
        ServiceConfig(workers=8, max_streams=4, max_long_calls=4)
