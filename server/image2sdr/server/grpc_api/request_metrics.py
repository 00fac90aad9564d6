"""Every RPC timed and counted by its final status code, as a server interceptor.

It sits outside the other interceptors, so refusals count too (a missing token:
UNAUTHENTICATED, bytes that are not a protobuf: INVALID_ARGUMENT).  The code is
what the call ended with: OK when the behaviour returned, the aborting code when
it called ``context.abort``, UNKNOWN for any other exception (what grpc answers
then).  A streamed answer is counted when its iterator ends, so its time is the
stream's whole life; a stream the caller left counts as CANCELLED.  For a stream
of requests answered one for one (EncodeStream) it also keeps the number of
requests read but not yet answered (``Metrics.stream_items``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from ..metrics import Metrics

__all__ = ["RequestMetricsInterceptor"]

_Behavior = Callable[[Any, grpc.ServicerContext], Any]


class RequestMetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: Metrics, service_name: str, paired_streams: frozenset[str] = frozenset()) -> None:
        self._metrics = metrics
        self._prefix = f"/{service_name}/"
        self._paired = paired_streams  # stream-stream methods with one answer per request

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = continuation(details)
        if handler is None:
            return None  # grpc answers UNIMPLEMENTED itself
        method = self._method_name(details.method)
        if handler.request_streaming and handler.response_streaming:
            streamed = self._paired_stream if method in self._paired else self._stream
            return handler._replace(stream_stream=streamed(handler.stream_stream, method))
        if handler.response_streaming:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, method))
        if handler.request_streaming:
            return handler._replace(stream_unary=self._unary(handler.stream_unary, method))
        return handler._replace(unary_unary=self._unary(handler.unary_unary, method))

    def _method_name(self, path: str) -> str:
        # Our RPCs by their own name ("Encode"); grpc's services by theirs ("grpc.health.v1.Health/Check").
        return path[len(self._prefix) :] if path.startswith(self._prefix) else path.lstrip("/")

    def _unary(self, behavior: _Behavior, method: str) -> _Behavior:
        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "UNKNOWN"
            try:
                answer = behavior(request, context)
                code = _code(context, "OK")
                return answer
            except Exception:
                code = _code(context, "UNKNOWN")
                raise
            finally:
                self._metrics.observe_request("grpc", method, code, time.perf_counter() - started)

        return observed

    def _stream(self, behavior: _Behavior, method: str) -> _Behavior:
        def observed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            code = "CANCELLED"  # unless the answers run out or fail: the caller left (GeneratorExit)
            try:
                yield from behavior(request, context)
                code = _code(context, "OK" if context.is_active() else "CANCELLED")
            except Exception:
                code = _code(context, "UNKNOWN")
                raise
            finally:
                self._metrics.observe_request("grpc", method, code, time.perf_counter() - started)

        return observed

    def _paired_stream(self, behavior: _Behavior, method: str) -> _Behavior:
        stream = self._stream(behavior, method)

        def observed(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            pending = _Pending(self._metrics, method)
            try:
                for answer in stream(pending.reading(requests), context):
                    pending.answered()
                    yield answer
            finally:
                pending.forget()  # what was read and will not be answered is no longer in flight

        return observed


class _Pending:
    """Requests of one stream read and not yet answered, mirrored into the metrics' gauge."""

    def __init__(self, metrics: Metrics, method: str) -> None:
        self._metrics = metrics
        self._method = method
        self._count = 0
        self._closed = False  # the call has ended: a request read after that is never answered nor counted
        self._lock = threading.Lock()  # the servicer reads requests on a thread of its own

    def reading(self, requests: Iterator[Any]) -> Iterator[Any]:
        for request in requests:
            self._change(1)
            yield request

    def answered(self) -> None:
        self._change(-1)

    def forget(self) -> None:
        with self._lock:
            self._closed = True
            self._step(-self._count)

    def _change(self, change: int) -> None:
        with self._lock:
            if not self._closed:
                self._step(max(change, -self._count))  # an answer never takes the count below zero

    def _step(self, step: int) -> None:
        if step:
            self._count += step
            self._metrics.stream_items(self._method, step)


def _code(context: grpc.ServicerContext, default: str) -> str:
    """The code the call was aborted with or set to, else ``default``."""
    code = context.code()
    return default if code is None else str(getattr(code, "name", code))
