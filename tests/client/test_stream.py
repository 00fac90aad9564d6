"""``encode_frames`` against a real server stopped and started again on the same port mid-stream.

No sleeps: the frames' own iterator stops the server at a frame of the test's choosing
(it runs on the stream's request thread), so the frame read then is sent on a stream
that is already broken: sent and not answered, by construction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from image2sdr.client import (
    EncodeItem,
    Encoding,
    HtmSdr,
    Image2SdrClient,
    InvalidArgument,
    ItemError,
    LostFrame,
    Sdr,
    Unavailable,
    encode_frames,
)
from image2sdr.server.serve import Server
from tests.helpers.borrowed import BorrowedServer

FRAMES = 12
WINDOW = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, service: Server, models_dir: Path) -> Iterator[BorrowedServer]:
    restartable = BorrowedServer(service.encoder, tmp_path_factory.mktemp("stream-data"), models_dir)
    restartable.start()
    yield restartable
    restartable.close()


@pytest.fixture(scope="module")
def expected(server: BorrowedServer, photos: dict[str, bytes]) -> dict[bytes, Sdr]:
    """Each photo's SDR, from unary Encode: what every streamed frame of it must come back as."""
    with Image2SdrClient(server.address) as client:
        return {image: client.encode(image).sdr for image in photos.values()}


def _frames(photos: dict[str, bytes], count: int) -> list[bytes]:
    images = list(photos.values())
    return [images[i % len(images)] for i in range(count)]


def _positions(results: list[Any]) -> list[int]:
    return [int(result.request_id.rsplit("/", 1)[-1]) for result in results]


def test_a_restart_mid_stream_loses_no_frame_and_repeats_none(
    server: BorrowedServer, photos: dict[str, bytes], expected: dict[bytes, Sdr], tmp_path: Path
) -> None:
    images = _frames(photos, FRAMES)
    missing = tmp_path / "gone.jpg"  # unreadable here: an ItemError in its place, never sent
    broken_at = 3  # < WINDOW: read while the test holds the answers back
    holding, restarted = threading.Event(), threading.Event()
    read: list[int] = []
    results: list[Any] = []
    held: list[int] = []

    def frames() -> Iterator[EncodeItem]:
        for i, image in enumerate(images):
            held.append(len(read) - len(results))  # read and not yet handed back: bounded by the window
            read.append(i)
            if i == broken_at:
                assert holding.wait(60)  # the test holds the first answer: nothing settles past it
                server.restart()
                restarted.set()
            source: bytes | Path = missing if i == 1 else b"not an image" if i == 2 else image
            yield EncodeItem(source, request_id=f"frame/{i}", add_to_index=f"stream/{i}")

    with Image2SdrClient(server.address) as client:
        stream = encode_frames(client, frames(), window=WINDOW, max_reconnects=2, reconnect_timeout_s=60)
        for result in stream:
            results.append(result)
            if len(results) == 1:  # hold the stream here: the break reaches it only once frame 3 is on it
                holding.set()
                assert restarted.wait(60)
                assert stream.wait_for(lambda stats: stats.sent >= broken_at, 60)  # frame 1 is never sent
        stored = client.items_exist([f"stream/{i}" for i in range(FRAMES)])

    assert _positions(results) == list(range(FRAMES)) and read == list(range(FRAMES))
    for i, result in enumerate(results):
        if i == 1:
            assert isinstance(result, ItemError) and isinstance(result.error, InvalidArgument)
            assert "cannot read" in result.error.message
        elif i == 2:
            assert isinstance(result, ItemError) and isinstance(result.error, InvalidArgument)
        else:
            assert isinstance(result, Encoding) and result.indexed
            assert result.sdr == expected[images[i]], f"frame {i} came back as another frame's SDR"
    assert stored == [i not in (1, 2) for i in range(FRAMES)]
    assert stream.stats.reconnects == 1 and stream.stats.lost == 0
    assert stream.stats.read == FRAMES and stream.stats.answered == FRAMES - 1  # frame 1 was never sent
    # Frame 3 at least went out on the broken stream, so it went again; frame 0 (answered) and 1
    # (never sent) did not. Frames past 3 may go out on the broken stream before the client sees
    # the break: at most a window of unanswered frames is ever in flight, and each is sent again.
    assert 1 <= stream.stats.resent <= WINDOW and stream.stats.sent == FRAMES - 1 + stream.stats.resent
    assert max(held) <= WINDOW + 1  # one may be between the window and the caller's hands

    sdr = HtmSdr.from_sdr(results[0].sdr)  # what an HTM model takes from it
    assert sdr.dimensions == (128, 128) and sdr.size == 16384 and sdr.getSum() == len(results[0].sdr.active)
    assert int(sdr.dense.sum()) == sdr.getSum()


def test_a_server_that_does_not_come_back_loses_the_held_frames_explicitly_in_order(
    server: BorrowedServer, photos: dict[str, bytes], expected: dict[bytes, Sdr]
) -> None:
    images = _frames(photos, FRAMES)
    stopped_at = 5
    read: list[int] = []

    def frames() -> Iterator[bytes]:
        for i, image in enumerate(images):
            read.append(i)
            if i == stopped_at:
                server.stop()
            yield image

    results: list[Any] = []
    try:
        with Image2SdrClient(server.address) as client:
            stream = encode_frames(client, frames(), window=WINDOW, max_reconnects=1, reconnect_timeout_s=1.0)
            with pytest.raises(Unavailable, match="lost"):
                for result in stream:
                    results.append(result)
    finally:
        server.start()  # on the same port, for the tests after this one

    # Every frame read gets one result, in order. The client may read a frame or two past the
    # stop before it sees the break (the window allows it); never past the window.
    assert [int(result.request_id) for result in results] == read == list(range(len(read)))
    assert stopped_at < len(read) <= stopped_at + 1 + WINDOW
    answered = [result for result in results if isinstance(result, Encoding)]
    lost = results[len(answered) :]
    assert lost and all(isinstance(result, LostFrame) and result.reason == "unavailable" for result in lost)
    assert all(result.sdr == expected[images[i]] for i, result in enumerate(answered))
    assert [result.position for result in lost] == list(range(len(answered), len(read)))
    assert lost[-1].item.image == images[read[-1]]  # the frame itself comes back, to be sent later
    assert stream.stats.lost == len(lost) and stream.stats.read == len(read)  # nothing read is unaccounted for


def test_frames_that_must_not_go_twice_are_lost_in_their_places_and_the_rest_go_on(
    server: BorrowedServer, photos: dict[str, bytes], expected: dict[bytes, Sdr]
) -> None:
    images = _frames(photos, 8)
    broken_at = 2
    holding, restarted = threading.Event(), threading.Event()

    def frames() -> Iterator[EncodeItem]:
        for i, image in enumerate(images):
            if i == broken_at:
                assert holding.wait(60)  # the test holds the first answer: nothing settles past it
                server.restart()
                restarted.set()
            yield EncodeItem(image, add_to_index=f"skip/{i}", on_duplicate="skip" if i == broken_at else "keep")

    results: list[Any] = []
    with Image2SdrClient(server.address) as client:
        stream = encode_frames(client, frames(), window=WINDOW, reconnect_timeout_s=60)
        for result in stream:
            results.append(result)
            if len(results) == 1:  # as above: frame 2 goes out on the broken stream
                holding.set()
                assert restarted.wait(60)
                assert stream.wait_for(lambda stats: stats.sent >= broken_at + 1, 60)

    assert [result.request_id for result in results] == [str(i) for i in range(8)]
    lost = results[broken_at]
    assert isinstance(lost, LostFrame) and lost.reason == "not_resendable" and lost.item.on_duplicate == "skip"
    assert lost.position == broken_at and stream.stats.lost == 1
    assert all(
        isinstance(result, Encoding) and result.sdr == expected[images[i]]
        for i, result in enumerate(results)
        if i != broken_at
    )


def test_the_callers_iterator_failing_is_raised_after_the_frames_before_it(
    server: BorrowedServer, photos: dict[str, bytes]
) -> None:
    def frames() -> Iterator[bytes]:
        yield from _frames(photos, 2)
        raise OSError("camera unplugged")

    results: list[Any] = []
    with Image2SdrClient(server.address) as client, pytest.raises(OSError, match="camera unplugged"):
        for result in encode_frames(client, frames()):
            results.append(result)
    assert [result.request_id for result in results] == ["0", "1"]


def test_bad_settings_are_refused(server: BorrowedServer) -> None:
    with Image2SdrClient(server.address) as client:
        for settings in ({"window": 0}, {"max_reconnects": -1}, {"reconnect_timeout_s": 0}):
            with pytest.raises(ValueError, match="window"):
                encode_frames(client, [], **settings)
