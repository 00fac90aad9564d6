"""What every command shares: the default server, exit codes, the usage error, the optional extras."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEFAULT_SERVER = "localhost:50051"
EXIT_OK, EXIT_SERVER, EXIT_USAGE = 0, 1, 2
CLI_EXTRA = "pip install 'image2sdr-client[cli]'"


class UsageError(Exception):
    """Arguments that parse but cannot be acted on; exit code 2."""


def import_draw() -> Callable[..., None]:
    try:
        from .._draw import save_png  # noqa: PLC0415 - Pillow is the optional `cli` extra
    except ImportError as exc:
        raise UsageError(f"--png needs Pillow: {CLI_EXTRA}") from exc
    return save_png


def import_tqdm() -> Any:
    try:
        from tqdm import tqdm  # noqa: PLC0415 - the optional `cli` extra
    except ImportError as exc:
        raise UsageError(f"index needs tqdm: {CLI_EXTRA}") from exc
    return tqdm
