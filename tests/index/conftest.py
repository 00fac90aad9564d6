"""One store per engine per module for the contract tests: FAISS flat and IVF, milvus-lite, a real Milvus server.

``stores`` (module-scoped) hands out new empty stores of its engine; Milvus server
collections are dropped when the module ends, so the server unloads them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.helpers.index_engines import ENGINES, Stores
from tests.helpers.milvus import drop_collections

_SETS = itertools.count()


@pytest.fixture(scope="module", params=ENGINES)
def stores(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    directory = tmp_path_factory.mktemp(request.param)
    if request.param != "milvus-server":
        yield Stores(request.param, directory)
        return
    server = request.getfixturevalue("milvus_server")
    prefix = f"t{next(_SETS)}_{request.module.__name__.rsplit('.', 1)[-1][5:30]}_"
    yield Stores(request.param, directory, server.uri, prefix)
    drop_collections(server.uri, prefix)
