"""The channel to the service and how one call goes over it; every group of calls builds on it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

from ._convert import info_from_pb
from ._exceptions import Image2SdrError, InvalidArgument, ResourceExhausted, error_from_rpc_error
from ._targets import Target, channel_target, lists_addresses, service_config
from ._types import ImageSource, Info

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TIMEOUT_S",
    "MAX_IDS_PER_CALL",
    "USE_CLIENT_DEFAULT",
    "Connection",
    "Timeout",
    "UseClientDefault",
    "read_image",
]

DEFAULT_TIMEOUT_S = 30.0  # per unary call; streams have no deadline unless given one
DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # the server's default limit, both directions
MAX_IDS_PER_CALL = 1000  # ItemsExist: the server refuses more ids in one call


class UseClientDefault:
    """The type of ``USE_CLIENT_DEFAULT``: an argument left to the client's own setting.

    As in httpx: ``timeout=USE_CLIENT_DEFAULT`` (the default) takes the client's
    ``timeout``, while ``timeout=None`` means no deadline for this one call.
    """

    def __repr__(self) -> str:
        return "USE_CLIENT_DEFAULT"


USE_CLIENT_DEFAULT = UseClientDefault()
Timeout = float | None | UseClientDefault  # seconds; None: no deadline; USE_CLIENT_DEFAULT: the client's


class Connection:
    """A channel and its stubs, the call options every call shares, and the calls on the service itself.

    ``Image2SdrClient`` documents the arguments; the groups of calls (encode, search, ...) extend this.
    """

    def __init__(
        self,
        target: Target,
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        tls: bool = False,
        server_name: str | None = None,
        health_check: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel: grpc.Channel | None = None,
    ) -> None:
        if (certificate_chain is None) != (private_key is None):
            raise ValueError("certificate_chain and private_key go together (mutual TLS)")
        self.target = channel_target(target)
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._owns_channel = channel is None
        if channel is None:
            secure = tls or any(x is not None for x in (root_certificates, certificate_chain, private_key))
            if secure and server_name is None and lists_addresses(self.target):
                raise ValueError("TLS over several addresses needs server_name=, the name in the servers' certificates")
            credentials = (
                grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain) if secure else None
            )
            channel = _channel(self.target, credentials, _options(max_message_bytes, server_name, health_check))
        self._channel = channel
        self._stub = pb_grpc.Image2SdrStub(channel)  # type: ignore[no-untyped-call]  # generated, no .pyi
        self._health = health_pb2_grpc.HealthStub(channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    # -- the service ---------------------------------------------------------------

    def info(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Info:
        return info_from_pb(self._call(self._stub.Info, pb.InfoRequest(), timeout))

    def health(self, service: str = "", *, timeout: Timeout = USE_CLIENT_DEFAULT) -> str:
        """The grpc.health.v1 status name: "SERVING", "NOT_SERVING", ... ("" asks about the server)."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def _call(self, method: Callable[..., Any], request: Any, timeout: Timeout) -> Any:
        try:
            deadline = self.timeout if isinstance(timeout, UseClientDefault) else timeout
            return method(request, timeout=deadline, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc


def read_image(image: ImageSource) -> bytes:
    """The encoded image: ``bytes`` as they are, a ``str`` or path-like read from that file."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    return Path(os.fspath(image)).read_bytes()


ChannelOptions = list[tuple[str, str | int]]


def _options(max_message_bytes: int, server_name: str | None, health_check: bool) -> ChannelOptions:
    options: ChannelOptions = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.service_config", service_config(health_check)),
    ]
    if server_name is not None:
        # The authority is what gRPC checks the certificate against (and sends as :authority).
        options.append(("grpc.default_authority", server_name))
    return options


def _channel(target: str, credentials: grpc.ChannelCredentials | None, options: ChannelOptions) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)


def _unreadable(image: ImageSource, exc: OSError) -> Image2SdrError:
    return InvalidArgument(f"cannot read {os.fspath(image)!s}: {exc.strerror or exc}")


def _too_large(size: int, limit: int) -> Image2SdrError:
    return ResourceExhausted(f"request of {size} bytes exceeds the {limit}-byte message limit")
