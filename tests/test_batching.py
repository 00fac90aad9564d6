"""OrderedBatcher without a socket: order, bounded read-ahead, cancellation that needs no polling, idleness."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence

import pytest

from image2sdr.server.batching import Later, OrderedBatcher
from image2sdr.server.errors import StreamIdleError

TIMEOUT = 10


def _doubled(batches: list[int]) -> Callable[[Sequence[int]], list[int]]:
    def process(requests: Sequence[int]) -> list[int]:
        batches.append(len(requests))
        return [2 * r for r in requests]

    return process


def _drain(batcher: OrderedBatcher[int, int], into: queue.Queue[object]) -> threading.Thread:
    """Iterate on a thread, as the gRPC server does; the outcome (results or error) goes into ``into``."""

    def run() -> None:
        try:
            into.put(list(batcher))
        except Exception as exc:
            into.put(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_results_come_in_order_in_bounded_batches() -> None:
    batches: list[int] = []
    batcher = OrderedBatcher(iter(range(100)), _doubled(batches), in_flight=8, batch=4)
    assert list(batcher) == [2 * i for i in range(100)]
    assert sum(batches) == 100 and max(batches) <= 4


def test_a_failing_caller_ends_the_stream_after_what_it_sent() -> None:
    def requests() -> Iterator[int]:
        yield from range(3)
        raise ConnectionError("the caller went away")

    batcher = OrderedBatcher(requests(), _doubled([]), in_flight=8, batch=8)
    answered: list[int] = []
    with pytest.raises(ConnectionError):
        answered.extend(batcher)
    assert answered == [0, 2, 4]


def test_cancel_wakes_a_consumer_waiting_for_a_silent_caller() -> None:
    release = threading.Event()

    def silent() -> Iterator[int]:
        yield 1
        release.wait(60)  # sends nothing more, and does not hang up either

    outcome: queue.Queue[object] = queue.Queue()
    batcher = OrderedBatcher(silent(), _doubled([]), in_flight=4, batch=4)
    consumer = _drain(batcher, outcome)
    try:
        batcher.cancel()  # what the call's termination callback does
        consumer.join(TIMEOUT)
        assert not consumer.is_alive()
        assert outcome.get_nowait() in ([], [2])  # ends quietly, whether or not the first item got through
    finally:
        release.set()


def test_cancel_stops_a_reader_held_back_by_a_full_buffer() -> None:
    pulled = itertools.count(1)
    read: list[int] = []
    full = threading.Event()
    busy = threading.Event()

    def fast() -> Iterator[int]:
        while True:
            read.append(next(pulled))
            if len(read) > 4 + 1:  # one batch taken, the buffer full, one more waiting to go in
                full.set()
            yield read[-1]

    def slow(requests: Sequence[int]) -> list[int]:
        busy.wait(TIMEOUT)  # the first batch holds the consumer until the test lets it go
        return list(requests)

    outcome: queue.Queue[object] = queue.Queue()
    batcher = OrderedBatcher(fast(), slow, in_flight=4, batch=1)
    consumer = _drain(batcher, outcome)
    assert full.wait(TIMEOUT)
    batcher.cancel()
    batcher._reader.join(TIMEOUT)  # the reader gives up at once, without waiting for room
    assert not batcher._reader.is_alive()
    busy.set()
    consumer.join(TIMEOUT)
    assert not consumer.is_alive() and outcome.get_nowait() == [1]  # the batch under way finishes, no more
    assert len(read) <= 1 + 4 + 1  # bounded read-ahead: one batch, the buffer, the one the reader held


def test_an_idle_caller_is_told_so() -> None:
    release = threading.Event()

    def idle() -> Iterator[int]:
        yield 7
        release.wait(60)

    batcher = OrderedBatcher(idle(), _doubled([]), in_flight=4, batch=4, idle_timeout_s=0.2)
    answered: list[int] = []
    try:
        with pytest.raises(StreamIdleError, match="stream_idle_timeout_s"):
            answered.extend(batcher)
    finally:
        release.set()
    assert answered == [14]


def _read_ahead(count: int, all_read: threading.Event) -> Iterator[int]:
    """``range(count)``, then ``all_read`` set: the batcher's reader has buffered every item."""
    yield from range(count)
    all_read.set()


def test_a_batch_is_finished_while_the_next_is_processed_and_answered_in_order() -> None:
    """Two-stage batches (``Later``): batch 1's finish waits until batch 2 is being processed, so
    it must run beside it; every answer still comes out in order, after its own finish."""
    all_read, second_processing = threading.Event(), threading.Event()
    finished: list[int] = []

    def process(requests: Sequence[int]) -> Later[int]:
        assert all_read.wait(TIMEOUT)  # batch 2 is buffered by now: there is something to overlap with
        if requests[0] == 4:
            second_processing.set()

        def finish() -> list[int]:
            if requests[0] == 0:
                assert second_processing.wait(TIMEOUT), "batch 1 was finished alone, not beside batch 2"
            finished.extend(requests)
            return [2 * r for r in requests]

        return Later(finish)

    batcher = OrderedBatcher(_read_ahead(12, all_read), process, in_flight=12, batch=4)
    answered = []
    for answer in batcher:
        assert answer // 2 in finished  # no answer before its batch is finished
        answered.append(answer)
    assert answered == [2 * i for i in range(12)]


def test_a_caller_waiting_for_its_answers_gets_them_without_sending_more() -> None:
    """A caller that sends one batch and waits for its answers before sending the next (a
    request/response loop over one stream) is answered at once, not one batch late."""
    answers: queue.Queue[int] = queue.Queue()

    def lockstep() -> Iterator[int]:
        for batch in range(3):
            yield from range(batch * 2, batch * 2 + 2)
            for _ in range(2):
                answers.get(timeout=TIMEOUT)  # raises queue.Empty (ending the stream) if never answered

    def process(requests: Sequence[int]) -> Later[int]:
        return Later(lambda: list(requests))

    batcher = OrderedBatcher(lockstep(), process, in_flight=2, batch=2)
    answered = []
    for answer in batcher:
        answered.append(answer)
        answers.put(answer)
    assert answered == list(range(6))


def test_a_consumer_that_leaves_waits_for_the_batch_being_finished() -> None:
    """The gRPC edge closes the iteration when the call ends; a batch handed to the finishing
    stage (being stored) is finished before the close returns, never abandoned half-way."""
    all_read, finishing, release = threading.Event(), threading.Event(), threading.Event()
    finished: list[int] = []

    def process(requests: Sequence[int]) -> Later[int]:
        assert all_read.wait(TIMEOUT)

        def finish() -> list[int]:
            if requests[0] == 2:  # the batch queued behind the one being answered
                finishing.set()
                assert release.wait(TIMEOUT)
            finished.extend(requests)
            return list(requests)

        return Later(finish)

    answers = iter(OrderedBatcher(_read_ahead(4, all_read), process, in_flight=4, batch=2))
    assert next(answers) == 0  # batch 2 is processed and queued for finishing by now
    releaser = threading.Thread(target=lambda: finishing.wait(TIMEOUT) and release.set())
    releaser.start()
    answers.close()  # type: ignore[attr-defined]  # what grpc does when the call ends
    releaser.join(TIMEOUT)
    assert finished == [0, 1, 2, 3]
