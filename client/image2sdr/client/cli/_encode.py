"""``encode``, ``text`` and ``terms``: images and words to SDRs, and an SDR back to its nearest words."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._client import Image2SdrClient
from .._types import (
    EncodeItem,
    Encoding,
    ItemError,
    TermMatch,
)
from ._args import add_json, add_output, positive_int
from ._base import EXIT_OK, EXIT_SERVER, UsageError, import_draw
from ._connection import connect
from ._files import png_paths, read_sdr_json, require_files
from ._output import bits_of, concept_list, jsonable, print_json, print_table


def add_encode(commands: Any, connection: argparse.ArgumentParser) -> None:
    encode = commands.add_parser(
        "encode",
        parents=[connection],
        help="images to SDRs",
        description="Encode images to SDRs.  --png draws each SDR as a picture, active bits dark on light: "
        "with one image to FILE; with several to FILE-1.png, FILE-2.png, ... in argument order; "
        "or, when FILE is an existing directory, to DIR/<image name>.png.",
    )
    encode.add_argument("images", nargs="+", type=Path, metavar="IMG")
    add_output(encode)
    encode.add_argument("--max-concepts", type=positive_int, metavar="N", help="concepts to merge (server default)")
    encode.add_argument("--min-confidence", type=float, metavar="F", help="skip concepts below this confidence")
    encode.add_argument("--sparsity", type=float, metavar="F", help="share of active bits (server default 0.02)")
    encode.add_argument(
        "--merge-custom-concepts",
        action="store_true",
        help="merge the custom concepts found in an image into its SDR (they are reported either way)",
    )
    encode.set_defaults(run=_run_encode)


def add_text(commands: Any, connection: argparse.ArgumentParser) -> None:
    text = commands.add_parser("text", parents=[connection], help="a term or phrase to its term SDR")
    text.add_argument("term", metavar="TERM")
    add_output(text)
    text.set_defaults(run=_run_text)


def add_terms(commands: Any, connection: argparse.ArgumentParser) -> None:
    terms = commands.add_parser(
        "terms",
        parents=[connection],
        help="decode an SDR into its nearest vocabulary terms",
        description="The vocabulary terms whose SDRs overlap an SDR most.  The SDR comes from an image, "
        "a text, or a JSON file ('-' for stdin) holding {size, dimensions, active} or `encode --json` output.",
    )
    terms.add_argument("image", nargs="?", type=Path, metavar="IMG")
    terms.add_argument("--text", metavar="T", help="a term or phrase instead of an image")
    terms.add_argument("--sdr-json", metavar="FILE", help="an SDR as JSON instead of an image")
    terms.add_argument("-k", type=positive_int, default=10, help="terms to return (default 10)")
    add_json(terms)
    terms.set_defaults(run=_run_terms)


def _run_encode(args: argparse.Namespace) -> int:
    require_files(args.images)
    targets = png_paths(args.images, args.png) if args.png else None
    options = {
        "max_concepts": args.max_concepts,
        "min_confidence": args.min_confidence,
        "sparsity": args.sparsity,
        "merge_custom_concepts": args.merge_custom_concepts,
    }
    with connect(args) as client:
        results = list(_encode_all(client, args.images, options))
    if targets:
        _draw_all([(result, path) for result, path in zip(results, targets, strict=True)], args.scale)
    if args.json:
        print_json([_result_json(image, result) for image, result in zip(args.images, results, strict=True)])
    else:
        print_table(
            ["IMAGE", "BITS", "CONCEPTS"], [_result_row(i, r) for i, r in zip(args.images, results, strict=True)]
        )
    return EXIT_SERVER if any(isinstance(result, ItemError) for result in results) else EXIT_OK


def _encode_all(client: Image2SdrClient, images: list[Path], options: dict[str, Any]) -> Iterator[Encoding | ItemError]:
    """One image: a plain Encode call.  Several: one EncodeStream, failed items in place."""
    if len(images) == 1:
        yield client.encode(images[0], **options)
        return
    items = (EncodeItem(image, request_id=str(i)) for i, image in enumerate(images))
    yield from client.encode_stream(items, **options)


def _draw_all(pairs: list[tuple[Encoding | ItemError, Path]], scale: int) -> None:
    save_png = import_draw()
    for result, path in pairs:
        if isinstance(result, Encoding):
            save_png(result.sdr, path, scale=scale)


def _run_text(args: argparse.Namespace) -> int:
    with connect(args) as client:
        sdr = client.encode_text(args.term)
    if args.png:
        import_draw()(sdr, args.png, scale=args.scale)
    if args.json:
        print_json({"text": args.term, "sdr": sdr})
    else:
        print_table(["TERM", "BITS"], [[args.term, bits_of(sdr)]])
    return EXIT_OK


def _run_terms(args: argparse.Namespace) -> int:
    if sum(source is not None for source in (args.image, args.text, args.sdr_json)) != 1:
        raise UsageError("give exactly one of IMG, --text T, --sdr-json FILE")
    sdr = read_sdr_json(args.sdr_json) if args.sdr_json is not None else None
    with connect(args) as client:
        if sdr is None and args.text is not None:
            sdr = client.encode_text(args.text)
        elif sdr is None:
            sdr = client.encode(args.image).sdr
        terms = client.similar_terms(sdr, k=args.k)
    if args.json:
        print_json(terms)
    else:
        print_table(["OVERLAP", "TERM"], [_term_row(term) for term in terms])
    return EXIT_OK


def _result_json(image: Path, result: Encoding | ItemError) -> dict[str, Any]:
    if isinstance(result, Encoding):
        return {"image": str(image), **jsonable(result)}
    error = result.error
    violations = [{"field": v.field, "description": v.description} for v in error.field_violations]
    detail = {"code": error.code.name, "message": error.message, "field_violations": violations}
    return {"image": str(image), "request_id": result.request_id, "error": detail}


def _result_row(image: Path, result: Encoding | ItemError) -> list[str]:
    if isinstance(result, ItemError):
        return [str(image), "-", f"error {result.error.code.name}: {result.error.message}"]
    used = concept_list([f"{c.name} {c.confidence:.2f}" for c in result.concepts if c.used])
    if result.custom_concepts:  # present in the image; "merged" when --merge-custom-concepts put them in the SDR
        found = ", ".join(f"{c.name} {c.confidence:.2f}{' merged' if c.used else ''}" for c in result.custom_concepts)
        used = f"{used}; custom: {found}" if used else f"custom: {found}"
    return [str(image), bits_of(result.sdr) + (" short" if result.short else ""), used]


def _term_row(term: TermMatch) -> list[str]:
    return [str(term.overlap), term.term]
