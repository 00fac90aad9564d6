"""The ``image2sdr`` command: run the server, encode images and terms, index folders, search.

Exit codes: 0 ok; 1 the server refused or failed (the typed error's message is
printed, never a traceback); 2 usage: bad arguments, unreadable files, a missing extra.

One module per job: ``_main`` (the parser, the entry point, ``serve`` and ``info``),
a module per command group (``_encode``: encode, text, terms; ``_index``: index,
dupes; ``_search``: similar, ls; ``_concept``: concept; ``_pictures``: explain,
map), and what they share: ``_connection`` (the connection options and the client
they make), ``_args`` (argument types and shared option groups), ``_output``
(JSON and tables), ``_files`` (file walking, SDR pictures' paths, SDRs from JSON).
"""

from ._args import filter_from_args, parse_tag, parse_where
from ._base import DEFAULT_SERVER, EXIT_OK, EXIT_SERVER, EXIT_USAGE, UsageError
from ._connection import connect
from ._files import index_candidates, png_paths, sdr_from_json
from ._main import build_parser, main
from ._output import describe_error

__all__ = [
    "DEFAULT_SERVER",
    "EXIT_OK",
    "EXIT_SERVER",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "connect",
    "describe_error",
    "filter_from_args",
    "index_candidates",
    "main",
    "parse_tag",
    "parse_where",
    "png_paths",
    "sdr_from_json",
]
