"""Thumbnails: made from the decoded photo, kept by every index engine, returned by GetItem.

``make_thumbnail`` on real photos (scikit-image's); the FAISS store written by the
release before thumbnails (tests/fixtures/index_v4, schema 4) and a Milvus
collection set without the thumbs collection open and keep everything; a real
gRPC server on port 0 stores a thumbnail per photo added and none for an item
added by SDR, and none at all with ``index.thumbnails: 0``. The index contract
(add, replace, remove, many ids) is in tests/test_index_contract.py.
"""

from __future__ import annotations

import io
import itertools
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from image2sdr.client import Image2SdrClient
from image2sdr.server.config import Config, HttpConfig, IndexConfig, MilvusConfig, ServiceConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.errors import ConfigError
from image2sdr.server.fingerprints import Fingerprint
from image2sdr.server.index import SEMANTIC, VISUAL, Item, MilvusIndex, SdrIndex
from image2sdr.server.index.faiss import SCHEMA_VERSION, STORE_FILE
from image2sdr.server.sdr import Sdr
from image2sdr.server.serve import Server, create_server
from image2sdr.server.thumbnails import make_thumbnail
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.encoders import with_config
from tests.helpers.images import encode_jpeg
from tests.helpers.index import SIZE, random_sdr
from tests.helpers.milvus import as_before_thumbnails

FIXTURES = Path(__file__).parent / "fixtures"
TIMEOUT = 120


def _photo(name: str) -> Image.Image:
    pixels = getattr(skdata, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return Image.fromarray(pixels).convert("RGB")


def _opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# -- make_thumbnail -------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "pillow"), [("webp", "WEBP"), ("jpeg", "JPEG")])
@pytest.mark.parametrize(("name", "size"), [("rocket", (96, 64)), ("chelsea", (96, 64)), ("astronaut", (96, 96))])
def test_the_longest_side_is_the_side_asked_for_and_the_aspect_is_kept(
    fmt: str, pillow: str, name: str, size: tuple[int, int]
) -> None:
    photo = _photo(name)  # rocket 640 x 427, chelsea 451 x 300, astronaut 512 x 512
    data = make_thumbnail(photo, 96, fmt, 80)
    thumbnail = _opened(data)
    assert (thumbnail.format, thumbnail.size, thumbnail.mode) == (pillow, size, "RGB")
    assert len(data) < 6000  # measured: 0.8-3.7 kB on these photos at 96 px
    # It looks like the photo: the mean colour survives the shrinking and the coding.
    original = np.asarray(photo, dtype=np.float64).mean(axis=(0, 1))
    assert np.abs(np.asarray(thumbnail, dtype=np.float64).mean(axis=(0, 1)) - original).max() < 8


def test_a_portrait_photo_is_shrunk_by_its_height() -> None:
    portrait = _photo("rocket").transpose(Image.Transpose.ROTATE_90)  # 427 x 640
    assert _opened(make_thumbnail(portrait, 120, "webp", 80)).size == (80, 120)


def test_a_small_image_is_never_enlarged_and_a_sliver_keeps_a_pixel() -> None:
    small = _photo("coffee").resize((60, 40))
    assert _opened(make_thumbnail(small, 96, "webp", 80)).size == (60, 40)
    assert _opened(make_thumbnail(small, 60, "jpeg", 80)).size == (60, 40)
    sliver = Image.new("RGB", (1000, 3), (10, 200, 30))
    assert _opened(make_thumbnail(sliver, 96, "jpeg", 80)).size == (96, 1)


def test_other_modes_are_made_rgb_and_quality_sets_the_size() -> None:
    photo = _photo("astronaut")
    for mode in ("L", "RGBA", "P", "CMYK"):
        assert _opened(make_thumbnail(photo.convert(mode), 64, "webp", 80)).mode == "RGB"
    assert len(make_thumbnail(photo, 256, "jpeg", 30)) < len(make_thumbnail(photo, 256, "jpeg", 95))


def test_a_bad_side_or_format_is_refused() -> None:
    photo = _photo("coffee")
    with pytest.raises(ValueError, match="at least 1 pixel"):
        make_thumbnail(photo, 0, "webp", 80)
    with pytest.raises(ConfigError, match="png"):
        make_thumbnail(photo, 96, "png", 80)


# -- the store written by the release before thumbnails --------------------------------


def _schema(directory: Path) -> tuple[str, set[str]]:
    with sqlite3.connect(directory / STORE_FILE) as connection:
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return str(version), tables


def test_a_schema_4_store_opens_keeps_every_item_and_takes_thumbnails_from_then_on(tmp_path: Path) -> None:
    """tests/fixtures/index_v4 was written by the previous release (commit 0179160's index code).

    12 items (every third added by SDR alone, one removed), metadata and a concept
    each, one custom concept, and both spaces' snapshots.
    """
    directory = tmp_path / "index"
    shutil.copytree(FIXTURES / "index_v4", directory)
    expected = json.loads((FIXTURES / "index_v4.expected.json").read_text())
    assert _schema(directory) == ("4", {"items", "meta", "item_meta", "item_concepts", "custom_concepts"})
    with SdrIndex(directory, IndexConfig()) as index:
        assert index.count() == len(expected) == 11
        for item_id, sdrs in expected.items():
            item = index.get(item_id)
            assert item.sdr.positions.tolist() == sdrs["semantic"]
            visual = item.in_space(VISUAL)
            assert (visual.positions.tolist() if visual is not None else None) == sdrs["visual"]
            assert (item.fingerprint is not None) == (sdrs["visual"] is not None)
        assert index.thumbnails(list(expected)) == {}  # older items simply have none
        assert index.get_concept("mine").document == json.dumps({"kind": "test"})
        assert index.list_items(3, where=None).total == 11
        # The snapshots still match (an upgrade changes no item): loaded, not rebuilt.
        assert all(space.saved_at == index.engine.backends.changes for space in index.engine.backends)
        first = index.get("v4-00")
        index.add_many(
            [Item("v4-00", first.sdr, first.concepts, first.metadata, first.spaces, first.fingerprint, b"new")]
        )
        index.add_many([Item("v4-new", first.sdr, thumbnail=b"added")])
        assert index.thumbnails(["v4-00", "v4-01", "v4-new"]) == {"v4-00": b"new", "v4-new": b"added"}
    assert _schema(directory) == (str(SCHEMA_VERSION), {*_schema(directory)[1]})
    assert SCHEMA_VERSION == 6 and "item_thumbnails" in _schema(directory)[1]
    with SdrIndex(directory, IndexConfig()) as index:  # opens again as any current store
        assert index.thumbnails(["v4-00", "v4-new"]) == {"v4-00": b"new", "v4-new": b"added"}
        index.remove("v4-00")
        assert index.thumbnails(["v4-00"]) == {} and index.count() == 11


# -- Milvus: a collection set of the release before thumbnails --------------------------


_COLLECTIONS = itertools.count()


@pytest.mark.parametrize("where", ["milvus-embedded", "milvus-server"])
def test_a_milvus_collection_set_without_thumbs_opens_and_takes_thumbnails(
    request: pytest.FixtureRequest, tmp_path: Path, where: str
) -> None:
    uri = str(tmp_path / "milvus.db") if where == "milvus-embedded" else request.getfixturevalue("milvus_server").uri
    milvus = MilvusConfig(uri=uri, collection=f"thumbs_{next(_COLLECTIONS)}", consistency_level="Session")
    config = IndexConfig(backend="milvus", milvus=milvus)
    rng = np.random.default_rng(5)
    items = [
        Item(f"old-{n}", random_sdr(rng, 40), (("cat", 0.5),), {"n": str(n)}, {VISUAL: random_sdr(rng, 30)})
        for n in range(6)
    ]
    old = MilvusIndex(config, SIZE)
    try:
        old.add_many(items)
        as_before_thumbnails(old)  # as the previous release left it
    finally:
        old.close()
    new = MilvusIndex(config, SIZE)
    try:
        assert [new.get(item.id) for item in items] == items
        assert new.thumbnails([item.id for item in items]) == {}
        printed = Fingerprint("cd" * 32, 99)
        new.add_many([Item("old-0", items[0].sdr, fingerprint=printed, thumbnail=b"\x00\xff" * 50_000)])
        assert new.thumbnails(["old-0", "old-1"]) == {"old-0": b"\x00\xff" * 50_000}  # two chunks of base64
        assert new.count() == 6 and new.count(SEMANTIC) == 6
    finally:
        new.close()


# -- the service --------------------------------------------------------------------------


def _server(tmp_path: Path, models_dir: Path, shared: Encoder, **index: object) -> Server:
    config = Config(
        data_dir=tmp_path / "data",
        models_dir=models_dir,
        index=IndexConfig(**index),  # type: ignore[arg-type]
        service=ServiceConfig(port=0, shutdown_grace_s=0.5),
        http=HttpConfig(enabled=False),  # gRPC only: no two servers share the fixed HTTP port
    )
    return create_server(config, encoder=with_config(shared, config))  # the encoder makes the thumbnails


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, shared_encoder: Encoder) -> Iterator[Server]:
    server = _server(tmp_path_factory.mktemp("thumbnails"), models_dir, shared_encoder)  # the defaults: WebP, 96 px
    yield server
    server.stop()


def _add(stub: pb_grpc.Image2SdrStub, item_id: str, image: bytes) -> None:
    request = pb.EncodeRequest(image=image, add_to_index=pb.AddToIndex(id=item_id))
    assert stub.Encode(request, timeout=TIMEOUT).indexed


def test_a_photo_added_by_encode_or_stream_gets_a_thumbnail_and_getitem_returns_it(server: Server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.Image2SdrStub(channel)
        _add(stub, "rocket", encode_jpeg(skdata.rocket()))
        streamed = pb.EncodeRequest(image=encode_jpeg(skdata.chelsea()), add_to_index=pb.AddToIndex(id="cat"))
        assert [answer.indexed for answer in stub.EncodeStream(iter([streamed]), timeout=TIMEOUT)] == [True]
        for item_id, size in (("rocket", (96, 64)), ("cat", (96, 64))):
            thumbnail = _opened(stub.GetItem(pb.GetItemRequest(id=item_id), timeout=TIMEOUT).thumbnail)
            assert (thumbnail.format, thumbnail.size) == ("WEBP", size)
        with Image2SdrClient(server.address, timeout=TIMEOUT) as client:  # the typed client carries it too
            got = client.get_item("rocket")
            assert _opened(got.thumbnail).size == (96, 64) and "thumbnail" not in repr(got)
            assert client.list_items(10).items[0].thumbnail == b""
        # Listings leave it out: a page of 1000 items stays small (a Match has no such field).
        listed = stub.ListItems(pb.ListItemsRequest(page_size=10), timeout=TIMEOUT)
        assert listed.items and not any(item.thumbnail for item in listed.items)


def test_an_item_added_by_sdr_alone_or_replaced_so_has_none(server: Server) -> None:
    sdr = Sdr.from_positions(range(0, 600, 3), server.index.sdr_size)  # type: ignore[attr-defined]
    server.index.add("by-sdr", sdr)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.Image2SdrStub(channel)
        answer = stub.GetItem(pb.GetItemRequest(id="by-sdr"), timeout=TIMEOUT)
        assert answer.id == "by-sdr" and answer.thumbnail == b""
        _add(stub, "mug", encode_jpeg(skdata.coffee()))
        assert stub.GetItem(pb.GetItemRequest(id="mug"), timeout=TIMEOUT).thumbnail
        server.index.add("mug", sdr)  # the same id again, without an image
        assert stub.GetItem(pb.GetItemRequest(id="mug"), timeout=TIMEOUT).thumbnail == b""
        stub.RemoveItem(pb.RemoveItemRequest(id="mug"), timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetItem(pb.GetItemRequest(id="mug"), timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("settings", "expected"),
    [({"thumbnails": 0}, None), ({"thumbnails": 40, "thumbnail_format": "jpeg"}, ("JPEG", (40, 27)))],
)
def test_the_configured_side_and_format_or_none_at_all(
    tmp_path: Path,
    models_dir: Path,
    shared_encoder: Encoder,
    settings: dict[str, object],
    expected: tuple[str, tuple[int, int]] | None,
) -> None:
    server = _server(tmp_path, models_dir, shared_encoder, **settings)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.Image2SdrStub(channel)
            _add(stub, "rocket", encode_jpeg(skdata.rocket()))
            data = stub.GetItem(pb.GetItemRequest(id="rocket"), timeout=TIMEOUT).thumbnail
        assert server.index.thumbnails(["rocket"]) == ({} if expected is None else {"rocket": data})
        if expected is None:
            assert data == b""
        else:
            thumbnail = _opened(data)
            assert (thumbnail.format, thumbnail.size) == expected
    finally:
        server.stop()
