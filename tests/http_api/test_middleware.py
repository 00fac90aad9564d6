"""The request cap: requests in flight past it get 503 before their bodies are read; /healthz never does."""

from __future__ import annotations

import threading

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from image2sdr.server.http_api.middleware import RequestCap

TIMEOUT = 30


def test_requests_past_the_cap_get_503_and_healthz_is_answered() -> None:
    entered, release = threading.Event(), threading.Event()

    async def slow(request: Request) -> PlainTextResponse:
        entered.set()
        await anyio.to_thread.run_sync(release.wait, TIMEOUT)
        return PlainTextResponse("done")

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("SERVING")

    app = Starlette(routes=[Route("/slow", slow), Route("/healthz", healthz)])
    with TestClient(RequestCap(app, 1, exempt=frozenset({"/healthz"}))) as client:
        answers: list[int] = []
        first = threading.Thread(target=lambda: answers.append(client.get("/slow").status_code))
        first.start()
        try:
            assert entered.wait(TIMEOUT)  # the one place is taken
            refused = client.get("/slow")
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert "http.max_concurrent" in refused.json()["message"]
            assert client.get("/healthz").text == "SERVING"
        finally:
            release.set()
            first.join(TIMEOUT)
        assert answers == [200]
        assert client.get("/slow").status_code == 200  # the place came back
