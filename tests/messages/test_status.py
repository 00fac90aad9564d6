"""Core errors -> status codes: the table in messages/status.py, and its docstring saying the same."""

from __future__ import annotations

import re

import pytest
from google.rpc import code_pb2, error_details_pb2

from image2sdr.server import errors
from image2sdr.server.messages import status

DOCUMENTED = re.compile(r"^\s+(\w+)\s+->\s+([A-Z_]+)", re.MULTILINE)


def _instance(kind: type[BaseException]) -> BaseException:
    if issubclass(kind, errors.LimitExceededError):
        return kind("over", limit=1, actual=2)
    return kind("wrong")


def _core_errors() -> list[type[BaseException]]:
    return [getattr(errors, name) for name in errors.__all__]


@pytest.mark.parametrize("kind", _core_errors(), ids=lambda kind: kind.__name__)
def test_every_core_error_has_a_deliberate_code(kind: type[BaseException]) -> None:
    answer = status.status_for(_instance(kind))
    assert answer.code not in (code_pb2.UNKNOWN, code_pb2.INTERNAL, code_pb2.OK)
    assert answer.message in ("wrong", "over")  # the core's own message, never a generic one


def test_the_docstring_states_the_table() -> None:
    documented = DOCUMENTED.findall(status.__doc__ or "")
    assert len(documented) >= 7
    for name, code in documented:
        error = MemoryError() if name == "MemoryError" else _instance(getattr(errors, name))
        assert code_pb2.Code.Name(status.status_for(error).code) == code, name


def test_what_is_not_a_core_error() -> None:
    assert status.status_for(MemoryError()).code == code_pb2.RESOURCE_EXHAUSTED
    internal = status.status_for(KeyError("s3cret path"))
    assert internal.code == code_pb2.INTERNAL and "s3cret" not in internal.message  # "anything else" in the docstring
    assert "anything else" in (status.__doc__ or "") and "INTERNAL" in (status.__doc__ or "")


def test_details_name_the_field_the_limit_and_the_wait() -> None:
    bad = status.status_for(errors.InvalidSdrError("unsorted", field="sdr.active"))
    request = error_details_pb2.BadRequest()
    assert bad.details[0].Unpack(request) and request.field_violations[0].field == "sdr.active"
    down = status.status_for(errors.UpstreamError("down", retry_after_s=61.5))
    retry = error_details_pb2.RetryInfo()
    assert down.details[0].Unpack(retry) and retry.retry_delay.seconds == 62
    refused = status.status_for(errors.UpstreamKeyError("key refused"))
    assert refused.code == code_pb2.FAILED_PRECONDITION and not refused.details  # no retry hint: retrying cannot help


def test_long_values_are_cut_in_every_string_of_the_status() -> None:
    """A 10 kB id echoed by the core: each string at most MAX_TEXT_BYTES, its start and end kept."""
    long_id = "a" + "é" * 10_000 + "z"  # two bytes a character: the cut counts bytes, not characters
    answer = status.status_for(errors.MapJobNotFoundError(f"no map job {long_id!r}", resource=long_id))
    info = error_details_pb2.ResourceInfo()
    assert answer.details[0].Unpack(info)
    for text in (answer.message, info.resource_name, info.description):
        assert len(text.encode()) <= status.MAX_TEXT_BYTES
        assert "characters cut" in text
    assert answer.message.startswith("no map job 'aé") and answer.message.endswith("éz'")
    assert info.resource_name.startswith("aé") and info.resource_name.endswith("éz")
    assert status.cut("short") == "short"
