"""`make bench-hostile`: what a hostile image costs the server, in memory and time.

A real server runs in its own process (on loopback, port 0) under an address-space
cap (``--cap-gib``), so a case that would take the machine down fails inside the
cap instead.  For each case the server's peak resident memory (VmHWM, reset
before the case through /proc/PID/clear_refs) and its resident memory after the
case (VmRSS) are read from /proc, with the median wall time of the calls.

Cases: thin PNGs that pass the pixel limit (16 x 50,000 and 16 x 3,000,000,
also four at once), malformed files that make Pillow raise unusual exceptions,
and the largest ordinary image the default limits admit (a 50 MP RGBA PNG),
for comparison.  The server must still answer its health check after each.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers.hostile import broken_colour_profile_png, odd_strip_offsets_tiff, png, thin_png


def big_rgba_png(side: int) -> bytes:
    return png(Image.new("RGBA", (side, side), (10, 120, 200, 128)))


def status_of(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS", "VmPeak"):
            fields[name] = int(value.split()[0]) // 1024  # MiB
    return fields


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM) to the current RSS


QUIET = ("--log-level", "ERROR")


def start_server(data_dir: Path, cap_gib: float) -> subprocess.Popen[str]:
    def cap() -> None:
        limit = int(cap_gib * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "image2sdr.server.serve",
            "--port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
            str(data_dir),
            *QUIET,
        ],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=cap,  # noqa: PLW1509 - the cap must be set in the child before it starts
    )
    return process


def call(stub: pb_grpc.Image2SdrStub, image: bytes) -> str:
    try:
        stub.Encode(pb.EncodeRequest(image=image), timeout=300)
    except grpc.RpcError as exc:
        return exc.code().name
    return "OK"


def run_case(
    pid: int, stub: pb_grpc.Image2SdrStub, health: health_pb2_grpc.HealthStub, name: str, images: list[bytes]
) -> None:
    reset_peak(pid)
    before = status_of(pid)["VmRSS"]
    times, outcomes = [], []
    for _ in range(3):
        started = time.perf_counter()
        with ThreadPoolExecutor(len(images)) as pool:
            outcomes = list(pool.map(lambda image: call(stub, image), images))
        times.append(time.perf_counter() - started)
        try:
            alive = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1
        except grpc.RpcError:
            alive = False
        if not alive:
            break
    after = status_of(pid) if alive else {"VmHWM": -1, "VmRSS": -1}
    size = sum(len(image) for image in images)
    print(
        f"  {name:<32} {size / 1024:>8.1f} KiB  {'/'.join(sorted(set(outcomes))):<18}"
        f" {statistics.median(times) * 1000:>9.0f} ms  peak {after['VmHWM']:>6} MiB"
        f"  rss before {before:>5} after {after['VmRSS']:>5} MiB  {'serving' if alive else 'DOWN'}"
    )
    if not alive:
        raise SystemExit(f"the server went down on {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cap-gib", type=float, default=8.0, help="address-space cap of the server process")
    parser.add_argument("--skip-huge", action="store_true", help="leave out the 16 x 3,000,000 case")
    args = parser.parse_args()
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
    with tempfile.TemporaryDirectory() as directory:
        process = start_server(Path(directory), args.cap_gib)
        try:
            line = process.stdout.readline() if process.stdout else ""
            if "listening on" not in line:
                raise SystemExit(f"the server did not start: {line!r}")
            address = f"127.0.0.1:{int(line.rsplit(':', 1)[1])}"
            with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
                stub, health = pb_grpc.Image2SdrStub(channel), health_pb2_grpc.HealthStub(channel)
                stub.Info(pb.InfoRequest(), timeout=60)
                print(f"server pid {process.pid}, address-space cap {args.cap_gib} GiB, {os.cpu_count()} cores")
                print(f"  {'case':<32} {'bytes':>12}  {'status':<18} {'median':>12}  memory (VmHWM, VmRSS)")
                for name, make in cases:
                    run_case(process.pid, stub, health, name, make())
                print(f"server address space at its peak (VmPeak): {status_of(process.pid)['VmPeak']} MiB")
        finally:
            process.terminate()
            process.wait(timeout=60)


if __name__ == "__main__":
    main()
