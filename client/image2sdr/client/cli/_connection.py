"""The connection options every command takes (--server, --token, TLS, --timeout), and the client they make."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from .._client import DEFAULT_TIMEOUT_S, Image2SdrClient
from ._args import positive_float
from ._base import DEFAULT_SERVER, UsageError

# A gRPC target that names its resolver ("dns:///name:port", "ipv4:...", "unix:..."),
# passed to the client whole, commas and all; "host:port" has no such prefix.
SCHEME = re.compile(r"(dns|ipv4|ipv6|unix|unix-abstract|vsock):")


def connection_options() -> argparse.ArgumentParser:
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
        "--timeout", type=positive_float, default=DEFAULT_TIMEOUT_S, metavar="S", help="seconds per call (default 30)"
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
        if SCHEME.match(current) or SCHEME.match(values):
            parser.error(
                f"{option}: a gRPC target with a scheme (dns:///NAME:PORT, ...) goes alone: {current},{values}"
            )
        setattr(namespace, self.dest, f"{current},{values}")


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
    if SCHEME.match(server) or "," not in server:
        return server
    return [address.strip() for address in server.split(",")]
