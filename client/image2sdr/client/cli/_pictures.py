"""``explain`` and ``map``: an occlusion heatmap of an image, and a map of stored items (PNG)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._types import (
    MapJob,
)
from ._args import add_json, filter_from_args, parse_tag, parse_where, positive_int
from ._base import EXIT_OK, UsageError, import_tqdm
from ._connection import connect
from ._files import require_files
from ._output import jsonable, print_json, print_table


def add_explain(commands: Any, connection: argparse.ArgumentParser) -> None:
    explain = commands.add_parser(
        "explain",
        parents=[connection],
        help="which parts of an image give it a concept, or a match (occlusion heatmap)",
        description="Slides a grey square over the image and asks the server how much the target's score "
        "falls with each part hidden.  The target: --concept (one the image has, as `encode` names it), "
        "--custom (a custom concept) or --like ID (a stored item: the overlap of the two SDRs, in --space).  "
        "Prints the heat grid (rows of cells, one per stride); --png writes the heatmap over the image.",
    )
    explain.add_argument("image", type=Path, metavar="IMG")
    target = explain.add_mutually_exclusive_group(required=True)
    target.add_argument("--concept", metavar="NAME", help="a concept the image has")
    target.add_argument("--custom", metavar="NAME", help="a custom concept")
    target.add_argument("--like", metavar="ID", help="a stored item to compare with")
    explain.add_argument("--space", choices=["semantic", "visual"], default="semantic", help="--like: which SDRs")
    explain.add_argument("--patch", type=positive_int, metavar="PX", help="patch side in pixels (server default)")
    explain.add_argument("--stride", type=positive_int, metavar="PX", help="step in pixels (server default)")
    explain.add_argument("--png", type=Path, metavar="FILE", help="write the heatmap over the image as a PNG")
    add_json(explain)
    explain.set_defaults(run=_run_explain)


def add_map(commands: Any, connection: argparse.ArgumentParser) -> None:
    drawing = commands.add_parser(
        "map",
        parents=[connection],
        help="lay stored items out on a grid by similarity and draw it (PNG)",
        description="Asks the server for a map of stored items: their SDRs embedded in two dimensions by "
        "overlap (t-SNE) and snapped to a grid, each cell drawn with the item's thumbnail (or its SDR when it "
        "has none).  The items: all (the default), --ids, those passing --filter/--tag, or those a custom "
        "concept finds (--concept).  Waits for the job with a progress bar; prints each item's cell.",
    )
    drawing.add_argument("--png", type=Path, metavar="FILE", help="write the map as a PNG")
    drawing.add_argument("--space", choices=["semantic", "visual"], default="semantic", help="which SDRs")
    chosen = drawing.add_argument_group("items (default: every stored item)")
    chosen.add_argument("--ids", nargs="+", metavar="ID", help="these stored items")
    chosen.add_argument("--concept", metavar="NAME", help="the items a custom concept finds present")
    chosen.add_argument(
        "--filter",
        "--where",
        dest="where",
        action="append",
        default=[],
        type=parse_where,
        metavar="KEY=VALUE",
        help="metadata KEY is VALUE (repeat a KEY for any of its values; other keys must all match)",
    )
    chosen.add_argument(
        "--tag", action="append", default=[], type=parse_tag, metavar="NAME[:MIN]", help="a stored concept"
    )
    drawing.add_argument("--columns", type=positive_int, default=0, metavar="N", help="grid columns (a square)")
    drawing.add_argument("--rows", type=positive_int, default=0, metavar="N", help="grid rows (a square)")
    drawing.add_argument("--cell", type=positive_int, default=0, metavar="PX", help="cell side in the PNG")
    add_json(drawing)
    drawing.set_defaults(run=_run_map)


def _run_explain(args: argparse.Namespace) -> int:
    require_files([args.image])
    if args.space != "semantic" and args.like is None:
        raise UsageError("--space goes with --like")
    with connect(args) as client:
        found = client.explain(
            args.image,
            concept=args.concept,
            custom_concept=args.custom,
            like=args.like,
            space=args.space,
            patch=args.patch,
            stride=args.stride,
        )
    if args.png is not None:
        args.png.write_bytes(found.png)
    if args.json:
        plain = {key: value for key, value in jsonable(found).items() if key not in ("png", "heat")}
        print_json({**plain, "heat": jsonable(found.grid())})
        return EXIT_OK
    row, column = found.hottest()
    print(
        f"{found.target}: score {found.score:.4g}; {found.variants} occluded images, patch {found.patch} px, "
        f"stride {found.stride} px; hottest cell: row {row}, column {column} ({found.cell(row, column):+.4g})"
    )
    for cells in found.grid():
        print(" ".join(f"{heat:+.3f}" for heat in cells))
    return EXIT_OK


def _run_map(args: argparse.Namespace) -> int:
    where = filter_from_args(args.where, args.tag)
    given = [
        name for name, value in (("--ids", args.ids), ("--filter/--tag", where), ("--concept", args.concept)) if value
    ]
    if len(given) > 1:
        raise UsageError(f"choose the items one way: {' or '.join(given)}")
    tqdm = import_tqdm()
    with connect(args) as client, tqdm(total=100, unit="%", disable=None, file=sys.stderr) as bar:

        def report(job: MapJob) -> None:
            bar.set_description(job.stage)
            bar.update(round(job.progress * 100) - bar.n)

        job = client.make_map(
            ids=args.ids,
            where=where,
            concept=args.concept,
            space=args.space,
            columns=args.columns,
            rows=args.rows,
            cell_pixels=args.cell,
            progress=report,
        )
    if args.png is not None:
        args.png.write_bytes(job.png)
    if args.json:
        plain = {key: value for key, value in jsonable(job).items() if key not in ("png", "error")}
        print_json(plain)
        return EXIT_OK
    print_table(
        ["ID", "COLUMN", "ROW", "DRAWN"],
        [[c.id, str(c.column), str(c.row), "thumbnail" if c.thumbnail else "sdr"] for c in job.cells],
    )
    skipped = f"; {job.skipped_without_visual} without a visual SDR left out" if job.skipped_without_visual else ""
    print(
        f"{job.items} items on a {job.columns} x {job.rows} grid in {job.elapsed_ms / 1000:.1f} s; "
        f"{job.neighbourhood_kept:.0%} of nearest neighbours within 2 cells{skipped}",
        file=sys.stderr,
    )
    return EXIT_OK
