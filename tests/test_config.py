"""The typed config: defaults, YAML loading, environment overrides, and the example file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from image2sdr.server.config import Config, load_config
from image2sdr.server.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config_example.yml"


def _as_plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return {name: _as_plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, tuple | list):
        return [_as_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _key_paths(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return {prefix}
    paths = set()
    for key, value in tree.items():
        paths |= _key_paths(value, f"{prefix}.{key}" if prefix else key)
    return paths


def test_example_mirrors_the_config_field_for_field() -> None:
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    defaults = _as_plain(Config())
    assert _key_paths(example) == _key_paths(defaults)
    assert example == defaults  # same values: the example documents the defaults


def test_every_example_field_has_a_comment() -> None:
    for number, line in enumerate(EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        key, _, value = stripped.partition(":")
        if value.strip():  # a leaf, not a section header
            previous = EXAMPLE.read_text(encoding="utf-8").splitlines()[number - 2].strip()
            assert "#" in value or previous.startswith("#"), f"line {number}: {key} has no comment"


def test_example_loads(tmp_path: Path) -> None:
    assert load_config(EXAMPLE) == Config()


def test_environment_overrides_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE2SDR_DATA_DIR", str(tmp_path / "elsewhere"))
    assert load_config(EXAMPLE).data_dir == tmp_path / "elsewhere"


@pytest.mark.parametrize(
    "text",
    [
        "sdr: {size: 1000}\n",  # dimensions no longer match
        "sdr: {sparsity: 0.9}\n",
        "concepts: {max_concepts: 0}\n",
        "concepts: {provider: nonsense}\n",
        "image: {max_pixles: 5}\n",  # a typo must not be silently ignored
        "- just a list\n",
        "sdr: [\n",
        "index: {ivf_nlist: 64, ivf_nprobe: 128}\n",  # more lists probed than exist
        "index: {ivf_nlist: 8192, ivf_train_sample: 4096}\n",  # fewer samples than lists
    ],
)
def test_bad_config_is_refused_clearly(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config(path)


@pytest.mark.parametrize(
    "text",
    [
        "sdr: {visual_share: 1.5}\n",
        "sdr: {visual_share: -0.1}\n",
        "sdr: {visual_share: .nan}\n",
        "sdr: {visual_share: 0.3}\nvisual: {enabled: false}\n",  # a share of a channel that is off
    ],
)
def test_a_bad_visual_share_names_the_field(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="visual_share"):
        load_config(path)


def test_visual_share_and_the_visual_section(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("sdr: {visual_share: 0.25}\nvisual: {seed: 7}\n")
    config = load_config(path)
    assert config.sdr.visual_share == 0.25 and config.visual.enabled and config.visual.seed == 7
    assert Config().sdr.visual_share == 0.0  # the default keeps the semantic SDR as it was


def test_small_ivf_keeps_the_default_wide_breadth(tmp_path: Path) -> None:
    """ivf_nprobe_wide is capped at the lists there are, so a small nlist needs no other change."""
    path = tmp_path / "config.yml"
    path.write_text("index: {kind: ivf, ivf_nlist: 64, ivf_nprobe: 16}\n")
    assert load_config(path).index.ivf_nprobe_wide == 256


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yml")
