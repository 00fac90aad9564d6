"""bench-hostile section ``cost``: work one small request makes, and whether it outlives the caller's deadline.

Each attack runs once alone, then as 16 concurrent copies while a ``Victim`` asks
health and Encode. A row gives the outcome, the wall time, the server's CPU time
(utime + stime from /proc/PID/stat, before and after, less the victim's share) and how long the server stayed
busy past the caller's deadline: its CPU still rising faster than a tenth of a core
above what the victim alone costs it (measured first, on the idle server); given up on
after ``BUSY_CAP_S``. The victim watches until then, so it sees the whole busy time.
Each attack gets a server of its own, so one that keeps working cannot bias the next.

This helper (server CPU from /proc, waiting for the server to go idle) lives here: the
shared harness does not offer it.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from hostile_harness import HostileServer, Victim, VictimReport, photo_jpeg

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

BUSY_CAP_S = 30.0  # stop waiting for the server to go idle after this long past the deadline
IDLE_SHARE = 0.1  # of a core: below this over a window, the server is idle
WINDOW_S = 0.5
COPIES = 16

Attack = Callable[[pb_grpc.Image2SdrStub, float], str]


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _busy_past(pid: int, deadline_at: float, baseline: float = 0.0) -> float:
    """Seconds from ``deadline_at`` until the server's CPU stops rising faster than ``baseline`` + IDLE_SHARE."""
    before = _cpu_s(pid)
    while True:
        time.sleep(WINDOW_S)
        after = _cpu_s(pid)
        if after - before < (baseline + IDLE_SHARE) * WINDOW_S:
            return max(0.0, time.monotonic() - WINDOW_S - deadline_at)
        if time.monotonic() - deadline_at > BUSY_CAP_S:
            return float("inf")
        before = after


def _call(attack: Attack, stub: pb_grpc.Image2SdrStub, deadline_s: float) -> str:
    try:
        return attack(stub, deadline_s)
    except grpc.RpcError as exc:
        return exc.code().name


def _victim_rate(server: HostileServer) -> float:
    """Cores the victim alone keeps busy on the idle server."""
    cpu = _cpu_s(server.pid)
    with Victim(server).watching():
        time.sleep(3.0)
    return (_cpu_s(server.pid) - cpu) / 3.0


def _case(  # noqa: PLR0917 - one printed row
    server: HostileServer, name: str, attack: Attack, deadline_s: float, copies: int, baseline: float
) -> None:
    victim = Victim(server)
    cpu = _cpu_s(server.pid)
    started = time.monotonic()
    seen: VictimReport | None = None
    with server.channel() as channel:
        stub = pb_grpc.Image2SdrStub(channel)
        if copies == 1:
            outcomes = [_call(attack, stub, deadline_s)]
            wall = time.monotonic() - started
            busy = _busy_past(server.pid, started + deadline_s)
        else:
            with victim.watching() as seen, ThreadPoolExecutor(copies) as pool:
                outcomes = list(pool.map(lambda _: _call(attack, stub, deadline_s), range(copies)))
                wall = time.monotonic() - started
                busy = _busy_past(server.pid, started + deadline_s, baseline)
    spent = max(0.0, _cpu_s(server.pid) - cpu - (baseline * (time.monotonic() - started) if copies > 1 else 0.0))
    outcome = "/".join(f"{code}x{outcomes.count(code)}" for code in sorted(set(outcomes)))
    past = f">{BUSY_CAP_S:.0f}s" if busy == float("inf") else f"{busy:.1f}s"
    print(
        f"  {name:<40} x{copies:<2} {outcome:<28} wall {wall:6.1f}s  cpu {spent:6.1f}s  busy past deadline {past:>5}"
        f"  {seen.summary() if seen is not None else ''}",
        flush=True,
    )
    if not server.alive():
        raise SystemExit(f"the server went down on {name}")


def _expression(terms: int) -> Attack:
    words = [f"t{n}" for n in range(terms)]

    def attack(stub: pb_grpc.Image2SdrStub, deadline_s: float) -> str:
        request = pb.FindSimilarRequest(expression=pb.ConceptExpression(all=words), k=10)
        stub.FindSimilar(request, timeout=deadline_s)
        return "OK"

    return attack


def _filter(keys: int, values: int) -> Attack:
    counter = iter(range(1 << 40))

    def attack(stub: pb_grpc.Image2SdrStub, deadline_s: float) -> str:
        run = next(counter)  # values no call has used: every one unseen
        conditions = [
            pb.MetadataCondition(key=f"key{k}", values=[f"unseen-{run}-{k}-{v}" for v in range(values)])
            for k in range(keys)
        ]
        request = pb.FindSimilarRequest(text="dog", k=10, filter=pb.Filter(metadata=conditions))
        stub.FindSimilar(request, timeout=deadline_s)
        return "OK"

    return attack


def _explain(image: bytes) -> Attack:
    def attack(stub: pb_grpc.Image2SdrStub, deadline_s: float) -> str:
        # A 16 px patch at stride 16 on 512 x 512: 1,024 occluded images (explain.max_variants).
        stub.Explain(pb.ExplainRequest(image=image, custom_concept="pattern", patch=16, stride=16), timeout=deadline_s)
        return "OK"

    return attack


def _define(images: list[bytes]) -> Attack:
    def attack(stub: pb_grpc.Image2SdrStub, deadline_s: float) -> str:
        examples = [pb.ConceptExample(image=image) for image in images]
        request = pb.DefineConceptRequest(name="attack", positives=examples[:3], negatives=examples[3:])
        stub.DefineConcept(request, timeout=deadline_s)
        return "OK"

    return attack


def _seed(server: HostileServer, images: list[bytes]) -> None:
    """A few stored items (a search needs an index to filter) and a custom concept to explain."""
    with server.channel() as channel:
        stub = pb_grpc.Image2SdrStub(channel)
        for number, image in enumerate(images[:4]):
            add = pb.AddToIndex(id=f"seed{number}", metadata={"key0": "seen"})
            stub.Encode(pb.EncodeRequest(image=image, add_to_index=add), timeout=120)
        examples = [pb.ConceptExample(image=image) for image in images[:3]]
        stub.DefineConcept(pb.DefineConceptRequest(name="pattern", positives=examples), timeout=120)


def run(args: argparse.Namespace, directory: Path, only: str = "") -> None:
    """Each attack (those whose name starts with ``only``) alone and 16 at once, against a server of its own."""
    photos = [photo_jpeg(seed=seed) for seed in range(40)]
    square = photo_jpeg(512, 512, seed=7)
    attacks: list[tuple[str, Attack, float]] = [
        ("expression of 32,000 terms (3 s deadline)", _expression(32_000), 3.0),
        ("expression of 60,000 terms (3 s deadline)", _expression(60_000), 3.0),
        ("filter 30 keys x 1,024 unseen (5 s deadline)", _filter(30, 1024), 5.0),
        ("filter 4 keys x 1,024 unseen (5 s deadline)", _filter(4, 1024), 5.0),  # the most allowed now
        ("Explain 1,024 variants (2 s deadline)", _explain(square), 2.0),
        ("DefineConcept 3 + 37 images (2 s deadline)", _define(photos), 2.0),
    ]
    print(f"\n== cost (busy: CPU above {IDLE_SHARE} core; {os.cpu_count()} cores; given up after {BUSY_CAP_S:.0f} s)")
    for number, (name, attack, deadline_s) in enumerate(attacks):
        if not name.startswith(only):
            continue
        with HostileServer(directory / f"cost{number}", cap_gib=args.cap_gib) as server:
            _seed(server, photos)
            baseline = _victim_rate(server)
            for copies in (1, COPIES):
                _case(server, name, attack, deadline_s, copies, baseline)
