"""``image2sdr explain`` and ``image2sdr map`` (cli/_pictures.py) and the client calls under them
(``explain``, ``create_map``/``get_map``/``make_map``), end to end against one real server on port 0."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as skdata

from image2sdr.client import Explanation, Filter, Image2SdrClient, InvalidArgument, MapJob, NotFound, cli
from image2sdr.server.serve import Server
from tests.helpers.images import encode_jpeg
from tests.helpers.servers import start_server

TIMEOUT = "120"
PHOTOS = {"cat": skdata.chelsea, "mug": skdata.coffee, "rocket": skdata.rocket, "astronaut": skdata.astronaut}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("pictures"), models_dir)
    with Image2SdrClient(server.address, timeout=float(TIMEOUT)) as client:
        for item_id, pixels in PHOTOS.items():
            source = "studio" if item_id in ("cat", "mug") else "archive"
            assert client.encode(encode_jpeg(pixels()), add_to_index=item_id, metadata={"source": source}).indexed
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


def test_the_client_makes_a_map_and_reports_progress(server: Server) -> None:
    seen: list[MapJob] = []
    with Image2SdrClient(server.address, timeout=float(TIMEOUT)) as client:
        job = client.make_map(where=Filter({"source": ["studio"]}), cell_pixels=32, progress=seen.append, poll_s=0.05)
        assert job.state == "done" and job.finished and job.error is None
        assert sorted(cell.id for cell in job.cells) == ["cat", "mug"]
        assert all(cell.thumbnail for cell in job.cells)
        assert (job.columns, job.rows, job.cell_pixels) == (2, 2, 32)
        with Image.open(io.BytesIO(job.png)) as picture:
            assert picture.size == (64, 64)
        assert seen[-1].state == "done" and seen[0].state in ("queued", "running", "done")
        assert client.get_map(job.id).cells == job.cells
        assert client.info().limits.max_map_items == 4096


def test_the_map_client_raises_typed_errors(server: Server) -> None:
    with Image2SdrClient(server.address, timeout=float(TIMEOUT)) as client:
        with pytest.raises(InvalidArgument) as small:
            client.create_map(columns=1, rows=1)
        assert small.value.field_violations[0].field == "columns"
        with pytest.raises(NotFound):
            client.get_map("no-such-job")
        with pytest.raises(NotFound):
            client.create_map(ids=["cat", "nobody"])
        with pytest.raises(ValueError, match="at most one"):
            client.create_map(ids=["cat"], concept="x")
        with pytest.raises(TypeError):
            client.create_map(ids="cat")


def test_the_cli_writes_the_png_and_prints_cells(
    server: Server, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    png = tmp_path / "grid.png"
    code, out, err = run(server, capsys, "map", "--png", str(png), "--space", "visual", "--filter", "source=archive")
    assert code == 0, err
    assert "rocket" in out and "astronaut" in out and "cat" not in out
    assert "2 items on a 2 x 2 grid" in err
    with Image.open(png) as picture:
        assert picture.format == "PNG"
    code, out, err = run(server, capsys, "map", "--json", "--ids", "cat", "rocket", "--cell", "16")
    assert code == 0, err
    found = json.loads(out)
    assert [cell["id"] for cell in found["cells"]] == ["cat", "rocket"] and found["cell_pixels"] == 16
    assert found["state"] == "done" and "png" not in found


def test_the_cli_refuses_bad_choices(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(server, capsys, "map", "--ids", "cat", "--filter", "source=studio")
    assert code == 2 and "one way" in err
    code, _, err = run(server, capsys, "map", "--filter", "source=nowhere")
    assert code == 1 and "filter" in err


# -- explain ---------------------------------------------------------------------------------


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


def test_the_explain_client_raises_typed_errors(server: Server, cat_file: Path) -> None:
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
