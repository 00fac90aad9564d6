"""The OpenAPI description of the HTTP face, from the proto's descriptors: ``ProtoDocumentedApp``.

FastAPI describes what its own type hints say, and the bodies here are protobuf
messages it cannot see: left to itself it called every body "object", gave no response
schemas and advertised 422 answers the server never sends (a refused parameter is 400).
So the document is FastAPI's paths and parameters, with each RPC's operation filled in
from ``image2sdr.v1.Image2Sdr``'s method descriptor (the route's name is the RPC's):

    requestBody   the request message (POST), as the proto's canonical JSON
    200           the response message
    4xx/5xx       google.rpc.Status, only the statuses this edge answers (errors.py)

and one component per message and enum reached from them, walked from the descriptors
(``message_schemas``): fields by their JSON names, repeated fields as arrays, maps as
objects, enums by name, 64-bit integers as strings and bytes as base64, as
``json_format`` writes and reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, MethodDescriptor
from google.rpc import code_pb2, status_pb2

from image2sdr.v1 import image2sdr_pb2 as pb

from .errors import TOO_LARGE, http_status, status_http

__all__ = ["SERVICE", "ProtoDocumentedApp", "error_statuses", "message_schemas", "openapi_document"]

SERVICE = pb.DESCRIPTOR.services_by_name["Image2Sdr"]
_REF = "#/components/schemas/"
_STATUS = status_pb2.Status.DESCRIPTOR

# RPCs that name a stored item, custom concept or map job, and so may answer NOT_FOUND.
_NAMING = frozenset(
    {
        "GetItem",
        "RemoveItem",
        "FindSimilar",
        "FindDuplicates",
        "Explain",
        "DefineConcept",
        "GetConcept",
        "RemoveConcept",
        "CreateMap",
        "GetMap",
    }
)

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    # 64-bit integers are strings in proto3 JSON (a JavaScript number loses bits past 2^53).
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
}

# Well-known types have JSON forms of their own (google/protobuf/*.proto, "JSON Mapping").
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Any": {
        "type": "object",
        "description": "a message of the type @type names, its fields beside @type",
        "properties": {"@type": {"type": "string", "examples": ["type.googleapis.com/google.rpc.BadRequest"]}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$", "examples": ["1.5s"]},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.FieldMask": {"type": "string", "description": "comma-separated lowerCamelCase paths"},
}


class ProtoDocumentedApp(FastAPI):
    """FastAPI whose /openapi.json is ``openapi_document``'s: schemas from the proto, only the statuses sent."""

    def openapi(self) -> dict[str, Any]:
        if not self.openapi_schema:
            self.openapi_schema = openapi_document(self)
        return self.openapi_schema


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document for ``app``'s routes, each RPC's operation described from its method descriptor."""
    document = get_openapi(
        title=app.title, version=app.version, summary=app.summary, description=app.description, routes=app.routes
    )
    components: dict[str, Any] = {}
    for route in app.routes:
        if not (isinstance(route, APIRoute) and route.include_in_schema):
            continue
        for method in sorted(route.methods or ()):
            operation = document["paths"][route.path_format][method.lower()]
            rpc = SERVICE.methods_by_name.get(route.name)
            if rpc is None and route.path_format == "/healthz":
                _describe_other(operation, method)
            elif rpc is None:
                _describe_picture(operation)
            else:
                _describe_rpc(operation, rpc, method, components)
    message_schemas([_STATUS], components)
    # Replaces FastAPI's own components: only its 422 models were there, and no route answers 422.
    document["components"] = {"schemas": dict(sorted(components.items()))}
    return document


def _describe_rpc(operation: dict[str, Any], rpc: MethodDescriptor, method: str, components: dict[str, Any]) -> None:
    request, response = rpc.input_type, rpc.output_type
    # A GET or DELETE takes its request from the path and query (FastAPI's parameters): no body schema.
    message_schemas([response, request] if method == "POST" else [response], components)
    operation["summary"] = rpc.name
    prefix = operation.get("description", "")
    operation["description"] = (
        f"{prefix}\n\nThe RPC `{SERVICE.full_name}/{rpc.name}`: request `{request.full_name}`, "
        f"response `{response.full_name}`."
    ).strip()
    if method == "POST":
        body = operation.setdefault("requestBody", {"required": False, "content": {}})
        body["content"]["application/json"] = {"schema": _ref(request)}
    ok = {"description": response.full_name, "content": {"application/json": {"schema": _ref(response)}}}
    operation["responses"] = {"200": ok, **_error_responses(error_statuses(rpc.name, method))}


def _describe_other(operation: dict[str, Any], method: str) -> None:
    """A route that is no RPC (/healthz): its answers as it sends them."""
    health = {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["SERVING", "NOT_SERVING"]},
            "reason": {"type": "string", "description": "why not, when NOT_SERVING"},
        },
        "required": ["status"],
    }
    content = {"application/json": {"schema": health}}
    operation["responses"] = {
        "200": {"description": "serving", "content": content},
        "503": {"description": "not serving, and why", "content": content},
    }


def error_statuses(rpc: str, method: str) -> dict[int, str]:
    """The HTTP statuses a call of ``rpc`` by ``method`` may fail with, and what each means."""
    statuses = {
        http_status(code_pb2.INVALID_ARGUMENT): "INVALID_ARGUMENT or FAILED_PRECONDITION: a BadRequest names the field",
        http_status(code_pb2.UNAUTHENTICATED): "UNAUTHENTICATED: the server has a token and the call lacks it",
        status_http(status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED)): (
            "RESOURCE_EXHAUSTED: the server is busy (no free slot, a full queue); retry later"
        ),
        http_status(code_pb2.INTERNAL): "INTERNAL: a bug; the server log has the details",
        http_status(code_pb2.UNAVAILABLE): "UNAVAILABLE: a provider is down or the server is stopping; retry later",
        http_status(code_pb2.DEADLINE_EXCEEDED): "DEADLINE_EXCEEDED: past the X-Timeout-S deadline",
    }
    if method != "GET":
        statuses[http_status(code_pb2.PERMISSION_DENIED)] = (
            "PERMISSION_DENIED: a browser page of another origin, without the token"
        )
    if rpc in _NAMING:
        statuses[http_status(code_pb2.NOT_FOUND)] = "NOT_FOUND: no such item, concept or map job (ResourceInfo)"
    if method == "POST":
        statuses[408] = "DEADLINE_EXCEEDED: the body did not arrive within http.body_timeout_s"
        statuses[TOO_LARGE] = (
            "RESOURCE_EXHAUSTED: over a limit (the body, its JSON values, an image's bytes or pixels); "
            "the QuotaFailure names it; do not retry"
        )
        statuses[415] = "INVALID_ARGUMENT: a content type this endpoint does not read"
    return dict(sorted(statuses.items()))


def _describe_picture(operation: dict[str, Any]) -> None:
    """A picture at its own URL (resources.py): the image its route declares, 304, and errors as Status."""
    picture = operation["responses"]["200"]
    picture["content"] = {kind: body for kind, body in picture.get("content", {}).items() if kind.startswith("image/")}
    operation["responses"] = {
        "200": picture,
        "304": {"description": "not modified (If-None-Match named its ETag)"},
        **_error_responses({400: "an id no item or job could have, or a map not done yet", 404: "no such picture"}),
    }


def _error_responses(statuses: dict[int, str]) -> dict[str, Any]:
    content = {"application/json": {"schema": _ref(_STATUS)}}
    return {str(status): {"description": meaning, "content": content} for status, meaning in statuses.items()}


# -- schemas from descriptors -------------------------------------------------------------------


def message_schemas(roots: Iterable[Descriptor], components: dict[str, Any]) -> dict[str, Any]:
    """``components`` with a schema for each message in ``roots`` and each message and enum they reach."""
    pending = list(roots)
    while pending:
        message = pending.pop()
        if message.full_name in components:
            continue
        components[message.full_name] = _message_schema(message)
        for field in map(_element, message.fields):
            if field.enum_type is not None and field.enum_type.full_name not in components:
                components[field.enum_type.full_name] = _enum_schema(field.enum_type)
            if field.message_type is not None and field.message_type.full_name not in _WELL_KNOWN:
                pending.append(field.message_type)
    return components


def _element(field: FieldDescriptor) -> FieldDescriptor:
    """What a field holds: a map's value field for a map (its entry message is no schema of its own)."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value: FieldDescriptor = field.message_type.fields_by_name["value"]
        return value
    return field


def _message_schema(message: Descriptor) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "title": message.name,
        # The JSON names are what answers carry; a request may also use the proto's names (json_format
        # reads both) and is refused with 400 for any other.
        "properties": {field.json_name: _property(field) for field in message.fields},
    }
    choices = [oneof for oneof in message.oneofs if not _synthetic(oneof.name, oneof.fields)]
    if choices:
        schema["description"] = "; ".join(
            f"at most one of {', '.join(field.json_name for field in oneof.fields)} ({oneof.name})" for oneof in choices
        )
    return schema


def _synthetic(name: str, fields: Iterable[FieldDescriptor]) -> bool:
    """A proto3 ``optional`` field's own oneof (named after it), not a choice the caller makes."""
    members = list(fields)
    return len(members) == 1 and name == f"_{members[0].name}"


def _property(field: FieldDescriptor) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        keys = field.message_type.fields_by_name["key"]
        value = _field_schema(field.message_type.fields_by_name["value"])
        return {"type": "object", "additionalProperties": value, "description": f"keys: {_type_name(keys)}"}
    single = _field_schema(field)
    if field.is_repeated:
        return {"type": "array", "items": single}
    return single


def _field_schema(field: FieldDescriptor) -> dict[str, Any]:
    if field.enum_type is not None:
        return _ref(field.enum_type)
    if field.message_type is not None:
        return _ref(field.message_type)
    return dict(_SCALARS[field.type])


def _enum_schema(enum: EnumDescriptor) -> dict[str, Any]:
    return {
        "type": "string",
        "title": enum.name,
        "enum": [value.name for value in enum.values],
        # bodies.py reads the short form too (skip for ON_DUPLICATE_SKIP), in any case; answers use the name.
        "description": "by name; read also by its number, or short and in any case (the common prefix left out)",
    }


def _type_name(field: FieldDescriptor) -> str:
    return str(_SCALARS[field.type]["type"])


def _ref(descriptor: Descriptor | EnumDescriptor) -> dict[str, Any]:
    if descriptor.full_name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[descriptor.full_name])
    return {"$ref": f"{_REF}{descriptor.full_name}"}
