"""Local servers that speak the real protocols of Clarifai (gRPC) and Cortical.io (REST),
plus a small HTTP proxy, for the provider tests.  Loopback only, port 0.

- ``FakeClarifai`` is clarifai_grpc's own ``V2Servicer`` with PostModelOutputs:
  concept lists per image, MIXED_STATUS, CONN_THROTTLED, UNAVAILABLE, an
  in-band error status, slow answers, and a check of the ``authorization: Key
  ...`` metadata.  On demand it reads the pixels it is sent (``red_concept``:
  one concept's value is the share of a red square still visible) and quotes the
  key it received in its errors (``echo_key``), as a careless upstream might.
- ``FakeCortical`` answers /terms, /expressions, /expressions/bulk and
  /expressions/similar_terms with Cortical.io's JSON shapes, and on demand
  401, 429, 503, a stall, malformed JSON or impossible positions.
- ``FakeProxy`` forwards plain HTTP requests and tunnels CONNECT, and records
  what went through it.

Faults are scripted per request (``script``: consumed one per request) or set
for every request (``always``).
"""

from __future__ import annotations

import hashlib
import io
import json
import selectors
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import numpy as np
from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2, status_pb2
from PIL import Image

RETINA_SIZE = 16384
RED_MIN, OTHER_MAX = 200, 60  # a pixel counts as red: R at least this, G and B at most that

# -- Clarifai ----------------------------------------------------------------------


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class SeenCall:
    request: service_pb2.PostModelOutputsRequest
    metadata: dict[str, str]


class FakeClarifai(service_pb2_grpc.V2Servicer):  # type: ignore[misc]
    """PostModelOutputs as Clarifai answers it, concepts chosen per image."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.answers: dict[str, list[tuple[str, float]]] = {}  # image digest -> (name, value), any order
        self.default_answer: list[tuple[str, float]] = [("thing", 0.5)]
        self.failing: set[str] = set()  # image digests that fail in-band (MIXED_STATUS)
        self.script: deque[str] = deque()  # "throttled" | "unavailable" | "error" | "slow" | "ok", one per call
        self.always = "ok"
        self.slow_s = 1.0
        # (name, pixels): images without an answer of their own get that concept, valued the share of
        # those many pure red pixels still in the image (decoded from the bytes sent), beside "thing".
        self.red_concept: tuple[str, int] | None = None
        self.echo_key = False  # error descriptions quote the authorization received
        self.calls: list[SeenCall] = []
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.answers.clear()
            self.failing.clear()
            self.script.clear()
            self.always = "ok"
            self.red_concept = None
            self.echo_key = False
            self.calls.clear()

    def PostModelOutputs(
        self, request: service_pb2.PostModelOutputsRequest, context: grpc.ServicerContext
    ) -> service_pb2.MultiOutputResponse:
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        with self._lock:
            self.calls.append(SeenCall(request, metadata))
            action = self.script.popleft() if self.script else self.always
        said = f" (sent: {metadata.get('authorization')})" if self.echo_key else ""
        if metadata.get("authorization") != f"Key {self.key}":
            return _response(status_code_pb2.CONN_KEY_INVALID, f"API key not found{said}")
        if action == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, f"upstream connect error{said}")
        if action == "throttled":
            return _response(status_code_pb2.CONN_THROTTLED, f"Making too many requests{said}")
        if action == "error":  # neither retryable nor about the key or an image
            return _response(status_code_pb2.INTERNAL_UNCATEGORIZED, f"Internal error{said}")
        if action == "slow":
            time.sleep(self.slow_s)
        return self._predict(request)

    def _predict(self, request: service_pb2.PostModelOutputsRequest) -> service_pb2.MultiOutputResponse:
        config = request.model.output_info.output_config
        limit = config.max_concepts or 20  # Clarifai's own default
        outputs = []
        for item in request.inputs:
            key = digest(item.data.image.base64)
            if key in self.failing:
                status = status_pb2.Status(code=status_code_pb2.MP_IMAGE_DECODE_ERROR, description="Failed to decode")
                outputs.append(resources_pb2.Output(input=resources_pb2.Input(id=item.id), status=status))
                continue
            answer = self.answers[key] if key in self.answers else self._from_pixels(item.data.image.base64)
            ranked = sorted(answer, key=lambda pair: -pair[1])
            concepts = [
                resources_pb2.Concept(id=f"ai_{name[:8]}", name=name, value=value)
                for name, value in ranked
                if value >= config.min_value
            ][:limit]
            outputs.append(
                resources_pb2.Output(
                    input=resources_pb2.Input(id=item.id),
                    status=status_pb2.Status(code=status_code_pb2.SUCCESS, description="Ok"),
                    data=resources_pb2.Data(concepts=concepts),
                )
            )
        failed = [output.status.code != status_code_pb2.SUCCESS for output in outputs]
        if all(failed):  # as Clarifai does: every input failed -> FAILURE, still one output each
            code, description = status_code_pb2.FAILURE, "Failure"
        elif any(failed):
            code, description = status_code_pb2.MIXED_STATUS, "Mixed Success"
        else:
            code, description = status_code_pb2.SUCCESS, "Ok"
        return service_pb2.MultiOutputResponse(
            status=status_pb2.Status(code=code, description=description), outputs=outputs
        )

    def _from_pixels(self, data: bytes) -> list[tuple[str, float]]:
        if self.red_concept is None:
            return self.default_answer
        name, area = self.red_concept
        return [(name, min(1.0, red_pixels(data) / area)), *self.default_answer]


def red_pixels(data: bytes) -> int:
    """How many pixels of the encoded image are pure red (as ``red_concept`` counts them)."""
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("RGB")).astype(np.int16)
    red = (pixels[..., 0] >= RED_MIN) & (pixels[..., 1] <= OTHER_MAX) & (pixels[..., 2] <= OTHER_MAX)
    return int(red.sum())


def _response(code: int, description: str) -> service_pb2.MultiOutputResponse:
    return service_pb2.MultiOutputResponse(status=status_pb2.Status(code=code, description=description))


def start_clarifai(fake: FakeClarifai) -> tuple[grpc.Server, int]:
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    service_pb2_grpc.add_V2Servicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


# -- Cortical.io ---------------------------------------------------------------------


def fingerprint(text: str) -> list[int]:
    """The fake retina's fingerprint of a term or phrase: 0.9 % to 1.8 % of 16384 positions."""
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)
    rng = np.random.default_rng(seed)
    count = 150 + seed % 150
    return sorted(int(p) for p in rng.choice(RETINA_SIZE, count, replace=False))


def as_sent(positions: Sequence[int]) -> list[int]:
    """How the fake sends positions: reversed, the first one twice (the client must sort and dedup)."""
    return [*reversed(positions), positions[-1]] if positions else []


@dataclass
class SeenRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeCortical:
    key: str
    unknown: set[str] = field(default_factory=set)  # terms and phrases the retina does not know
    vocabulary: tuple[str, ...] = ("cat", "dog", "coffee", "cup", "animal", "drink", "kitten", "tea")
    script: deque[str] = field(
        default_factory=deque
    )  # fault per request: "401" "429" "429-60" "503" "slow" "malformed"
    always: str = "ok"
    slow_s: float = 1.0
    requests: list[SeenRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.script.clear()
            self.always = "ok"
            self.requests.clear()
            self.unknown.clear()

    def next_action(self, seen: SeenRequest) -> str:
        with self.lock:
            self.requests.append(seen)
            return self.script.popleft() if self.script else self.always

    def known_fingerprint(self, text: str) -> list[int]:
        return [] if text in self.unknown else fingerprint(text)


class _CorticalHandler(BaseHTTPRequestHandler):
    server: _CorticalServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: pytest runs with warnings as errors and reads stderr

    def do_GET(self) -> None:
        self._handle(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, {"error": "malformed request"})
            return
        self._handle(body)

    def _handle(self, body: Any) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)  # absolute-form too, when a proxy forwarded it as is
        seen = SeenRequest(
            self.command, url.path, parse_qs(url.query), {k.lower(): v for k, v in self.headers.items()}, body
        )
        action = fake.next_action(seen)
        if self.headers.get("api-key") != fake.key or action == "401":
            self._send(401, {"error": "Invalid API key"})
        elif action == "429":
            self._send(429, {"error": "Too many requests"}, {"Retry-After": "0"})
        elif action == "429-60":
            self._send(429, {"error": "Too many requests"}, {"Retry-After": "60"})
        elif action == "503":
            self._send(503, {"error": "Service unavailable"})
        elif action == "malformed":
            self._send_raw(200, b'{"positions": [1, 2,')
        elif action == "out-of-range":
            self._send(200, self._answer(seen, lambda text: [3, RETINA_SIZE + 5]))
        else:
            if action == "slow":
                time.sleep(fake.slow_s)
            self._answer_or_refuse(seen)

    def _answer_or_refuse(self, seen: SeenRequest) -> None:
        fake = self.server.fake
        # A strict retina refuses a bulk request naming a word it does not know.
        bulk = seen.body if seen.path.endswith("/expressions/bulk") and isinstance(seen.body, list) else []
        if any(isinstance(e, dict) and e.get("term") in fake.unknown for e in bulk):
            self._send(400, {"error": "term not found"})
            return
        self._send(200, self._answer(seen, fake.known_fingerprint))

    def _answer(self, seen: SeenRequest, positions_of: Any) -> Any:
        path = seen.path
        if path.endswith("/terms"):
            term = seen.query["term"][0]
            positions = positions_of(term)
            if not positions:
                return []
            entry = {
                "term": term,
                "df": 1e-4,
                "score": 0.0,
                "pos_types": ["NOUN"],
                "fingerprint": {"positions": as_sent(positions)},
            }
            return [entry]
        if path.endswith("/expressions/similar_terms"):
            query = set(seen.body["positions"])
            limit = int(seen.query["max_results"][0])
            ranked = sorted(self.server.fake.vocabulary, key=lambda t: -len(query & set(fingerprint(t))))[:limit]
            return [{"term": t, "score": 1.0, "fingerprint": {"positions": fingerprint(t)}} for t in ranked]
        if path.endswith("/expressions/bulk"):
            return [{"positions": as_sent(positions_of(_text(e)))} for e in seen.body]
        if path.endswith("/expressions"):
            return {"positions": as_sent(positions_of(_text(seen.body)))}
        return {"error": "no such endpoint"}

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), headers)

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)


def _text(expression: Any) -> str:
    return str(expression.get("term") or expression.get("text"))


class _CorticalServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeCortical


def start_cortical(fake: FakeCortical) -> _CorticalServer:
    server = _CorticalServer(("127.0.0.1", 0), _CorticalHandler)
    server.fake = fake
    threading.Thread(target=server.serve_forever, name="fake-cortical", daemon=True).start()
    return server


# -- a proxy -----------------------------------------------------------------------------


class FakeProxy(socketserver.ThreadingTCPServer):
    """HTTP proxy: CONNECT tunnels (gRPC, https) and absolute-form requests (plain http)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[str] = []  # request lines, e.g. "CONNECT 127.0.0.1:5000 HTTP/1.1"
        threading.Thread(target=self.serve_forever, name="fake-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(socketserver.BaseRequestHandler):
    server: FakeProxy

    def handle(self) -> None:
        client: socket.socket = self.request
        head = _read_head(client)
        if not head:
            return
        line, _, rest = head.partition(b"\r\n")
        method, target, version = line.decode("latin-1").split(" ", 2)
        self.server.seen.append(line.decode("latin-1"))
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)), timeout=10)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            leftover = rest.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in rest else b""
        else:
            url = urlsplit(target)
            upstream = socket.create_connection((url.hostname or "", url.port or 80), timeout=10)
            leftover = f"{method} {target} {version}\r\n".encode("latin-1") + rest
        if leftover:
            upstream.sendall(leftover)
        _relay(client, upstream)


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data


def _relay(a: socket.socket, b: socket.socket) -> None:
    selector = selectors.DefaultSelector()
    selector.register(a, selectors.EVENT_READ, b)
    selector.register(b, selectors.EVENT_READ, a)
    try:
        while True:
            for key, _ in selector.select(timeout=30):
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                key.data.sendall(data)
    except OSError:
        return
    finally:
        selector.close()
        b.close()


def concepts_of(pairs: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """(name, value) strongest first, as the provider reports them."""
    return sorted(pairs, key=lambda pair: -pair[1])
