"""Argument types, and the option groups several commands share (--where/--tag, --json/--png/--scale)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from .._query import ConceptCondition, Filter

# --tag NAME:MIN: the part after the last colon is a confidence only when it reads as a number,
# so a concept name may hold colons ("shot: close-up" stays a name).
_TAG_CONFIDENCE = re.compile(r"(?P<name>.*):(?P<min>[+-]?(?:\d+\.?\d*|\.\d+))")


def add_filter(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filter (every condition must hold)")
    group.add_argument(
        "--where",
        action="append",
        default=[],
        type=parse_where,
        metavar="KEY=VALUE",
        help="metadata KEY is VALUE (split at the first '='; VALUE may hold commas); repeat a KEY to accept "
        "any of its values, other keys must all match",
    )
    group.add_argument(
        "--tag",
        action="append",
        default=[],
        type=parse_tag,
        metavar="NAME[:MIN]",
        help="a stored concept the item has, with confidence at least MIN (default 0): --tag dog:0.5",
    )


def add_output(parser: argparse.ArgumentParser) -> None:
    add_json(parser)
    parser.add_argument("--png", type=Path, metavar="FILE", help="draw the SDR as a PNG picture")
    parser.add_argument("--scale", type=positive_int, default=4, metavar="N", help="pixels per bit (default 4)")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def phash_bits(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be in [0, 64], got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def parse_where(text: str) -> tuple[str, str]:
    """--where KEY=VALUE: split at the first '=', so VALUE may hold '=' and commas."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"give KEY=VALUE, got {text!r}")
    return key, value


def parse_tag(text: str) -> ConceptCondition:
    """--tag NAME or NAME:MIN, MIN a confidence in [0, 1]."""
    found = _TAG_CONFIDENCE.fullmatch(text)
    name, min_confidence = (found["name"], float(found["min"])) if found else (text, 0.0)
    if not name.strip():
        raise argparse.ArgumentTypeError(f"give NAME or NAME:MIN, got {text!r}")
    if not 0.0 <= min_confidence <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: MIN must be in [0, 1]")
    return ConceptCondition(name, min_confidence)


def filter_from_args(where: Sequence[tuple[str, str]], tags: Sequence[ConceptCondition]) -> Filter | None:
    """--where and --tag as a Filter: a key given again adds a value it may have; None when neither is given."""
    values: dict[str, list[str]] = {}
    for key, value in where:
        if value not in values.setdefault(key, []):
            values[key].append(value)
    if not values and not tags:
        return None
    return Filter(values, tags)


def add_json(parser: argparse.ArgumentParser, text: str = "machine-readable output") -> None:
    parser.add_argument("--json", action="store_true", help=text)
