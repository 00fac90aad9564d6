"""Old import path, kept so callers not yet moved keep working: the service is built by ``serve``.

The gRPC edge is ``grpc_api``, the HTTP edge ``http_api``, the composition root
``serve.create_server``.  New code imports those; this module only re-exports.
"""

from ..serve import SERVICE_NAME, Server, create_server, open_index

__all__ = ["SERVICE_NAME", "Server", "create_server", "open_index"]
