"""The ``image2sdr`` command against the fake servicer (no models): arguments, output, exit codes."""

from __future__ import annotations

import json
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest
from PIL import Image

from image2sdr.client import cli
from image2sdr.v1 import image2sdr_pb2 as pb
from tests.helpers.fake_service import ACTIVE_BITS, DIMS, MAX_IDS_PER_CALL, SIZE, FakeServicer

# -- the CLI -------------------------------------------------------------------------


def test_parser_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE2SDR_SERVER", "sdr.example:443")
    monkeypatch.setenv("IMAGE2SDR_TOKEN", "t0k")
    args = cli.build_parser().parse_args(["similar", "--id", "a.jpg", "-k", "3", "--tls"])
    assert (args.server, args.token, args.k, args.id, args.tls) == ("sdr.example:443", "t0k", 3, "a.jpg", True)
    monkeypatch.delenv("IMAGE2SDR_SERVER")
    assert cli.build_parser().parse_args(["text", "cat"]).server == cli.DEFAULT_SERVER


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["encode"],
        ["similar", "-k", "0", "--id", "x"],
        ["terms", "--timeout", "-1", "--text", "x"],
        ["bogus"],
        ["similar", "--id", "x", "--space", "look"],
        ["similar", "--id", "x", "--space", "blend", "--blend-weight", "1.5"],
        ["dupes", "d", "--max-phash-distance", "65"],
        ["dupes", "d", "--min-visual-share", "-0.1"],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2


def test_inconsistent_choices_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["similar", "--server", "127.0.0.1:1"]) == 2
    assert cli.main(["terms", "--text", "cat", "--sdr-json", "x.json", "--server", "127.0.0.1:1"]) == 2
    assert cli.main(["encode", str(tmp_path / "missing.jpg"), "--server", "127.0.0.1:1"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["similar", "--id", "x", "--blend-weight", "0.3", "--server", "127.0.0.1:1"]) == 2
    assert "--space blend" in capsys.readouterr().err
    assert cli.main(["dupes", str(tmp_path / "missing"), "--server", "127.0.0.1:1"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert cli.main(["dupes", "--server", "127.0.0.1:1"]) == 2
    assert "--index for the whole index" in capsys.readouterr().err
    assert cli.main(["dupes", "--index", "-r", "--server", "127.0.0.1:1"]) == 2
    assert "--recursive goes with DIR" in capsys.readouterr().err


def test_serve_without_the_server_distribution(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "image2sdr.server.serve", None)  # makes the import fail
    assert cli.main(["serve", "--port", "0"]) == 2
    assert "server is not installed" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "image2sdr.server.serve", types.ModuleType("image2sdr.server.serve"))
    assert cli.main(["serve"]) == 2
    assert "cannot be loaded" in capsys.readouterr().err


def test_cli_encode_json_and_png(
    fake: tuple[FakeServicer, str], tiny_png: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = fake
    images = [tmp_path / "a.png", tmp_path / "b.png"]
    for image in images:
        image.write_bytes(tiny_png)
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["encode", *map(str, images), "--server", address, "--json", "--png", str(out)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == list(map(str, images))
    assert len(results[0]["sdr"]["active"]) == ACTIVE_BITS and results[0]["concepts"][0]["confidence"] == 0.75
    with Image.open(out / "a.png") as picture:
        assert picture.size == (512, 512)


def test_cli_server_error_exits_1_with_the_message(
    fake: tuple[FakeServicer, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = fake
    assert cli.main(["similar", "--id", "nope", "--server", address]) == 1
    err = capsys.readouterr().err
    assert "NotFound (NOT_FOUND): no such item" in err and "Traceback" not in err


def test_cli_index_resumes_and_skips_non_images(
    fake: tuple[FakeServicer, str], tiny_png: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = fake
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.png").write_bytes(tiny_png)
    (folder / "sub" / "two.png").write_bytes(tiny_png + b"2")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(tiny_png)
    assert cli.main(["index", str(folder), "--recursive", "--json", "--server", address]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first == {"indexed": 2, "already_indexed": 0, "duplicates": 0, "skipped": 1, "failed": 0}
    assert sorted(servicer.items) == ["one.png", "sub/two.png"]
    assert cli.main(["index", str(folder), "-r", "--json", "--server", address]) == 0
    assert json.loads(capsys.readouterr().out)["already_indexed"] == 2
    assert cli.main(["similar", "--id", "one.png", "--server", address, "--json"]) == 0
    assert [m["id"] for m in json.loads(capsys.readouterr().out)] == ["sub/two.png"]


def test_cli_index_asks_which_files_are_stored_once_per_batch_of_ids(
    fake: tuple[FakeServicer, str], tiny_png: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = fake
    folder = tmp_path / "many"
    folder.mkdir()
    names = [f"{i:04}.png" for i in range(2 * MAX_IDS_PER_CALL + 1)]
    for name in names:
        (folder / name).write_bytes(tiny_png)
    for name in names[:-2]:  # stored by an earlier run
        servicer.items[name] = pb.Item(id=name)
    assert cli.main(["index", str(folder), "--json", "--server", address]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "indexed": 2,
        "already_indexed": len(names) - 2,
        "duplicates": 0,
        "skipped": 0,
        "failed": 0,
    }
    assert servicer.calls["ItemsExist"] == 3  # 2001 ids: three batches, not one call per file
    assert servicer.calls["GetItem"] == 0
    assert servicer.calls["EncodeStream"] == 1


def test_cli_index_skip_duplicates_names_the_stored_copy(
    fake: tuple[FakeServicer, str], tiny_png: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = fake
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(tiny_png)
    (folder / "b.png").write_bytes(tiny_png)  # the same bytes again
    (folder / "c.png").write_bytes(tiny_png + b"c")
    assert cli.main(["index", str(folder), "--skip-duplicates", "--json", "--server", address]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"indexed": 2, "already_indexed": 0, "duplicates": 1, "skipped": 0, "failed": 0}
    assert sorted(servicer.items) == ["a.png", "c.png"]
    assert "duplicate: b.png: same_bytes copy of a.png" in captured.err
    # Without the flag, a copy is stored like any other image.
    assert cli.main(["index", str(folder), "--json", "--server", address]) == 0
    assert json.loads(capsys.readouterr().out)["indexed"] == 1 and "b.png" in servicer.items


def test_cli_similar_sends_the_space_and_shows_both_overlaps(
    fake: tuple[FakeServicer, str], tiny_png: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = fake
    for name in ("a", "b", "c"):
        servicer.store(tiny_png + name.encode(), name)
    argv = ["similar", "--id", "a", "--space", "blend", "--blend-weight", "0.25", "--server", address]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    request = servicer.searches[-1]
    assert request.space == pb.SPACE_BLEND and request.blend_weight == 0.25
    header, *rows = captured.out.splitlines()
    assert header.split() == ["SCORE", "SEMANTIC", "VISUAL", "ID", "CONCEPTS"]
    assert sorted(row.split()[3] for row in rows) == ["b", "c"]
    assert "1 stored items have no visual SDR" in captured.err
    assert cli.main(["similar", "--id", "a", "--space", "visual", "--json", "--server", address]) == 0
    matches = json.loads(capsys.readouterr().out)
    assert servicer.searches[-1].space == pb.SPACE_VISUAL and not servicer.searches[-1].HasField("blend_weight")
    assert all(m["visual_overlap"] == m["overlap"] and m["semantic_overlap"] is None for m in matches)


def test_cli_dupes_groups_the_copies_in_a_folder_and_in_the_index(
    fake: tuple[FakeServicer, str], tiny_png: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = fake
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in (("a.png", tiny_png), ("b.png", tiny_png + b"b"), ("c.png", tiny_png), ("d.txt", b"no")):
        (folder / name).write_bytes(data)
    assert cli.main(["dupes", str(folder), "--json", "--server", address]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [group["members"] for group in found["groups"]] == [["a.png", "c.png"]]
    assert found["groups"][0]["links"][0]["kind"] == "same_bytes"
    assert list(found["not_compared"]) == ["d.txt"]
    assert not servicer.items  # nothing stored
    assert cli.main(["dupes", str(folder), "--server", address]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["GROUP", "ITEM", "KIND", "STAGE", "PHASH", "VISUAL", "COPY", "OF"]
    assert rows[1].split() == ["1", "c.png", "same_bytes", "file_hash", "0", "1.00", "a.png"]
    # --index: the stored items of the folder, each asked for its copies in the whole index.
    servicer.store(tiny_png, "elsewhere/a.png")
    servicer.store(tiny_png, "a.png")
    assert cli.main(["dupes", "--index", str(folder), "--json", "--server", address]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [group["members"] for group in found["groups"]] == [["a.png", "elsewhere/a.png"]]
    assert found["not_compared"] == {name: "not in the index" for name in ("b.png", "c.png", "d.txt")}
    assert servicer.calls["FindDuplicates"] == 1


def test_cli_dupes_index_alone_groups_everything_stored_page_by_page(
    fake: tuple[FakeServicer, str], tiny_png: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = fake
    servicer.default_page_size = 2  # five items: three ListItems pages
    servicer.store(tiny_png, "a.png")
    servicer.store(tiny_png + b"b", "b.png")
    by_sdr = pb.Sdr(size=SIZE, dimensions=DIMS, active=[1, 2, 3])
    servicer.items["by-sdr"] = pb.Item(id="by-sdr", sdr=by_sdr)  # stored without an image: nothing to compare
    servicer.store(tiny_png, "elsewhere/a.png")
    servicer.store(tiny_png, "c.png")
    assert cli.main(["dupes", "--index", "--json", "--server", address]) == 0
    found = json.loads(capsys.readouterr().out)
    (group,) = found["groups"]
    assert group["members"] == ["a.png", "elsewhere/a.png", "c.png"]  # oldest first
    pairs = [frozenset((link["original"], link["copy"])) for link in group["links"]]
    assert len(pairs) == len(set(pairs)) == 3  # each pair once, though both sides found it
    assert list(found["not_compared"]) == ["by-sdr"]
    assert servicer.calls["ListItems"] == 3 and servicer.calls["FindDuplicates"] == 4
    assert cli.main(["dupes", "--index", "--server", address]) == 0
    captured = capsys.readouterr()
    header, *rows = captured.out.splitlines()
    assert header.split()[:3] == ["GROUP", "ITEM", "KIND"]
    assert [row.split()[1:3] for row in rows] == [
        ["a.png", "-"],
        ["elsewhere/a.png", "same_bytes"],
        ["c.png", "same_bytes"],
    ]
    assert "1 groups, 3 images in them, of 4 compared" in captured.err
    assert "not compared: by-sdr: stored without an image" in captured.err


def test_cli_terms_from_sdr_json(
    fake: tuple[FakeServicer, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = fake
    source = tmp_path / "sdr.json"
    source.write_text(json.dumps([{"image": "x", "sdr": {"size": 64, "dimensions": [8, 8], "active": [1, 2, 3]}}]))
    assert cli.main(["terms", "--sdr-json", str(source), "--server", address]) == 0
    assert capsys.readouterr().out.split() == ["OVERLAP", "TERM", "3", "thing"]


def test_sdr_from_json_accepts_the_documented_shapes() -> None:
    plain = {"size": 8, "dimensions": [2, 4], "active": [1]}
    assert cli.sdr_from_json(plain) == cli.sdr_from_json({"sdr": plain}) == cli.sdr_from_json([{"sdr": plain}])
    with pytest.raises(cli.UsageError):
        cli.sdr_from_json({"active": [1]})


def test_png_paths_number_files_or_fill_a_directory(tmp_path: Path) -> None:
    images = [Path("x/cat.jpg"), Path("y/cat.jpg"), Path("dog.png")]
    assert cli.png_paths(images[:1], tmp_path / "sdr.png") == [tmp_path / "sdr.png"]
    assert cli.png_paths(images, tmp_path / "sdr.png") == [tmp_path / f"sdr-{i}.png" for i in (1, 2, 3)]
    assert cli.png_paths(images, tmp_path) == [tmp_path / "cat.png", tmp_path / "cat-2.png", tmp_path / "dog.png"]


def test_the_package_exports_what_it_names_and_the_console_script_resolves() -> None:
    assert all(getattr(cli, name, None) is not None for name in cli.__all__)
    assert sorted(cli.__all__) == cli.__all__  # kept sorted, so a new name is seen
    (script,) = (e for e in metadata.entry_points(group="console_scripts") if e.name == "image2sdr")
    assert script.value == "image2sdr.client.cli:main" and script.load() is cli.main
