"""Reading the google.rpc details a refused gRPC call carries."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = ["bad_request_field"]


def bad_request_field(error: grpc.RpcError) -> str:
    """The field the first BadRequest violation names (the call must carry one)."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            bad = error_details_pb2.BadRequest()
            assert status_pb2.Status.FromString(value).details[0].Unpack(bad)
            return str(bad.field_violations[0].field)
    raise AssertionError("no google.rpc.Status details")
