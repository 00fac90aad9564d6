"""``encode_frames``: an EncodeStream kept open over an endless iterator of frames, across server restarts.

What it promises, for every frame read from the iterator (the iterator is read once,
lazily, never further than ``window`` frames ahead of the last answer):

- exactly one result comes out, in the order the frames came in: the ``Encoding``, an
  ``ItemError`` (the server refused the frame, or it could not be read or sent), or a
  ``LostFrame`` (it could not be delivered; said explicitly, never skipped silently);
- a frame the server answered is never sent again;
- when the stream breaks with UNAVAILABLE (the server stopped, restarted, the network
  dropped), a new stream is opened once the channel is ready again, and every frame
  sent but not answered is sent again on it, in order, before any new frame;
- a frame that must not be sent twice (one stored with ``on_duplicate`` "skip" or
  "replace": the server may have stored it already, and a second send would find it
  as its own copy) is not re-sent: it comes out as a ``LostFrame`` in its place;
- after ``max_reconnects`` breaks in a row without an answer between them, or when the
  channel is not ready again within ``reconnect_timeout_s``, every frame held comes out
  as a ``LostFrame`` in order, and the iterator raises ``Unavailable``; the frames not
  yet read stay in the caller's iterator.

Memory is bounded by ``window`` frames: the ones sent and not yet answered.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Literal

import grpc

from image2sdr.v1 import image2sdr_pb2 as pb

from ._connection import _too_large, _unreadable, read_image
from ._convert import add_to_index_message, encode_options_message, result_from_pb
from ._exceptions import Internal, Unavailable, error_from_rpc_error
from ._types import EncodeItem, Encoding, ImageSource, ItemError

if TYPE_CHECKING:
    from ._client import Image2SdrClient

__all__ = ["FrameResult", "FrameStream", "LostFrame", "StreamStats", "encode_frames"]

LostReason = Literal["unavailable", "not_resendable"]


@dataclass(frozen=True)
class LostFrame:
    """A frame the stream could not deliver, in its place among the results.

    ``reason``: "unavailable" (the server did not come back within the reconnect
    budget) or "not_resendable" (sent with ``on_duplicate`` "skip" or "replace" on a
    stream that broke before answering: whether it was stored is unknown).
    """

    request_id: str
    position: int  # its index in the iterator of frames
    reason: LostReason
    item: EncodeItem = field(repr=False)  # the frame itself, to send again later if the caller wants


FrameResult = Encoding | ItemError | LostFrame


@dataclass
class StreamStats:
    """What the stream did so far; read it while iterating or after."""

    read: int = 0  # frames taken from the iterator
    sent: int = 0  # requests put on a stream, re-sends included
    resent: int = 0  # of those, frames sent again after a break
    answered: int = 0  # answers from the server (encodings and in-band errors)
    reconnects: int = 0  # streams opened after a break
    lost: int = 0  # LostFrame results


@dataclass(eq=False)
class _Entry:
    position: int
    request_id: str
    item: EncodeItem
    request: pb.EncodeRequest | None  # None: failed before sending (``error``)
    error: ItemError | None = None
    sent: bool = False  # put on a stream at least once
    lost: LostReason | None = None

    @property
    def resendable(self) -> bool:
        return self.item.add_to_index is None or self.item.on_duplicate == "keep"


@dataclass(eq=False)
class _Attempt:
    """One EncodeStream call; its request iterator sends ``window`` entries from ``next_seq`` on."""

    next_seq: int
    closed: bool = False


def encode_frames(
    client: Image2SdrClient,
    frames: Iterable[ImageSource | EncodeItem],
    *,
    window: int = 16,
    max_reconnects: int = 5,
    reconnect_timeout_s: float = 30.0,
    max_concepts: int | None = None,
    min_confidence: float | None = None,
    sparsity: float | None = None,
    visual_share: float | None = None,
    merge_custom_concepts: bool = False,
) -> FrameStream:
    """Encode ``frames`` over EncodeStream, reconnecting on UNAVAILABLE; see the module's promises.

    ``window``: frames sent and not yet answered, at most (the memory held).
    ``max_reconnects``: breaks in a row without an answer before giving up.
    ``reconnect_timeout_s``: how long each reconnect waits for the channel to be ready.
    Use it as an iterator (``for result in encode_frames(client, frames)``), or in a
    ``with`` block to stop the stream when leaving early.
    """
    options = encode_options_message(max_concepts, min_confidence, sparsity, visual_share, merge_custom_concepts)
    return FrameStream(
        client,
        frames,
        options=options,
        window=window,
        max_reconnects=max_reconnects,
        reconnect_timeout_s=reconnect_timeout_s,
    )


class FrameStream(Iterator[FrameResult]):
    """The results of ``encode_frames``, in the frames' order; ``stats`` counts what happened."""

    def __init__(
        self,
        client: Image2SdrClient,
        frames: Iterable[ImageSource | EncodeItem],
        *,
        options: pb.EncodeOptions | None,
        window: int,
        max_reconnects: int,
        reconnect_timeout_s: float,
    ) -> None:
        if window < 1 or max_reconnects < 0 or reconnect_timeout_s <= 0:
            raise ValueError("window >= 1, max_reconnects >= 0 and reconnect_timeout_s > 0")
        self.stats = StreamStats()
        self._client = client
        self._source = enumerate(frames)
        self._options = options
        self._max_window = window
        self._max_reconnects = max_reconnects
        self._reconnect_timeout_s = reconnect_timeout_s
        # The sender (gRPC's request thread) and the reader of answers (the caller) share these.
        self._cond = threading.Condition()
        self._window: deque[_Entry] = deque()  # read and not yet settled, in reading order
        self._base = 0  # the sequence number of window[0]: entries are numbered as read
        self._reading = False  # a request thread is inside the caller's iterator
        self._exhausted = False  # nothing more will be read
        self._source_error: BaseException | None = None
        self._results = self._run()

    def __next__(self) -> FrameResult:
        return next(self._results)

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def wait_for(self, predicate: Callable[[StreamStats], bool], timeout: float | None = None) -> bool:
        """Block until ``predicate(stats)`` holds, or ``timeout`` seconds pass (then False).

        For a monitor on another thread, or a test: ``stream.wait_for(lambda s: s.sent >= 10, 5.0)``.
        """
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.stats), timeout)

    def close(self) -> None:
        """Stop the stream (the frames not yet read stay in the iterator)."""
        self._results.close()

    # -- the caller's side: answers in, results out ---------------------------------------

    def _run(self) -> Generator[FrameResult, None, None]:
        failures = 0  # breaks since the last answer
        while True:
            attempt = _Attempt(next_seq=self._base)  # every frame not answered goes (again) first
            responses = self._client._stub.EncodeStream(self._requests(attempt), metadata=self._client._metadata)
            try:
                for response in responses:
                    yield from self._settle(response.request_id)
                    failures = 0
                    yield result_from_pb(response)
                yield from self._settle(None)
                if self._finished():
                    if self._source_error is not None:
                        raise self._source_error
                    return
                continue  # the server ended the stream with every frame answered: carry on in a new one
            except grpc.RpcError as exc:
                if self._closed_for_idling(exc):
                    continue  # nothing was outstanding, so nothing is sent twice
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise error_from_rpc_error(exc) from exc
                broken = exc
            finally:
                self._close(attempt)
                responses.cancel()
            failures += 1
            yield from self._settle_unresendable()
            if failures > self._max_reconnects or not self._channel_ready():
                yield from self._lose_all()
                raise Unavailable(
                    f"the stream broke {failures} time(s) without an answer between; the frames held are lost"
                ) from error_from_rpc_error(broken)
            with self._cond:
                self.stats.reconnects += 1

    def _finished(self) -> bool:
        with self._cond:
            return self._exhausted and not self._window

    def _closed_for_idling(self, exc: grpc.RpcError) -> bool:
        """The server closes a stream that sent nothing for a while, all answered (stream_idle_timeout_s)."""
        with self._cond:
            outstanding = any(entry.sent for entry in self._window)
        return exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and not outstanding

    def _settle(self, request_id: str | None) -> Iterator[FrameResult]:
        """The results up to the answer to ``request_id`` (None: the stream ended; all that is left)."""
        with self._cond:
            settled: list[FrameResult] = []
            while self._window and (self._window[0].request is None or self._window[0].lost):
                settled.append(self._pop_unsent())
            if request_id is not None:
                if not self._window:
                    raise Internal(f"the server answered request {request_id!r}, which was never sent")
                if self._window[0].request_id != request_id:
                    raise Internal(f"answers out of order: expected {self._window[0].request_id!r}, got {request_id!r}")
                self.stats.answered += 1
                self._pop()
            elif self._window and self._window[0].sent:
                raise Internal(f"the stream ended without an answer to request {self._window[0].request_id!r}")
        yield from settled

    def _settle_unresendable(self) -> Iterator[FrameResult]:
        """After a break: the frames sent that must not go twice are lost, in their places."""
        with self._cond:
            for entry in self._window:
                if entry.sent and entry.request is not None and not entry.resendable:
                    entry.lost = "not_resendable"
        return self._settle_front()

    def _settle_front(self) -> Iterator[FrameResult]:
        with self._cond:
            settled = []
            while self._window and (self._window[0].request is None or self._window[0].lost):
                settled.append(self._pop_unsent())
        return iter(settled)

    def _lose_all(self) -> Iterator[FrameResult]:
        with self._cond:
            self._exhausted = True  # the rest of the iterator stays unread
            # A frame being read now is one the caller handed over: it must come out too.
            self._cond.wait_for(lambda: not self._reading)
            for entry in self._window:
                entry.lost = entry.lost or "unavailable"
            settled = [self._pop_unsent() for _ in range(len(self._window))]
        return iter(settled)

    def _pop(self) -> _Entry:
        entry = self._window.popleft()
        self._base += 1
        self._cond.notify_all()  # room in the window
        return entry

    def _pop_unsent(self) -> FrameResult:
        entry = self._pop()
        if entry.error is not None:
            return entry.error
        self.stats.lost += 1
        return LostFrame(entry.request_id, entry.position, entry.lost or "unavailable", entry.item)

    def _close(self, attempt: _Attempt) -> None:
        with self._cond:
            attempt.closed = True
            self._cond.notify_all()

    def _channel_ready(self) -> bool:
        """Waits, at most ``reconnect_timeout_s``, for the channel to connect (gRPC backs off between tries)."""
        ready = grpc.channel_ready_future(self._client._channel)
        try:
            ready.result(timeout=self._reconnect_timeout_s)
        except grpc.FutureTimeoutError:
            return False
        finally:
            ready.cancel()  # stops watching the channel (a no-op once it is ready)
        return True

    # -- gRPC's request thread: frames in, requests out -------------------------------------

    def _requests(self, attempt: _Attempt) -> Iterator[pb.EncodeRequest]:
        while (request := self._next_to_send(attempt)) is not None:
            yield request

    def _next_to_send(self, attempt: _Attempt) -> pb.EncodeRequest | None:
        """The next request this attempt sends, reading a frame when the window has room; None ends it."""
        while True:
            with self._cond:
                while True:
                    if attempt.closed:
                        return None
                    offset = attempt.next_seq - self._base
                    if 0 <= offset < len(self._window):
                        attempt.next_seq += 1
                        entry = self._window[offset]
                        if entry.request is None or entry.lost:
                            continue
                        self.stats.sent += 1
                        self.stats.resent += entry.sent
                        entry.sent = True
                        self._cond.notify_all()  # for wait_for
                        return entry.request
                    if self._exhausted:
                        return None  # half-close: the server answers what it has, then ends
                    if not self._reading and len(self._window) < self._max_window:
                        self._reading = True
                        break
                    self._cond.wait()
            # Outside the lock: the caller's iterator may take its time (a camera, a file).
            fresh = self._read()
            with self._cond:
                self._reading = False
                if fresh is None:
                    self._exhausted = True
                else:
                    self._window.append(fresh)
                    self.stats.read += 1
                self._cond.notify_all()

    def _read(self) -> _Entry | None:
        try:
            position, frame = next(self._source)
        except StopIteration:
            return None
        except Exception as exc:  # the caller's iterator failed: raised to the caller after the frames before it
            self._source_error = exc
            return None
        item = frame if isinstance(frame, EncodeItem) else EncodeItem(frame)
        return self._entry(position, item)

    def _entry(self, position: int, item: EncodeItem) -> _Entry:
        request_id = item.request_id or str(position)
        try:
            image = read_image(item.image)
        except OSError as exc:
            return _Entry(position, request_id, item, None, ItemError(request_id, _unreadable(item.image, exc)))
        request = pb.EncodeRequest(
            image=image,
            options=self._options,
            request_id=request_id,
            add_to_index=add_to_index_message(item.add_to_index, item.metadata, item.on_duplicate),
        )
        limit = self._client.max_message_bytes
        if request.ByteSize() > limit:
            error = ItemError(request_id, _too_large(request.ByteSize(), limit))
            return _Entry(position, request_id, item, None, error)
        return _Entry(position, request_id, item, request)
