"""``Image2SdrServicer``: each RPC converts its message and calls the use case (``messages.rpcs``).

What an RPC does lives in ``usecases``; the conversions in ``messages``, shared with the
HTTP edge.  Here: the gRPC context as a ``CallContext`` (time left, cancelled), core
errors as a google.rpc.Status on the call, and EncodeStream's batching, stream slots
and cancellation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from grpc_status import rpc_status

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

from ..batching import Later, OrderedBatcher
from ..config import Config
from ..errors import Image2SdrError, InvalidInputError
from ..messages import UNARY, encode_then_store, status_for
from ..upstream import caller_deadline
from ..usecases import CallContext, UseCases, working_for
from .malformed import Malformed
from .stream_limits import OpenStream, StreamSlots, peer_host

__all__ = ["Image2SdrServicer"]

_StreamItem = pb.EncodeRequest | Malformed  # a stream's request, or bytes that did not parse as one


class GrpcCall:
    """A gRPC call as the use cases see it."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    def time_remaining(self) -> float | None:
        remaining: float | None = self._context.time_remaining()
        return remaining

    def cancelled(self) -> bool:
        return not self._context.is_active()


def _unary(name: str, rpc: Callable[[UseCases, Any, CallContext], Any]) -> Callable[..., Any]:
    """The servicer method of one unary RPC: core errors reported with their status and details, never UNKNOWN."""

    def method(self: Image2SdrServicer, request: Any, context: grpc.ServicerContext) -> Any:
        call = GrpcCall(context)
        try:
            with working_for(call):
                return rpc(self.cases, request, call)
        except Exception as exc:
            context.abort_with_status(rpc_status.to_status(status_for(exc)))

    method.__name__ = method.__qualname__ = name
    return method


class Image2SdrServicer(pb_grpc.Image2SdrServicer):
    def __init__(self, cases: UseCases, config: Config) -> None:
        self.cases = cases
        self.config = config
        service = config.service
        self._streams = StreamSlots(
            service.max_streams,
            service.max_streams_per_peer,
            service.stream_preempt_after_s,
            service.stream_preempt_waiting_s,
        )
        # One concept-provider call per batch: the provider's own size unless configured.
        self.stream_batch = service.stream_batch_for(cases.parts.encoder.concept_source.max_batch)

    def EncodeStream(
        self, requests: Iterator[pb.EncodeRequest | Malformed], context: grpc.ServicerContext
    ) -> Iterator[pb.EncodeResponse]:
        service = self.config.service
        try:
            stream = self._streams.acquire(peer_host(context.peer()))
        except Image2SdrError as busy:
            context.abort_with_status(rpc_status.to_status(status_for(busy)))
        batcher: OrderedBatcher[pb.EncodeRequest | Malformed, pb.EncodeResponse] = OrderedBatcher(
            _counted(requests, stream),
            self._encode_batch,
            in_flight=service.stream_in_flight,
            batch=self.stream_batch,
            idle_timeout_s=service.stream_idle_timeout_s,
        )
        # However the call ends (cancelled, past its deadline, done), the reader and
        # the batches stop at once, as in grpc's cancellation example: no polling.
        if not context.add_callback(batcher.cancel):
            batcher.cancel()  # it has ended already
        stream.on_preempt(batcher.cancel)  # its slot given to a waiting caller: the batch in hand is answered
        try:
            with caller_deadline(context.time_remaining()):  # the stream's deadline bounds upstream retries
                for answer in batcher:
                    stream.answer()
                    yield answer
        except grpc.RpcError:
            return  # the caller cancelled; nothing is left to answer
        except Exception as exc:
            context.abort_with_status(rpc_status.to_status(status_for(exc)))
        finally:
            self._streams.release(stream)
        preempted = stream.preempted()
        if preempted is not None:  # told why it ends, so the caller can open a new stream for the rest
            context.abort_with_status(rpc_status.to_status(status_for(preempted)))

    def _encode_batch(self, requests: Sequence[pb.EncodeRequest | Malformed]) -> Later[pb.EncodeResponse]:
        """Encode the batch now; store it and build its answers while the next batch is encoded."""
        parsed = [InvalidInputError(r.message, field="request") if isinstance(r, Malformed) else r for r in requests]
        return Later(encode_then_store(self.cases, parsed))


def _counted(requests: Iterator[_StreamItem], stream: OpenStream) -> Iterator[_StreamItem]:
    """The stream's requests, each counted as read (which stream gives up its slot goes by these counts)."""
    for request in requests:
        stream.read()
        yield request


# Every unary RPC of the contract, by the name the generated base class gives it.
for _name, _rpc in UNARY.items():
    setattr(Image2SdrServicer, _name, _unary(_name, _rpc))
