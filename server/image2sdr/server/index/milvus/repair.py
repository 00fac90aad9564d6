"""``python -m image2sdr.server.index.milvus.repair --config config.yml``: open the Milvus index, repairing it.

A server refuses to start on a collection set with a side collection missing (dropped:
``schema.MilvusSchema._open``), since an empty one would answer as if the items had
none. This command is the explicit repair: it creates what is missing and rebuilds what
the item rows hold (the pHashes); items lose their mark for a space whose codes are gone
(``in_visual``), so counts and searches say so; lost thumbnails and custom concepts are
logged. Stop the replicas first, then start them again once it is done.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ...config import load_config
from ...errors import Image2SdrError
from ..values import SEMANTIC
from .engine import MilvusEngine

__all__ = ["main", "repair"]


def repair(config_path: str | None) -> str:
    """Open (and so repair) the index ``config_path`` configures; what was done, in one line."""
    config = load_config(config_path)
    if config.index.backend != "milvus":
        raise SystemExit("index.backend is not milvus: nothing to repair")
    engine = MilvusEngine(config.index, config.sdr.size, data_dir=config.data_dir / "index", repair=True)
    try:
        return f"{engine.description}: {engine.count(SEMANTIC)} items, every collection present"
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image2sdr.server.index.milvus.repair", description=__doc__)
    parser.add_argument("--config", help="the server's config file (the defaults if not given)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        print(repair(args.config))
    except Image2SdrError as exc:
        print(f"repair failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
