"""Files: the images of a folder to index, where SDR pictures go, an SDR read from JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .._types import (
    Sdr,
)
from ._base import UsageError


def index_candidates(directory: Path, *, recursive: bool) -> list[tuple[Path, str]]:
    """The files to index under ``directory`` and their ids (POSIX paths relative to it), sorted."""
    found = directory.rglob("*") if recursive else directory.iterdir()
    files = [path for path in found if path.is_file() and not _hidden(path.relative_to(directory))]
    return sorted((path, path.relative_to(directory).as_posix()) for path in files)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def png_paths(images: Sequence[Path], target: Path) -> list[Path]:
    """Where each image's SDR picture goes (see the ``encode`` help)."""
    if target.is_dir():
        seen: dict[str, int] = {}
        paths = []
        for image in images:
            seen[image.stem] = seen.get(image.stem, 0) + 1
            suffix = "" if seen[image.stem] == 1 else f"-{seen[image.stem]}"
            paths.append(target / f"{image.stem}{suffix}.png")
        return paths
    if len(images) == 1:
        return [target]
    suffix = target.suffix or ".png"
    return [target.with_name(f"{target.stem}-{i}{suffix}") for i in range(1, len(images) + 1)]


def sdr_from_json(document: Any) -> Sdr:
    """An SDR from {size, dimensions, active}, from {"sdr": {...}}, or from a list holding one."""
    if isinstance(document, list) and document:
        document = document[0]
    if isinstance(document, dict) and isinstance(document.get("sdr"), dict):
        document = document["sdr"]
    try:
        return Sdr(
            size=int(document["size"]),
            dimensions=tuple(int(d) for d in document.get("dimensions", ())),
            active=tuple(int(a) for a in document["active"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"not an SDR ({{size, dimensions, active}}): {exc}") from exc


def read_sdr_json(source: str) -> Sdr:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    try:
        return sdr_from_json(json.loads(text))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source} is not JSON: {exc}") from exc


def require_files(paths: Iterable[Path]) -> None:
    """Refuse (exit 2) before any call when an image named on the command line is not a file."""
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")


def require_directory(directory: Path) -> None:
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
