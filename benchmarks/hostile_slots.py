"""`make bench-hostile --only slots`: callers that hold the server's slots, and what another client sees meanwhile.

Four attacks, each on a real server (``hostile_harness.HostileServer``) while a ``Victim``
asks health (gRPC and HTTP ``/healthz``) and encodes a small photo:

- ``long calls``: Explain calls (140 occluded images each) sent by more callers
  than the server has gRPC workers, each caller sending again as soon as it is answered;
- ``idle connections``: TCP connections to the HTTP port that send nothing, more than
  uvicorn's connection cap; and one connection trickling its headers a line a second
  (how long the server keeps it);
- ``trickling streams``: 8 EncodeStreams (``max_streams_per_peer: 0``, the setting behind a
  proxy) each sending one junk item every 3 s; then a well-behaved stream tries 10 times;
- ``departed callers``: 8 HTTP Explain calls whose clients hang up after a second; how long
  the server keeps working for nobody (its CPU time, read from /proc, until it idles).

Helpers the harness lacks live here: raw HTTP connections, and the Explain request.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from hostile_harness import HostileServer, Victim, header, photo_jpeg, row

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

ATTACK_S = 15.0  # how long each sustained attack runs
PATCH, STRIDE = 64, 32  # on the 500 x 375 photo: 140 occluded images per Explain (~6 s of CPU)


def _explain_request(server: HostileServer, photo: bytes) -> pb.ExplainRequest:
    """An Explain of the photo's own top concept (so it is accepted), a few hundred variants."""
    with server.channel() as channel:
        encoded = pb_grpc.Image2SdrStub(channel).Encode(pb.EncodeRequest(image=photo), timeout=120)
    concept = encoded.concepts[0].name
    return pb.ExplainRequest(image=photo, concept=concept, patch=PATCH, stride=STRIDE)


def _long_calls(args: argparse.Namespace, directory: Path) -> None:
    config = {"service": {"workers": 4, "max_streams": 2}}
    with HostileServer(directory / "long", config, cap_gib=args.cap_gib) as server:
        header(f"slots (server pid {server.pid}, {os.cpu_count()} cores): long calls, gRPC workers: 4")
        photo = photo_jpeg(seed=3)
        request = _explain_request(server, photo)
        outcomes: dict[str, int] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def attacker() -> None:
            with server.channel() as channel:
                stub = pb_grpc.Image2SdrStub(channel)
                while not stop.is_set():
                    try:
                        stub.Explain(request, timeout=120)
                        outcome = "OK"
                    except grpc.RpcError as exc:
                        outcome = exc.code().name
                    with lock:
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1
                    if outcome != "OK":
                        stop.wait(0.2)  # a refused caller tries again soon

        server.reset_peak()
        victim = Victim(server)
        started = time.perf_counter()
        with victim.watching() as seen, ThreadPoolExecutor(6) as pool:
            for _ in range(6):
                pool.submit(attacker)
            stop.wait(ATTACK_S)
            stop.set()
        outcome = " ".join(f"{code} {count}" for code, count in sorted(outcomes.items()))
        row(
            "6 callers x Explain (140 variants), 15 s",
            len(request.image),
            outcome,
            time.perf_counter() - started,
            server.memory()["VmHWM"],
            seen,
        )


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=60)


def _idle_connections(args: argparse.Namespace, directory: Path) -> None:
    with HostileServer(directory / "idle", {}, cap_gib=args.cap_gib) as server:
        header("slots: idle HTTP connections (http.max_concurrent: 8)")
        server.reset_peak()
        victim = Victim(server)
        held: list[socket.socket] = []
        started = time.perf_counter()
        with victim.watching() as seen:
            for _ in range(80):
                held.append(_connect(server.http_url))
            time.sleep(ATTACK_S)  # the attack is the time held: the victim keeps asking meanwhile
            still_open = sum(1 for conn in held if _open(conn))
        for conn in held:
            conn.close()
        row(
            "80 idle TCP connections, 15 s",
            0,
            f"{still_open} still open",
            time.perf_counter() - started,
            server.memory()["VmHWM"],
            seen,
        )
        with victim.watching() as seen:
            held_s = _trickle_headers(server.http_url, limit_s=30.0)
        outcome = f"held {held_s:.0f} s" + ("+" if held_s >= 30 else ", closed")
        row("headers trickled, a line a second", 0, outcome, held_s, server.memory()["VmHWM"], seen)


def _open(conn: socket.socket) -> bool:
    """Whether the server has left ``conn`` open (no data, no close, right now)."""
    conn.setblocking(False)
    try:
        return conn.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        conn.setblocking(True)


def _trickle_headers(url: str, limit_s: float) -> float:
    """Send a request head one line a second; the seconds until the server closes (at most ``limit_s``)."""
    started = time.perf_counter()
    with _connect(url) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        n = 0
        while time.perf_counter() - started < limit_s:
            try:
                conn.sendall(f"X-Trickle-{n}: {n}\r\n".encode())
            except OSError:
                break
            n += 1
            conn.settimeout(1.0)
            try:
                if conn.recv(4096) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
    return time.perf_counter() - started


def _junk_stream(stop: threading.Event) -> Iterator[pb.EncodeRequest]:
    n = 0
    while not stop.is_set():
        yield pb.EncodeRequest(image=b"not an image", request_id=f"junk-{n}")
        n += 1
        stop.wait(3.0)


def _trickling_streams(args: argparse.Namespace, directory: Path) -> None:
    config = {"service": {"max_streams_per_peer": 0}}
    with HostileServer(directory / "streams", config, cap_gib=args.cap_gib) as server:
        header("slots: trickling streams (max_streams: 8, max_streams_per_peer: 0)")
        photo = photo_jpeg(seed=5)
        stop = threading.Event()
        closed: dict[str, int] = {}
        lock = threading.Lock()

        def trickler() -> None:
            with server.channel() as channel:
                stub = pb_grpc.Image2SdrStub(channel)
                while not stop.is_set():
                    try:
                        for _ in stub.EncodeStream(_junk_stream(stop), timeout=300):
                            pass
                        code = "OK"
                    except grpc.RpcError as exc:
                        code = exc.code().name
                    with lock:
                        closed[code] = closed.get(code, 0) + 1
                    stop.wait(0.2)  # and back again

        server.reset_peak()
        victim = Victim(server)
        started = time.perf_counter()
        refused = 0
        with victim.watching() as seen, ThreadPoolExecutor(8) as pool:
            for _ in range(8):
                pool.submit(trickler)
            stop.wait(12.0)  # every slot taken, and held a while
            with server.channel() as channel:
                stub = pb_grpc.Image2SdrStub(channel)
                for n in range(10):
                    items = [pb.EncodeRequest(image=photo, request_id=f"good-{n}-{k}") for k in range(2)]
                    try:
                        answers = list(stub.EncodeStream(iter(items), timeout=60))
                        refused += len(answers) != 2
                    except grpc.RpcError:
                        refused += 1
            stop.set()
        outcome = f"good refused {refused}/10"
        row("8 streams, one junk item / 3 s", 0, outcome, time.perf_counter() - started, server.memory()["VmHWM"], seen)
        print(f"    the tricklers' streams ended: {dict(sorted(closed.items()))}")


def _departed_callers(args: argparse.Namespace, directory: Path) -> None:
    with HostileServer(directory / "departed", {}, cap_gib=args.cap_gib) as server:
        header("slots: HTTP callers that hang up (http.max_concurrent: 8)")
        request = _explain_request(server, photo_jpeg(seed=7))
        body = json.dumps(
            {
                "image": base64.b64encode(request.image).decode(),
                "concept": request.concept,
                "patch": PATCH,
                "stride": STRIDE,
            }
        ).encode()
        head = (
            f"POST /v1/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        server.reset_peak()
        callers = [_connect(server.http_url) for _ in range(8)]
        for conn in callers:
            conn.sendall(head + body)
        time.sleep(1.0)  # the calls have started (a bench, not a test: a pause is fine here)
        for conn in callers:
            conn.close()
        busy = _busy_for(server.pid, limit_s=300.0)
        outcome = "server idle" if busy < 300 else "still busy at 300 s"
        row("8 HTTP Explain, clients gone after 1 s", 8 * len(body), outcome, busy, server.memory()["VmHWM"], None)
        print(f"    the server kept working {busy:.1f} s after its callers left (until it used < 0.1 core)")


def _busy_for(pid: int, limit_s: float) -> float:
    """Seconds until process ``pid`` uses less than a tenth of a core over half a second (at most ``limit_s``)."""
    tick = os.sysconf("SC_CLK_TCK")
    started = time.perf_counter()

    def cpu_s() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    before = cpu_s()
    while time.perf_counter() - started < limit_s:
        time.sleep(0.5)
        now = cpu_s()
        if now - before < 0.05:
            return time.perf_counter() - started - 0.5  # idle over the last half second: it ended before it
        before = now
    return limit_s


def run(args: argparse.Namespace, directory: Path) -> None:
    """Every case of the section, each on a server of its own."""
    _long_calls(args, directory)
    _idle_connections(args, directory)
    _trickling_streams(args, directory)
    _departed_callers(args, directory)
