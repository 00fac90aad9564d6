"""The layout says the architecture: only the edges of the server (``api``, gRPC; ``web``, HTTP over
the same servicer and its messages) know gRPC and the proto."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parent.parent / "server" / "image2sdr" / "server"
# The gRPC edge, the HTTP edge (it speaks the proto's messages and calls the gRPC servicer),
# the command that starts them, and a gRPC *client* of a remote provider.
EDGE = {"api", "web", "serve.py", "concepts/clarifai.py"}
GRPC_MODULES = ("grpc", "grpc_status", "grpc_health", "grpc_reflection", "google.rpc", "image2sdr.v1")


def _core_modules() -> list[Path]:
    modules = sorted(SERVER.rglob("*.py"))
    return [m for m in modules if not {m.relative_to(SERVER).parts[0], m.relative_to(SERVER).as_posix()} & EDGE]


def _imports(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def test_the_core_is_known_by_name() -> None:
    names = {m.relative_to(SERVER).as_posix() for m in _core_modules()}
    assert {"encoder/pipeline.py", "batching.py", "index/protocol.py", "errors.py"} <= names
    assert not any(name.startswith(("api/", "web/")) for name in names)


@pytest.mark.parametrize("module", _core_modules(), ids=lambda m: m.relative_to(SERVER).as_posix())
def test_core_modules_import_nothing_of_grpc(module: Path) -> None:
    edge = {
        name for name in _imports(module) if name.startswith(GRPC_MODULES) or name.lstrip(".").split(".")[0] == "api"
    }
    assert not edge, f"{module.relative_to(SERVER)} imports {sorted(edge)}: the gRPC edge belongs in api/"
