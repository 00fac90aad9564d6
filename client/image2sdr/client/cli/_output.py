"""Printing: tidy JSON, left-aligned tables, a server error in a few lines."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .._exceptions import Image2SdrError
from .._types import (
    Sdr,
)

SHOWN_CONCEPTS = 10  # a photo has ~50 concepts, most of them faint: a table shows the strongest, --json all


def concept_list(names: Sequence[str]) -> str:
    """The first ``SHOWN_CONCEPTS`` of ``names`` (strongest first), and how many more there are."""
    shown = ", ".join(names[:SHOWN_CONCEPTS])
    return f"{shown} (+{len(names) - SHOWN_CONCEPTS} more)" if len(names) > SHOWN_CONCEPTS else shown


def describe_error(exc: Image2SdrError) -> str:
    """One line for the error, then one per field or quota violation."""
    lines = [f"{type(exc).__name__} ({exc.code.name}): {exc.message}"]
    lines += [f"  {v.field}: {v.description}" for v in exc.field_violations]
    lines += [f"  {v.subject}: {v.description}" for v in exc.quota_violations]
    if exc.retry_delay is not None:
        lines.append(f"  retry in {exc.retry_delay:g} s")
    return "\n".join(lines)


def jsonable(value: Any) -> Any:
    """Dataclasses, tuples and float32 noise made into tidy JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value


def print_json(value: Any, out: TextIO | None = None) -> None:
    json.dump(jsonable(value), out or sys.stdout, indent=2)
    print(file=out or sys.stdout)


def print_table(header: list[str], rows: list[list[str]], out: TextIO | None = None) -> None:
    """Left-aligned columns; the last one is left unpadded."""
    table = [header, *rows] if any(header) else rows
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + row[len(widths) :]
        print("  ".join(cells).rstrip(), file=out or sys.stdout)


def bits_of(sdr: Sdr) -> str:
    return f"{len(sdr.active)}/{sdr.size}"
