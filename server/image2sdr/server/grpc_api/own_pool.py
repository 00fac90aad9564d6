"""Health checks on threads of their own, so they never wait behind work.

Every RPC runs on the server's worker pool; when long calls or a burst of short ones
hold every worker, a health check would queue behind them and a load balancer would
take a busy server for a dead one.  grpc runs a behaviour on the executor named by its
``experimental_thread_pool`` attribute instead (grpc's ``_select_thread_pool_for_behavior``),
so this interceptor, outermost, gives ``grpc.health.v1.Health/Check`` a small pool of its own.
(``Watch`` is a stream that lives as long as its caller: it stays on the workers.)
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

__all__ = ["HEALTH_CHECK", "OwnPoolInterceptor"]

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class OwnPoolInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Runs the unary methods named in ``methods`` on ``pool`` instead of the server's workers."""

    def __init__(self, methods: frozenset[str], pool: ThreadPoolExecutor) -> None:
        self._methods = methods
        self._pool = pool

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = continuation(details)
        if handler is None or details.method not in self._methods or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary

        def on_own_pool(request: Any, context: grpc.ServicerContext) -> Any:
            return behavior(request, context)

        on_own_pool.experimental_thread_pool = self._pool  # type: ignore[attr-defined]
        return handler._replace(unary_unary=on_own_pool)
