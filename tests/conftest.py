"""Shared fixtures: the real exported models, real photos, real files under tmp_path, and a fake service."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as skdata

from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.serve import Server, create_server
from tests.helpers.encoders import close_shared, shared_encoder
from tests.helpers.fake_service import FakeServicer, serve_fake
from tests.helpers.images import encode_jpeg
from tests.helpers.milvus import MilvusServer

REPO = Path(__file__).resolve().parent.parent
# Fixtures that need the exported models (`make models`).  Every fixture that loads a
# model (config, service, the encoders and term sources of the test modules) asks for
# models_dir, so a test whose fixture closure holds one of these needs the models.
MODEL_FIXTURES = frozenset({"models_dir"})


def pytest_itemcollected(item: pytest.Item) -> None:  # as each is collected: before pytest-xdist reads the groups
    """Mark the tests that need the exported models or the Milvus server (`make test-fast` leaves both out),
    and group them for pytest-xdist (`make test` runs two workers with --dist loadgroup).

    A module's tests stay on one worker (its module-scoped servers and indexes are made once),
    and every test on Milvus goes to one worker, one after another as before: only one Milvus
    standalone server can run on a machine (etcd's peer port is fixed), so it is the session's,
    on that worker, and milvus-lite's embedded servers are kept beside it, not beside the other.
    """
    if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.models)
    engine = _milvus(item)
    if engine == "server":
        item.add_marker(pytest.mark.milvus_server)
    module = item.nodeid.split("::", 1)[0]
    item.add_marker(pytest.mark.xdist_group("milvus" if engine else module))


_MILVUS_MODULES = ("tests/index/milvus/", "tests/usecases/test_milvus_replicas.py")


def _milvus(item: pytest.Item) -> str:
    """ "server" for a test on the real Milvus server, "embedded" for one on milvus-lite, "" otherwise."""
    callspec = getattr(item, "callspec", None)
    params = {value for value in (callspec.params.values() if callspec else ()) if isinstance(value, str)}
    if "milvus_server" in getattr(item, "fixturenames", ()) or params & {"milvus-server", "server"}:
        return "server"
    if params & {"milvus-embedded", "embedded"} or item.nodeid.startswith(_MILVUS_MODULES):
        return "embedded"
    return ""


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    path = Path(os.environ.get("IMAGE2SDR_MODELS_DIR", REPO / "models"))
    if not (path / "manifest.json").is_file():
        pytest.fail(f"no exported models in {path}: run `make models` (make test does it)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _close_shared_encoders() -> Iterator[None]:
    yield
    close_shared()


@pytest.fixture(scope="session", name="shared_encoder")
def shared_encoder_fixture(models_dir: Path) -> Encoder:
    """The one loaded encoder of the session (default config): servers in tests are handed it."""
    return shared_encoder(models_dir)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """One real Milvus standalone server for the session (tests use their own collections)."""
    try:
        server = MilvusServer(tmp_path_factory.mktemp("milvus") / "data")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        server.start()
    except RuntimeError as exc:
        server.stop()  # a wrapper that never answered would otherwise outlive the session
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
def config(tmp_path: Path, models_dir: Path) -> Config:
    return Config(data_dir=tmp_path / "data", models_dir=models_dir)


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """Real photos shipped inside scikit-image, as JPEG files a caller would send."""
    return {name: encode_jpeg(getattr(skdata, name)()) for name in ("chelsea", "coffee", "astronaut", "rocket")}


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, shared_encoder: Encoder) -> Iterator[Server]:
    """A real gRPC server on a free loopback port, shared by the service tests."""
    config = Config(
        data_dir=tmp_path_factory.mktemp("service-data"),
        models_dir=models_dir,
        service=ServiceConfig(port=0, max_message_bytes=4 * 1024 * 1024, shutdown_grace_s=1.0),
        http=HttpConfig(enabled=False),  # gRPC only: no two servers share the fixed HTTP port
    )
    server = create_server(config, encoder=shared_encoder)
    yield server
    server.stop()


@pytest.fixture
def fake() -> Iterator[tuple[FakeServicer, str]]:
    """The fake service (no models) on a loopback port: the servicer, to look into, and its address."""
    servicer = FakeServicer()
    with serve_fake(servicer) as address:
        yield servicer, address


@pytest.fixture
def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, "PNG")
    return buffer.getvalue()
