"""ListItems on a real server (port 0): newest first, a page at a time, tokens across writes, bad input;
the client's ``list_items`` and ``iter_items``, and ``image2sdr dupes --index`` over everything stored.

The module shares one server (its models load once); each test starts from an empty index, so
what it stores is all its index holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from image2sdr.client import Image2SdrClient, InvalidArgument, ItemPage, cli
from image2sdr.server.sdr import Sdr
from image2sdr.server.serve import Server
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.images import half_size
from tests.helpers.servers import start_server
from tests.helpers.status import bad_request_field

TIMEOUT = 60
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("list-items"), models_dir)
    yield server
    server.stop()


@pytest.fixture
def server(running: Server) -> Server:
    """The module's server, its index emptied first."""
    index = running.index
    while stored := [item.id for item in index.list_items(1000).items]:
        for item_id in stored:
            index.remove(item_id)
    return running


@pytest.fixture
def stub(server: Server) -> Iterator[pb_grpc.Image2SdrStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.Image2SdrStub(channel)


def store(stub: pb_grpc.Image2SdrStub, image: bytes, item_id: str) -> None:
    answer = stub.Encode(pb.EncodeRequest(image=image, add_to_index=pb.AddToIndex(id=item_id)), timeout=TIMEOUT)
    assert answer.indexed


def page(stub: pb_grpc.Image2SdrStub, page_size: int = 0, page_token: str = "") -> pb.ListItemsResponse:
    request = pb.ListItemsRequest(page_size=page_size, page_token=page_token)
    return stub.ListItems(request, timeout=TIMEOUT)


def ids(listed: pb.ListItemsResponse | ItemPage) -> list[str]:
    return [item.id for item in listed.items]


def test_pages_newest_first_and_a_token_holds_across_writes(
    stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]
) -> None:
    empty = page(stub)
    assert (ids(empty), empty.total, empty.next_page_token) == ([], 0, "")
    requests = [
        pb.EncodeRequest(image=photos[PHOTOS[n % 4]], request_id=str(n), add_to_index=pb.AddToIndex(id=f"p{n}"))
        for n in range(6)
    ]
    assert all(answer.indexed for answer in stub.EncodeStream(iter(requests), timeout=TIMEOUT))

    first = page(stub, page_size=4)
    assert ids(first) == ["p5", "p4", "p3", "p2"] and first.total == 6 and first.next_page_token
    assert all(item.HasField("fingerprint") and item.HasField("visual") for item in first.items)
    newest = first.items[0]  # p5: the coffee photo
    assert newest.fingerprint.sha256 == hashlib.sha256(photos["coffee"]).hexdigest()
    assert len(newest.sdr.active) > 0 and len(newest.visual.active) > 0 and newest.concepts

    store(stub, photos["chelsea"], "p6")  # newer than the listing: it does not show up in it
    stub.RemoveItem(pb.RemoveItemRequest(id="p1"), timeout=TIMEOUT)  # not listed yet: skipped
    second = page(stub, page_size=4, page_token=first.next_page_token)
    assert ids(second) == ["p0"] and second.next_page_token == "" and second.total == 6

    store(stub, photos["rocket"], "p3")  # replaced: the newest again
    whole = page(stub)  # page_size 0: the default page of 100
    assert ids(whole) == ["p3", "p6", "p5", "p4", "p2", "p0"] and whole.next_page_token == ""
    assert whole.total == stub.Info(pb.InfoRequest(), timeout=TIMEOUT).index_size == 6


def test_bad_page_size_or_token_is_invalid_argument_naming_the_field(
    stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]
) -> None:
    store(stub, photos["coffee"], "coffee")
    max_k = stub.Info(pb.InfoRequest(), timeout=TIMEOUT).limits.max_k
    assert ids(page(stub, page_size=max_k)) == ["coffee"]
    for request, field in (
        (pb.ListItemsRequest(page_size=max_k + 1), "page_size"),
        (pb.ListItemsRequest(page_size=2**32 - 1), "page_size"),
        (pb.ListItemsRequest(page_token="not-a-token"), "page_token"),
        (pb.ListItemsRequest(page_size=1, page_token="l-1"), "page_token"),
    ):
        with pytest.raises(grpc.RpcError) as failed:
            stub.ListItems(request, timeout=TIMEOUT)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failed.value.details()
        assert bad_request_field(failed.value) == field


def test_the_client_lists_a_page_and_iterates_over_everything(server: Server, photos: dict[str, bytes]) -> None:
    with Image2SdrClient(server.address, timeout=TIMEOUT) as client:
        for name in PHOTOS[:3]:
            client.encode(photos[name], add_to_index=name)
        server.index.add("by-sdr", Sdr.from_positions(list(range(0, 16384, 50))[:328], 16384, (128, 128)))
        first = client.list_items(page_size=2)
        assert isinstance(first, ItemPage) and ids(first) == ["by-sdr", "astronaut"] and first.total == 4
        assert first.items[0].fingerprint is None and first.items[0].visual is None  # stored without an image
        assert first.items[1].fingerprint is not None and len(first.items[1].fingerprint.sha256) == 64
        rest = client.list_items(page_size=2, page_token=first.next_page_token)
        assert ids(rest) == ["coffee", "chelsea"]
        everything = ["by-sdr", "astronaut", "coffee", "chelsea"]
        assert [item.id for item in client.iter_items(page_size=1)] == everything
        assert [item.id for item in client.iter_items()] == everything
        with pytest.raises(InvalidArgument) as failed:
            client.list_items(page_token="forged")
        assert [violation.field for violation in failed.value.field_violations] == ["page_token"]


def test_cli_dupes_index_alone_groups_a_photo_and_its_reencoded_copy(
    stub: pb_grpc.Image2SdrStub, server: Server, photos: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    store(stub, photos["chelsea"], "chelsea.jpg")
    store(stub, half_size(photos["chelsea"]), "chelsea-small.jpg")  # re-encoded at half the size
    store(stub, photos["coffee"], "coffee.jpg")
    assert cli.main(["dupes", "--index", "--json", "--server", server.address]) == 0
    found = json.loads(capsys.readouterr().out)
    (group,) = found["groups"]
    assert group["members"] == ["chelsea.jpg", "chelsea-small.jpg"]  # stored first, first
    (link,) = group["links"]
    assert link["kind"] == "near_exact" and 0 <= link["phash_distance"] <= 10
    assert found["not_compared"] == {}

    assert cli.main(["dupes", "--index", "--server", server.address]) == 0
    captured = capsys.readouterr()
    header, *rows = captured.out.splitlines()
    assert header.split() == ["GROUP", "ITEM", "KIND", "STAGE", "PHASH", "VISUAL", "COPY", "OF"]
    assert [row.split()[:3] for row in rows] == [["1", "chelsea.jpg", "-"], ["1", "chelsea-small.jpg", "near_exact"]]
    assert " keypoints (" in rows[1]  # both stored with keypoints: the geometry confirmed the pHash's candidate
    assert rows[1].split()[-1] == "chelsea.jpg"
    assert "1 groups, 2 images in them, of 3 compared" in captured.err
