"""Calls into the use cases for HTTP requests: a slot each, a bounded waiting room, then 429.

Each endpoint hands over an RPC name and its request message (or a function that parses
it); the RPC's function (``messages.rpcs``) runs in a worker thread with the call's
deadline (``X-Timeout-S``), cancelled if the client hangs up meanwhile, and its answer
goes back in the proto's canonical JSON, every field without presence present (``message_dict``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
from fastapi import Request
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from starlette.responses import JSONResponse, Response

from ..messages import UNARY, status_for
from ..usecases import Deadline, UseCases, working_for
from .errors import HttpApiError, bad_request

__all__ = ["MAX_TIMEOUT_S", "TIMEOUT_HEADER", "WAITING_PER_SLOT", "Calls", "message_dict", "message_response"]

TIMEOUT_HEADER = "X-Timeout-S"
MAX_TIMEOUT_S = 86_400.0  # a deadline further away than a day is a mistake (and overflows timers)
WAITING_PER_SLOT = 4  # calls that may wait per http.max_concurrent slot; more are refused with 429


class Calls:
    """Runs use cases for HTTP calls: at most ``limit`` at once, at most ``4 * limit`` waiting.

    A call waits for its slot on the event loop, not on a thread, so waiting calls hold
    no worker and ``/healthz`` and ``/metrics`` stay answerable under load; past the
    waiting room it is refused at once with 429 (RESOURCE_EXHAUSTED), as gRPC refuses
    calls past ``maximum_concurrent_rpcs``. The request message is parsed in the worker,
    after the slot is taken: a large JSON body costs nothing until its turn.
    """

    def __init__(self, cases: UseCases, limit: int) -> None:
        self._cases = cases
        self._limit = limit
        self._max_waiting = WAITING_PER_SLOT * limit
        self._waiting = 0  # touched on the event loop only
        self._slots: anyio.Semaphore | None = None  # made on the loop, at the first call
        self._threads: anyio.CapacityLimiter | None = None

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot now."""
        return self._waiting

    async def run(
        self,
        rpc: str,
        message: Message | Callable[[], Message],
        request: Request,
        respond: Callable[[Any], Response] | None = None,
    ) -> Response:
        """Call ``rpc`` as gRPC would; the answer in canonical JSON, or as ``respond`` makes it (on the worker)."""
        call = Deadline(_timeout(request))
        if self._slots is None or self._threads is None:
            self._slots, self._threads = anyio.Semaphore(self._limit), anyio.CapacityLimiter(self._limit)
        await self._take(self._slots, call.time_remaining())
        try:
            return await self._watched(rpc, message, call, request, self._threads, respond=respond or message_response)
        finally:
            self._slots.release()

    async def _watched(
        self,
        rpc: str,
        message: Message | Callable[[], Message],
        call: Deadline,
        request: Request,
        threads: anyio.CapacityLimiter,
        *,
        respond: Callable[[Any], Response],
    ) -> Response:
        """The call on a worker thread while the client is watched; it is cancelled if the client hangs up."""
        outcome: Response | Exception
        async with anyio.create_task_group() as watching:
            # The body is in by now: what the client sends next can only be its hang-up.
            watching.start_soon(_cancel_on_disconnect, request, call)
            try:
                outcome = await anyio.to_thread.run_sync(self._call, rpc, message, call, respond, limiter=threads)
            except Exception as exc:  # raised below, outside the group, which would wrap it
                outcome = exc
            finally:
                watching.cancel_scope.cancel()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _take(self, slots: anyio.Semaphore, remaining: float | None) -> None:
        if self._waiting >= self._max_waiting:
            raise HttpApiError(
                status_pb2.Status(
                    code=code_pb2.RESOURCE_EXHAUSTED,
                    message=f"{self._waiting} calls are waiting for one of http.max_concurrent ({self._limit}) "
                    "slots; retry later",
                )
            )
        self._waiting += 1
        try:
            with anyio.fail_after(None if remaining is None else max(0.0, remaining)):
                await slots.acquire()
        except TimeoutError:
            raise HttpApiError(
                status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message="deadline passed waiting for a free slot")
            ) from None
        finally:
            self._waiting -= 1

    def _call(
        self, rpc: str, message: Message | Callable[[], Message], call: Deadline, respond: Callable[[Any], Response]
    ) -> Response:
        request = message() if callable(message) else message
        try:
            with working_for(call):
                answer = UNARY[rpc](self._cases, request, call)
        except HttpApiError:
            raise
        except Exception as exc:  # the core's errors, reported as gRPC reports them
            raise HttpApiError(status_for(exc)) from exc
        return respond(answer)


async def _cancel_on_disconnect(request: Request, call: Deadline) -> None:
    """Cancel ``call`` when the client hangs up, so long work for it stops (as gRPC cancels its calls).

    The worker thread cannot be interrupted: the work sees ``call.cancelled()`` at its next
    check (``caller_gone``), and the slot is given back when the thread is done.
    """
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            call.cancel()
            return


def _timeout(request: Request) -> float | None:
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT_S):
        raise bad_request(f"{TIMEOUT_HEADER} must be a number of seconds in (0, {MAX_TIMEOUT_S}]", TIMEOUT_HEADER)
    return seconds


def message_dict(message: Message) -> dict[str, Any]:
    """``message`` in the proto's JSON with every field present, defaults included (``indexed: false``, ``total: 0``).

    json_format leaves out a field at its default, which an HTTP client reads as missing
    (an empty listing was ``{}``, with no ``total``).  Fields with presence (``optional``
    scalars, oneof members, message fields) stay absent when unset: absence is what they say.
    """
    body: dict[str, Any] = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return body


def message_response(message: Message, status: int = 200) -> JSONResponse:
    return JSONResponse(message_dict(message), status_code=status)
