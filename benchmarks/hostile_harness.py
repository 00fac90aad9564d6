"""What `make bench-hostile`'s cases share: a real server in its own process, its memory, and a victim.

``HostileServer`` starts ``image2sdr.server.serve`` on loopback (gRPC and HTTP on port
0) under an address-space cap, with a config of its own (a dict written as YAML), and
reads its peak and resident memory from /proc. ``Victim`` is the other client: while
an attack runs it keeps asking the health check (gRPC and HTTP ``/healthz``) and
encoding one small photo, and reports the latency p50/p99/max and how many of its
calls were refused or timed out. A case prints one line: what it sent, what it got,
how long, the server's peak memory, and what the victim saw meanwhile.
"""

from __future__ import annotations

import io
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

__all__ = ["HostileServer", "Victim", "VictimReport", "header", "photo_jpeg", "row"]

QUIET = ("--log-level", "ERROR")
MAX_MESSAGE = 64 << 20


def photo_jpeg(width: int = 500, height: int = 375, seed: int = 0) -> bytes:
    """An ordinary-size JPEG with some texture (what a well-behaved caller sends)."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((height // 8, width // 8, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


class HostileServer:
    """A real server in a child process, under an address-space cap, with its own config."""

    def __init__(self, data_dir: Path, config: dict[str, Any] | None = None, cap_gib: float = 8.0) -> None:
        self.data_dir = data_dir
        self.config = config or {}
        self.cap_gib = cap_gib
        self.process: subprocess.Popen[str] | None = None
        self.grpc_address = ""
        self.http_url = ""

    def __enter__(self) -> HostileServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.data_dir / "hostile-config.yml"
        config_path.write_text(yaml.safe_dump(self.config))
        cap = int(self.cap_gib * (1 << 30))

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "image2sdr.server.serve",
                "--config",
                str(config_path),
                "--port",
                "0",
                "--http-port",
                "0",
                "--data-dir",
                str(self.data_dir / "data"),
                *QUIET,
            ],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=limit,  # noqa: PLW1509 - the cap must be set in the child before it starts
        )
        assert self.process.stdout is not None
        for _ in range(2):
            line = self.process.stdout.readline()
            if "listening on" in line:
                self.grpc_address = f"127.0.0.1:{int(line.rsplit(':', 1)[1])}"
            elif "HTTP on" in line:
                self.http_url = line.split("HTTP on", 1)[1].strip().rstrip("/")
                self.http_url = self.http_url.replace("0.0.0.0", "127.0.0.1").replace("localhost", "127.0.0.1")
            else:
                self.stop()
                raise SystemExit(f"the server did not start: {line!r}")
        with self.channel() as channel:
            pb_grpc.Image2SdrStub(channel).Info(pb.InfoRequest(), timeout=120)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(
            self.grpc_address,
            options=[("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)],
        )

    def memory(self) -> dict[str, int]:
        """VmHWM (peak resident), VmRSS and VmPeak in MiB."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS", "VmPeak"):
                fields[name] = int(value.split()[0]) // 1024
        return fields

    def reset_peak(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # 5: reset VmHWM to the current RSS


@dataclass
class VictimReport:
    calls: int = 0
    refused: int = 0
    times: list[float] = field(default_factory=list)

    def summary(self) -> str:
        if not self.times:
            return f"victim: {self.calls} calls, {self.refused} refused"
        ordered = sorted(self.times)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"victim: {self.calls} calls, {self.refused} refused/timed out,"
            f" p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"
        )


class Victim:
    """Another client asking health (gRPC and HTTP) and encoding a small photo while an attack runs."""

    def __init__(self, server: HostileServer, timeout_s: float = 10.0, pause_s: float = 0.2) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self.pause_s = pause_s
        self.report = VictimReport()
        self._stop = threading.Event()
        self._photo = photo_jpeg(seed=99)

    @contextmanager
    def watching(self) -> Iterator[VictimReport]:
        self.report = VictimReport()
        self._stop.clear()
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self.report
        finally:
            self._stop.set()
            thread.join(timeout=self.timeout_s * 4)

    def _run(self) -> None:
        with self.server.channel() as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = pb_grpc.Image2SdrStub(channel)
            probes: list[Callable[[], object]] = [
                lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=self.timeout_s),
                lambda: stub.Encode(pb.EncodeRequest(image=self._photo), timeout=self.timeout_s),
                self._http_health,
            ]
            while not self._stop.is_set():
                for probe in probes:
                    started = time.perf_counter()
                    self.report.calls += 1
                    try:
                        probe()
                    except (grpc.RpcError, OSError, urllib.error.URLError):
                        self.report.refused += 1
                    else:
                        self.report.times.append(time.perf_counter() - started)
                self._stop.wait(self.pause_s)

    def _http_health(self) -> None:
        if not self.server.http_url:
            return
        with urllib.request.urlopen(f"{self.server.http_url}/healthz", timeout=self.timeout_s) as answer:
            answer.read()


def header(title: str) -> None:
    print(f"\n== {title}")
    print(f"  {'case':<44} {'sent':>10}  {'outcome':<22} {'time':>9}  {'peak MiB':>8}  victim")


def row(  # noqa: PLR0917 - one printed line, its columns in order
    name: str, sent_bytes: int, outcome: str, seconds: float, peak_mib: int, victim: VictimReport | None
) -> None:
    print(
        f"  {name:<44} {sent_bytes / 1024:>8.0f}KB  {outcome:<22} {seconds * 1000:>7.0f}ms  {peak_mib:>8}"
        f"  {victim.summary() if victim else ''}",
        flush=True,
    )
