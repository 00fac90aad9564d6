"""The ``image2sdr`` command: run the server, encode images and terms, index folders, search.

Exit codes: 0 ok; 1 the server refused or failed (the typed error's message is
printed, never a traceback); 2 usage: bad arguments, unreadable files, a missing extra.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from ._client import DEFAULT_TIMEOUT_S, MAX_IDS_PER_CALL, Image2SdrClient
from ._dupes import Group, Link, groups, links_among, one_link_per_pair
from ._exceptions import Image2SdrError, InvalidArgument, NotFound, ResourceExhausted
from ._types import (
    ConceptCondition,
    ConceptExample,
    CustomConcept,
    DuplicateThresholds,
    EncodeItem,
    Encoding,
    Filter,
    Item,
    ItemError,
    MapJob,
    Match,
    OnDuplicate,
    Sdr,
    StoredId,
    TermMatch,
)

__all__ = ["build_parser", "main", "parse_tag", "parse_where", "png_paths", "sdr_from_json"]

DEFAULT_SERVER = "localhost:50051"
EXIT_OK, EXIT_SERVER, EXIT_USAGE = 0, 1, 2
CLI_EXTRA = "pip install 'image2sdr-client[cli]'"
# A gRPC target that names its resolver ("dns:///name:port", "ipv4:...", "unix:..."),
# passed to the client whole, commas and all; "host:port" has no such prefix.
_SCHEME = re.compile(r"(dns|ipv4|ipv6|unix|unix-abstract|vsock):")
_SERVER_MODULES = ("image2sdr.server", "image2sdr.server.serve")  # missing: the distribution is not installed
# --tag NAME:MIN: the part after the last colon is a confidence only when it reads as a number,
# so a concept name may hold colons ("shot: close-up" stays a name).
_TAG_CONFIDENCE = re.compile(r"(?P<name>.*):(?P<min>[+-]?(?:\d+\.?\d*|\.\d+))")


class UsageError(Exception):
    """Arguments that parse but cannot be acted on; exit code 2."""


# -- arguments ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="image2sdr", description="Images to semantic SDRs, over the image2sdr gRPC service."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Parsed by the server's own `main`; listed here for --help only (see main()).
    commands.add_parser("serve", add_help=False, help="run the server (needs image2sdr-server); serve --help")
    connection = _connection_options()
    _add_encode(commands, connection)
    _add_text(commands, connection)
    _add_index(commands, connection)
    _add_similar(commands, connection)
    _add_list(commands, connection)
    _add_concept(commands, connection)
    _add_dupes(commands, connection)
    _add_terms(commands, connection)
    _add_explain(commands, connection)
    _add_map(commands, connection)
    info = commands.add_parser("info", parents=[connection], help="the server's geometry, models, index and limits")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(run=_run_info)
    return parser


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--server",
        action=_ServerAction,
        default=_DefaultServer(os.environ.get("IMAGE2SDR_SERVER") or DEFAULT_SERVER),
        metavar="ADDRESS",
        help="HOST:PORT, or a gRPC target such as dns:///NAME:PORT (calls go to every address the name has, in "
        "turn); for several replicas by address, repeat --server or separate IP:PORT addresses by commas "
        f"(default: $IMAGE2SDR_SERVER, which may hold such a list, or {DEFAULT_SERVER})",
    )
    group.add_argument("--token", default=os.environ.get("IMAGE2SDR_TOKEN"), help="bearer token ($IMAGE2SDR_TOKEN)")
    group.add_argument("--tls", action="store_true", help="TLS with the system's CA certificates")
    group.add_argument("--tls-ca", type=Path, metavar="FILE", help="PEM CA bundle to verify the server (implies TLS)")
    group.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM client certificate chain (mutual TLS)")
    group.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM client private key (mutual TLS)")
    group.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name to check the server certificates against; TLS to several addresses needs it",
    )
    group.add_argument(
        "--timeout", type=_positive_float, default=DEFAULT_TIMEOUT_S, metavar="S", help="seconds per call (default 30)"
    )
    return parent


class _DefaultServer(str):
    """--server's default: the first --server given replaces it, where later ones add to the list."""

    __slots__ = ()


class _ServerAction(argparse.Action):
    """--server once is one target; again, each adds a replica to a comma-separated list of addresses."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        current = getattr(namespace, self.dest)
        if isinstance(current, _DefaultServer):
            setattr(namespace, self.dest, values)
            return
        if _SCHEME.match(current) or _SCHEME.match(values):
            parser.error(
                f"{option}: a gRPC target with a scheme (dns:///NAME:PORT, ...) goes alone: {current},{values}"
            )
        setattr(namespace, self.dest, f"{current},{values}")


def _add_encode(commands: Any, connection: argparse.ArgumentParser) -> None:
    encode = commands.add_parser(
        "encode",
        parents=[connection],
        help="images to SDRs",
        description="Encode images to SDRs.  --png draws each SDR as a picture, active bits dark on light: "
        "with one image to FILE; with several to FILE-1.png, FILE-2.png, ... in argument order; "
        "or, when FILE is an existing directory, to DIR/<image name>.png.",
    )
    encode.add_argument("images", nargs="+", type=Path, metavar="IMG")
    _add_output(encode)
    encode.add_argument("--max-concepts", type=_positive_int, metavar="N", help="concepts to merge (server default)")
    encode.add_argument("--min-confidence", type=float, metavar="F", help="skip concepts below this confidence")
    encode.add_argument("--sparsity", type=float, metavar="F", help="share of active bits (server default 0.02)")
    encode.add_argument(
        "--merge-custom-concepts",
        action="store_true",
        help="merge the custom concepts found in an image into its SDR (they are reported either way)",
    )
    encode.set_defaults(run=_run_encode)


def _add_text(commands: Any, connection: argparse.ArgumentParser) -> None:
    text = commands.add_parser("text", parents=[connection], help="a term or phrase to its term SDR")
    text.add_argument("term", metavar="TERM")
    _add_output(text)
    text.set_defaults(run=_run_text)


def _add_index(commands: Any, connection: argparse.ArgumentParser) -> None:
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
    index.add_argument("--json", action="store_true", help="machine-readable summary")
    index.set_defaults(run=_run_index)


def _add_similar(commands: Any, connection: argparse.ArgumentParser) -> None:
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
    similar.add_argument("-k", type=_positive_int, default=10, help="matches to return (default 10)")
    similar.add_argument("--min-overlap", type=int, default=0, metavar="N", help="only matches sharing N bits")
    similar.add_argument(
        "--space", choices=("semantic", "visual", "blend"), default="semantic", help="where to look (default semantic)"
    )
    similar.add_argument(
        "--blend-weight", type=_share, metavar="W", help="--space blend: the visual overlap's weight in [0, 1] (0.5)"
    )
    _add_filter(similar)
    similar.add_argument("--json", action="store_true", help="machine-readable output")
    similar.set_defaults(run=_run_similar)


def _add_filter(parser: argparse.ArgumentParser) -> None:
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


def _add_list(commands: Any, connection: argparse.ArgumentParser) -> None:
    listing = commands.add_parser(
        "ls",
        aliases=["list"],
        parents=[connection],
        help="the stored items, newest first",
        description="The stored items, newest first (the last added or replaced first), a page at a time, "
        "optionally only those passing --where and --tag (search by tag: --tag NAME).  How many pass is "
        "printed on stderr.",
    )
    _add_filter(listing)
    listing.add_argument("-n", "--limit", type=_positive_int, metavar="N", help="at most N items (default: all)")
    listing.add_argument("--page-size", type=_positive_int, default=100, metavar="N", help="items per call (100)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(run=_run_list)


def _add_concept(commands: Any, connection: argparse.ArgumentParser) -> None:
    concept = commands.add_parser(
        "concept",
        help="custom concepts taught by examples: define, ls, get, rm",
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
    define.add_argument("--json", action="store_true", help="machine-readable output")
    define.set_defaults(run=_run_concept_define, command="concept define")
    listing = actions.add_parser("ls", aliases=["list"], parents=[connection], help="every custom concept, by name")
    listing.add_argument("--json", action="store_true", help="machine-readable output (with the SDRs)")
    listing.set_defaults(run=_run_concept_list, command="concept ls")
    get = actions.add_parser("get", parents=[connection], help="one custom concept")
    get.add_argument("name", metavar="NAME")
    get.add_argument("--json", action="store_true", help="machine-readable output (with the SDRs)")
    get.set_defaults(run=_run_concept_get, command="concept get")
    remove = actions.add_parser("rm", aliases=["remove"], parents=[connection], help="forget a custom concept")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(run=_run_concept_remove, command="concept rm")


def _add_dupes(commands: Any, connection: argparse.ArgumentParser) -> None:
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
    dupes.add_argument("--max-phash-distance", type=_phash_bits, metavar="N", help="near-exact: pHash bits (server)")
    dupes.add_argument("--min-visual-share", type=_share, metavar="F", help="transformed: visual share (server)")
    dupes.add_argument("-k", type=_positive_int, default=100, help="--index: copies asked per item (default 100)")
    dupes.add_argument("--json", action="store_true", help="machine-readable output")
    dupes.set_defaults(run=_run_dupes)


def _add_terms(commands: Any, connection: argparse.ArgumentParser) -> None:
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
    terms.add_argument("-k", type=_positive_int, default=10, help="terms to return (default 10)")
    terms.add_argument("--json", action="store_true", help="machine-readable output")
    terms.set_defaults(run=_run_terms)


def _add_explain(commands: Any, connection: argparse.ArgumentParser) -> None:
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
    explain.add_argument("--patch", type=_positive_int, metavar="PX", help="patch side in pixels (server default)")
    explain.add_argument("--stride", type=_positive_int, metavar="PX", help="step in pixels (server default)")
    explain.add_argument("--png", type=Path, metavar="FILE", help="write the heatmap over the image as a PNG")
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.set_defaults(run=_run_explain)


def _add_map(commands: Any, connection: argparse.ArgumentParser) -> None:
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
    drawing.add_argument("--columns", type=_positive_int, default=0, metavar="N", help="grid columns (a square)")
    drawing.add_argument("--rows", type=_positive_int, default=0, metavar="N", help="grid rows (a square)")
    drawing.add_argument("--cell", type=_positive_int, default=0, metavar="PX", help="cell side in the PNG")
    drawing.add_argument("--json", action="store_true", help="machine-readable output")
    drawing.set_defaults(run=_run_map)


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--png", type=Path, metavar="FILE", help="draw the SDR as a PNG picture")
    parser.add_argument("--scale", type=_positive_int, default=4, metavar="N", help="pixels per bit (default 4)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _phash_bits(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be in [0, 64], got {value}")
    return value


def _positive_float(text: str) -> float:
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


# -- entry point -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`image2sdr encode ... | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["serve"]:
        return _serve(args_list[1:])
    args = build_parser().parse_args(args_list)  # exits 2 on bad usage
    try:
        return int(args.run(args))
    except UsageError as exc:
        print(f"image2sdr {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"image2sdr {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Image2SdrError as exc:
        print(f"image2sdr {args.command}: {describe_error(exc)}", file=sys.stderr)
        return EXIT_SERVER
    except KeyboardInterrupt:
        return 130


def _serve(argv: list[str]) -> int:
    try:
        from image2sdr.server.serve import main as serve_main  # noqa: PLC0415 - the server is optional
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name in _SERVER_MODULES:
            problem = "the server is not installed: install image2sdr-server next to this client (make setup does)"
        else:
            problem = f"the server is installed but cannot be loaded: {exc}"
        print(f"image2sdr serve: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    return int(serve_main(argv))


def describe_error(exc: Image2SdrError) -> str:
    """One line for the error, then one per field or quota violation."""
    lines = [f"{type(exc).__name__} ({exc.code.name}): {exc.message}"]
    lines += [f"  {v.field}: {v.description}" for v in exc.field_violations]
    lines += [f"  {v.subject}: {v.description}" for v in exc.quota_violations]
    if exc.retry_delay is not None:
        lines.append(f"  retry in {exc.retry_delay:g} s")
    return "\n".join(lines)


def connect(args: argparse.Namespace) -> Image2SdrClient:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    target = _server_target(args.server)
    secure = args.tls or args.tls_ca is not None or args.tls_cert is not None
    if secure and args.tls_server_name is None and not isinstance(target, str) and len(target) > 1:
        raise UsageError("TLS to several addresses needs --tls-server-name, the name in the servers' certificates")
    try:
        return Image2SdrClient(
            target,
            token=args.token or None,
            root_certificates=args.tls_ca.read_bytes() if args.tls_ca else None,
            certificate_chain=args.tls_cert.read_bytes() if args.tls_cert else None,
            private_key=args.tls_key.read_bytes() if args.tls_key else None,
            tls=args.tls,
            server_name=args.tls_server_name,
            timeout=args.timeout,
        )
    except ValueError as exc:  # a malformed address, or names where a list needs IP addresses
        raise UsageError(f"--server {args.server}: {exc}") from exc


def _server_target(server: str) -> str | list[str]:
    """The client's target for --server: a comma-separated list of addresses, or one target as it is."""
    if _SCHEME.match(server) or "," not in server:
        return server
    return [address.strip() for address in server.split(",")]


# -- commands ----------------------------------------------------------------------


def _run_encode(args: argparse.Namespace) -> int:
    missing = [str(image) for image in args.images if not image.is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
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
        _print_json([_result_json(image, result) for image, result in zip(args.images, results, strict=True)])
    else:
        _print_table(
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
    save_png = _import_draw()
    for result, path in pairs:
        if isinstance(result, Encoding):
            save_png(result.sdr, path, scale=scale)


def _run_text(args: argparse.Namespace) -> int:
    with connect(args) as client:
        sdr = client.encode_text(args.term)
    if args.png:
        _import_draw()(sdr, args.png, scale=args.scale)
    if args.json:
        _print_json({"text": args.term, "sdr": sdr})
    else:
        _print_table(["TERM", "BITS"], [[args.term, _bits(sdr)]])
    return EXIT_OK


def _run_index(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    files = index_candidates(directory, recursive=args.recursive)
    tqdm = _import_tqdm()
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
        _print_json(counts)
    else:
        print(", ".join(f"{name.replace('_', ' ')} {count}" for name, count in counts.items()))
    return EXIT_SERVER if counts["failed"] else EXIT_OK


def index_candidates(directory: Path, *, recursive: bool) -> list[tuple[Path, str]]:
    """The files to index under ``directory`` and their ids (POSIX paths relative to it), sorted."""
    found = directory.rglob("*") if recursive else directory.iterdir()
    files = [path for path in found if path.is_file() and not _hidden(path.relative_to(directory))]
    return sorted((path, path.relative_to(directory).as_posix()) for path in files)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


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
        _print_json(list(matches))
    elif args.space == "blend":
        rows = [[f"{m.score:.1f}", *_match_row(m, m.semantic_overlap, m.visual_overlap)] for m in matches]
        _print_table(["SCORE", "SEMANTIC", "VISUAL", "ID", "CONCEPTS"], rows)
    elif args.text is not None:
        rows = [[str(m.overlap), m.id, _explanation(m), _used(m)] for m in matches]
        _print_table(["OVERLAP", "ID", "TERMS", "CONCEPTS"], rows)
    else:
        _print_table(["OVERLAP", "ID", "CONCEPTS"], [_match_row(match, match.overlap) for match in matches])
    return EXIT_OK


def filter_from_args(where: Sequence[tuple[str, str]], tags: Sequence[ConceptCondition]) -> Filter | None:
    """--where and --tag as a Filter: a key given again adds a value it may have; None when neither is given."""
    values: dict[str, list[str]] = {}
    for key, value in where:
        if value not in values.setdefault(key, []):
            values[key].append(value)
    if not values and not tags:
        return None
    return Filter(values, tags)


def _run_list(args: argparse.Namespace) -> int:
    where = filter_from_args(args.where, args.tag)
    with connect(args) as client:
        items, total = _listed(client, where, args.page_size, args.limit)
    if args.json:
        _print_json({"total": total, "items": [_item_json(item) for item in items]})
    else:
        _print_table(["ID", "METADATA", "CONCEPTS"], [_item_row(item) for item in items])
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


def _run_concept_define(args: argparse.Namespace) -> int:
    missing = [str(image) for image in (*args.pos, *args.neg) if not image.is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
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
        _print_json(concepts)
    else:
        _print_table(["NAME", "POS", "NEG", "F1", "UPDATED"], [_concept_row(concept) for concept in concepts])
    return EXIT_OK


def _run_concept_get(args: argparse.Namespace) -> int:
    with connect(args) as client:
        concept = client.get_concept(args.name)
    _print_concept(concept, as_json=args.json)
    return EXIT_OK


def _run_concept_remove(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.remove_concept(args.name)
    print(f"removed concept {args.name!r}")
    return EXIT_OK


def _run_dupes(args: argparse.Namespace) -> int:
    directory: Path | None = args.directory
    if directory is None and not args.index:
        raise UsageError("give DIR, --index DIR, or --index for the whole index")
    if directory is None and args.recursive:
        raise UsageError("--recursive goes with DIR")
    if directory is not None and not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
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
        _print_json({"groups": [_group_json(group) for group in found], "not_compared": missing})
    else:
        rows = [_dupe_row(number, group, name) for number, group in enumerate(found, 1) for name in group.members]
        _print_table(["GROUP", "ITEM", "KIND", "PHASH", "VISUAL", "COPY OF"], rows)
        copies = sum(len(group.members) for group in found)
        print(f"{len(found)} groups, {copies} images in them, of {len(names)} compared", file=sys.stderr)
        for name, reason in missing.items():
            print(f"not compared: {name}: {reason}", file=sys.stderr)
    return EXIT_OK


def _run_explain(args: argparse.Namespace) -> int:
    if not args.image.is_file():
        raise UsageError(f"no such file: {args.image}")
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
        plain = {key: value for key, value in _plain(found).items() if key not in ("png", "heat")}
        _print_json({**plain, "heat": _plain(found.grid())})
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
    tqdm = _import_tqdm()
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
        plain = {key: value for key, value in _plain(job).items() if key not in ("png", "error")}
        _print_json(plain)
        return EXIT_OK
    _print_table(
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
        links += [Link(item_id, c.id, c.kind, c.phash_distance, c.visual_share) for c in copies]
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
        links += [Link(item.id, c.id, c.kind, c.phash_distance, c.visual_share) for c in copies]
    # Oldest first, so that a group starts with the item stored first and the rest read as its copies.
    return listed[::-1], one_link_per_pair(links), missing


def _run_terms(args: argparse.Namespace) -> int:
    if sum(source is not None for source in (args.image, args.text, args.sdr_json)) != 1:
        raise UsageError("give exactly one of IMG, --text T, --sdr-json FILE")
    sdr = _read_sdr_json(args.sdr_json) if args.sdr_json is not None else None
    with connect(args) as client:
        if sdr is None and args.text is not None:
            sdr = client.encode_text(args.text)
        elif sdr is None:
            sdr = client.encode(args.image).sdr
        terms = client.similar_terms(sdr, k=args.k)
    if args.json:
        _print_json(terms)
    else:
        _print_table(["OVERLAP", "TERM"], [_term_row(term) for term in terms])
    return EXIT_OK


def _run_info(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.info()
        health = client.health()
    if args.json:
        _print_json({"health": health, **dataclasses.asdict(info)})
        return EXIT_OK
    rows = [
        ["health", health],
        ["server", info.server_version],
        ["sdr", f"{info.size} bits {'x'.join(map(str, info.dimensions))}, {info.active_bits} active"],
        ["concepts", f"{info.concepts.name} {info.concepts.model} {info.concepts.version}".strip()],
        ["terms", f"{info.terms.name} {info.terms.model} {info.terms.version}".strip()],
        ["index", f"{info.index_kind}, {info.index_size} items"],
        ["vocabulary", f"{info.vocabulary_size} terms"],
        ["custom concepts", str(info.custom_concepts)],
    ]
    _print_table(["", ""], rows)
    return EXIT_OK


# -- input and output ----------------------------------------------------------------


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


def _read_sdr_json(source: str) -> Sdr:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    try:
        return sdr_from_json(json.loads(text))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source} is not JSON: {exc}") from exc


def _import_draw() -> Callable[..., None]:
    try:
        from ._draw import save_png  # noqa: PLC0415 - Pillow is the optional `cli` extra
    except ImportError as exc:
        raise UsageError(f"--png needs Pillow: {CLI_EXTRA}") from exc
    return save_png


def _import_tqdm() -> Any:
    try:
        from tqdm import tqdm  # noqa: PLC0415 - the optional `cli` extra
    except ImportError as exc:
        raise UsageError(f"index needs tqdm: {CLI_EXTRA}") from exc
    return tqdm


def _plain(value: Any) -> Any:
    """Dataclasses, tuples and float32 noise made into tidy JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value


def _print_json(value: Any, out: TextIO | None = None) -> None:
    json.dump(_plain(value), out or sys.stdout, indent=2)
    print(file=out or sys.stdout)


def _result_json(image: Path, result: Encoding | ItemError) -> dict[str, Any]:
    if isinstance(result, Encoding):
        return {"image": str(image), **_plain(result)}
    error = result.error
    violations = [{"field": v.field, "description": v.description} for v in error.field_violations]
    detail = {"code": error.code.name, "message": error.message, "field_violations": violations}
    return {"image": str(image), "request_id": result.request_id, "error": detail}


def _print_table(header: list[str], rows: list[list[str]], out: TextIO | None = None) -> None:
    """Left-aligned columns; the last one is left unpadded."""
    table = [header, *rows] if any(header) else rows
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + row[len(widths) :]
        print("  ".join(cells).rstrip(), file=out or sys.stdout)


def _bits(sdr: Sdr) -> str:
    return f"{len(sdr.active)}/{sdr.size}"


def _result_row(image: Path, result: Encoding | ItemError) -> list[str]:
    if isinstance(result, ItemError):
        return [str(image), "-", f"error {result.error.code.name}: {result.error.message}"]
    used = ", ".join(f"{c.name} {c.confidence:.2f}" for c in result.concepts if c.used)
    if result.custom_concepts:  # present in the image; "merged" when --merge-custom-concepts put them in the SDR
        found = ", ".join(f"{c.name} {c.confidence:.2f}{' merged' if c.used else ''}" for c in result.custom_concepts)
        used = f"{used}; custom: {found}" if used else f"custom: {found}"
    return [str(image), _bits(result.sdr) + (" short" if result.short else ""), used]


def _match_row(match: Match, *overlaps: int | None) -> list[str]:
    shown = ["-" if overlap is None else str(overlap) for overlap in overlaps]
    return [*shown, match.id, _used(match)]


def _used(match: Match) -> str:
    return ", ".join(c.name for c in match.concepts if c.used)


def _explanation(match: Match) -> str:
    """Why a text query matched: the bits shared with each term, excluded terms as "not TERM"."""
    return ", ".join(f"{'not ' if t.negated else ''}{t.term} {t.overlap}" for t in match.explanation)


def _item_row(item: Item) -> list[str]:
    metadata = ", ".join(f"{key}={value}" for key, value in sorted(item.metadata.items()))
    return [item.id, metadata or "-", ", ".join(f"{c.name} {c.confidence:.2f}" for c in item.concepts)]


def _item_json(item: Item) -> dict[str, Any]:
    """A listed item without its SDRs (those are for `similar`; a listing may be long)."""
    return {
        "id": item.id,
        "metadata": dict(item.metadata),
        "concepts": _plain(list(item.concepts)),
        "fingerprint": _plain(item.fingerprint),
        "visual": item.visual is not None,
    }


def _updated(concept: CustomConcept) -> str:
    moment = datetime.datetime.fromtimestamp(concept.updated_ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _concept_row(concept: CustomConcept) -> list[str]:
    positives, negatives = str(concept.positives), str(concept.negatives)
    return [concept.name, positives, negatives, f"{concept.fit.f1:.2f}", _updated(concept)]


def _print_concept(concept: CustomConcept, *, as_json: bool) -> None:
    if as_json:
        _print_json(concept)
        return
    fit = concept.fit
    rows = [
        ["name", concept.name],
        ["examples", f"{concept.positives} positive, {concept.negatives} negative"],
        ["fit", f"precision {fit.precision:.2f}, recall {fit.recall:.2f}, f1 {fit.f1:.2f} (leave-one-out)"],
        ["threshold", f"{concept.threshold:.3g} (scale {concept.scale:.3g})"],
        ["sdr", _bits(concept.sdr)],
        ["visual", "-" if concept.visual is None else _bits(concept.visual)],
        ["updated", _updated(concept)],
    ]
    _print_table(["", ""], rows)


def _dupe_row(number: int, group: Group, name: str) -> list[str]:
    link = group.strongest(name) if name != group.members[0] else None
    if link is None:
        return [str(number), name, "-", "", "", ""]
    other = link.original if link.copy == name else link.copy
    distance = "-" if link.phash_distance < 0 else str(link.phash_distance)
    return [str(number), name, link.kind, distance, f"{link.visual_share:.2f}", other]


def _group_json(group: Group) -> dict[str, Any]:
    return {"members": list(group.members), "links": _plain(list(group.links))}


def _term_row(term: TermMatch) -> list[str]:
    return [str(term.overlap), term.term]


if __name__ == "__main__":
    sys.exit(main())
