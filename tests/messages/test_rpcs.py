"""Every RPC of the contract has its function, named from the service's descriptor, and the servicer has them all."""

from __future__ import annotations

from image2sdr.server.grpc_api import Image2SdrServicer
from image2sdr.server.messages import UNARY
from image2sdr.v1 import image2sdr_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["Image2Sdr"]


def test_every_unary_rpc_has_a_function_and_only_those() -> None:
    unary = {m.name for m in SERVICE.methods if not m.client_streaming and not m.server_streaming}
    assert set(UNARY) == unary


def test_the_servicer_answers_every_rpc_itself() -> None:
    base = Image2SdrServicer.__mro__[1]  # the generated class, whose methods answer UNIMPLEMENTED
    for method in SERVICE.methods:
        assert getattr(Image2SdrServicer, method.name) is not getattr(base, method.name), method.name
