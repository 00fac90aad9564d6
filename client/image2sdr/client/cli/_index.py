"""``index`` and ``dupes``: a folder streamed into the index, and groups of copies among images or items."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._client import MAX_IDS_PER_CALL, Image2SdrClient
from .._dupes import Group, Link, groups, links_among, one_link_per_pair
from .._exceptions import InvalidArgument, NotFound, ResourceExhausted
from .._types import (
    Duplicate,
    DuplicateThresholds,
    EncodeItem,
    Encoding,
    ItemError,
    OnDuplicate,
)
from ._args import add_json, phash_bits, positive_int, share
from ._base import EXIT_OK, EXIT_SERVER, UsageError, import_tqdm
from ._connection import connect
from ._files import index_candidates, require_directory
from ._output import jsonable, print_json, print_table


def add_index(commands: Any, connection: argparse.ArgumentParser) -> None:
    index = commands.add_parser(
        "index",
        parents=[connection],
        help="stream a folder of images into the index",
        description="Store every image of DIR in the index under its path relative to DIR.  Files already "
        "indexed are skipped, so an interrupted run can simply be started again; files that are not "
        "images are reported and skipped.  Hidden files (.name) are left out.",
    )
    index.add_argument("directory", type=Path, metavar="DIR")
    index.add_argument("-r", "--recursive", action="store_true", help="descend into subfolders")
    index.add_argument(
        "--skip-duplicates",
        action="store_true",
        help="store nothing for an image the index holds a copy of (same bytes, near-exact or transformed); "
        "the copy is named",
    )
    add_json(index, "machine-readable summary")
    index.set_defaults(run=_run_index)


def add_dupes(commands: Any, connection: argparse.ArgumentParser) -> None:
    dupes = commands.add_parser(
        "dupes",
        parents=[connection],
        help="groups of copies among images, or among stored items",
        description="Groups of images that copy each other: the same bytes, a near-exact copy (pHash within a "
        "few bits: re-encoded, resized) or a transformed one (visual SDRs overlapping: cropped, mirrored, "
        "recoloured).  DIR: the images in DIR, encoded by the server and compared with its rules and "
        "thresholds; nothing is stored.  --index DIR: the items `image2sdr index DIR` stored, each asked "
        "FindDuplicates against the whole index, so a group may hold items stored from elsewhere.  "
        "--index alone: every stored item (listed a page at a time), each asked FindDuplicates; members "
        "are shown oldest first, and items stored without an image are not compared.",
    )
    dupes.add_argument("directory", nargs="?", type=Path, metavar="DIR")
    dupes.add_argument(
        "--index", action="store_true", help="stored items: those of DIR, or without DIR all of them, against the index"
    )
    dupes.add_argument("-r", "--recursive", action="store_true", help="descend into subfolders")
    dupes.add_argument("--max-phash-distance", type=phash_bits, metavar="N", help="near-exact: pHash bits (server)")
    dupes.add_argument("--min-visual-share", type=share, metavar="F", help="transformed: visual share (server)")
    dupes.add_argument("-k", type=positive_int, default=100, help="--index: copies asked per item (default 100)")
    add_json(dupes)
    dupes.set_defaults(run=_run_dupes)


def _run_index(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    require_directory(directory)
    files = index_candidates(directory, recursive=args.recursive)
    tqdm = import_tqdm()
    counts = {"indexed": 0, "already_indexed": 0, "duplicates": 0, "skipped": 0, "failed": 0}
    on_duplicate: OnDuplicate = "skip" if args.skip_duplicates else "keep"
    with connect(args) as client:
        indexed = _indexed(client, [item_id for _, item_id in files])
        todo = [(path, item_id) for (path, item_id), done in zip(files, indexed, strict=True) if not done]
        counts["already_indexed"] = len(files) - len(todo)
        items = (
            EncodeItem(path, request_id=item_id, add_to_index=item_id, on_duplicate=on_duplicate)
            for path, item_id in todo
        )
        with tqdm(total=len(todo), unit="img", disable=None, file=sys.stderr) as bar:
            for result in client.encode_stream(items):
                outcome = _index_outcome(result)
                counts[outcome] += 1
                if isinstance(result, ItemError):
                    bar.write(f"{outcome}: {result.request_id}: {result.error.message}", file=sys.stderr)
                elif result.duplicate is not None and not result.indexed:
                    copy = result.duplicate
                    bar.write(f"duplicate: {result.request_id}: {copy.kind} copy of {copy.id}", file=sys.stderr)
                bar.update(1)
    if args.json:
        print_json(counts)
    else:
        print(", ".join(f"{name.replace('_', ' ')} {count}" for name, count in counts.items()))
    return EXIT_SERVER if counts["failed"] else EXIT_OK


def _indexed(client: Image2SdrClient, ids: list[str]) -> list[bool]:
    """Which ids are stored already: one ItemsExist call per MAX_IDS_PER_CALL ids, not one call per file."""
    found: list[bool] = []
    for start in range(0, len(ids), MAX_IDS_PER_CALL):
        found += client.items_exist(ids[start : start + MAX_IDS_PER_CALL])
    return found


def _index_outcome(result: Encoding | ItemError) -> str:
    if isinstance(result, Encoding):
        return "indexed" if result.indexed else "duplicates"
    # Not an image, or too large to be one we accept: the folder's problem, not the run's.
    return "skipped" if isinstance(result.error, InvalidArgument | ResourceExhausted) else "failed"


def _run_dupes(args: argparse.Namespace) -> int:
    directory: Path | None = args.directory
    if directory is None and not args.index:
        raise UsageError("give DIR, --index DIR, or --index for the whole index")
    if directory is None and args.recursive:
        raise UsageError("--recursive goes with DIR")
    if directory is not None:
        require_directory(directory)
    files = [] if directory is None else index_candidates(directory, recursive=args.recursive)
    with connect(args) as client:
        given = DuplicateThresholds(args.max_phash_distance, args.min_visual_share)
        if directory is None:
            names, links, missing = _index_links(client, given, args.k)
        elif args.index:
            names, links, missing = _stored_links(client, [item_id for _, item_id in files], given, args.k)
        else:
            names, links, missing = _file_links(client, files, _thresholds(client, given))
    found = groups(names, links)
    if args.json:
        print_json({"groups": [_group_json(group) for group in found], "not_compared": missing})
    else:
        rows = [_dupe_row(number, group, name) for number, group in enumerate(found, 1) for name in group.members]
        print_table(["GROUP", "ITEM", "KIND", "STAGE", "PHASH", "VISUAL", "COPY OF"], rows)
        copies = sum(len(group.members) for group in found)
        print(f"{len(found)} groups, {copies} images in them, of {len(names)} compared", file=sys.stderr)
        for name, reason in missing.items():
            print(f"not compared: {name}: {reason}", file=sys.stderr)
    return EXIT_OK


def _thresholds(client: Image2SdrClient, given: DuplicateThresholds) -> DuplicateThresholds:
    """The thresholds given, each unset one taken from the server's defaults."""
    defaults = client.info().duplicate_thresholds
    return DuplicateThresholds(
        given.max_phash_distance if given.max_phash_distance is not None else defaults.max_phash_distance,
        given.min_visual_share if given.min_visual_share is not None else defaults.min_visual_share,
    )


def _file_links(
    client: Image2SdrClient, files: list[tuple[Path, str]], thresholds: DuplicateThresholds
) -> tuple[list[str], list[Link], dict[str, str]]:
    """DIR's images encoded (nothing stored) and compared pairwise by the server's rules."""
    encoded: list[tuple[str, Encoding]] = []
    missing: dict[str, str] = {}
    items = (EncodeItem(path, request_id=name) for path, name in files)
    for result in client.encode_stream(items):
        if isinstance(result, ItemError):
            missing[result.request_id] = result.error.message
        else:
            encoded.append((result.request_id, result))
    return [name for name, _ in encoded], links_among(encoded, thresholds), missing


def _stored_links(
    client: Image2SdrClient, ids: list[str], thresholds: DuplicateThresholds, k: int
) -> tuple[list[str], list[Link], dict[str, str]]:
    """DIR's stored items, each asked for its copies anywhere in the index."""
    present = _indexed(client, ids)
    stored = [item_id for item_id, done in zip(ids, present, strict=True) if done]
    missing = {item_id: "not in the index" for item_id, done in zip(ids, present, strict=True) if not done}
    links: list[Link] = []
    for item_id in stored:
        try:
            copies = client.find_duplicates(id=item_id, k=k, thresholds=thresholds)
        except InvalidArgument as exc:  # stored without an image: nothing to compare
            missing[item_id] = exc.message
            continue
        links += [_link(item_id, c) for c in copies]
    return [item_id for item_id in stored if item_id not in missing], links, missing


def _index_links(
    client: Image2SdrClient, thresholds: DuplicateThresholds, k: int
) -> tuple[list[str], list[Link], dict[str, str]]:
    """Every stored item, each asked for its copies in the index; the names oldest first.

    Each pair is found from both sides; one link a pair is kept.  An item removed
    while the run goes on is reported, not an error.
    """
    listed: list[str] = []
    missing: dict[str, str] = {}
    links: list[Link] = []
    for item in client.iter_items():  # newest first
        if item.fingerprint is None:
            missing[item.id] = "stored without an image: no fingerprint to compare"
            continue
        try:
            copies = client.find_duplicates(id=item.id, k=k, thresholds=thresholds)
        except (InvalidArgument, NotFound) as exc:  # replaced by SDR alone, or removed, since it was listed
            missing[item.id] = exc.message
            continue
        listed.append(item.id)
        links += [_link(item.id, c) for c in copies]
    # Oldest first, so that a group starts with the item stored first and the rest read as its copies.
    return listed[::-1], one_link_per_pair(links), missing


def _link(asked: str, copy: Duplicate) -> Link:
    return Link(asked, copy.id, copy.kind, copy.phash_distance, copy.visual_share, copy.stage, copy.inliers)


def _dupe_row(number: int, group: Group, name: str) -> list[str]:
    link = group.strongest(name) if name != group.members[0] else None
    if link is None:
        return [str(number), name, "-", "", "", "", ""]
    other = link.original if link.copy == name else link.copy
    distance = "-" if link.phash_distance < 0 else str(link.phash_distance)
    stage = f"keypoints ({link.inliers})" if link.stage == "keypoints" else (link.stage or "-")
    return [str(number), name, link.kind, stage, distance, f"{link.visual_share:.2f}", other]


def _group_json(group: Group) -> dict[str, Any]:
    return {"members": list(group.members), "links": jsonable(list(group.links))}
