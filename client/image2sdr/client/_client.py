"""``Image2SdrClient``: the image2sdr.v1 service as typed Python calls, one module per group of calls."""

from __future__ import annotations

from ._concepts import ConceptCalls
from ._connection import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TIMEOUT_S,
    MAX_IDS_PER_CALL,
    USE_CLIENT_DEFAULT,
    UseClientDefault,
    read_image,
)
from ._encode import EncodeCalls
from ._items import ItemCalls
from ._pictures import PictureCalls
from ._search import SearchCalls

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TIMEOUT_S",
    "MAX_IDS_PER_CALL",
    "USE_CLIENT_DEFAULT",
    "Image2SdrClient",
    "UseClientDefault",
    "read_image",
]


class Image2SdrClient(EncodeCalls, SearchCalls, ItemCalls, ConceptCalls, PictureCalls):
    """A connection to an image2sdr server, or to several replicas of it.

    ``target`` is one server ("host:port") or any gRPC target string, such as
    "dns:///name:port", whose every DNS record is a replica.  A list of "HOST:PORT"
    addresses names replicas directly; several must be IP addresses, all IPv4 or all
    IPv6 (names go through DNS: give one name with a record per replica).  Calls go to
    the replicas in turn (gRPC's ``round_robin``); one that is down is passed over until
    it is back.  ``health_check=True`` also passes over replicas whose grpc.health.v1
    status is not SERVING; with none SERVING, every call, ``health()`` too, raises
    ``Unavailable`` without reaching a server.

    ``token`` is sent as ``authorization: Bearer <token>`` on every call.  Any of
    ``root_certificates`` (PEM CA bundle), ``certificate_chain`` and ``private_key``
    (PEM, for mutual TLS) or ``tls=True`` (system roots) makes the channel TLS.
    ``server_name`` is the name the server certificates are checked against (and the
    call's authority); TLS over a list of addresses needs it, as the list is no name.
    ``channel`` hands in a channel made elsewhere; the client then leaves closing it to
    you, and the options that shape a channel are not used.
    Failed calls raise the ``Image2SdrError`` family.
    """
