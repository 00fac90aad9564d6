"""The gRPC edge: protobuf in binary over gRPC, onto the use cases (``usecases``) through ``messages``.

    server.py         start_grpc(...) -> GrpcServer: binding, TLS, health (mirrors ``usecases.Health``), reflection
    servicer.py       Image2SdrServicer: each RPC converts and calls its use case; EncodeStream's batches
    stream_limits.py  how many streams are open, in all and per peer host
    auth.py           the bearer-token interceptor (the token itself: ``image2sdr.server.auth``)
    malformed.py      request bytes that are not a protobuf -> INVALID_ARGUMENT
    request_metrics.py  every RPC timed and counted by its final code

It imports neither the HTTP edge nor the composition root (``serve.create_server``).
"""

from .server import SERVICE_NAME, GrpcServer, start_grpc
from .servicer import Image2SdrServicer

__all__ = ["SERVICE_NAME", "GrpcServer", "Image2SdrServicer", "start_grpc"]
