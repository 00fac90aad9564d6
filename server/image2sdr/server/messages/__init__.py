"""The proto's messages <-> the use cases, shared by both edges (neither owns it).

    rpcs.py       each RPC as a function: request message -> use case -> response message
    requests.py   request messages -> the use cases' requests (the core's values)
    responses.py  the use cases' answers -> response messages
    status.py     core errors -> google.rpc.Status with details, one table

gRPC sends these messages in binary, HTTP in the proto's canonical JSON.
"""

from .rpcs import UNARY, encode_batch, encode_then_store
from .status import status_for

__all__ = ["UNARY", "encode_batch", "encode_then_store", "status_for"]
