"""Opening an index: ``open_index(config)``, and the two ``ItemIndex`` kinds by engine.

``SdrIndex`` is the ``ItemIndex`` over a ``FaissEngine`` in a directory (SQLite +
FAISS, one process per directory); ``MilvusIndex`` is the ``ItemIndex`` over a
``MilvusEngine`` (an embedded file, one server, or a cluster).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config import Config, IndexConfig
from .faiss import FaissEngine
from .item_index import ItemIndex
from .milvus import MilvusEngine
from .values import SEMANTIC, VISUAL

__all__ = ["MilvusIndex", "SdrIndex", "open_index"]


class SdrIndex(ItemIndex):
    """An ``ItemIndex`` whose items live in ``directory``: SQLite stores them, FAISS searches them."""

    engine: FaissEngine

    def __init__(
        self, directory: Path, config: IndexConfig, sdr_size: int = 16384, spaces: Sequence[str] = (SEMANTIC, VISUAL)
    ) -> None:
        super().__init__(FaissEngine(directory, config, sdr_size, spaces), config)
        self.directory = self.engine.directory

    def __enter__(self) -> SdrIndex:
        return self

    def snapshot(self) -> None:
        """Write every space's snapshot now, in the caller's thread (searches and writes go on)."""
        with self._gate:
            self.engine.snapshot()


class MilvusIndex(ItemIndex):
    """An ``ItemIndex`` whose items live in Milvus collections (``index.milvus`` says where)."""

    engine: MilvusEngine

    def __init__(
        self,
        config: IndexConfig,
        sdr_size: int = 16384,
        spaces: Sequence[str] = (SEMANTIC, VISUAL),
        *,
        data_dir: Path | None = None,
    ) -> None:
        super().__init__(MilvusEngine(config, sdr_size, spaces, data_dir=data_dir), config)
        self.embedded = self.engine.embedded
        self.uri = self.engine.uri

    def __enter__(self) -> MilvusIndex:
        return self


def open_index(config: Config) -> ItemIndex:
    """The index ``config.index.backend`` names: FAISS + SQLite under ``data_dir``, or Milvus."""
    if config.index.backend == "milvus":
        return MilvusIndex(config.index, config.sdr.size, data_dir=config.data_dir / "index")
    return SdrIndex(config.data_dir / "index", config.index, config.sdr.size)
