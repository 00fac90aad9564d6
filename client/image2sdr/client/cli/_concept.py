"""``concept define|ls|get|suggest|refine|rm``: custom concepts taught by a few examples.

Refinement: ``concept suggest NAME`` lists the stored items the concept was least sure of
when it was defined; the caller looks at them and runs ``concept refine NAME --yes ID..
--no ID..``, which defines it again with the examples it keeps (the stored items given,
by id) plus those.  Examples given as images are not kept by the server: ``refine`` takes
them again (``--pos``, ``--neg``) and refuses when positives would be lost.  Each
definition brings fresh suggestions (the labelled ids are never suggested again).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

from .._types import (
    ConceptExample,
    CustomConcept,
    StoredId,
)
from ._args import add_json
from ._base import EXIT_OK, UsageError
from ._connection import connect
from ._files import require_files
from ._output import bits_of, print_json, print_table


def add_concept(commands: Any, connection: argparse.ArgumentParser) -> None:
    concept = commands.add_parser(
        "concept",
        help="custom concepts taught by examples: define, ls, get, suggest, rm",
        description="Custom concepts, taught by a few examples (no training run): the bits common among the "
        "positives and rare among the negatives.  Once defined, `encode` reports them in the images that show "
        "them and `similar --concept NAME` searches by them.",
    )
    actions = concept.add_subparsers(dest="action", required=True, metavar="ACTION")
    define = actions.add_parser(
        "define",
        parents=[connection],
        help="teach a concept by examples; an existing NAME is replaced",
        description="Teach NAME by examples: images (--pos, --neg) or stored items (--pos-id, --neg-id), at least "
        "3 positives.  Each option takes several values and may be repeated.",
    )
    define.add_argument("name", metavar="NAME")
    examples = define.add_argument_group("examples")
    examples.add_argument("--pos", nargs="+", action="extend", type=Path, default=[], metavar="IMG", help="show it")
    examples.add_argument("--pos-id", nargs="+", action="extend", default=[], metavar="ID", help="stored, show it")
    examples.add_argument("--neg", nargs="+", action="extend", type=Path, default=[], metavar="IMG", help="do not")
    examples.add_argument("--neg-id", nargs="+", action="extend", default=[], metavar="ID", help="stored, do not")
    add_json(define)
    define.set_defaults(run=_run_concept_define, command="concept define")
    listing = actions.add_parser("ls", aliases=["list"], parents=[connection], help="every custom concept, by name")
    add_json(listing, "machine-readable output (with the SDRs)")
    listing.set_defaults(run=_run_concept_list, command="concept ls")
    get = actions.add_parser("get", parents=[connection], help="one custom concept")
    get.add_argument("name", metavar="NAME")
    add_json(get, "machine-readable output (with the SDRs)")
    get.set_defaults(run=_run_concept_get, command="concept get")
    suggest = actions.add_parser(
        "suggest",
        parents=[connection],
        help="stored items the concept is least sure of: label them to refine it",
        description="The stored items NAME was least sure of when defined (confidence nearest 0.5), nearest first. "
        "Look at them, then run `concept define NAME` again with the same examples plus --pos-id for the ones "
        "that show it and --neg-id for the ones that do not.",
    )
    suggest.add_argument("name", metavar="NAME")
    add_json(suggest)
    suggest.set_defaults(run=_run_concept_suggest, command="concept suggest")
    refine = actions.add_parser(
        "refine",
        parents=[connection],
        help="label suggested items yes / no and define the concept again with them",
        description="Define NAME again with the examples it keeps (the stored items it was given, by id) plus the "
        "items labelled here: --yes for those that show it, --no for those that do not (typically from `concept "
        "suggest NAME`).  Examples once given as images are not kept: give them again with --pos / --neg.",
    )
    refine.add_argument("name", metavar="NAME")
    labels = refine.add_argument_group("labels")
    labels.add_argument("--yes", nargs="+", action="extend", default=[], metavar="ID", help="stored, shows it")
    labels.add_argument("--no", nargs="+", action="extend", default=[], metavar="ID", help="stored, does not")
    labels.add_argument("--pos", nargs="+", action="extend", type=Path, default=[], metavar="IMG", help="again")
    labels.add_argument("--neg", nargs="+", action="extend", type=Path, default=[], metavar="IMG", help="again")
    add_json(refine)
    refine.set_defaults(run=_run_concept_refine, command="concept refine")
    remove = actions.add_parser("rm", aliases=["remove"], parents=[connection], help="forget a custom concept")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(run=_run_concept_remove, command="concept rm")


def _run_concept_define(args: argparse.Namespace) -> int:
    require_files([*args.pos, *args.neg])
    if not args.pos and not args.pos_id:
        raise UsageError("give the examples that show it: --pos IMG ... and/or --pos-id ID ...")
    positives: list[ConceptExample] = [*args.pos, *(StoredId(item_id) for item_id in args.pos_id)]
    negatives: list[ConceptExample] = [*args.neg, *(StoredId(item_id) for item_id in args.neg_id)]
    with connect(args) as client:
        concept = client.define_concept(args.name, positives, negatives)
    _print_concept(concept, as_json=args.json)
    return EXIT_OK


def _run_concept_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        concepts = client.list_concepts()
    if args.json:
        print_json(concepts)
    else:
        print_table(["NAME", "POS", "NEG", "F1", "UPDATED"], [_concept_row(concept) for concept in concepts])
    return EXIT_OK


def _run_concept_get(args: argparse.Namespace) -> int:
    with connect(args) as client:
        concept = client.get_concept(args.name)
    _print_concept(concept, as_json=args.json)
    return EXIT_OK


def _run_concept_suggest(args: argparse.Namespace) -> int:
    with connect(args) as client:
        concept = client.get_concept(args.name)
    if args.json:
        print_json(concept.suggestions)
        return EXIT_OK
    print_table(["ID", "CONFIDENCE"], [[s.id, f"{s.confidence:.2f}"] for s in concept.suggestions])
    if concept.suggestions:
        print(f"label them: concept refine {args.name!r} --yes ID... --no ID...")
    return EXIT_OK


def _run_concept_refine(args: argparse.Namespace) -> int:
    require_files([*args.pos, *args.neg])
    if not args.yes and not args.no:
        raise UsageError("label at least one item: --yes ID ... and/or --no ID ...")
    with connect(args) as client:
        old = client.get_concept(args.name)
        kept = len(old.positive_ids) + len(args.pos)
        if kept < old.positives:
            raise UsageError(
                f"{args.name!r} has {old.positives - len(old.positive_ids)} positive examples given as images, which "
                "the server does not keep: give them again with --pos IMG ... (or define it anew)"
            )
        if len(old.negative_ids) + len(args.neg) < old.negatives:
            lost = old.negatives - len(old.negative_ids)
            print(f"note: {lost} negatives were images or stand-ins, not kept: left out", file=sys.stderr)
        positives: list[ConceptExample] = [*args.pos, *_stored(old.positive_ids, args.yes)]
        negatives: list[ConceptExample] = [*args.neg, *_stored(old.negative_ids, args.no)]
        concept = client.define_concept(args.name, positives, negatives)
    _print_concept(concept, as_json=args.json)
    return EXIT_OK


def _stored(kept: tuple[str, ...], labelled: list[str]) -> list[StoredId]:
    """The ids kept and the ids labelled, each once, in that order."""
    return [StoredId(item_id) for item_id in dict.fromkeys([*kept, *labelled])]


def _run_concept_remove(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.remove_concept(args.name)
    print(f"removed concept {args.name!r}")
    return EXIT_OK


def _updated(concept: CustomConcept) -> str:
    moment = datetime.datetime.fromtimestamp(concept.updated_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _concept_row(concept: CustomConcept) -> list[str]:
    positives, negatives = str(concept.positives), str(concept.negatives)
    return [concept.name, positives, negatives, f"{concept.fit.f1:.2f}", _updated(concept)]


def _print_concept(concept: CustomConcept, *, as_json: bool) -> None:
    if as_json:
        print_json(concept)
        return
    fit = concept.fit
    rows = [
        ["name", concept.name],
        ["examples", f"{concept.positives} positive, {concept.negatives} negative"],
        ["fit", f"precision {fit.precision:.2f}, recall {fit.recall:.2f}, f1 {fit.f1:.2f} (leave-one-out)"],
        ["threshold", f"{concept.threshold:.3g} (scale {concept.scale:.3g})"],
        ["stored", _background(concept)],
        ["suggest", " ".join(s.id for s in concept.suggestions) or "-"],
        ["stored examples", f"yes: {_ids(concept.positive_ids)}; no: {_ids(concept.negative_ids)}"],
        ["sdr", bits_of(concept.sdr)],
        ["visual", "-" if concept.visual is None else bits_of(concept.visual)],
        ["updated", _updated(concept)],
    ]
    print_table(["", ""], rows)


def _ids(ids: tuple[str, ...]) -> str:
    return " ".join(ids) or "-"


def _background(concept: CustomConcept) -> str:
    found = concept.background
    if found is None:
        return "- (too few stored items to estimate)"
    # The precision estimate is an upper bound, far off when the concept does not separate
    # well (0.91 said, 0.58 measured on photos): said as such, not as a figure to trust.
    return (
        f"flags {found.flagged:.1%} of {found.items} stored items (~{round(found.flagged * found.items)}), "
        f"precision at most {found.precision:.2f}, recall {found.recall:.2f} (leave-one-out)"
    )
