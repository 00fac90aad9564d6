"""The gRPC edge: the only package of the server that knows protobuf and grpc.

    server.py         create_server(config) -> Server: assembly, binding, TLS, health, reflection
    servicer.py       Image2SdrServicer: each RPC converts, calls the core, converts back
    conversion.py     protobuf messages <-> the core's plain values
    status.py         core errors -> google.rpc.Status with details, one table
    stream_limits.py  how many streams are open, in all and per peer host
    auth.py           the bearer-token interceptor
    malformed.py      request bytes that are not a protobuf -> INVALID_ARGUMENT

The core beside this package (encoder, imaging, merge, sdr, concepts/, terms/,
index/, ...) is plain typed Python and is tested without a socket.
"""

from .server import SERVICE_NAME, Server, create_server
from .servicer import Image2SdrServicer

__all__ = ["SERVICE_NAME", "Image2SdrServicer", "Server", "create_server"]
