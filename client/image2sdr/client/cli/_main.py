"""The parser and the entry point: each command's exit code, ``serve`` handed to the server, ``info``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from .._exceptions import Image2SdrError
from ._args import add_json
from ._base import EXIT_OK, EXIT_SERVER, EXIT_USAGE, UsageError
from ._concept import add_concept
from ._connection import connect, connection_options
from ._encode import add_encode, add_terms, add_text
from ._index import add_dupes, add_index
from ._output import describe_error, print_json, print_table
from ._pictures import add_explain, add_map
from ._search import add_list, add_similar

_SERVER_MODULES = ("image2sdr.server", "image2sdr.server.serve")  # missing: the distribution is not installed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="image2sdr", description="Images to semantic SDRs, over the image2sdr gRPC service."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Parsed by the server's own `main`; listed here for --help only (see main()).
    commands.add_parser("serve", add_help=False, help="run the server (needs image2sdr-server); serve --help")
    connection = connection_options()
    add_encode(commands, connection)
    add_text(commands, connection)
    add_index(commands, connection)
    add_similar(commands, connection)
    add_list(commands, connection)
    add_concept(commands, connection)
    add_dupes(commands, connection)
    add_terms(commands, connection)
    add_explain(commands, connection)
    add_map(commands, connection)
    info = commands.add_parser("info", parents=[connection], help="the server's geometry, models, index and limits")
    add_json(info)
    info.set_defaults(run=_run_info)
    return parser


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


def _run_info(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.info()
        health = client.health()
    if args.json:
        print_json({"health": health, **dataclasses.asdict(info)})
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
    print_table(["", ""], rows)
    return EXIT_OK
