"""`make bench-service`: the gRPC service against the encoder core, measured in one run.

Prints
- EncodeStream images/s through a real server (its own process, on loopback)
  beside ``Encoder.encode_batch`` called in this process on the same images
  with the same batch size, and the ratio (goal: the service keeps >= 0.9);
- EncodeStream with every image stored (``add_to_index``: thumbnail, fingerprints,
  both SDRs into the index) against the same stream without it, alternating, and
  the ratio (goal: >= 0.95);
- unary Encode latency p50/p99, one call at a time;
- FindSimilar latency p50/p99 over gRPC with 100,000 items indexed (synthetic
  SDRs clustered like merged image SDRs, added to the index directory before
  the server opens it), by SDR and by stored id;
- HTTP ``POST /v1/encode`` (the raw image as the body) against gRPC Encode, 4
  concurrent clients each, alternating runs: images/s, p50, and the ratio
  HTTP / gRPC (goal: HTTP keeps >= 0.8).

The images: ``--photos`` (240) real photos of ordinary size from the registries'
packages (``real_images.ordinary_photos`` over ``bench_dupes.originals``: scikit-image,
darknet, opencv-doc, the photographic wallpapers; long side 500 px, JPEG q90; the
wallpapers' quadrants fill the count), with the share of each encoder stage in the
stream's answers (``EncodeResponse.timings``).

The server runs in a child process, as it would in production, so client and
server do not share one GIL.  Medians of repeated runs; the machine is noisy.
"""

from __future__ import annotations

import argparse
import itertools
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import yaml

from image2sdr.server.config import Config, load_config
from image2sdr.server.encoder import Encoder
from image2sdr.server.index import Item, SdrIndex
from image2sdr.server.sdr import Sdr
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).parent))
import real_images
from bench_dupes import originals
from synthetic_sdrs import SyntheticSdrs


def fill_index(config: Config, count: int) -> list[Sdr]:
    """Add ``count`` synthetic items; returns a few of their SDRs to query with."""
    synthetic = SyntheticSdrs(size=config.sdr.size, sparsity=config.sdr.sparsity)
    rng = np.random.default_rng(11)
    queries: list[Sdr] = []
    with SdrIndex(config.data_dir / "index", config.index, config.sdr.size) as index:
        for start in range(0, count, 10_000):
            batch = synthetic.batch(min(10_000, count - start), rng).split()
            items = [
                Item(f"synthetic/{start + i}", Sdr.trusted(p.astype(np.int64), config.sdr.size, config.sdr.dimensions))
                for i, p in enumerate(batch)
            ]
            index.add_many(items)
            queries.extend(item.sdr for item in items[:20])
    return queries


def start_server(config_path: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "image2sdr.server.serve",
            "--config",
            str(config_path),
            "--port",
            "0",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline() if process.stdout else ""
    if "listening on" not in line:
        process.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return process, f"127.0.0.1:{int(line.rsplit(':', 1)[1])}"


def in_process_once(encoder: Encoder, stream: list[bytes], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(stream), batch):
        for result in encoder.encode_batch(stream[start : start + batch]):
            if isinstance(result, Exception):
                raise result
    return len(stream) / (time.perf_counter() - started)


_STORED = itertools.count()  # ids of the items the add_to_index runs store, unique across runs


def stream_once(
    stub: pb_grpc.Image2SdrStub, stream: list[bytes], store: bool = False, timings: list[pb.StageTimings] | None = None
) -> float:
    def requests() -> Iterator[pb.EncodeRequest]:
        for i, image in enumerate(stream):
            request = pb.EncodeRequest(image=image, request_id=str(i))
            if store:
                request.add_to_index.id = f"stored/{next(_STORED)}"
            yield request

    started = time.perf_counter()
    answered = 0
    for answer in stub.EncodeStream(requests()):
        if not answer.HasField("error"):
            answered += 1
            if timings is not None:
                timings.append(answer.timings)
    if answered != len(stream):
        raise SystemExit(f"EncodeStream answered {answered} of {len(stream)} without error")
    return answered / (time.perf_counter() - started)


def compare_stream(
    encoder: Encoder, stub: pb_grpc.Image2SdrStub, stream: list[bytes], batch: int, repeats: int
) -> tuple[float, float, float]:
    """Median images/s of each, and the median ratio of back-to-back pairs.

    The two alternate, so a noisy neighbour on the machine slows both sides of
    a pair alike instead of one whole series.
    """
    in_process_once(encoder, stream[: batch * 2], batch)  # warm up both sides
    stream_once(stub, stream[: batch * 2])
    local, served = [], []
    timings: list[pb.StageTimings] = []
    for _ in range(repeats):
        local.append(in_process_once(encoder, stream, batch))
        timings.clear()
        served.append(stream_once(stub, stream, timings=timings))
    ratios = [s / lo for s, lo in zip(served, local, strict=True)]
    print_stage_shares(timings)
    return statistics.median(served), statistics.median(local), statistics.median(ratios)


def print_stage_shares(timings: list[pb.StageTimings]) -> None:
    """Each encoder stage's ms per image in the stream's answers (last run), and its share of their sum."""
    stages = ("decode_ms", "concepts_ms", "terms_ms", "merge_ms", "appearance_ms")
    sums = {stage: sum(getattr(t, stage) for t in timings) for stage in stages}
    total = sum(sums.values()) or 1.0
    print(f"\nEncodeStream stage shares, {len(timings)} answers of the last run (per image; decode on its threads):")
    for stage in stages:
        print(f"  {stage[:-3]:<11} {sums[stage] / len(timings):7.2f} ms  {100 * sums[stage] / total:5.1f} %")


def compare_store(stub: pb_grpc.Image2SdrStub, stream: list[bytes], repeats: int) -> tuple[float, float, float]:
    """EncodeStream with add_to_index against without: median images/s of each and the median ratio of pairs."""
    stream_once(stub, stream[:32], store=True)  # warm the add path
    plain, stored = [], []
    for _ in range(repeats):
        plain.append(stream_once(stub, stream))
        stored.append(stream_once(stub, stream, store=True))
    ratios = [s / p for s, p in zip(stored, plain, strict=True)]
    return statistics.median(stored), statistics.median(plain), statistics.median(ratios)


def print_store(found: tuple[float, float, float], images: int, repeats: int) -> None:
    stored, plain, ratio = found
    print(f"\nEncodeStream with add_to_index, {images} images, {repeats} alternating runs (medians):")
    print(f"  {stored:8.1f} images/s  every image stored (thumbnail, fingerprints, both SDRs)")
    print(f"  {plain:8.1f} images/s  the same stream, nothing stored")
    print(f"  {ratio:8.2f}   ratio stored / not (median of the pairs; goal >= 0.95)")


def latencies_ms(call: object, requests: list[object]) -> tuple[float, float]:
    times = []
    for request in requests:
        started = time.perf_counter()
        call(request)  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


CLIENTS = 4  # concurrent callers in the HTTP / gRPC comparison


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def concurrent_run(call: Callable[[bytes], None], images: list[bytes], clients: int) -> tuple[float, list[float]]:
    """``clients`` threads sharing ``images``: images/s overall and each call's milliseconds."""
    times: list[float] = []

    def one(image: bytes) -> None:
        started = time.perf_counter()
        call(image)
        times.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, images))
    return len(images) / (time.perf_counter() - started), times


def compare_http(stub: pb_grpc.Image2SdrStub, http_base: str, images: list[bytes], repeats: int) -> dict[str, float]:
    """HTTP POST /v1/encode against gRPC Encode, CLIENTS at once, alternating; medians and the median ratio."""
    local = threading_local_client(http_base)

    def over_http(image: bytes) -> None:
        answer = local().post("/v1/encode", content=image, headers={"content-type": "image/jpeg"})
        if answer.status_code != 200:
            raise SystemExit(f"POST /v1/encode answered {answer.status_code}: {answer.text[:200]}")

    def over_grpc(image: bytes) -> None:
        stub.Encode(pb.EncodeRequest(image=image), timeout=60)

    concurrent_run(over_http, images[:16], CLIENTS)  # warm both
    concurrent_run(over_grpc, images[:16], CLIENTS)
    rates: dict[str, list[float]] = {"http": [], "grpc": []}
    p50s: dict[str, list[float]] = {"http": [], "grpc": []}
    for _ in range(repeats):
        for name, call in (("http", over_http), ("grpc", over_grpc)):
            rate, times = concurrent_run(call, images, CLIENTS)
            rates[name].append(rate)
            p50s[name].append(statistics.median(times))
    ratios = [h / g for h, g in zip(rates["http"], rates["grpc"], strict=True)]
    return {
        "http_rate": statistics.median(rates["http"]),
        "grpc_rate": statistics.median(rates["grpc"]),
        "http_p50": statistics.median(p50s["http"]),
        "grpc_p50": statistics.median(p50s["grpc"]),
        "ratio": statistics.median(ratios),
    }


def threading_local_client(base: str) -> Callable[[], httpx.Client]:
    """One keep-alive httpx client per thread (a client is not shared across threads here)."""
    import threading  # noqa: PLC0415

    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=60)
        found: httpx.Client = local.client
        return found

    return client


def print_http(found: dict[str, float], repeats: int) -> None:
    print(f"\nEncode with {CLIENTS} concurrent clients, 160 images, {repeats} alternating runs (medians):")
    print(f"  {found['grpc_rate']:8.1f} images/s  gRPC Encode          (p50 {found['grpc_p50']:.1f} ms)")
    print(f"  {found['http_rate']:8.1f} images/s  HTTP POST /v1/encode  (p50 {found['http_p50']:.1f} ms)")
    print(f"  {found['ratio']:8.2f}   ratio HTTP / gRPC (median of the pairs; goal >= 0.9)")


def sdr_message(sdr: Sdr) -> pb.Sdr:
    return pb.Sdr(size=sdr.size, dimensions=list(sdr.dimensions), active=sdr.positions.tolist())


def print_find_similar(stub: pb_grpc.Image2SdrStub, queries: list[Sdr], items: int, kind: str) -> None:
    count = stub.Info(pb.InfoRequest()).index_size
    by_sdr = [pb.FindSimilarRequest(sdr=sdr_message(q), k=10) for q in queries[:200]]
    p50, p99 = latencies_ms(stub.FindSimilar, by_sdr)
    print(f"\nFindSimilar top-10 over gRPC, {count:,} items ({kind} index):")
    print(f"  by SDR: p50 {p50:.1f} ms, p99 {p99:.1f} ms  ({len(by_sdr)} queries)")
    by_id = [pb.FindSimilarRequest(id=f"synthetic/{i * 499 % items}", k=10) for i in range(200)]
    p50, p99 = latencies_ms(stub.FindSimilar, by_id)
    print(f"  by id:  p50 {p50:.1f} ms, p99 {p99:.1f} ms  ({len(by_id)} queries)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.add_argument("--images", type=int, default=480, help="images per timed stream")
    parser.add_argument("--items", type=int, default=100_000, help="items in the index for FindSimilar")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is printed")
    parser.add_argument("--photos", type=int, default=240, help="distinct real photos of ordinary size")
    parser.add_argument("--stream-only", action="store_true", help="EncodeStream and add_to_index figures only")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        config = load_config(args.config).model_copy(update={"data_dir": Path(scratch) / "data"})
        config_path = Path(scratch) / "config.yml"
        config = config.model_copy(update={"models_dir": Path(config.models_dir).resolve()})
        http_port = free_port()
        config = config.model_copy(
            update={"http": config.http.model_copy(update={"enabled": True, "host": "127.0.0.1", "port": http_port})}
        )
        # The server gets exactly this config (its data directory is the one filled below).
        config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
        images = list(real_images.ordinary_photos(originals(), args.photos).values())
        stream = [images[i % len(images)] for i in range(args.images)]
        batch = config.service.stream_batch_for(config.concepts.local.batch_size)
        print(f"image2sdr service benchmark  ({len(images)} real photos, 500 px JPEG q90, stream batch {batch})")

        started = time.perf_counter()
        items = 0 if args.stream_only else args.items
        queries = fill_index(config, items)
        print(f"  indexed {items:,} synthetic SDRs in {time.perf_counter() - started:.1f} s")

        encoder = Encoder.from_config(config.model_copy(update={"data_dir": Path(scratch) / "in-process"}))
        process, address = start_server(config_path)
        try:
            with grpc.insecure_channel(address) as channel:
                stub = pb_grpc.Image2SdrStub(channel)
                served, local, ratio = compare_stream(encoder, stub, stream, batch, args.repeats)
                encoder.close()
                print(f"\nEncodeStream, {args.images} images, {args.repeats} alternating runs (medians):")
                print(f"  {served:8.1f} images/s  over gRPC (server in its own process)")
                print(f"  {local:8.1f} images/s  Encoder.encode_batch in process, batch {batch}")
                print(f"  {ratio:8.2f}   ratio service / in-process (median of the pairs)")

                print_store(compare_store(stub, stream, args.repeats), args.images, args.repeats)
                encode_requests = [pb.EncodeRequest(image=images[i % len(images)]) for i in range(100)]
                p50, p99 = latencies_ms(stub.Encode, encode_requests)
                print(
                    f"\nEncode (unary, one at a time, {len(encode_requests)} calls): p50 {p50:.1f} ms, p99 {p99:.1f} ms"
                )
                if args.stream_only:
                    return 0
                print_find_similar(stub, queries, args.items, config.index.kind)
                print_http(
                    compare_http(stub, f"http://127.0.0.1:{http_port}", stream[:160], args.repeats), args.repeats
                )
        finally:
            process.terminate()
            process.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
