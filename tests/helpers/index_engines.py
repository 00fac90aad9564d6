"""Stores of each index engine for the contract tests, and a mirror of what a seeded one holds.

A ``Mirror`` keeps the items a seeded index holds, in the order the index ranks
ties and lists them, so every test can hold the index to the brute-force oracle
whatever the tests before it wrote.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from image2sdr.server.config import IndexConfig
from image2sdr.server.index import AddOutcome, Item, ItemIndex, MilvusIndex, OnDuplicate, SdrIndex
from tests.helpers.index import SIZE

LIMITS = {"max_id_length": 64, "max_metadata_bytes": 256, "max_concepts": 8}
CONFIGS = {
    "faiss-flat": IndexConfig(**LIMITS),
    "faiss-ivf": IndexConfig(kind="ivf", ivf_nlist=8, ivf_nprobe=8, ivf_train_min=200, ivf_train_sample=200, **LIMITS),
}
ENGINES = (*CONFIGS, "milvus-embedded", "milvus-server")


@dataclass
class Stores:
    """New empty stores of one engine; ``new()`` gives a function that opens (and reopens) one."""

    engine: str
    directory: Path
    uri: str = ""  # a Milvus server's
    prefix: str = "store_"  # of this module's collection sets
    _count: Iterator[int] = field(default_factory=itertools.count)

    def new(self) -> Callable[[], ItemIndex]:
        number = next(self._count)
        if self.engine in CONFIGS:
            config = CONFIGS[self.engine]
            return lambda: SdrIndex(self.directory / f"store-{number}", config)
        uri = self.uri or str(self.directory / f"store-{number}.db")
        # Session consistency: this process reads its own writes at once, as the contract
        # expects (Bounded, the default, may lag by a few seconds).
        milvus = CONFIGS["faiss-flat"].milvus.model_copy(
            update={"uri": uri, "collection": f"{self.prefix}{number}", "consistency_level": "Session"}
        )
        config = CONFIGS["faiss-flat"].model_copy(update={"backend": "milvus", "milvus": milvus})
        return lambda: MilvusIndex(config, SIZE)


class Mirror:
    """A seeded index and the items it holds, oldest (added or last replaced) first: the oracle's side.

    Tests that write go through it, so the next test knows what is stored.
    """

    def __init__(self, engine: str, open_index: Callable[[], ItemIndex], items: Sequence[Item]) -> None:
        self.engine = engine
        self._open = open_index
        self.index = open_index()
        self.items: list[Item] = []
        self.add_many(items)

    def add_many(self, items: Sequence[Item], **options: OnDuplicate) -> list[AddOutcome]:
        outcomes = self.index.add_many(items, **options)  # type: ignore[arg-type]
        latest = {item.id: item for item in items}
        for outcome in outcomes:
            gone = {*outcome.replaced, outcome.id} if outcome.stored else set()
            self.items = [item for item in self.items if item.id not in gone]
            if outcome.stored:
                self.items.append(latest[outcome.id])
        return outcomes

    def remove(self, item_id: str) -> None:
        self.index.remove(item_id)
        self.items = [item for item in self.items if item.id != item_id]

    def reopen(self) -> ItemIndex:
        """Close the index and open the same store again (what a restart does)."""
        self.index.close()
        self.index = self._open()
        return self.index

    def close(self) -> None:
        self.index.close()
