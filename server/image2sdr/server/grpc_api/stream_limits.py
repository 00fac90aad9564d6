"""How many EncodeStream calls may be open: so many in all, and so many per peer host.

One caller cannot hold every slot.  A peer is the caller's host as gRPC reports
it (its port changes with every connection, so counting per connection would be
no limit at all).  Behind a proxy every caller is the proxy: set the per-peer
share to 0 there.
"""

from __future__ import annotations

import threading
from collections import Counter

from ..errors import StreamLimitError

__all__ = ["StreamSlots", "peer_host"]


class StreamSlots:
    """``total`` open streams in all and ``per_peer`` per peer host (0: no share below the total)."""

    def __init__(self, total: int, per_peer: int) -> None:
        self.total = total
        self.per_peer = min(per_peer, total) if per_peer else total
        self._open: Counter[str] = Counter()
        self._total = 0
        self._lock = threading.Lock()

    def acquire(self, peer: str) -> None:
        """Take a slot for ``peer``, or raise StreamLimitError saying which limit is reached."""
        with self._lock:
            if self._total >= self.total:
                raise StreamLimitError(
                    f"{self.total} streams are open, the limit (service.max_streams); retry later",
                    limit=self.total,
                    actual=self.total + 1,
                )
            if self._open[peer] >= self.per_peer:
                raise StreamLimitError(
                    f"this client already has {self.per_peer} streams open, its share "
                    "(service.max_streams_per_peer); retry later",
                    limit=self.per_peer,
                    actual=self.per_peer + 1,
                )
            self._open[peer] += 1
            self._total += 1

    def release(self, peer: str) -> None:
        with self._lock:
            self._open[peer] -= 1
            self._total -= 1
            if self._open[peer] <= 0:
                del self._open[peer]

    def open_streams(self) -> int:
        with self._lock:
            return self._total


def peer_host(peer: str) -> str:
    """The host part of a gRPC peer string: "ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7"."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = address.rpartition(":")
        return f"{kind}:{host}" if port.isdigit() else peer
    return peer  # unix sockets and the like: the whole string
