"""What a browser shows as it is: an item's thumbnail and a map's picture as images, at their own URLs.

gRPC carries both as bytes inside a message (``Item.thumbnail``, ``MapJob.png``); over
HTTP that means base64 inside JSON, which an ``<img>`` cannot show and no cache can
keep.  So here:

    GET /v1/items/{id}/thumbnail   the stored thumbnail (image/webp or image/jpeg)
    GET /v1/maps/{id}/image        a finished map's grid (image/png)
    GET /v1/maps/{id}              GetMap's JSON with the cells and ``imageUrl``, not the PNG

Both images carry an ``ETag`` (a hash of their bytes) and answer ``If-None-Match`` with
304.  A thumbnail may change under its id (an add replaces an item), so it is
revalidated every time (``no-cache``); a map's picture never changes once its job is
done (job ids are random and not reused), so it may be kept.  A missing picture is a
``google.rpc.Status`` (404 NOT_FOUND, or 400 FAILED_PRECONDITION for a map not done yet).
"""

from __future__ import annotations

import hashlib
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from google.rpc import code_pb2, status_pb2
from starlette.responses import JSONResponse, Response

from image2sdr.v1 import image2sdr_pb2 as pb

from ..messages import status_for
from ..usecases import UseCases
from .calls import Calls, message_dict
from .errors import HttpApiError

__all__ = ["MAP_CACHE", "THUMBNAIL_CACHE", "add_resource_routes", "image_type"]

THUMBNAIL_CACHE = "private, no-cache"  # kept, but asked again each time: an add may replace the item
MAP_CACHE = "private, max-age=86400, immutable"  # a done job's picture never changes


def add_resource_routes(app: FastAPI) -> None:
    """Register the image routes and GetMap's JSON; before the JSON routes, which would take these paths."""
    add = app.add_api_route
    add("/v1/items/{item_id:path}/thumbnail", _thumbnail, methods=["GET"], name="GetThumbnail", **_image_doc("webp"))
    add("/v1/maps/{job_id}/image", _map_image, methods=["GET"], name="GetMapImage", **_image_doc("png"))
    add("/v1/maps/{job_id}", _get_map, methods=["GET"], name="GetMap")  # the job, its picture by link


def image_type(data: bytes) -> str:
    """The media type of a stored picture, from its first bytes (thumbnails are WebP or JPEG)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    return "application/octet-stream"


async def _thumbnail(request: Request, item_id: str) -> Response:
    """The stored thumbnail, read alone (a map shows hundreds at once: no SDRs read, no call slot held).

    Only when there is none does GetItem run, to say which is missing: the item or its picture.
    """
    cases: UseCases = request.app.state.cases
    try:
        found = await anyio.to_thread.run_sync(cases.parts.index.thumbnails, [item_id])
    except Exception as exc:  # an id no item could have, the index closed: as gRPC would say it
        raise HttpApiError(status_for(exc)) from exc
    if item_id in found:
        return _image(request, found[item_id], THUMBNAIL_CACHE)

    def respond(item: pb.Item) -> Response:
        if not item.thumbnail:
            raise _missing(f"item {item_id!r} has no thumbnail (added by SDR alone, or thumbnails are off)")
        return _image(request, item.thumbnail, THUMBNAIL_CACHE)  # stored in between

    return await _calls(request).run("GetItem", pb.GetItemRequest(id=item_id), request, respond)


async def _map_image(request: Request, job_id: str) -> Response:
    def respond(job: pb.MapJob) -> Response:
        if job.state != pb.MAP_STATE_DONE:
            state = pb.MapState.Name(job.state)
            raise HttpApiError(
                status_pb2.Status(
                    code=code_pb2.FAILED_PRECONDITION, message=f"map {job_id!r} has no picture yet: it is {state}"
                )
            )
        return _image(request, job.png, MAP_CACHE)

    return await _calls(request).run("GetMap", pb.GetMapRequest(id=job_id), request, respond)


async def _get_map(request: Request, job_id: str) -> Response:
    """GetMap as JSON: everything but the PNG, and once done the picture's URL (``imageUrl``)."""

    def respond(job: pb.MapJob) -> Response:
        job.ClearField("png")  # not encoded to base64 only to be dropped
        body = message_dict(job)
        del body["png"]  # at its own URL; "" would read as a map with no picture
        if job.state == pb.MAP_STATE_DONE:
            body["imageUrl"] = str(request.url_for("GetMapImage", job_id=job.id).path)
        return JSONResponse(body)

    return await _calls(request).run("GetMap", pb.GetMapRequest(id=job_id), request, respond)


def _image(request: Request, data: bytes, cache: str) -> Response:
    etag = f'"{hashlib.blake2b(data, digest_size=16).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": cache}
    if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=image_type(data), headers=headers)


def _missing(message: str) -> HttpApiError:
    return HttpApiError(status_pb2.Status(code=code_pb2.NOT_FOUND, message=message))


def _calls(request: Request) -> Calls:
    calls: Calls = request.app.state.calls
    return calls


def _image_doc(subtype: str) -> dict[str, Any]:
    content = {f"image/{subtype}": {"schema": {"type": "string", "format": "binary"}}}
    return {"responses": {200: {"content": content, "description": "the picture"}}, "response_class": Response}
