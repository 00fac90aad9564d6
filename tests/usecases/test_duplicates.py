"""Copies and looks on a real server (port 0): FindDuplicates, on_duplicate, FindSimilar by space, bad input.

The module has a server of its own, so what its tests store is all its index holds;
each test uses photos no other test here stores.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from skimage import data as skdata

from image2sdr.client import cli
from image2sdr.server.sdr import Sdr
from image2sdr.server.serve import Server
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.images import encode_jpeg, half_size, mirrored
from tests.helpers.servers import start_server
from tests.helpers.status import bad_request_field

TIMEOUT = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("duplicates"), models_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[pb_grpc.Image2SdrStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.Image2SdrStub(channel)


@pytest.fixture(scope="module")
def more_photos() -> dict[str, bytes]:
    """Photos the shared ``photos`` fixture does not hold, one per test that needs a fresh one."""
    return {
        "cells": encode_jpeg(skdata.immunohistochemistry()),
        "hubble": encode_jpeg(skdata.hubble_deep_field()),
        "motorcycle": encode_jpeg(np.ascontiguousarray(skdata.stereo_motorcycle()[0])),
    }


def store(stub: pb_grpc.Image2SdrStub, image: bytes, item_id: str, on_duplicate: int = 0) -> pb.EncodeResponse:
    add = pb.AddToIndex(id=item_id, on_duplicate=on_duplicate)  # type: ignore[arg-type]
    return stub.Encode(pb.EncodeRequest(image=image, add_to_index=add), timeout=TIMEOUT)


def copies_of(stub: pb_grpc.Image2SdrStub, **query: object) -> pb.FindDuplicatesResponse:
    return stub.FindDuplicates(pb.FindDuplicatesRequest(**query), timeout=TIMEOUT)  # type: ignore[arg-type]


def index_size(stub: pb_grpc.Image2SdrStub) -> int:
    return int(stub.Info(pb.InfoRequest(), timeout=TIMEOUT).index_size)


# -- FindDuplicates --------------------------------------------------------------------


def test_same_bytes_a_reencoded_and_a_mirrored_copy_are_found_a_different_photo_is_not(
    stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]
) -> None:
    stored = store(stub, photos["chelsea"], "orig/chelsea")
    store(stub, photos["coffee"], "orig/coffee")
    assert stored.indexed and stored.HasField("visual") and len(stored.fingerprint.sha256) == 64

    same = copies_of(stub, image=photos["chelsea"])
    first = same.duplicates[0]
    assert (first.id, first.kind, first.phash_distance) == ("orig/chelsea", pb.DUPLICATE_KIND_SAME_BYTES, 0)
    assert first.visual_overlap == len(stored.visual.active) and first.visual_share == pytest.approx(1.0)
    assert same.fingerprint == stored.fingerprint
    assert any(c.name == "cat" for c in first.concepts)
    assert (first.stage, first.inliers, first.HasField("transform")) == (pb.DUPLICATE_STAGE_FILE_HASH, -1, False)

    smaller = copies_of(stub, image=half_size(photos["chelsea"])).duplicates
    assert [(d.id, d.kind) for d in smaller[:1]] == [("orig/chelsea", pb.DUPLICATE_KIND_NEAR_EXACT)]
    assert smaller[0].stage == pb.DUPLICATE_STAGE_KEYPOINTS and smaller[0].inliers >= 12  # verified too
    assert smaller[0].transform.scale == pytest.approx(1.0, abs=0.05)  # keypoints are found at one size

    flipped = copies_of(stub, image=mirrored(photos["chelsea"])).duplicates
    assert [(d.id, d.kind) for d in flipped[:1]] == [("orig/chelsea", pb.DUPLICATE_KIND_TRANSFORMED)]
    assert flipped[0].phash_distance > 8  # the pHash alone would not have found it
    assert flipped[0].stage == pb.DUPLICATE_STAGE_KEYPOINTS and flipped[0].transform.mirrored

    # A quarter turn: below the visual share, found by the keypoints, with its rotation.
    turned = copies_of(stub, image=encode_jpeg(np.rot90(skdata.chelsea()))).duplicates
    assert [(d.id, d.kind, d.stage) for d in turned[:1]] == [
        ("orig/chelsea", pb.DUPLICATE_KIND_TRANSFORMED, pb.DUPLICATE_STAGE_KEYPOINTS)
    ]
    assert turned[0].inliers >= 12 and not turned[0].transform.mirrored
    assert turned[0].transform.rotation_degrees == pytest.approx(90, abs=2)
    box = turned[0].transform
    assert (box.crop_left, box.crop_top, box.crop_right, box.crop_bottom) == pytest.approx((0, 0, 1, 1), abs=0.03)

    assert not copies_of(stub, image=photos["astronaut"]).duplicates


def test_by_stored_id_with_thresholds_per_request(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]) -> None:
    store(stub, photos["astronaut"], "byid/astronaut")
    store(stub, half_size(photos["astronaut"]), "byid/astronaut-small")
    answer = copies_of(stub, id="byid/astronaut")
    assert [d.id for d in answer.duplicates] == ["byid/astronaut-small"]  # itself left out
    info = stub.Info(pb.InfoRequest(), timeout=TIMEOUT)
    assert answer.thresholds == info.duplicate_thresholds  # the defaults, filled in
    assert info.duplicate_thresholds.HasField("max_phash_distance")

    strict = pb.DuplicateThresholds(max_phash_distance=0, min_visual_share=1.0)
    exact = copies_of(stub, id="byid/astronaut", thresholds=strict)
    assert exact.thresholds == strict
    assert all(d.phash_distance == 0 or d.visual_share == 1.0 for d in exact.duplicates)
    loose = copies_of(stub, id="byid/astronaut", thresholds=pb.DuplicateThresholds(max_phash_distance=64), k=100)
    assert loose.thresholds.max_phash_distance == 64
    assert loose.thresholds.min_visual_share == info.duplicate_thresholds.min_visual_share
    assert len(loose.duplicates) > 1  # every stored image is within 64 bits


# -- on_duplicate --------------------------------------------------------------------------


def test_skip_stores_nothing_and_names_the_stored_copy(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes]) -> None:
    store(stub, photos["rocket"], "skip/rocket")
    size = index_size(stub)
    again = store(stub, half_size(photos["rocket"]), "skip/rocket-again", pb.ON_DUPLICATE_SKIP)
    assert not again.indexed and again.duplicate.id == "skip/rocket"
    assert again.duplicate.kind == pb.DUPLICATE_KIND_NEAR_EXACT and len(again.sdr.active) == 328
    assert index_size(stub) == size
    exists = stub.ItemsExist(pb.ItemsExistRequest(ids=["skip/rocket-again"]), timeout=TIMEOUT)
    assert list(exists.exists) == [False]
    kept = store(stub, half_size(photos["rocket"]), "skip/rocket-kept")  # KEEP, the default: stored anyway
    assert kept.indexed and not kept.HasField("duplicate")


def test_two_concurrent_uploads_of_one_photo_under_skip_store_one(
    stub: pb_grpc.Image2SdrStub, more_photos: dict[str, bytes]
) -> None:
    start = threading.Barrier(2)

    def upload(item_id: str) -> pb.EncodeResponse:
        start.wait(timeout=TIMEOUT)
        return store(stub, more_photos["cells"], item_id, pb.ON_DUPLICATE_SKIP)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(upload, ["race/a", "race/b"]))
    assert sorted(a.indexed for a in answers) == [False, True]
    winner = next(a for a in answers if a.indexed)
    loser = next(a for a in answers if not a.indexed)
    winner_id = "race/a" if winner is answers[0] else "race/b"
    assert loser.duplicate.id == winner_id and loser.duplicate.kind == pb.DUPLICATE_KIND_SAME_BYTES
    exists = stub.ItemsExist(pb.ItemsExistRequest(ids=["race/a", "race/b"]), timeout=TIMEOUT).exists
    assert sorted(exists) == [False, True]


def test_replace_removes_the_copies_and_stores_the_new_one(
    stub: pb_grpc.Image2SdrStub, more_photos: dict[str, bytes]
) -> None:
    store(stub, more_photos["hubble"], "replace/old")
    size = index_size(stub)
    new = store(stub, half_size(more_photos["hubble"]), "replace/new", pb.ON_DUPLICATE_REPLACE)
    assert new.indexed and list(new.replaced) == ["replace/old"] and new.duplicate.id == "replace/old"
    exists = stub.ItemsExist(pb.ItemsExistRequest(ids=["replace/old", "replace/new"]), timeout=TIMEOUT).exists
    assert list(exists) == [False, True] and index_size(stub) == size


def test_a_stream_checks_each_item_against_those_before_it(
    stub: pb_grpc.Image2SdrStub, more_photos: dict[str, bytes]
) -> None:
    moto = more_photos["motorcycle"]
    skip = pb.ON_DUPLICATE_SKIP
    requests = [
        pb.EncodeRequest(image=image, request_id=item_id, add_to_index=pb.AddToIndex(id=item_id, on_duplicate=skip))
        for item_id, image in (("stream/1", moto), ("stream/2", moto), ("stream/3", mirrored(moto)))
    ]
    answers = list(stub.EncodeStream(iter(requests), timeout=TIMEOUT))
    assert [a.request_id for a in answers] == ["stream/1", "stream/2", "stream/3"]
    assert [a.indexed for a in answers] == [True, False, False]
    assert [(a.duplicate.id, a.duplicate.kind) for a in answers[1:]] == [
        ("stream/1", pb.DUPLICATE_KIND_SAME_BYTES),
        ("stream/1", pb.DUPLICATE_KIND_TRANSFORMED),
    ]


# -- FindSimilar by look -----------------------------------------------------------------


def test_visual_and_blended_search(stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes], server: Server) -> None:
    store(stub, photos["chelsea"], "orig/chelsea")  # the same as the first test stores: an existing id is replaced
    store(stub, photos["coffee"], "orig/coffee")
    visual = stub.FindSimilar(
        pb.FindSimilarRequest(image=mirrored(photos["chelsea"]), space=pb.SPACE_VISUAL, k=3), timeout=TIMEOUT
    )
    first = visual.matches[0]
    assert first.id == "orig/chelsea" and list(first.scored_by) == [pb.SPACE_VISUAL]
    assert first.HasField("visual_overlap") and not first.HasField("semantic_overlap")
    assert first.overlap == first.visual_overlap == first.score
    assert visual.HasField("visual_query") and not visual.HasField("query")

    request = pb.FindSimilarRequest(id="orig/chelsea", space=pb.SPACE_BLEND, blend_weight=0.3, k=5)
    blended = stub.FindSimilar(request, timeout=TIMEOUT)
    assert "orig/chelsea" not in [m.id for m in blended.matches]
    for match in blended.matches:
        assert list(match.scored_by) == [pb.SPACE_SEMANTIC, pb.SPACE_VISUAL]
        assert match.score == pytest.approx(0.7 * match.semantic_overlap + 0.3 * match.visual_overlap, rel=1e-5)
    assert [m.score for m in blended.matches] == sorted((m.score for m in blended.matches), reverse=True)
    assert blended.HasField("query") and blended.HasField("visual_query")
    # By SDR: the semantic one in sdr, the visual one beside it.
    by_sdr = pb.FindSimilarRequest(sdr=blended.query, visual_sdr=blended.visual_query, space=pb.SPACE_BLEND, k=1)
    assert stub.FindSimilar(by_sdr, timeout=TIMEOUT).matches[0].id == "orig/chelsea"
    assert server.index.count() - server.index.count("visual") == blended.skipped_without_visual


def test_an_item_added_by_sdr_alone_has_no_look_and_says_so(stub: pb_grpc.Image2SdrStub, server: Server) -> None:
    sdr = Sdr.from_positions(list(range(0, 16384, 50))[:328], 16384, (128, 128))
    server.index.add("sdr-only/x", sdr)
    try:
        item = stub.GetItem(pb.GetItemRequest(id="sdr-only/x"), timeout=TIMEOUT)
        assert not item.HasField("fingerprint") and not item.HasField("visual")
        for call, request in (
            (stub.FindDuplicates, pb.FindDuplicatesRequest(id="sdr-only/x")),
            (stub.FindSimilar, pb.FindSimilarRequest(id="sdr-only/x", space=pb.SPACE_VISUAL)),
            (stub.FindSimilar, pb.FindSimilarRequest(id="sdr-only/x", space=pb.SPACE_BLEND)),
        ):
            with pytest.raises(grpc.RpcError) as failed:
                call(request, timeout=TIMEOUT)
            assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_request_field(failed.value) == "id"
        search = pb.FindSimilarRequest(sdr=item.sdr, space=pb.SPACE_VISUAL)
        assert stub.FindSimilar(search, timeout=TIMEOUT).skipped_without_visual >= 1
        semantic = stub.FindSimilar(pb.FindSimilarRequest(id="sdr-only/x"), timeout=TIMEOUT)
        assert semantic.skipped_without_visual == 0  # a semantic search skips nothing
    finally:
        stub.RemoveItem(pb.RemoveItemRequest(id="sdr-only/x"), timeout=TIMEOUT)


# -- bad input: INVALID_ARGUMENT naming the field, the index unchanged ---------------------


def _add(on_duplicate: int = 0, **thresholds: object) -> pb.AddToIndex:
    limits = pb.DuplicateThresholds(**thresholds)  # type: ignore[arg-type]
    return pb.AddToIndex(id="bad/x", on_duplicate=on_duplicate, duplicate_thresholds=limits)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "request_args", "field"),
    [
        ("FindSimilar", {"id": "orig/coffee", "space": 7}, "space"),
        ("FindSimilar", {"id": "orig/coffee", "space": pb.SPACE_BLEND, "blend_weight": 1.5}, "blend_weight"),
        ("FindSimilar", {"id": "orig/coffee", "space": pb.SPACE_BLEND, "blend_weight": -0.1}, "blend_weight"),
        ("FindSimilar", {"id": "orig/coffee", "blend_weight": 0.5}, "blend_weight"),  # not a blend
        ("FindSimilar", {"sdr": pb.Sdr(size=16384, active=[1]), "space": pb.SPACE_BLEND}, "visual_sdr"),
        (
            "FindDuplicates",
            {"id": "orig/coffee", "thresholds": {"max_phash_distance": 65}},
            "thresholds.max_phash_distance",
        ),
        (
            "FindDuplicates",
            {"id": "orig/coffee", "thresholds": {"min_visual_share": 1.01}},
            "thresholds.min_visual_share",
        ),
        ("FindDuplicates", {"id": "orig/coffee", "k": 1001}, "k"),
        ("FindDuplicates", {}, "query"),
        ("Encode", {"add_to_index": _add(on_duplicate=9)}, "add_to_index.on_duplicate"),
        (
            "Encode",
            {"add_to_index": _add(2, max_phash_distance=99)},
            "add_to_index.duplicate_thresholds.max_phash_distance",
        ),
        (
            "Encode",
            {"add_to_index": _add(2, min_visual_share=-1.0)},
            "add_to_index.duplicate_thresholds.min_visual_share",
        ),
        ("Encode", {"add_to_index": _add(), "options": {"visual_share": 1.5}}, "options.visual_share"),
        ("Encode", {"add_to_index": _add(), "options": {"visual_share": -0.5}}, "options.visual_share"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(
    stub: pb_grpc.Image2SdrStub, photos: dict[str, bytes], method: str, request_args: dict[str, object], field: str
) -> None:
    store(stub, photos["coffee"], "orig/coffee")
    size = index_size(stub)
    if method == "Encode":
        request: object = pb.EncodeRequest(image=photos["coffee"], **request_args)  # type: ignore[arg-type]
    elif method == "FindSimilar":
        request = pb.FindSimilarRequest(**request_args)  # type: ignore[arg-type]
    else:
        request = pb.FindDuplicatesRequest(**request_args)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as failed:
        getattr(stub, method)(request, timeout=TIMEOUT)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failed.value.details()
    assert bad_request_field(failed.value) == field
    assert index_size(stub) == size
    assert not stub.ItemsExist(pb.ItemsExistRequest(ids=["bad/x"]), timeout=TIMEOUT).exists[0]


def test_unknown_id_is_not_found(stub: pb_grpc.Image2SdrStub) -> None:
    for request in (
        pb.FindDuplicatesRequest(id="no/such"),
        pb.FindSimilarRequest(id="no/such", space=pb.SPACE_BLEND),
        pb.FindSimilarRequest(id="no/such", space=pb.SPACE_VISUAL),
    ):
        with pytest.raises(grpc.RpcError) as failed:
            (stub.FindDuplicates if isinstance(request, pb.FindDuplicatesRequest) else stub.FindSimilar)(
                request, timeout=TIMEOUT
            )
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND


def test_info_reports_the_visual_channel(stub: pb_grpc.Image2SdrStub, server: Server) -> None:
    info = stub.Info(pb.InfoRequest(), timeout=TIMEOUT)
    config = server.encoder.config
    assert info.duplicate_thresholds.max_phash_distance == config.index.duplicate_max_phash_distance
    assert info.duplicate_thresholds.min_visual_share == pytest.approx(config.index.duplicate_min_visual_share)
    assert info.index_visual_size == server.index.count("visual") <= info.index_size
    assert info.HasField("visual") and info.visual.version  # on by default; its version names the projection


# -- the command line against this server ----------------------------------------------------


def test_cli_dupes_and_similar_by_look(
    server: Server, photos: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "chelsea.jpg").write_bytes(photos["chelsea"])
    (folder / "chelsea-mirrored.jpg").write_bytes(mirrored(photos["chelsea"]))
    (folder / "coffee.jpg").write_bytes(photos["coffee"])
    assert cli.main(["dupes", str(folder), "--json", "--server", server.address]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [group["members"] for group in found["groups"]] == [["chelsea-mirrored.jpg", "chelsea.jpg"]]
    assert found["groups"][0]["links"][0]["kind"] == "transformed"

    store_argv = ["index", str(folder), "--skip-duplicates", "--json", "--server", server.address]
    assert cli.main(store_argv) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["indexed"] + counts["duplicates"] == 3 and counts["duplicates"] >= 1  # a chelsea is stored already

    argv = ["similar", str(folder / "chelsea-mirrored.jpg"), "--space", "visual", "-k", "1", "--json"]
    assert cli.main([*argv, "--server", server.address]) == 0
    (match,) = json.loads(capsys.readouterr().out)
    assert match["id"] in {"orig/chelsea", "chelsea.jpg", "chelsea-mirrored.jpg"} and match["visual_overlap"] > 0
