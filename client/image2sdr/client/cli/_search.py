"""``similar`` and ``ls``: the stored items nearest to a query, and the stored items a page at a time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._client import Image2SdrClient
from .._query import Filter
from .._types import Item, Match
from ._args import add_filter, add_json, filter_from_args, positive_int, share
from ._base import EXIT_OK, UsageError
from ._connection import connect
from ._output import concept_list, jsonable, print_json, print_table


def add_similar(commands: Any, connection: argparse.ArgumentParser) -> None:
    similar = commands.add_parser(
        "similar",
        parents=[connection],
        help="stored items nearest to an image, an item, words or a custom concept",
        description="Stored items nearest to an image, a stored item (--id), words (--text) or a custom concept "
        "(--concept): by what the picture shows (--space semantic, the default), by how it looks (visual), or "
        "both (blend: score = (1 - W) * semantic overlap + W * visual overlap).  --text takes comma-separated "
        'terms or phrases: "beach, dog, not person" needs beach and dog and leaves person out; "cat or dog" '
        "takes either; each match shows how many bits it shares with each term.  --where and --tag keep only "
        "the items that pass them all (the k best of those).",
    )
    similar.add_argument("image", nargs="?", type=Path, metavar="IMG")
    query = similar.add_argument_group("query (instead of IMG)")
    query.add_argument("--id", help="a stored item")
    query.add_argument("--text", metavar="WORDS", help='words: "beach, dog, not person"')
    query.add_argument("--concept", metavar="NAME", help="a custom concept (image2sdr concept define)")
    similar.add_argument("-k", type=positive_int, default=10, help="matches to return (default 10)")
    similar.add_argument("--min-overlap", type=int, default=0, metavar="N", help="only matches sharing N bits")
    similar.add_argument(
        "--space", choices=("semantic", "visual", "blend"), default="semantic", help="where to look (default semantic)"
    )
    similar.add_argument(
        "--blend-weight", type=share, metavar="W", help="--space blend: the visual overlap's weight in [0, 1] (0.5)"
    )
    add_filter(similar)
    add_json(similar)
    similar.set_defaults(run=_run_similar)


def add_list(commands: Any, connection: argparse.ArgumentParser) -> None:
    listing = commands.add_parser(
        "ls",
        aliases=["list"],
        parents=[connection],
        help="the stored items, newest first",
        description="The stored items, newest first (the last added or replaced first), a page at a time, "
        "optionally only those passing --where and --tag (search by tag: --tag NAME).  How many pass is "
        "printed on stderr.",
    )
    add_filter(listing)
    listing.add_argument("-n", "--limit", type=positive_int, metavar="N", help="at most N items (default: all)")
    listing.add_argument("--page-size", type=positive_int, default=100, metavar="N", help="items per call (100)")
    add_json(listing)
    listing.set_defaults(run=_run_list)


def _run_similar(args: argparse.Namespace) -> int:
    queries = {"image": args.image, "id": args.id, "text": args.text, "concept": args.concept}
    given: dict[str, Any] = {name: query for name, query in queries.items() if query is not None}
    if len(given) != 1:
        raise UsageError("give exactly one of IMG, --id ID, --text WORDS, --concept NAME")
    if args.blend_weight is not None and args.space != "blend":
        raise UsageError("--blend-weight goes with --space blend")
    if args.text is not None and args.space != "semantic":
        raise UsageError("--text searches --space semantic")
    search = {"k": args.k, "min_overlap": args.min_overlap, "space": args.space, "blend_weight": args.blend_weight}
    with connect(args) as client:
        matches = client.find_similar(**given, **search, where=filter_from_args(args.where, args.tag))
    if matches.skipped_without_visual:
        print(
            f"note: {matches.skipped_without_visual} stored items have no visual SDR and were not searched "
            "(stored without an image, or before visual SDRs; index them again to include them)",
            file=sys.stderr,
        )
    if args.json:
        print_json(list(matches))
    elif args.space == "blend":
        rows = [[f"{m.score:.1f}", *_match_row(m, m.semantic_overlap, m.visual_overlap)] for m in matches]
        print_table(["SCORE", "SEMANTIC", "VISUAL", "ID", "CONCEPTS"], rows)
    elif args.text is not None:
        rows = [[str(m.overlap), m.id, _explanation(m), _used(m)] for m in matches]
        print_table(["OVERLAP", "ID", "TERMS", "CONCEPTS"], rows)
    else:
        print_table(["OVERLAP", "ID", "CONCEPTS"], [_match_row(match, match.overlap) for match in matches])
    return EXIT_OK


def _run_list(args: argparse.Namespace) -> int:
    where = filter_from_args(args.where, args.tag)
    with connect(args) as client:
        items, total = _listed(client, where, args.page_size, args.limit)
    if args.json:
        print_json({"total": total, "items": [_item_json(item) for item in items]})
    else:
        print_table(["ID", "METADATA", "CONCEPTS"], [_item_row(item) for item in items])
        passing = " passing the filter" if where is not None else ""
        print(f"{len(items)} of {total} items{passing}", file=sys.stderr)
    return EXIT_OK


def _listed(client: Image2SdrClient, where: Filter | None, page_size: int, limit: int | None) -> tuple[list[Item], int]:
    """Up to ``limit`` items passing ``where``, newest first, and how many passed when the listing began."""
    items: list[Item] = []
    token, total = "", None
    while limit is None or len(items) < limit:
        wanted = page_size if limit is None else min(page_size, limit - len(items))
        page = client.list_items(wanted, token, where=where)
        items += page.items
        total = page.total if total is None else total
        token = page.next_page_token
        if not token:
            break
    return items, total or 0


def _match_row(match: Match, *overlaps: int | None) -> list[str]:
    shown = ["-" if overlap is None else str(overlap) for overlap in overlaps]
    return [*shown, match.id, _used(match)]


def _used(match: Match) -> str:
    return concept_list([c.name for c in match.concepts if c.used])


def _explanation(match: Match) -> str:
    """Why a text query matched: the bits shared with each term, excluded terms as "not TERM"."""
    return ", ".join(f"{'not ' if t.negated else ''}{t.term} {t.overlap}" for t in match.explanation)


def _item_row(item: Item) -> list[str]:
    metadata = ", ".join(f"{key}={value}" for key, value in sorted(item.metadata.items()))
    return [item.id, metadata or "-", concept_list([f"{c.name} {c.confidence:.2f}" for c in item.concepts])]


def _item_json(item: Item) -> dict[str, Any]:
    """A listed item without its SDRs (those are for `similar`; a listing may be long)."""
    return {
        "id": item.id,
        "metadata": dict(item.metadata),
        "concepts": jsonable(list(item.concepts)),
        "fingerprint": jsonable(item.fingerprint),
        "visual": item.visual is not None,
    }
