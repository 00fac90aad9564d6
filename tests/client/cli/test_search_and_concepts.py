"""The ``image2sdr`` command's catalog search (issue 13), end to end against a real server.

`similar --text/--concept/--where/--tag`, `ls` and `concept define/ls/get/suggest/refine/rm`: the
arguments are parsed here, sent through the client to a real server on port 0 with the
real models, and what comes back is printed; bad input exits 2 (usage) or 1 (the server
refused, naming the field), never with a traceback.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skimage import data as skdata

from image2sdr.client import ConceptCondition, Filter, Image2SdrClient, cli
from image2sdr.server.serve import Server
from tests.helpers.images import encode_jpeg, half_size, mirrored
from tests.helpers.servers import start_server

TIMEOUT = "120"  # seconds per call: a definition encodes its examples on a busy machine
CONCEPT = "our cat"
STORED = {  # id -> (scikit-image photo, metadata)
    "cat": ("chelsea", {"source": "studio"}),
    "mug": ("coffee", {"source": "studio"}),
    "rocket": ("rocket", {"source": "archive"}),
    "astronaut": ("astronaut", {"source": "archive"}),
    "camera": ("camera", {"source": "upload, scanned"}),  # a value with a comma
}


def photo(name: str) -> bytes:
    pixels = getattr(skdata, name)()
    if pixels.ndim == 2:  # grayscale photos go as RGB, like any upload
        pixels = np.stack([pixels] * 3, axis=-1)
    return encode_jpeg(pixels)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("cli-concepts"), models_dir)
    with Image2SdrClient(server.address, timeout=float(TIMEOUT)) as client:
        for item_id, (name, metadata) in STORED.items():
            assert client.encode(photo(name), add_to_index=item_id, metadata=metadata).indexed
    yield server
    server.stop()


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Photo files to teach and test with: the cat three ways, other photos, and a crop of the cat."""
    folder = tmp_path_factory.mktemp("photos")
    chelsea = photo("chelsea")
    pixels = skdata.chelsea()
    files = {
        "cat.jpg": chelsea,
        "cat-small.jpg": half_size(chelsea),
        "cat-mirrored.jpg": mirrored(chelsea),
        "cat-crop.jpg": encode_jpeg(np.ascontiguousarray(pixels[pixels.shape[0] // 10 :, pixels.shape[1] // 5 :])),
        **{f"{name}.jpg": photo(name) for name in ("coffee", "rocket", "astronaut", "moon")},
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def run(server: Server, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command's exit code, stdout and stderr."""
    code = cli.main([*argv, "--server", server.address, "--timeout", TIMEOUT])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(server: Server, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(server, capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def define(server: Server, capsys: pytest.CaptureFixture[str], examples: dict[str, Path], name: str) -> Any:
    pos = [str(examples[n]) for n in ("cat.jpg", "cat-small.jpg")]
    neg = [str(examples[n]) for n in ("coffee.jpg", "rocket.jpg", "astronaut.jpg")]
    mirrored_cat = str(examples["cat-mirrored.jpg"])
    argv = ["concept", "define", name, "--pos", *pos, "--pos", mirrored_cat, "--pos-id", "cat", "--neg", *neg]
    return run_json(server, capsys, *argv, "--neg", str(examples["moon.jpg"]))


# -- arguments (no server) -----------------------------------------------------------------


def test_where_splits_at_the_first_equals_sign_and_a_key_again_adds_a_value() -> None:
    assert cli.parse_where("source=upload, scanned") == ("source", "upload, scanned")
    assert cli.parse_where("expr=a=b") == ("expr", "a=b")
    assert cli.parse_where("empty=") == ("empty", "")
    for bad in ("novalue", "=x"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.parse_where(bad)
    where = cli.filter_from_args([("a", "1"), ("b", "2"), ("a", "3"), ("a", "1")], [ConceptCondition("dog")])
    assert where == Filter({"a": ["1", "3"], "b": "2"}, [ConceptCondition("dog")])
    assert cli.filter_from_args([], []) is None


def test_tag_takes_a_minimum_confidence_after_the_last_colon() -> None:
    assert cli.parse_tag("dog") == ConceptCondition("dog", 0.0)
    assert cli.parse_tag("coffee mug:0.5") == ConceptCondition("coffee mug", 0.5)
    assert cli.parse_tag("shot: close-up") == ConceptCondition("shot: close-up", 0.0)
    assert cli.parse_tag("x:1") == ConceptCondition("x", 1.0)
    for bad in ("dog:1.5", "dog:-0.1", ":0.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.parse_tag(bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["similar", "--text", "cat", "--where", "novalue"],
        ["similar", "--text", "cat", "--tag", "dog:2"],
        ["ls", "--where", "=x"],
        ["ls", "-n", "0"],
        ["concept"],
        ["concept", "define"],
        ["concept", "get"],
        ["concept", "forget", "x"],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2


def test_inconsistent_choices_exit_2_before_any_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nowhere = ["--server", "127.0.0.1:1"]
    assert cli.main(["similar", "--text", "cat", "--concept", "x", *nowhere]) == 2
    assert "exactly one of IMG, --id ID, --text WORDS, --concept NAME" in capsys.readouterr().err
    assert cli.main(["similar", "--text", "cat", "--space", "visual", *nowhere]) == 2
    assert "--text searches --space semantic" in capsys.readouterr().err
    assert cli.main(["concept", "define", "x", "--pos", str(tmp_path / "missing.jpg"), *nowhere]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["concept", "define", "x", "--neg-id", "a", *nowhere]) == 2
    assert "--pos IMG" in capsys.readouterr().err


# -- end to end ------------------------------------------------------------------------------


def test_similar_by_words_explains_each_match(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(server, capsys, "similar", "--text", "cat, not rocket", "-k", "3")
    assert code == 0
    header, first, *_ = out.splitlines()
    assert header.split() == ["OVERLAP", "ID", "TERMS", "CONCEPTS"]
    assert first.split()[1] == "cat" and "cat " in first and "not rocket " in first
    matches = run_json(server, capsys, "similar", "--text", "cat", "-k", "3")
    assert matches[0]["id"] == "cat" and matches[0]["explanation"][0]["term"] == "cat"


def test_where_and_tag_filter_similar_and_ls(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    studio_or_scanned = ["--where", "source=studio", "--where", "source=upload, scanned"]
    found = run_json(server, capsys, "similar", "--text", "cat", *studio_or_scanned)
    assert {m["id"] for m in found} == {"cat", "mug", "camera"}
    nearest = run_json(server, capsys, "similar", "--id", "cat", "-k", "1", "--where", "source=archive")
    assert len(nearest) == 1 and nearest[0]["id"] in {"rocket", "astronaut"}

    listed = run_json(server, capsys, "ls")
    assert listed["total"] == len(STORED) and [item["id"] for item in listed["items"]] == list(STORED)[::-1]
    code, out, err = run(server, capsys, "ls", "--where", "source=archive", "--page-size", "1")
    assert code == 0 and [row.split()[0] for row in out.splitlines()[1:]] == ["astronaut", "rocket"]
    assert out.splitlines()[1].split()[1] == "source=archive"
    assert "2 of 2 items passing the filter" in err
    code, out, err = run(server, capsys, "ls", "-n", "1")
    assert code == 0 and len(out.splitlines()) == 2 and f"1 of {len(STORED)} items" in err

    tag = listed["items"][-1]["concepts"][0]  # the cat's strongest concept
    tagged = run_json(server, capsys, "ls", "--tag", f"{tag['name']}:0")
    assert "cat" in [item["id"] for item in tagged["items"]] and tagged["total"] == len(tagged["items"])
    stricter = run_json(server, capsys, "ls", "--tag", f"{tag['name']}:{min(1.0, tag['confidence'] + 0.01)}")
    assert "cat" not in [item["id"] for item in stricter["items"]]


def test_concept_define_ls_get_search_encode_and_rm(
    server: Server, capsys: pytest.CaptureFixture[str], examples: dict[str, Path]
) -> None:
    defined = define(server, capsys, examples, CONCEPT)
    assert defined["name"] == CONCEPT and (defined["positives"], defined["negatives"]) == (4, 4)
    assert defined["sdr"]["active"] and 0.0 <= defined["fit"]["f1"] <= 1.0

    code, out, _ = run(server, capsys, "concept", "ls")
    header, *rows = out.splitlines()
    assert code == 0 and header.split() == ["NAME", "POS", "NEG", "F1", "UPDATED"]
    assert [row.split()[:4] for row in rows] == [["our", "cat", "4", "4"]]
    assert run_json(server, capsys, "concept", "ls") == [defined]
    code, out, _ = run(server, capsys, "concept", "get", CONCEPT)
    assert code == 0 and "4 positive, 4 negative" in out and "leave-one-out" in out
    assert run_json(server, capsys, "concept", "get", CONCEPT) == defined
    # Refinement: the stored items it was least sure of, never the one given as an example.
    suggested = run_json(server, capsys, "concept", "suggest", CONCEPT)
    assert suggested == defined["suggestions"] and suggested
    assert "cat" not in {s["id"] for s in suggested}
    code, out, _ = run(server, capsys, "concept", "suggest", CONCEPT)
    assert code == 0 and out.splitlines()[0].split() == ["ID", "CONFIDENCE"] and "concept refine" in out
    code, out, _ = run(server, capsys, "info")
    assert code == 0 and out.splitlines()[-1].split() == ["custom", "concepts", "1"]

    matches = run_json(server, capsys, "similar", "--concept", CONCEPT, "-k", "3")
    assert matches[0]["id"] == "cat"
    code, out, _ = run(server, capsys, "similar", "--concept", CONCEPT, "--space", "blend", "-k", "1")
    assert code == 0 and out.splitlines()[1].split()[3] == "cat"

    crop = str(examples["cat-crop.jpg"])
    (plain,) = run_json(server, capsys, "encode", crop)
    (merged,) = run_json(server, capsys, "encode", crop, "--merge-custom-concepts")
    assert [c["used"] for c in plain["custom_concepts"] if c["name"] == CONCEPT] == [False]
    assert [c["used"] for c in merged["custom_concepts"] if c["name"] == CONCEPT] == [True]
    # The concept's bits are the cat's, so merging may leave the SDR as it was; never with fewer of them.
    concept_bits = set(defined["sdr"]["active"])
    assert len(concept_bits & set(merged["sdr"]["active"])) >= len(concept_bits & set(plain["sdr"]["active"]))
    code, out, _ = run(server, capsys, "encode", crop, "--merge-custom-concepts")
    assert code == 0 and f"custom: {CONCEPT} " in out and " merged" in out
    assert " more); custom:" in out  # the table shows the 10 strongest concepts; --json has them all

    # Refining: the stored example is kept by id; the images are not, so they are given again.
    assert defined["positive_ids"] == ["cat"] and defined["negative_ids"] == []
    yes, no = suggested[0]["id"], "mug"  # a few stored items: one suggestion; the mug is any stored item
    code, _, err = run(server, capsys, "concept", "refine", CONCEPT, "--yes", yes)
    assert code == 2 and "3 positive examples given as images" in err and "--pos" in err
    cats = [str(examples[n]) for n in ("cat.jpg", "cat-small.jpg", "cat-mirrored.jpg")]
    code, out, err = run(
        server, capsys, "concept", "refine", CONCEPT, "--yes", yes, "--no", no, "--pos", *cats, "--json"
    )
    refined = json.loads(out)
    assert code == 0 and "4 negatives were images or stand-ins" in err
    assert (refined["positives"], refined["negatives"]) == (5, 1)
    assert (refined["positive_ids"], refined["negative_ids"]) == (["cat", yes], [no])
    assert not {s["id"] for s in refined["suggestions"]} & {"cat", yes, no}

    code, out, _ = run(server, capsys, "concept", "rm", CONCEPT)
    assert code == 0 and CONCEPT in out
    assert run_json(server, capsys, "concept", "ls") == []
    code, _, err = run(server, capsys, "concept", "get", CONCEPT)
    assert code == 1 and "NotFound (NOT_FOUND)" in err and "Traceback" not in err


def test_the_server_refusing_exits_1_naming_the_field(
    server: Server, capsys: pytest.CaptureFixture[str], examples: dict[str, Path]
) -> None:
    code, _, err = run(server, capsys, "similar", "--concept", "never defined")
    assert code == 1 and "NotFound (NOT_FOUND)" in err
    code, _, err = run(server, capsys, "similar", "--text", "cat", "--where", "_id=x")
    assert code == 1 and "InvalidArgument (INVALID_ARGUMENT)" in err and "filter.metadata[0].key:" in err
    code, _, err = run(server, capsys, "ls", "--where", "_id=x")
    assert code == 1 and "filter.metadata[0].key:" in err
    code, _, err = run(server, capsys, "concept", "define", "few", "--pos", str(examples["cat.jpg"]))
    assert code == 1 and "  positives:" in err
    code, _, err = run(server, capsys, "concept", "define", "ghost", "--pos-id", "cat", "nothing", "mug")
    assert code == 1 and "NotFound (NOT_FOUND)" in err and "positives[1].id" in err
    code, _, err = run(server, capsys, "concept", "rm", "never defined")
    assert code == 1 and "NotFound" in err
    assert run_json(server, capsys, "concept", "ls") == []  # nothing was stored
