"""Child process for the SIGKILL tests: adds items forever, printing ACK after each add returns.

    python index_child_writer.py DIRECTORY START SNAPSHOT_EVERY_N_ADDS

Item i has id ``item-i`` and the SDR ``child_sdr(i)``, so the parent can check
every acknowledged add after killing this process at a random moment.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from image2sdr.server.config import IndexConfig
from image2sdr.server.index import SdrIndex
from image2sdr.server.sdr import Sdr


def child_sdr(number: int) -> Sdr:
    rng = np.random.default_rng(number)
    return Sdr.from_positions(np.sort(rng.choice(16384, int(rng.integers(30, 400)), replace=False)), 16384)


def main() -> None:
    directory, start, snapshot_every = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    index = SdrIndex(directory, IndexConfig(snapshot_every=0))
    print("READY", flush=True)
    number = start
    while True:
        index.add(f"item-{number}", child_sdr(number), [("child", 1.0)], {"n": str(number)})
        print(f"ACK {number}", flush=True)
        number += 1
        if snapshot_every and number % snapshot_every == 0:
            print("SNAP-BEGIN", flush=True)
            index.snapshot()
            print("SNAP-END", flush=True)


if __name__ == "__main__":
    main()
