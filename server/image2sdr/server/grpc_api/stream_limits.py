"""How many EncodeStream calls may be open: so many in all, and so many per peer host.

One caller cannot hold every slot.  A peer is the caller's host as gRPC reports
it (its port changes with every connection, so counting per connection would be
no limit at all).  Behind a proxy every caller is the proxy: set the per-peer
share to 0 there.

Nor can streams that trickle: the idle timeout counts only silence, so a stream
sending one junk item every few seconds would keep its slot for ever.  When
every slot is taken and another caller asks, one stream is closed and its slot
handed over: the one that has waited longest on its caller (everything it sent
answered) if that is ``preempt_waiting_s`` or more, else the one that has sent
fewest requests per second of those open ``preempt_after_s`` or more.  A stream
at full speed never waits on its caller and keeps its slot that long at least;
one that trickles spends most of its time waiting and gives way at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from ..errors import BusyError, StreamLimitError

__all__ = ["OpenStream", "StreamSlots", "peer_host"]


class OpenStream:
    """One stream's slot: its peer, when it opened, how many requests it sent, and how to close it."""

    def __init__(self, peer: str, clock: Callable[[], float]) -> None:
        self.peer = peer
        self._clock = clock
        self.opened_at = clock()
        self.received = 0  # requests read
        self.answered = 0  # answers sent
        self.waiting_since: float | None = self.opened_at  # all it sent is answered: the caller's turn
        self.preempted_after_s: float | None = None  # set once when it is closed for a waiting caller
        self._close: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def read(self) -> None:
        """One request read from the caller (on the stream's reader thread)."""
        with self._lock:
            self.received += 1
            self.waiting_since = None

    def answer(self) -> None:
        """One answer sent; once all that was read is answered, the stream waits on its caller."""
        with self._lock:
            self.answered += 1
            if self.answered >= self.received:
                self.waiting_since = self._clock()

    def on_preempt(self, close: Callable[[], None]) -> None:
        """Call ``close`` when the slot is given away (at once, if it already was)."""
        with self._lock:
            self._close = close
            preempted = self.preempted_after_s is not None
        if preempted:
            close()

    def preempted(self) -> BusyError | None:
        """Why the stream was closed, if it was given up for another caller."""
        if self.preempted_after_s is None:
            return None
        return BusyError(
            f"this stream was closed after {self.preempted_after_s:.0f} s to give its slot to another caller: "
            "every stream slot was taken, and it had waited on its caller longest "
            "(service.stream_preempt_waiting_s) or sent fewest requests per second of those open "
            "service.stream_preempt_after_s or longer; the answers it got stand, open a new stream for the rest",
            limit=1,
            actual=1,
        )

    def _waited(self, now: float) -> float:
        with self._lock:
            return 0.0 if self.waiting_since is None else now - self.waiting_since

    def _preempt(self, now: float) -> None:
        with self._lock:
            self.preempted_after_s = now - self.opened_at
            close = self._close
        if close is not None:
            close()

    def _rate(self, now: float) -> float:
        with self._lock:
            return self.received / max(now - self.opened_at, 1e-9)


class StreamSlots:
    """``total`` open streams in all and ``per_peer`` per peer host (0: no share below the total).

    A caller that finds every slot taken takes the slot of the stream that has waited on
    its caller longest, if ``preempt_waiting_s`` or more, else of the slowest stream open
    ``preempt_after_s`` or more (``OpenStream.preempted`` tells that one why); 0 turns
    either rule off.
    """

    def __init__(
        self,
        total: int,
        per_peer: int,
        preempt_after_s: float = 0.0,
        preempt_waiting_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.per_peer = min(per_peer, total) if per_peer else total
        self.preempt_after_s = preempt_after_s
        self.preempt_waiting_s = preempt_waiting_s
        self._clock = clock
        self._open: Counter[str] = Counter()
        self._streams: set[OpenStream] = set()
        self._lock = threading.Lock()

    def acquire(self, peer: str) -> OpenStream:
        """Take a slot for ``peer``, or raise StreamLimitError saying which limit is reached."""
        with self._lock:
            now = self._clock()
            if self.per_peer < self.total and self._open[peer] >= self.per_peer:  # a share below the total
                raise StreamLimitError(
                    f"this client already has {self.per_peer} streams open, its share "
                    "(service.max_streams_per_peer); retry later",
                    limit=self.per_peer,
                    actual=self.per_peer + 1,
                )
            if len(self._streams) >= self.total:
                self._give_up_one(now)
            stream = OpenStream(peer, self._clock)
            self._streams.add(stream)
            self._open[peer] += 1
            return stream

    def release(self, stream: OpenStream) -> None:
        with self._lock:
            self._forget(stream)

    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def _give_up_one(self, now: float) -> None:
        """Free the slot of the stream that gives way, or raise StreamLimitError (the lock is held)."""
        chosen = self._waited_longest(now) or self._slowest_old(now)
        if chosen is None:
            raise StreamLimitError(
                f"{self.total} streams are open, the limit (service.max_streams); retry later",
                limit=self.total,
                actual=self.total + 1,
            )
        self._forget(chosen)  # its slot is the new caller's from now; its thread ends after its batch
        chosen._preempt(now)

    def _waited_longest(self, now: float) -> OpenStream | None:
        if not self.preempt_waiting_s:
            return None
        waited = {s: s._waited(now) for s in self._streams}
        longest = max(waited, key=lambda s: waited[s], default=None)
        return longest if longest is not None and waited[longest] >= self.preempt_waiting_s else None

    def _slowest_old(self, now: float) -> OpenStream | None:
        if not self.preempt_after_s:
            return None
        old = [s for s in self._streams if now - s.opened_at >= self.preempt_after_s]
        return min(old, key=lambda s: (s._rate(now), s.opened_at), default=None)

    def _forget(self, stream: OpenStream) -> None:
        if stream not in self._streams:
            return  # given up already: its slot went to another caller
        self._streams.discard(stream)
        self._open[stream.peer] -= 1
        if self._open[stream.peer] <= 0:
            del self._open[stream.peer]


def peer_host(peer: str) -> str:
    """The host part of a gRPC peer string: "ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7"."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = address.rpartition(":")
        return f"{kind}:{host}" if port.isdigit() else peer
    return peer  # unix sockets and the like: the whole string
