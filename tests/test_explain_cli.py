"""``client.explain`` and ``image2sdr explain``, end to end against a real server on port 0."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as skdata

from image2sdr.client import Explanation, Image2SdrClient, InvalidArgument, NotFound, cli
from image2sdr.server.api import Server
from tests.helpers.images import encode_jpeg
from tests.helpers.servers import start_server

TIMEOUT = "120"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("explain-cli"), models_dir)
    with Image2SdrClient(server.address, timeout=float(TIMEOUT)) as client:
        assert client.encode(encode_jpeg(skdata.chelsea()), add_to_index="cat").indexed
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cat_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "cat.jpg"
    path.write_bytes(encode_jpeg(skdata.chelsea()))
    return path


def run(server: Server, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main([*argv, "--server", server.address, "--timeout", TIMEOUT])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_client_returns_a_typed_explanation(server: Server, cat_file: Path) -> None:
    with Image2SdrClient(server.address, timeout=float(TIMEOUT)) as client:
        found = client.explain(cat_file, like="cat", space="visual", patch=150, stride=75)
    assert isinstance(found, Explanation)
    assert found.target == "cat"
    assert len(found.heat) == found.rows * found.columns
    assert len(found.grid()) == found.rows
    row, column = found.hottest()
    assert found.cell(row, column) == max(found.heat)
    assert found.png.startswith(b"\x89PNG")
    with pytest.raises(IndexError):
        found.cell(found.rows, 0)


def test_the_client_raises_typed_errors(server: Server, cat_file: Path) -> None:
    with Image2SdrClient(server.address, timeout=float(TIMEOUT)) as client:
        with pytest.raises(InvalidArgument) as refused:
            client.explain(cat_file, concept="rocket")
        assert refused.value.field_violations[0].field == "concept"
        with pytest.raises(NotFound):
            client.explain(cat_file, like="no such item")
        with pytest.raises(ValueError, match="exactly one"):
            client.explain(cat_file, concept="cat", like="cat")


def test_explain_prints_the_grid_and_writes_the_png(
    server: Server, capsys: pytest.CaptureFixture[str], cat_file: Path, tmp_path: Path
) -> None:
    png = tmp_path / "heat.png"
    code, out, err = run(server, capsys, "explain", str(cat_file), "--concept", "cat", "--png", str(png))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("cat: score ")
    assert "hottest cell" in lines[0]
    assert len(lines) == 1 + 8  # 8 rows of 12 cells for the 451 x 300 photo
    assert all(len(line.split()) == 12 for line in lines[1:])
    with Image.open(io.BytesIO(png.read_bytes())) as image:
        assert image.size == (451, 300)


def test_explain_json_and_like(server: Server, capsys: pytest.CaptureFixture[str], cat_file: Path) -> None:
    code, out, err = run(
        server, capsys, "explain", str(cat_file), "--like", "cat", "--patch", "150", "--stride", "75", "--json"
    )
    assert code == 0, err
    found = json.loads(out)
    assert found["target"] == "cat"
    assert (found["patch"], found["stride"]) == (150, 75)
    assert len(found["heat"]) == found["rows"]
    assert "png" not in found


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--concept", "rocket"], 1),  # the server refuses, naming the field
        (["--custom", "never defined"], 1),
        (["--concept", "cat", "--patch", "1000"], 1),
        (["--concept", "cat", "--space", "visual"], 2),  # usage: --space goes with --like
    ],
)
def test_bad_input_exits_without_a_traceback(
    server: Server, capsys: pytest.CaptureFixture[str], cat_file: Path, argv: list[str], code: int
) -> None:
    exit_code, _, err = run(server, capsys, "explain", str(cat_file), *argv)
    assert exit_code == code
    assert "Traceback" not in err


def test_a_target_is_required(capsys: pytest.CaptureFixture[str], cat_file: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["explain", str(cat_file)])
    assert exited.value.code == 2
