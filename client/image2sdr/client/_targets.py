"""Where a client connects: one gRPC target, or several replicas that calls go to in turn.

gRPC balances on the client.  The channel resolves its target to addresses (a DNS name
to every A/AAAA record it has, an ``ipv4:``/``ipv6:`` target to the addresses it lists),
keeps a connection to each, and the ``round_robin`` policy sends each call to the next
ready one.  A replica that goes away drops out of the turn until it is back.  The default
policy, ``pick_first``, would send every call to one address, which is why every channel
the client makes names ``round_robin``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence

__all__ = ["Target", "channel_target", "lists_addresses", "service_config"]

Target = str | Sequence[str]  # one gRPC target, or "HOST:PORT" addresses of replicas

_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_MALFORMED = "{!r} is not HOST:PORT (IPv6 in brackets: [::1]:50051; a target such as dns:///NAME:PORT goes alone)"


def channel_target(target: Target) -> str:
    """The gRPC target string for ``target``.

    A ``str`` is one gRPC target and is used as it is ("host:port", "dns:///name:port",
    "unix:path", ...).  A list of one "HOST:PORT" is that address; of several, they must
    be IP addresses of one family, joined into an ``ipv4:`` or ``ipv6:`` target.  Names
    resolve to addresses through DNS, so several replicas behind names are one DNS name
    with a record per replica (a Kubernetes headless Service is one).
    """
    if isinstance(target, str):
        if not target.strip():
            raise ValueError("empty target: give HOST:PORT, a gRPC target such as dns:///NAME:PORT, or a list")
        return target
    addresses = list(target)
    if not addresses:
        raise ValueError("no addresses: give at least one HOST:PORT")
    hosts = [_host_port(address) for address in addresses]
    if len(hosts) == 1:
        return addresses[0].strip()
    return _address_list(addresses, hosts)


def lists_addresses(target: str) -> bool:
    """Whether the gRPC target ``target`` lists several addresses, so names no one host a certificate could match."""
    return target.startswith(("ipv4:", "ipv6:")) and "," in target


def service_config(health_check: bool) -> str:
    """The channel's default service config: ``round_robin``, and gRPC health checking if asked for."""
    config: dict[str, object] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if health_check:
        # The client watches each replica's grpc.health.v1 status for the whole server
        # (service ""): one that is not SERVING gets no calls until it is again.
        config["healthCheckConfig"] = {"serviceName": ""}
    return json.dumps(config)


def _host_port(address: str) -> tuple[str, int]:
    if not isinstance(address, str):
        raise TypeError(f"an address is a str HOST:PORT, not {type(address).__name__}")
    host, _, port = address.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if bracketed and _ip(host) is None:
        raise ValueError(_MALFORMED.format(address))
    if not (bracketed or _HOST_NAME.fullmatch(host)) or not port.isdigit() or not 0 < int(port) < 2**16:
        raise ValueError(_MALFORMED.format(address))
    return host, int(port)


def _address_list(addresses: list[str], hosts: list[tuple[str, int]]) -> str:
    ips: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = []
    for address, (host, port) in zip(addresses, hosts, strict=True):
        ip = _ip(host)
        if ip is None:
            raise ValueError(
                f"several addresses must be IP addresses, and {address!r} is a name: for replicas behind names, "
                "give one DNS name with a record per replica, as a str: dns:///NAME:PORT"
            )
        ips.append((ip, port))
    versions = {ip.version for ip, _ in ips}
    if len(versions) > 1:
        raise ValueError(
            "several addresses must be all IPv4 or all IPv6; for both, give one DNS name: dns:///NAME:PORT"
        )
    if versions == {6}:
        return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in ips)
    return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in ips)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
