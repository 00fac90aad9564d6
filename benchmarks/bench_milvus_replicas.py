"""Two replicas on one Milvus collection set (issue 26's "Measured"): figures printed, nothing asserted.

Starts a real standalone Milvus 2.3.5 server (``tests/helpers/milvus.py``) in a temp dir; two
``MilvusIndex`` instances on one collection set stand for two service replicas.

- Read-after-write, per consistency level: the writer adds an item, then one replica asks
  ``contains`` until it answers True; the time from the add's return to that answer, p50 and
  max over --rounds adds each, on the writer and on the other replica. And the cost of one read
  (``get``) at that level with no write of its own in the last seconds.
- Racing SKIP: both replicas add the same photo bytes (one sha256 and pHash) under different
  ids with ``on_duplicate=SKIP`` at one moment (a barrier); how many copies were stored.
- Outages: the server stopped and started --outages times; the time from the server answering
  ``list_collections`` to a fresh client's query answering on every collection of the set
  (Milvus's own recovery: it reloads them), and from that query to each replica's ``available()``
  (what health asks every health_every_s) saying True, all polled every 0.1 s; and the log
  lines the engine (and pymilvus) wrote per outage.

    python benchmarks/bench_milvus_replicas.py               # ~5 min on 2 cores
    python benchmarks/bench_milvus_replicas.py --rounds 5 --outages 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymilvus import MilvusClient

from image2sdr.server.config import IndexConfig, MilvusConfig
from image2sdr.server.fingerprints import Fingerprint
from image2sdr.server.index import Item, MilvusIndex, OnDuplicate
from image2sdr.server.index.milvus import faults
from image2sdr.server.sdr import Sdr
from tests.helpers.milvus import MilvusServer

SIZE = 16384
LEVELS = ("Bounded", "Session", "Strong", "Eventually")


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="adds per level; races")
    parser.add_argument("--outages", type=int, default=5)
    parser.add_argument("--only-outages", action="store_true")
    parser.add_argument("--dir", help="the server's directory (kept, with its log); default a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        server = MilvusServer(Path(args.dir or scratch) / "data")
        server.start()
        try:
            if not args.only_outages:
                for level in LEVELS:
                    read_after_write(server.uri, level, args.rounds)
                racing_skip(server.uri, args.rounds)
            outages(server, args.outages)
        finally:
            server.stop()


def pair(uri: str, prefix: str, level: str, **milvus: object) -> tuple[MilvusIndex, MilvusIndex]:
    settings = MilvusConfig(uri=uri, collection=prefix, consistency_level=level, **milvus)  # type: ignore[arg-type]
    config = IndexConfig(backend="milvus", milvus=settings)
    return MilvusIndex(config, SIZE), MilvusIndex(config, SIZE)


def until_true(ask: object) -> float:
    started = time.monotonic()
    while not ask():  # type: ignore[operator]
        time.sleep(0.005)
    return time.monotonic() - started


def read_after_write(uri: str, level: str, rounds: int) -> None:
    writer, other = pair(uri, f"raw_{level.lower()}", level)
    try:
        mine, theirs = [], []
        for number in range(rounds):  # each replica asks from the moment the add returned
            item_id = f"{level}-{number}"
            writer.add(item_id, Sdr.from_positions([number, number + 1, 4000], SIZE))
            mine.append(until_true(lambda i=item_id: writer.contains([i])[0]))
            item_id = f"{level}-{number}-other"
            writer.add(item_id, Sdr.from_positions([number, number + 2, 4000], SIZE))
            theirs.append(until_true(lambda i=item_id: other.contains([i])[0]))
        time.sleep(11)  # past the writer's own-writes window: reads at the configured level
        costs = []
        for number in range(rounds):
            started = time.monotonic()
            other.get(f"{level}-{number}")
            costs.append(time.monotonic() - started)
        print(
            f"{level:10s} read-after-write writer p50 {ms(statistics.median(mine))} max {ms(max(mine))};"
            f" other replica p50 {ms(statistics.median(theirs))} max {ms(max(theirs))};"
            f" one get (no recent write) p50 {ms(statistics.median(costs))}"
        )
    finally:
        writer.close()
        other.close()


def racing_skip(uri: str, rounds: int) -> None:
    first, second = pair(uri, "race", "Bounded")
    stored_twice = stored_never = 0
    slowest = 0.0
    try:
        for number in range(rounds):
            # its own bytes, and a pHash far from every other round's (no near copy of an earlier round)
            photo = Fingerprint(f"{number:064x}", (0x9E37_79B9_7F4A_7C15 * (number + 1)) % 2**64)
            barrier = threading.Barrier(2)
            outcomes: list[bool] = []
            threads = [
                threading.Thread(
                    target=add_racing,
                    args=(
                        index,
                        Item(f"race-{number}-{side}", Sdr.from_positions([number, 5000], SIZE), fingerprint=photo),
                        barrier,
                        outcomes,
                    ),
                )
                for side, index in enumerate((first, second))
            ]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            slowest = max(slowest, time.monotonic() - started)
            stored_twice += all(outcomes)
            stored_never += not any(outcomes)
        print(
            f"racing SKIP (same bytes, two replicas at once): stored twice {stored_twice}/{rounds},"
            f" stored by neither {stored_never}/{rounds}; slowest round {ms(slowest)}"
        )
    finally:
        first.close()
        second.close()


def add_racing(index: MilvusIndex, item: Item, barrier: threading.Barrier, outcomes: list[bool]) -> None:
    barrier.wait()
    outcomes.append(index.add_many([item], on_duplicate=OnDuplicate.SKIP)[0].stored)


class Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def outages(server: MilvusServer, count: int) -> None:
    replicas = pair(server.uri, "outage", "Bounded", timeout_s=2.0, retry_total_s=5.0)
    counter = Count()
    for name in (faults.__name__, "pymilvus"):
        logging.getLogger(name).addHandler(counter)
    logging.getLogger(faults.__name__).setLevel(logging.INFO)
    try:
        for replica in replicas:
            replica.add("before", Sdr.from_positions([1, 2, 3], SIZE))
        for outage in range(count):
            counter.lines.clear()
            server.stop()
            failed = ""
            for replica in replicas:
                until_true(lambda r=replica: not r.available())
                try:
                    replica.contains(["before"])
                except Exception as exc:
                    failed = f"{type(exc).__name__}: {exc}"
            server.start()  # returns once the server answers list_collections
            answered = time.monotonic()
            queried, back = recovery(server.uri, replicas)
            print(
                f"outage {outage + 1}: Milvus answered a query {queried - answered:.1f} s after list_collections;"
                f" available() again {', '.join(f'{t - queried:+.1f} s' for t in back)} after that query;"
                f" {len(counter.lines)} log lines (both replicas); a call during it: {failed[:160]}"
            )
            for line in counter.lines:
                print("   log:", line[:200])
    finally:
        for replica in replicas:
            replica.close()


def recovery(uri: str, replicas: tuple[MilvusIndex, MilvusIndex]) -> tuple[float, list[float]]:
    """When a fresh client's query on the collection first answered, and when each replica's available() did.

    Both polled every 0.1 s, side by side: what the replica adds to Milvus's own recovery
    (health asks every health_every_s on top of this).
    """
    queried: float | None = None
    back: dict[int, float] = {}
    while queried is None or len(back) < len(replicas):
        if queried is None and answers_query(uri):
            queried = time.monotonic()
        for number, replica in enumerate(replicas):
            if number not in back and replica.available():
                back[number] = time.monotonic()
        time.sleep(0.1)
    return queried, [back[number] for number in range(len(replicas))]


def answers_query(uri: str) -> bool:
    """Whether a fresh client's query answers on every collection of the set (Milvus loads them one by one)."""
    client = MilvusClient(uri=uri, timeout=2, dedicated=True)
    try:
        for name in ("semantic", "visual", "phash", "concepts", "thumbs"):
            client.query(f"outage_{name}", filter='key != ""', output_fields=["key"], limit=1, timeout=2)
    except Exception:
        return False
    finally:
        client.close()
    return True


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


if __name__ == "__main__":
    main()
