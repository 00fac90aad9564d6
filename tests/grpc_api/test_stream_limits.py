"""Stream slots: streams that trickle give their slot to a caller who waits; full-speed ones keep it.

The rule on a fake clock, then on a real server where two streams that each sent one
junk item hold both slots and a well-behaved stream comes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from image2sdr.server.errors import StreamLimitError
from image2sdr.server.grpc_api.stream_limits import StreamSlots
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.servers import start_server

TIMEOUT = 60


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_slowest_stream_old_enough_gives_its_slot_to_a_new_caller() -> None:
    clock = Clock()
    slots = StreamSlots(total=3, per_peer=0, preempt_after_s=10.0, clock=clock)
    fast, slow = slots.acquire("a"), slots.acquire("b")
    closed: list[str] = []
    fast.on_preempt(lambda: closed.append("fast"))
    slow.on_preempt(lambda: closed.append("slow"))
    for _ in range(500):
        fast.read()
    for _ in range(3):
        slow.read()
    clock.now += 10.0
    young = slots.acquire("c")  # a free slot: nobody is given up
    assert closed == []
    slots.acquire("d")  # every slot taken: "slow" (0.3/s) goes, not "fast" (50/s) nor "young" (0/s, but 0 s old)
    assert closed == ["slow"] and slots.open_streams() == 3
    why = slow.preempted()
    assert why is not None and "service.stream_preempt_after_s" in str(why) and why.retry_after_s == 1.0
    assert fast.preempted() is None and young.preempted() is None
    slots.release(slow)  # its thread ends after its batch: the slot it had is the newcomer's already
    assert slots.open_streams() == 3
    slots.acquire("e")  # "fast" is now the only one open 10 s: it gets its turn to give way
    assert closed == ["slow", "fast"]
    with pytest.raises(StreamLimitError, match=r"service\.max_streams\)"):
        slots.acquire("f")  # the rest are all younger than 10 s


def test_a_stream_waiting_on_its_caller_gives_way_first_whatever_its_age() -> None:
    clock = Clock()
    slots = StreamSlots(total=2, per_peer=0, preempt_after_s=10.0, preempt_waiting_s=1.0, clock=clock)
    busy, trickling = slots.acquire("a"), slots.acquire("b")
    for stream in (busy, trickling):
        stream.read()
    trickling.answer()  # all it sent is answered: from now on it waits on its caller
    clock.now += 0.9
    with pytest.raises(StreamLimitError):
        slots.acquire("c")  # waiting 0.9 s, open 0.9 s: nobody gives way yet
    clock.now += 0.1
    slots.acquire("c")
    assert trickling.preempted() is not None and busy.preempted() is None  # "busy" has a request in hand
    assert "service.stream_preempt_waiting_s" in str(trickling.preempted())


def test_a_stream_given_up_before_its_close_is_known_is_closed_at_once() -> None:
    clock = Clock()
    slots = StreamSlots(total=1, per_peer=0, preempt_after_s=1.0, clock=clock)
    first = slots.acquire("a")
    clock.now += 1.0
    slots.acquire("b")
    closed: list[str] = []
    first.on_preempt(lambda: closed.append("first"))  # the stream had not yet said how to close it
    assert closed == ["first"]


def test_full_speed_streams_are_not_given_up_while_younger_than_the_rule() -> None:
    clock = Clock()
    slots = StreamSlots(total=1, per_peer=0, preempt_after_s=10.0, clock=clock)
    slots.acquire("a")
    clock.now += 9.9
    with pytest.raises(StreamLimitError):
        slots.acquire("b")
    never = StreamSlots(total=1, per_peer=0, preempt_after_s=0.0, clock=clock)
    never.acquire("a")
    clock.now += 1e6
    with pytest.raises(StreamLimitError):
        never.acquire("b")  # 0: never given up


def test_a_peer_at_its_share_takes_no_one_elses_slot() -> None:
    clock = Clock()
    slots = StreamSlots(total=2, per_peer=1, preempt_after_s=1.0, clock=clock)
    slots.acquire("a")
    slots.acquire("b")
    clock.now += 5.0
    with pytest.raises(StreamLimitError, match="max_streams_per_peer"):
        slots.acquire("a")


def _trickler(stub: pb_grpc.Image2SdrStub, name: str, release: threading.Event) -> grpc.Call:
    """A stream that sent one junk item (answered in band) and then waits, holding its slot."""

    def requests() -> Iterator[pb.EncodeRequest]:
        yield pb.EncodeRequest(image=b"junk", request_id=name)
        release.wait(TIMEOUT)

    call = stub.EncodeStream(requests(), timeout=TIMEOUT)
    answer = next(call)
    assert answer.request_id == name and answer.HasField("error")
    return call


def test_a_trickling_stream_gives_its_slot_to_a_well_behaved_one(
    tmp_path: Path, models_dir: Path, photos: dict[str, bytes]
) -> None:
    server = start_server(
        tmp_path, models_dir, workers=4, max_streams=2, max_streams_per_peer=0, stream_preempt_after_s=0.001
    )
    release = threading.Event()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.Image2SdrStub(channel)
            older, newer = (_trickler(stub, name, release) for name in ("older", "newer"))
            good = [pb.EncodeRequest(image=photos["coffee"], request_id=f"good-{n}") for n in range(2)]
            answers = list(stub.EncodeStream(iter(good), timeout=TIMEOUT))
            assert [a.request_id for a in answers] == ["good-0", "good-1"]
            assert all(not a.HasField("error") for a in answers)
            with pytest.raises(grpc.RpcError) as given_up:
                next(older)  # the slowest (one item in the longest time) was closed, and told why
            assert given_up.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "service.stream_preempt_after_s" in (given_up.value.details() or "")
            status = rpc_status.from_call(given_up.value)
            assert status is not None and any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
            release.set()
            assert list(newer) == []  # the other kept its slot to its end
    finally:
        release.set()
        server.stop()
