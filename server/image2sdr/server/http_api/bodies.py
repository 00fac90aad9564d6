"""Request bodies: read under http.max_body_bytes and http.body_timeout_s, parsed as the proto's JSON or a form.

JSON is counted before it is parsed: ``json.loads`` makes a Python object of every
value, so 30 MB of empty arrays once cost 780 MB before an unknown field was refused.
A body's commas, colons and opening brackets (a bound on its values and keys, found
at memory speed, counted as the body comes in) may number at most
http.max_json_values; past that it is 413, before the rest is read and before
parsing.  Deep nesting is 400 (the parser's own recursion guard, reported as such).
JSON is parsed in the call's worker, after its slot is taken (``Calls.run`` takes a
function), so waiting calls hold bytes, not objects.

Enum values are read as the proto's JSON has them (``ON_DUPLICATE_SKIP``, or the number)
and, as an HTTP client would write them, short and in any case (``skip``, ``Skip``):
the enum's common prefix may be left out.  A value that is neither is 400 listing the
valid ones.  A query parameter the endpoint does not take is 400 naming it (it was
ignored: ``/v1/items?tag=dog`` listed everything).

Plain forms where the proto's nesting gets in the way are read too, rewritten to the
proto's JSON before ``ParseDict`` (``_PLAIN_FORMS``): an ``ItemIds`` as the list itself
(``"ids": ["a", "b"]`` for ``"ids": {"ids": ["a", "b"]}``) and a ``ConceptExample`` as
the stored item's id (``"positives": ["a", "b"]`` for ``[{"id": "a"}, {"id": "b"}]``;
images still go as ``{"image": base64}``).  The proto's forms stay valid.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable, Iterator
from functools import cache
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from image2sdr.v1 import image2sdr_pb2 as pb

from ..errors import LimitExceededError
from ..messages.status import status_for
from .errors import HttpApiError, bad_request, too_large, unsupported_media_type

__all__ = ["Body", "encode_request", "enum_name", "json_body", "json_values", "refuse_unknown_query"]

logger = logging.getLogger(__name__)

_IMAGE_TYPES = "image/* or application/octet-stream (the image), multipart/form-data (field 'image'), or JSON"

_M = TypeVar("_M", bound=Message)


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 once it passes http.max_body_bytes (declared or counted)."""
    limit: int = request.app.state.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit, int(declared))
    chunks, size = [], 0
    seconds: float = request.app.state.body_timeout_s
    # JSON is counted as it comes in (each mark is one byte: no chunk boundary splits one), so
    # a body of too many values is refused at the chunk that passes the limit, not read whole.
    values, max_values = 1, _max_json_values(request) if _media_type(request) == "application/json" else None
    try:
        with anyio.fail_after(seconds):  # a sender that stalls gives its connection back
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(limit, None)
                if max_values is not None:
                    values += json_values(chunk) - 1
                    if values > max_values:
                        raise _too_many_values("body", max_values, values)
                chunks.append(chunk)
    except ClientDisconnect:
        # Not a server fault: one line, not uvicorn's traceback at ERROR. Nobody reads the answer.
        logger.info("%s %s: the client went away after %d bytes of its body", request.method, request.url.path, size)
        status = status_pb2.Status(code=code_pb2.CANCELLED, message="the client went away before its body was in")
        raise HttpApiError(status, http=499) from None
    except TimeoutError:
        status = status_pb2.Status(
            code=code_pb2.DEADLINE_EXCEEDED, message=f"the body took longer than http.body_timeout_s ({seconds:g} s)"
        )
        raise HttpApiError(status, http=408) from None
    return b"".join(chunks)


Body = Annotated[bytes, Depends(_read_body)]


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def json_values(text: bytes) -> int:
    """At least the number of values and keys in JSON ``text``: its commas, colons and opening brackets, plus one.

    Each value or key after the first of its container follows a comma or a colon, and
    each container opens with a bracket, so this bounds what ``json.loads`` allocates
    (brackets and commas inside strings are counted too: a bound, never an undercount).
    ``bytes.count`` runs at memory speed: 30 MB in a few milliseconds.
    """
    return sum(text.count(mark) for mark in (b",", b":", b"[", b"{")) + 1


def _loads(text: bytes, limit: int, field: str) -> object:
    """``text`` parsed as JSON once counted under ``limit`` values (http.max_json_values)."""
    counted = json_values(text)
    if counted > limit:
        raise _too_many_values(field, limit, counted)
    try:
        return json.loads(text)
    except RecursionError:
        raise bad_request(f"{field}: JSON nested too deep for the parser (about 1,000 levels)", field) from None


def _too_many_values(field: str, limit: int, counted: int) -> HttpApiError:
    """413 RESOURCE_EXHAUSTED with a QuotaFailure: JSON of more values than http.max_json_values."""
    error = LimitExceededError(
        f"{field}: more JSON values than http.max_json_values ({limit}): {counted} commas, colons and brackets",
        limit=limit,
        actual=counted,
    )
    return HttpApiError(status_for(error), 413)


def _parse(body: bytes, message: _M, limit: int) -> _M:
    """``body`` (JSON, empty for {}) parsed into ``message``; a bad body is 400 naming what is wrong."""
    name = message.DESCRIPTOR.full_name
    try:
        data = _loads(body, limit, "body") if body.strip() else {}
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise bad_request(
            f"the body is not JSON ({type(exc).__name__}); send a {name} in canonical JSON", "body"
        ) from None
    if not isinstance(data, dict):
        raise bad_request(f"the body must be a JSON object: a {name}", "body")
    _as_proto_json(data, message.DESCRIPTOR, "")
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except (json_format.ParseError, RecursionError) as exc:
        raise bad_request(f"body: {exc}", "body") from None
    return message


# -- enums, short or canonical --------------------------------------------------------------


def enum_name(enum: EnumDescriptor, given: str, field: str) -> str:
    """The canonical name of ``given`` in ``enum``: itself, or short (no common prefix), in any case; else 400."""
    upper = given.strip().upper()
    names = {value.name for value in enum.values}
    prefix = _prefix(enum)
    for candidate in (upper, f"{prefix}{upper}"):
        if candidate in names:
            return candidate
    short = ", ".join(value.name.removeprefix(prefix).lower() for value in enum.values)  # in the proto's order
    raise bad_request(
        f"{field}: {given[:100]!r} is not a {enum.name}; one of {short} (or the full name, as {enum.values[-1].name})",
        field,
    )


@cache
def _prefix(enum: EnumDescriptor) -> str:
    """The words every value's name starts with (ON_DUPLICATE_ of ON_DUPLICATE_SKIP); "" for a one-value enum."""
    words = [value.name.split("_") for value in enum.values]
    if len(words) < 2:
        return ""
    shared = []
    for column in zip(*words, strict=False):
        if len(set(column)) > 1:
            break
        shared.append(column[0])
    return "".join(f"{word}_" for word in shared)


def _as_proto_json(data: dict[str, object], message: Descriptor, path: str) -> None:
    """``data`` (JSON for ``message``) made the proto's JSON in place, nested messages too.

    Enum values made canonical, plain forms (``_PLAIN_FORMS``) given their nesting.
    """
    for key, given in data.items():
        field = message.fields_by_name.get(key) or _by_json_name(message).get(key)
        if field is None or given is None:
            continue  # json_format refuses an unknown field, naming it
        where = f"{path}{field.json_name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue  # the maps here hold strings
        value = data[key] = given if field.is_repeated else _nested(field.message_type, given)
        items = value if field.is_repeated and isinstance(value, list) else [value]
        if field.enum_type is not None:
            canonical = [_enum_item(field.enum_type, item, where) for item in items]
            data[key] = canonical if items is value else canonical[0]
        elif field.message_type is not None and not field.message_type.full_name.startswith("google.protobuf."):
            if items is value:
                items = data[key] = [_nested(field.message_type, item) for item in items]
            for item in items:
                if isinstance(item, dict):
                    _as_proto_json(item, field.message_type, f"{where}.")


# A message's plain form -> its proto JSON: the value a client means, without the nesting
# the proto needs (a oneof must be a message; a oneof cannot hold a repeated field).
_PLAIN_FORMS: dict[str, tuple[type, Callable[[object], dict[str, object]]]] = {
    "image2sdr.v1.ItemIds": (list, lambda ids: {"ids": ids}),  # "ids": ["a", "b"]
    "image2sdr.v1.ConceptExample": (str, lambda item_id: {"id": item_id}),  # "positives": ["a", "b"]
}


def _nested(message: Descriptor | None, value: object) -> object:
    """``value`` as the proto's JSON for ``message``: a plain form nested, anything else as it is."""
    form = None if message is None else _PLAIN_FORMS.get(message.full_name)
    if form is not None and isinstance(value, form[0]):
        return form[1](value)
    return value


def _enum_item(enum: EnumDescriptor, item: object, where: str) -> object:
    return enum_name(enum, item, where) if isinstance(item, str) else item  # a number: json_format checks it


@cache
def _by_json_name(message: Descriptor) -> dict[str, FieldDescriptor]:
    return {field.json_name: field for field in message.fields}


# -- query parameters ----------------------------------------------------------------------


async def refuse_unknown_query(request: Request) -> None:
    """400 naming the query parameters the route does not take (an app-wide dependency)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    taken = frozenset(_declared(route.dependant))  # a handful of fields: not worth a cache
    unknown = sorted(set(request.query_params) - taken)
    if unknown:
        accepted = ", ".join(sorted(taken)) or "none"
        listed = ", ".join(name[:100] for name in unknown)
        raise bad_request(f"unknown query parameter(s): {listed}; {route.path_format} takes {accepted}", unknown[0])


def _declared(dependant: Dependant) -> Iterator[str]:
    for parameter in dependant.query_params:
        yield parameter.alias
    for dependency in dependant.dependencies:
        yield from _declared(dependency)


def _max_json_values(request: Request) -> int:
    limit: int = request.app.state.max_json_values
    return limit


def json_body(request: Request, body: bytes, message: _M) -> _M:
    """``body`` as ``message`` (its JSON), counted and parsed where this is called: in the call's worker."""
    kind = _media_type(request)
    if body.strip() and kind != "application/json":
        raise unsupported_media_type(kind, "application/json")
    return _parse(body, message, _max_json_values(request))


async def _form(request: Request, body: bytes) -> FormData:
    """A multipart body, already read (and so capped), parsed."""

    async def once() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(request.headers, once(), max_files=1, max_fields=8)
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise bad_request(f"unreadable multipart form: {exc.message}", "body") from None


Positive = Annotated[int | None, Query(ge=0, le=1_000_000)]
Share = Annotated[float | None, Query(ge=0.0, le=1.0)]


async def encode_request(
    request: Request,
    body: Body,
    *,
    max_concepts: Positive = None,
    min_confidence: Share = None,
    sparsity: Share = None,
    visual_share: Share = None,
    add: Annotated[str | None, Query(description="store the result under this item id")] = None,
    on_duplicate: Annotated[str | None, Query(description="KEEP, SKIP or REPLACE (with add)")] = None,
) -> pb.EncodeRequest | Callable[[], pb.EncodeRequest]:
    """The EncodeRequest of any of the three bodies; query options go with the image and form ones.

    A JSON body comes back as the function that parses it (in the call's worker, once
    its slot is taken); the image and form bodies are parsed here, at the cost of a copy.
    """
    kind = _media_type(request)
    options = {
        "max_concepts": max_concepts,
        "min_confidence": min_confidence,
        "sparsity": sparsity,
        "visual_share": visual_share,
    }
    if kind == "application/json":
        given = [
            name for name, value in {**options, "add": add, "on_duplicate": on_duplicate}.items() if value is not None
        ]
        if given:  # not silently dropped: the JSON body says it all
            raise bad_request(f"with a JSON body, {given[0]} goes in the EncodeRequest, not the query", given[0])
        limit = _max_json_values(request)
        return lambda: _parse(body, pb.EncodeRequest(), limit)
    message = pb.EncodeRequest()
    if kind == "multipart/form-data":
        await _from_form(request, body, message)
    elif kind.startswith("image/") or kind == "application/octet-stream":
        message.image = body
    else:
        raise unsupported_media_type(kind, _IMAGE_TYPES)
    for name, value in options.items():
        if value is not None:
            setattr(message.options, name, value)
    if add is not None:
        message.add_to_index.id = add
    if on_duplicate is not None:
        message.add_to_index.on_duplicate = _on_duplicate(on_duplicate, add)
    return message


async def _from_form(request: Request, body: bytes, message: pb.EncodeRequest) -> None:
    """The 2018 prototype's form: file ``image``, optional ``id`` and ``metadata`` (a JSON object)."""
    form = await _form(request, body)
    try:
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise bad_request("the form needs a file field 'image'", "image")
        message.image = await image.read()
        item_id, metadata = form.get("id"), form.get("metadata")
        if isinstance(item_id, str) and item_id:
            message.add_to_index.id = item_id
        if isinstance(metadata, str) and metadata:
            if not item_id:
                raise bad_request("metadata is stored with an item: give its id too", "metadata")
            _add_metadata(metadata, message.add_to_index, _max_json_values(request))
    finally:
        await form.close()


def _add_metadata(text: str, target: pb.AddToIndex, limit: int) -> None:
    """The form's ``metadata`` field (a JSON object of strings) into ``target.metadata``."""
    try:
        value = _loads(text.encode(), limit, "metadata")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise bad_request("metadata must be a JSON object of strings", "metadata")
    try:
        json_format.ParseDict({"metadata": value}, target)
    except json_format.ParseError as exc:
        raise bad_request(f"metadata: {exc}", "metadata") from None


def _on_duplicate(name: str, add: str | None) -> pb.OnDuplicate:
    if add is None:
        raise bad_request("on_duplicate goes with add (the id to store under)", "on_duplicate")
    # The enum wrapper maps a name to its number; it is not a type to call (that was a 500).
    value: pb.OnDuplicate = pb.OnDuplicate.Value(enum_name(pb.OnDuplicate.DESCRIPTOR, name, "on_duplicate"))
    return value
