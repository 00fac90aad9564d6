"""examples/htm_anomaly end to end on a short clip (real video, server and brainblocks): spliced frames score higher."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from image2sdr.client import HtmSdr
from image2sdr.server.serve import Server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "htm_anomaly" / "htm_anomaly.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("htm_anomaly", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_spliced_frames_score_higher_than_the_learned_ones(
    example: ModuleType, service: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, figures = tmp_path / "anomaly.png", tmp_path / "anomaly.json"
    argv = ["--address", service.address, "--frames", "30", "--splice", "6", "--passes", "2"]
    summary = example.main([*argv, "--png", str(png), "--json", str(figures)])

    anomaly = summary["anomaly"]
    assert anomaly["spliced_mean"] > anomaly["learned_mean"]
    assert anomaly["spliced_max"] > anomaly["learned_max"]
    written = json.loads(figures.read_text())
    scores, (start, end) = written["scores"], written["spliced"]
    assert len(scores) == summary["steps"] == 30 * 3 + 6 and end - start == 6
    assert all(0.0 <= score <= 1.0 + 1e-9 for score in scores)  # brainblocks sums in floats: 1.0000000000000007
    assert summary["frames"] == {"vtest.avi": 30, "Megamind.avi": 6, "passes": 2}
    assert sum(summary["share"].values()) == pytest.approx(1.0) and summary["fps"] > 0
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1200, 384)
    printed = capsys.readouterr().out
    assert "frames/s" in printed and "spliced frames mean" in printed


def test_the_model_refuses_an_sdr_of_another_size(example: ModuleType) -> None:
    model = example.HtmModel(16384)
    with pytest.raises(ValueError, match="takes 16384-bit SDRs, got 4096 bits"):
        model.step(HtmSdr([64, 64], sparse=[1, 2, 3]))
    assert 0.0 <= model.step(HtmSdr([128, 128], sparse=[1, 2, 3])) <= 1.0
    with pytest.raises(ValueError, match="outside an SDR of 16384 bits"):  # brainblocks would take it silently
        HtmSdr([128, 128], sparse=[16384])
