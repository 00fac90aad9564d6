"""A fake image2sdr service for the client and CLI tests: real gRPC on a loopback port, no models.

``FakeServicer`` encodes anything that starts like a PNG or JPEG into a
deterministic SDR, keeps stored items in a dict, and records what the client
sent (metadata, deadlines, which RPCs were called), so the tests see the client
from the server's side.  ``FakeRpcError`` is what a failed call raises.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2_grpc

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

__all__ = [
    "ACTIVE_BITS",
    "DIMS",
    "MAX_IDS_PER_CALL",
    "MAX_K",
    "SIZE",
    "FakeRpcError",
    "FakeServicer",
    "bad_request",
    "packed",
    "serve_fake",
]

SIZE, DIMS, ACTIVE_BITS = 16384, (128, 128), 328
MAX_IDS_PER_CALL = 1000  # ItemsExist, as the real server
MAX_K = 1000  # ListItems' largest page, as the real server's default max_k


def packed(*details: Any) -> list[any_pb2.Any]:
    holders = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        holders.append(holder)
    return holders


def bad_request(field_name: str, description: str) -> status_pb2.Status:
    violation = error_details_pb2.BadRequest.FieldViolation(field=field_name, description=description)
    detail = error_details_pb2.BadRequest(field_violations=[violation])
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=description, details=packed(detail))


class FakeRpcError(grpc.RpcError):
    """What a failed call raises: a grpc.RpcError that is also a grpc.Call."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, Any], ...] = ()) -> None:
        super().__init__(details)
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailers


def _fake_sdr(image: bytes) -> pb.Sdr:
    seed = int.from_bytes(hashlib.sha256(image).digest()[:8], "big")
    return pb.Sdr(size=SIZE, dimensions=DIMS, active=sorted(random.Random(seed).sample(range(SIZE), ACTIVE_BITS)))


def _fake_fingerprint(image: bytes) -> pb.Fingerprint:
    digest = hashlib.sha256(image).digest()
    return pb.Fingerprint(sha256=digest.hex(), phash=int.from_bytes(digest[:8], "big"))


def _same_bytes(item: pb.Item, fingerprint: pb.Fingerprint) -> pb.Duplicate:
    return pb.Duplicate(
        id=item.id,
        kind=pb.DUPLICATE_KIND_SAME_BYTES,
        phash_distance=0,
        visual_overlap=ACTIVE_BITS,
        visual_share=1.0,
        concepts=item.concepts,
    )


def _abort(context: grpc.ServicerContext, status: status_pb2.Status) -> None:
    from grpc_status import rpc_status  # noqa: PLC0415 - a server-side helper, in the dev environment

    context.abort_with_status(rpc_status.to_status(status))


@dataclass
class FakeServicer(pb_grpc.Image2SdrServicer):  # type: ignore[misc]
    """Encodes anything that starts like a PNG or JPEG; stores items in a dict."""

    items: dict[str, pb.Item] = field(default_factory=dict)
    metadata: list[dict[str, str]] = field(default_factory=list)
    deadlines: list[float | None] = field(default_factory=list)  # seconds each Encode call had left
    calls: Counter[str] = field(default_factory=Counter)  # RPC name -> times called
    searches: list[pb.FindSimilarRequest] = field(default_factory=list)  # FindSimilar requests, as received
    default_page_size: int = 100  # what ListItems' page_size 0 means; a test lowers it to see paging

    def _encode(self, request: pb.EncodeRequest) -> pb.EncodeResponse:
        if not request.image.startswith((b"\x89PNG", b"\xff\xd8")):
            return pb.EncodeResponse(request_id=request.request_id, error=bad_request("image", "not an image"))
        sdr, visual = _fake_sdr(request.image), _fake_sdr(b"look:" + request.image)
        fingerprint = _fake_fingerprint(request.image)
        concepts = [pb.Concept(name="thing", confidence=0.75, used=True)]
        response = pb.EncodeResponse(
            request_id=request.request_id, sdr=sdr, concepts=concepts, visual=visual, fingerprint=fingerprint
        )
        if not request.HasField("add_to_index"):
            return response
        copies = self._copies(fingerprint, exclude="")
        if copies and request.add_to_index.on_duplicate == pb.ON_DUPLICATE_SKIP:
            response.duplicate.CopyFrom(copies[0])
            return response
        item = pb.Item(id=request.add_to_index.id, sdr=sdr, concepts=concepts, visual=visual, fingerprint=fingerprint)
        self.items.pop(item.id, None)  # a replaced item is the newest, as in the real index
        self.items[item.id] = item
        response.indexed = True
        return response

    def store(self, image: bytes, item_id: str) -> pb.EncodeResponse:
        """Store an image as an Encode with add_to_index would, without a call (the test's own setup)."""
        return self._encode(pb.EncodeRequest(image=image, add_to_index=pb.AddToIndex(id=item_id)))

    def _copies(self, fingerprint: pb.Fingerprint, exclude: str) -> list[pb.Duplicate]:
        """Stored items with the same bytes (the fake knows no other kind of copy)."""
        same = [i for i in self.items.values() if i.fingerprint.sha256 == fingerprint.sha256 and i.id != exclude]
        return [_same_bytes(item, fingerprint) for item in same]

    def Encode(self, request: pb.EncodeRequest, context: grpc.ServicerContext) -> pb.EncodeResponse:
        self.calls["Encode"] += 1
        self.metadata.append(dict(context.invocation_metadata()))
        self.deadlines.append(context.time_remaining())
        response = self._encode(request)
        if response.HasField("error"):
            _abort(context, response.error)
        return response

    def EncodeStream(self, requests: Iterator[pb.EncodeRequest], context: grpc.ServicerContext) -> Any:
        self.calls["EncodeStream"] += 1
        for request in requests:
            yield self._encode(request)

    def EncodeText(self, request: pb.EncodeTextRequest, context: grpc.ServicerContext) -> pb.EncodeTextResponse:
        self.calls["EncodeText"] += 1
        return pb.EncodeTextResponse(term=request.text.lower(), sdr=_fake_sdr(request.text.encode()))

    def GetItem(self, request: pb.GetItemRequest, context: grpc.ServicerContext) -> pb.Item:
        self.calls["GetItem"] += 1
        if request.id not in self.items:
            info = error_details_pb2.ResourceInfo(resource_type="item", resource_name=request.id)
            _abort(context, status_pb2.Status(code=code_pb2.NOT_FOUND, message="no such item", details=packed(info)))
        return self.items[request.id]

    def ItemsExist(self, request: pb.ItemsExistRequest, context: grpc.ServicerContext) -> pb.ItemsExistResponse:
        self.calls["ItemsExist"] += 1
        if len(request.ids) > MAX_IDS_PER_CALL:
            _abort(context, bad_request("ids", f"at most {MAX_IDS_PER_CALL} ids"))
        return pb.ItemsExistResponse(exists=[item_id in self.items for item_id in request.ids])

    def ListItems(self, request: pb.ListItemsRequest, context: grpc.ServicerContext) -> pb.ListItemsResponse:
        """Newest first; the token is an offset (the fake's tokens do not hold across writes, the server's do)."""
        self.calls["ListItems"] += 1
        size = request.page_size or self.default_page_size
        if size > MAX_K:
            _abort(context, bad_request("page_size", f"page_size must be in [1, {MAX_K}]"))
        token = request.page_token
        if token and not (token.startswith("o") and token[1:].isdigit()):
            _abort(context, bad_request("page_token", "not a token this server gave out"))
        start = int(token[1:]) if token else 0
        newest_first = list(reversed(self.items.values()))
        end = start + size
        next_token = f"o{end}" if end < len(newest_first) else ""
        return pb.ListItemsResponse(items=newest_first[start:end], next_page_token=next_token, total=len(self.items))

    def FindSimilar(self, request: pb.FindSimilarRequest, context: grpc.ServicerContext) -> pb.FindSimilarResponse:
        self.calls["FindSimilar"] += 1
        self.searches.append(request)
        query = self.GetItem(pb.GetItemRequest(id=request.id), context)
        others = [item for item in self.items.values() if item.id != request.id]
        weight = request.blend_weight if request.HasField("blend_weight") else 0.5
        matches = []
        for other in others:
            semantic = len(set(other.sdr.active) & set(query.sdr.active))
            visual = len(set(other.visual.active) & set(query.visual.active))
            if request.space == pb.SPACE_BLEND:
                score = (1 - weight) * semantic + weight * visual
                scored = [pb.SPACE_SEMANTIC, pb.SPACE_VISUAL]
                match = pb.Match(
                    id=other.id, overlap=semantic, semantic_overlap=semantic, visual_overlap=visual, score=score
                )
                match.scored_by.extend(scored)
            elif request.space == pb.SPACE_VISUAL:
                match = pb.Match(id=other.id, overlap=visual, visual_overlap=visual, score=visual)
            else:
                match = pb.Match(id=other.id, overlap=semantic, semantic_overlap=semantic, score=semantic)
            matches.append(match)
        matches.sort(key=lambda m: (-m.score, m.id))
        skipped = 0 if request.space in (pb.SPACE_UNSPECIFIED, pb.SPACE_SEMANTIC) else 1  # as if one had no look
        return pb.FindSimilarResponse(matches=matches[: request.k or 10], skipped_without_visual=skipped)

    def FindDuplicates(
        self, request: pb.FindDuplicatesRequest, context: grpc.ServicerContext
    ) -> pb.FindDuplicatesResponse:
        self.calls["FindDuplicates"] += 1
        if request.WhichOneof("query") == "id":
            fingerprint = self.GetItem(pb.GetItemRequest(id=request.id), context).fingerprint
        else:
            fingerprint = _fake_fingerprint(request.image)
        copies = self._copies(fingerprint, exclude=request.id)[: request.k or 10]
        return pb.FindDuplicatesResponse(duplicates=copies, fingerprint=fingerprint)

    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoResponse:
        self.calls["Info"] += 1
        thresholds = pb.DuplicateThresholds(max_phash_distance=8, min_visual_share=0.6)
        return pb.InfoResponse(
            geometry=pb.Sdr(size=SIZE, dimensions=DIMS), index_size=len(self.items), duplicate_thresholds=thresholds
        )

    def SimilarTerms(self, request: pb.SimilarTermsRequest, context: grpc.ServicerContext) -> Any:
        self.calls["SimilarTerms"] += 1
        return pb.SimilarTermsResponse(terms=[pb.TermMatch(term="thing", overlap=len(request.sdr.active))])


@contextmanager
def serve_fake(servicer: FakeServicer) -> Iterator[str]:
    """``servicer`` (and health checking) on a free loopback port; yields its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_Image2SdrServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()
