"""`make bench-hostile --only memory`: what one call's images cost in memory, and a 16,384-px map.

Each case is one call whose images are tiny on the wire and huge decoded: a 1-bit
7000 x 7000 PNG (about 6 KB, 49 MP) and a 1-bit 16 x 3,000,000 stripe (about 9 KB,
48 MP). The worst request of each kind: one Encode, one EncodeStream of 16, one
DefineConcept with 8 such examples (3 photos as negatives). The server's peak RSS
is read after resetting it, while a victim client asks health and Encode.

The map case renders a 64 x 64 grid of 256-px cells (16,384 px a side, the most
CreateMap draws) in a child process, through the server's own renderer, and reports
its peak RSS above what the process held before rendering (the layout is not the
point: the canvas is).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_harness import HostileServer, Victim, header, photo_jpeg, row

from tests.helpers.hostile import thin_png

__all__ = ["run"]

_TIMEOUT_S = 600.0


def huge_bilevel_png() -> bytes:
    """A white 7000 x 7000 bilevel PNG: about 6 KB on the wire, 49 MP decoded."""
    return thin_png(7000, 7000)


def _outcome(call: Callable[[], object]) -> str:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code().name
    return "OK"


def _encode(stub: pb_grpc.Image2SdrStub, images: list[bytes]) -> str:
    return _outcome(lambda: stub.Encode(pb.EncodeRequest(image=images[0]), timeout=_TIMEOUT_S))


def _stream(stub: pb_grpc.Image2SdrStub, images: list[bytes]) -> str:
    def requests() -> Iterator[pb.EncodeRequest]:
        for n, image in enumerate(images):
            yield pb.EncodeRequest(image=image, request_id=str(n))

    errors: set[str] = set()

    def drain() -> None:
        for answer in stub.EncodeStream(requests(), timeout=_TIMEOUT_S):
            if answer.HasField("error"):
                errors.add(f"item {answer.error.code}")

    outcome = _outcome(drain)
    return "/".join(sorted({outcome, *errors}))


def _define(stub: pb_grpc.Image2SdrStub, images: list[bytes]) -> str:
    negatives = [pb.ConceptExample(image=photo_jpeg(seed=seed)) for seed in range(3)]
    request = pb.DefineConceptRequest(
        name="hostile", positives=[pb.ConceptExample(image=image) for image in images], negatives=negatives
    )
    return _outcome(lambda: stub.DefineConcept(request, timeout=_TIMEOUT_S))


_CALLS = {"Encode": _encode, "EncodeStream": _stream, "DefineConcept": _define}


def _case(server: HostileServer, victim: Victim, name: str, call: str, images: list[bytes]) -> None:
    server.reset_peak()
    with server.channel() as channel, victim.watching() as seen:
        started = time.perf_counter()
        outcome = _CALLS[call](pb_grpc.Image2SdrStub(channel), images)
        took = time.perf_counter() - started
    if not server.alive():
        raise SystemExit(f"the server went down on {name}")
    row(name, sum(map(len, images)), outcome, took, server.memory()["VmHWM"], seen)


_MAP_SCRIPT = """
import time
import numpy as np
from image2sdr.server.maps.render import render
from image2sdr.server.sdr import Sdr

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024
    return 0

side, items = 64, 1024
rng = np.random.default_rng(0)
sdrs = [Sdr.from_positions(np.sort(rng.choice(16384, 328, replace=False)), 16384) for _ in range(items)]
cells = np.arange(items, dtype=np.intp) * 4
before = rss()
started = time.perf_counter()
png, _ = render(cells, side, side, cell_pixels=256, thumbnails=[None] * items, sdrs=sdrs)
print(rss() - before, time.perf_counter() - started, len(png))
"""


def _map_case() -> None:
    answer = subprocess.run(  # a fresh process: its peak is the render's alone
        [sys.executable, "-c", _MAP_SCRIPT], capture_output=True, text=True, check=True
    )
    added_mib, seconds, png_bytes = answer.stdout.split()
    print(
        f"  {'map 64x64 cells of 256 px (16,384 px), render':<44} {'':>10}  {f'OK, PNG {int(png_bytes) >> 10} KB':<22}"
        f" {float(seconds) * 1000:>7.0f}ms  +{added_mib:>7}  (peak RSS above the process before rendering)",
        flush=True,
    )


def run(args: argparse.Namespace, directory: Path) -> None:
    """The worst request of each kind, one call each, then the map."""
    huge, thin = huge_bilevel_png(), thin_png(16, 3_000_000)
    with HostileServer(directory / "memory", cap_gib=args.cap_gib) as server:
        victim = Victim(server)
        header(f"memory (server pid {server.pid}, cap {args.cap_gib} GiB, {os.cpu_count()} cores)")
        print(f"  idle server: RSS {server.memory()['VmRSS']} MiB")
        _case(server, victim, "Encode, one 7000x7000 1-bit PNG", "Encode", [huge])
        _case(server, victim, "EncodeStream of 16 such", "EncodeStream", [huge] * 16)
        _case(server, victim, "DefineConcept, 8 such examples", "DefineConcept", [huge] * 8)
        _case(server, victim, "DefineConcept, 8 thin 16x3,000,000 examples", "DefineConcept", [thin] * 8)
        _case(server, victim, "Encode, one photo 500x375 (reference)", "Encode", [photo_jpeg(seed=5)])
    _map_case()
