"""One collection set on the real Milvus server for the whole package (creating one costs ~13 s there)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from image2sdr.server.config import IndexConfig, MilvusConfig
from image2sdr.server.index import MilvusIndex
from tests.helpers.index import SIZE
from tests.helpers.milvus import MilvusServer, drop_collections


@pytest.fixture(scope="package")
def shared(milvus_server: MilvusServer) -> Iterator[MilvusIndex]:
    """A collection set read at the default level (Bounded), for the tests that need one but not an empty one.

    Each test leaves it whole (the one that drops collections repairs them) and counts
    relative to what it found: other tests' items are there.
    """
    name = f"shared_{time.time_ns() % 10**9}"
    milvus = MilvusConfig(uri=milvus_server.uri, collection=name)
    index = MilvusIndex(IndexConfig(backend="milvus", milvus=milvus), SIZE)
    yield index
    index.close()
    drop_collections(milvus_server.uri, f"{name}_")
