"""Bearer-token check on every RPC except health checks, as a server interceptor.

The token is parsed and compared by ``image2sdr.server.auth`` (the HTTP edge uses the
same).  A refused call gets UNAUTHENTICATED with a message that never echoes what was sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health

from ..auth import BearerToken

__all__ = ["BearerTokenInterceptor"]

_EXEMPT_PREFIX = f"/{health.SERVICE_NAME}/"  # orchestrators probe health without secrets


class BearerTokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, token: BearerToken) -> None:
        self._token = token

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = continuation(details)
        if handler is None or details.method.startswith(_EXEMPT_PREFIX) or self._allowed(details):
            return handler
        return _denial_like(handler)

    def _allowed(self, details: grpc.HandlerCallDetails) -> bool:
        return any(
            key == "authorization" and self._token.admits(value) for key, value in details.invocation_metadata or ()
        )


def _deny(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
    context.abort(
        grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token (metadata 'authorization: Bearer ...')"
    )


def _denial_like(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same streaming shape as ``handler`` that refuses the call."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_deny, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_deny, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_deny, **kwargs)
    return grpc.unary_unary_rpc_method_handler(_deny, **kwargs)
