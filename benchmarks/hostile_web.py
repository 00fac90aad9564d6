"""`make bench-hostile --only web`: JSON amplification, errors that are not errors, and a foreign page.

Three groups of cases against one real server (``hostile_harness.HostileServer``):

- amplification: a 30 MB JSON body whose unknown field holds ten million empty arrays,
  to ``/v1/encode`` (which parsed JSON before taking a slot) and ``/v1/similar``, one
  and eight at once; the server's peak memory for each, and what a victim client saw.
- errors: requests whose answer was not the error they deserve (a multipart ``metadata``
  field nested 5,000 deep, a page token of "l" and 4,301 digits, a 10 kB map id or
  custom concept echoed into the status); each row gives the status and the bytes of
  the answer (for gRPC: the message plus ``grpc-status-details-bin``).
- browser: what a foreign web page can do with no token configured (a cross-site
  multipart POST that stores an item, a DNS-rebinding Host header) and the page's
  security headers.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from hostile_harness import HostileServer, Victim, header, photo_jpeg, row

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

ARRAYS = 10_000_000  # empty arrays in the unknown field: "[]," is 3 bytes, so about 30 MB
LONG = 10_000  # characters of a long id or concept name
EVIL = "http://evil.example"


def _request(
    server: HostileServer, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on a connection of its own: status, headers (lowercase), body."""
    parts = urlsplit(server.http_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=300)
    try:
        # The server may answer before the body is all sent, and stop reading: its answer may be in.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.request(method, path, body=body or None, headers=headers or {})
        try:
            answer = connection.getresponse()
        except (ConnectionResetError, http.client.RemoteDisconnected):
            return 0, {}, b""  # reset before an answer could be read: outcome "0"
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def _amplifying_body() -> bytes:
    return b'{"unknownField": [' + b"[]," * (ARRAYS - 1) + b"[]]}"


def _amplification(server: HostileServer, victim: Victim, path: str, body: bytes, copies: int) -> None:
    headers = {"Content-Type": "application/json"}
    server.reset_peak()
    before = server.memory()["VmRSS"]
    with victim.watching() as seen:
        started = time.perf_counter()
        with ThreadPoolExecutor(copies) as pool:
            answers = list(pool.map(lambda _: _request(server, "POST", path, body, headers)[0], range(copies)))
        elapsed = time.perf_counter() - started
    outcome = "/".join(str(status) for status in sorted(set(answers)))
    name = f"{path} {ARRAYS:,} empty arrays" + (f", {copies} at once" if copies > 1 else "")
    row(name, len(body) * copies, outcome, elapsed, server.memory()["VmHWM"] - before, seen)


def _http_case(
    server: HostileServer,
    name: str,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> None:
    started = time.perf_counter()
    status, _, answer = _request(server, method, path, body, headers)
    elapsed = time.perf_counter() - started
    code = ""
    try:
        code = f" {json.loads(answer).get('code', '')}"
    except ValueError:
        code = " (not JSON)"
    row(name, len(body) + len(path), f"{status}{code}, {len(answer)} B", elapsed, 0, None)


def _grpc_case(server: HostileServer, name: str, call: str, request: object) -> None:
    started = time.perf_counter()
    with server.channel() as channel:
        method = getattr(pb_grpc.Image2SdrStub(channel), call)
        try:
            method(request, timeout=300)
            outcome = "OK"
        except grpc.RpcError as exc:
            trailers = dict(exc.trailing_metadata() or ())
            size = len((exc.details() or "").encode()) + len(trailers.get("grpc-status-details-bin", b""))
            outcome = f"{exc.code().name}, {size} B"
    sent = len(request.SerializeToString())  # type: ignore[attr-defined]
    row(name, sent, outcome, time.perf_counter() - started, 0, None)


def _multipart(fields: dict[str, tuple[str, bytes, str]], boundary: str = "hostile-web-boundary") -> tuple[bytes, str]:
    """A multipart/form-data body: name -> (filename or "", content, content type or "")."""
    parts = []
    for name, (filename, content, kind) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        head += f"Content-Type: {kind}\r\n" if kind else ""
        parts.append(head.encode() + b"\r\n" + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _errors(server: HostileServer, photo: bytes) -> None:
    deep = ("[" * 5000 + "]" * 5000).encode()
    body, kind = _multipart(
        {"image": ("a.jpg", photo, "image/jpeg"), "id": ("", b"deep", ""), "metadata": ("", deep, "")}
    )
    _http_case(
        server, "form metadata nested 5,000 deep", "POST", "/v1/encode", body=body, headers={"Content-Type": kind}
    )
    token = "l" + "9" * 4301
    _http_case(server, 'GET /v1/items page_token "l" + 4,301 digits', "GET", f"/v1/items?page_token={token}")
    _grpc_case(
        server, 'gRPC ListItems page_token "l" + 4,301 digits', "ListItems", pb.ListItemsRequest(page_token=token)
    )
    long_id = "m" * LONG
    _grpc_case(server, "gRPC GetMap id of 10 kB", "GetMap", pb.GetMapRequest(id=long_id))
    _http_case(server, "GET /v1/maps/<10 kB id>", "GET", f"/v1/maps/{long_id}")
    request = pb.ExplainRequest(image=photo, concept="c" * LONG)
    _grpc_case(server, "gRPC Explain concept of 10 kB", "Explain", request)


def _browser(server: HostileServer, photo: bytes) -> None:
    body, kind = _multipart({"image": ("a.jpg", photo, "image/jpeg"), "id": ("", b"planted-by-a-foreign-page", "")})
    headers = {"Content-Type": kind, "Origin": EVIL, "Referer": f"{EVIL}/page.html"}
    _http_case(
        server, "cross-site form POST /v1/encode (Origin evil)", "POST", "/v1/encode", body=body, headers=headers
    )
    status, _, _ = _request(server, "GET", "/v1/items/planted-by-a-foreign-page")
    print(f"  {'  ... the planted item afterwards':<44} GET answers {status}")
    port = urlsplit(server.http_url).port
    rebound = {"Host": f"evil.example:{port}"}
    _http_case(server, "GET /v1/items with Host evil.example", "GET", "/v1/items", headers=rebound)
    _, page_headers, _ = _request(server, "GET", "/")
    wanted = ("content-security-policy", "x-frame-options", "x-content-type-options")
    present = [name for name in wanted if name in page_headers]
    print(f"  {'  the page at /: security headers':<44} {len(present)} of 3 {present}")


def run(args: argparse.Namespace, directory: Path) -> None:
    """The web section: amplification (peak memory, victim), error answers, browser rules."""
    photo = photo_jpeg(seed=7)
    with HostileServer(directory / "web", cap_gib=args.cap_gib) as server:
        victim = Victim(server)
        header(f"web: JSON amplification (server pid {server.pid}, cap {args.cap_gib} GiB, {os.cpu_count()} cores)")
        print("  (peak MiB: the peak's growth over the resident size before the case)")
        body = _amplifying_body()
        for path in ("/v1/encode", "/v1/similar"):
            for copies in (1, 8):
                _amplification(server, victim, path, body, copies)
        del body
        header("web: errors (outcome: status, bytes of the answer)")
        _errors(server, photo)
        header("web: a foreign page, no token configured")
        _browser(server, photo)
