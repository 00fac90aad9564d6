"""Requests whose bytes are not a valid protobuf: INVALID_ARGUMENT, not INTERNAL.

grpcio answers a request it cannot deserialize with INTERNAL ("Exception
deserializing request!"), which tells the caller the server is at fault and
invites a retry that cannot help.  This interceptor gives every method of our
service a deserializer that never raises: it returns a ``Malformed`` marker,
and the method then answers INVALID_ARGUMENT.  A unary call is refused at once;
in a stream (EncodeStream) the marker takes the bad message's place, and the
servicer answers that one item in-band, so the good items around it are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

__all__ = ["Malformed", "MalformedRequestInterceptor"]


@dataclass(frozen=True)
class Malformed:
    """Stands in for a request message that failed to parse."""

    type_name: str  # the message type that was expected, e.g. "image2sdr.v1.EncodeRequest"
    reason: str

    @property
    def message(self) -> str:
        return f"the request is not a valid {self.type_name} protobuf ({self.reason})"


class MalformedRequestInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, service_name: str, request_types: dict[str, str]) -> None:
        self._prefix = f"/{service_name}/"
        self._types = request_types  # method name -> full name of its request message

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = continuation(details)
        if handler is None or handler.request_deserializer is None or not details.method.startswith(self._prefix):
            return handler  # grpc's own services (health, reflection) keep grpc's behaviour
        type_name = self._types.get(details.method[len(self._prefix) :], "request")
        parse = _never_raising(handler.request_deserializer, type_name)
        if handler.request_streaming:
            return handler._replace(request_deserializer=parse)  # the servicer answers a Malformed in-band
        if handler.response_streaming:
            return handler._replace(request_deserializer=parse, unary_stream=_refusing(handler.unary_stream))
        return handler._replace(request_deserializer=parse, unary_unary=_refusing(handler.unary_unary))


def _never_raising(deserialize: Callable[[bytes], Any], type_name: str) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError, and whatever else a parser may raise
            return Malformed(type_name, str(exc) or type(exc).__name__)

    return parse


def _refusing(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return behavior(request, context)

    return guarded
