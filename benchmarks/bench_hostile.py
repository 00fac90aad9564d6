"""`make bench-hostile`: what a hostile request costs a real server, and what another client sees meanwhile.

Every section starts a real server in its own process (``hostile_harness.HostileServer``:
loopback, port 0, an address-space cap so a case that would take the machine down
fails inside the cap instead), resets its peak memory before each case and reads it
after, while a ``Victim`` client keeps asking the health check and encoding a small
photo (p50/p99/max, refused). ``--only`` picks sections.

Sections:
- ``images``: thin PNGs that pass the pixel limit (16 x 50,000 and 16 x 3,000,000, also
  four at once), malformed files that make Pillow raise unusual exceptions, and the
  largest ordinary image the default limits admit (a 49 MP RGBA PNG), for comparison.
  The server must still answer its health check after each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile_cost
import hostile_memory
import hostile_web
from hostile_harness import HostileServer, Victim, header, row

from tests.helpers.hostile import broken_colour_profile_png, odd_strip_offsets_tiff, png, thin_png


def big_rgba_png(side: int) -> bytes:
    return png(Image.new("RGBA", (side, side), (10, 120, 200, 128)))


def _encode(stub: pb_grpc.Image2SdrStub, image: bytes) -> str:
    try:
        stub.Encode(pb.EncodeRequest(image=image), timeout=300)
    except grpc.RpcError as exc:
        return exc.code().name
    return "OK"


def _image_case(server: HostileServer, victim: Victim, name: str, images: list[bytes]) -> None:
    server.reset_peak()
    times, outcomes = [], []
    with server.channel() as channel, victim.watching() as seen:
        stub = pb_grpc.Image2SdrStub(channel)
        for _ in range(3):
            started = time.perf_counter()
            with ThreadPoolExecutor(len(images)) as pool:
                outcomes = list(pool.map(lambda image: _encode(stub, image), images))
            times.append(time.perf_counter() - started)
    if not server.alive():
        raise SystemExit(f"the server went down on {name}")
    outcome = "/".join(sorted(set(outcomes)))
    row(name, sum(map(len, images)), outcome, statistics.median(times), server.memory()["VmHWM"], seen)


def images(args: argparse.Namespace, directory: Path) -> None:
    """Hostile and damaged images, one Encode each (three rounds, the median)."""
    cases: list[tuple[str, Callable[[], list[bytes]]]] = [
        ("photo 512x384 (reference)", lambda: [png(Image.fromarray(np.full((384, 512, 3), 90, np.uint8)))]),
        ("thin 16x50,000", lambda: [thin_png(16, 50_000)]),
        ("thin 16x50,000, four at once", lambda: [thin_png(16, 50_000)] * 4),
        ("thin 50,000x16", lambda: [thin_png(50_000, 16)]),
        ("broken colour profile (PNG)", lambda: [broken_colour_profile_png()]),
        ("RATIONAL strip offsets (TIFF)", lambda: [odd_strip_offsets_tiff()]),
    ]
    if not args.skip_huge:
        cases.append(("thin 16x3,000,000", lambda: [thin_png(16, 3_000_000)]))
    cases.append(("RGBA 7000x7000 (49 MP, allowed)", lambda: [big_rgba_png(7000)]))
    cases.append(("photo 512x384 again (after)", cases[0][1]))
    with HostileServer(directory / "images", cap_gib=args.cap_gib) as server:
        victim = Victim(server)
        header(f"images (server pid {server.pid}, address-space cap {args.cap_gib} GiB, {os.cpu_count()} cores)")
        for name, make in cases:
            _image_case(server, victim, name, make())
        print(f"  server address space at its peak (VmPeak): {server.memory()['VmPeak']} MiB")


# Each section: a function (args, a scratch directory) that starts the servers it needs and prints its rows.
SECTIONS: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "images": images,
    "cost": hostile_cost.run,
    "web": hostile_web.run,
    "memory": hostile_memory.run,
    "slots": __import__("hostile_slots").run,  # idle or slow callers holding slots: workers, connections, streams
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cap-gib", type=float, default=8.0, help="address-space cap of the server process")
    parser.add_argument("--skip-huge", action="store_true", help="leave out the 16 x 3,000,000 case")
    parser.add_argument("--only", default="", help=f"comma-separated sections, of: {', '.join(SECTIONS)}")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(SECTIONS)
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    with tempfile.TemporaryDirectory() as directory:
        for name in chosen:
            SECTIONS[name](args, Path(directory) / name)


if __name__ == "__main__":
    main()
