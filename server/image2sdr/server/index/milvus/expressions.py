"""What goes into Milvus: item keys, the filter index in a semantic row's JSON, and expressions over hex only.

The primary key is a hash of the item id, never the id itself: Milvus filter
expressions have no escaping that both engines parse the same, and hex keys need
none. Filters name hashes of names and (key, value) pairs, never the strings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ...errors import InvalidInputError
from ..values import Filter, StoredItem

__all__ = [
    "JSON_BYTES",
    "KEY_CHUNK",
    "LAYOUT",
    "NO_BITS",
    "NO_MARK",
    "check_json_sizes",
    "code_bytes",
    "concepts_json",
    "filter_expression",
    "hash_of",
    "in_chunks",
    "item_key",
    "json_bytes",
    "keys_in",
    "phash_code",
    "rows_in",
    "shared_bits",
    "to_signed",
    "to_unsigned",
    "versions_in",
]


K = TypeVar("K")

LAYOUT = 2  # concepts["v"] of a semantic row that holds the filter index; the meta row records it
JSON_BYTES = 65536  # a JSON field value, at most (the server refuses more; milvus-lite does not)
KEY_CHUNK = 1000  # keys per "key in [...]" expression
NO_MARK = bytes(1)  # the concepts' 8-bit vector: Milvus 2.3 needs one per collection; never searched


def item_key(item_id: str) -> str:
    """The primary key of an item: 128 bits of BLAKE2b of its id, as hex (safe in any expression)."""
    return hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def keys_in(keys: Sequence[str]) -> str:
    return "key in [" + ",".join(f'"{key}"' for key in keys) + "]"  # hex keys: nothing to escape


def rows_in(rows: Sequence[str]) -> str:
    return "row in [" + ",".join(f'"{row}"' for row in rows) + "]"  # "<hex>.<digits>.<digits>"


def versions_in(versions: Sequence[str]) -> str:
    return "version in [" + ",".join(f'"{version}"' for version in versions) + "]"  # "<hex>.<digits>"


def in_chunks(keys: Sequence[K], size: int = KEY_CHUNK) -> Iterable[list[K]]:
    for start in range(0, len(keys), size):
        yield list(keys[start : start + size])


def code_bytes(code: object) -> bytes:
    raw = code[0] if isinstance(code, list) else code  # query returns [bytes]; search returns bytes
    if not isinstance(raw, bytes):
        raise TypeError(f"Milvus returned a binary vector as {type(raw).__name__}")
    return raw


def hash_of(*parts: str) -> str:
    """Strings' name in the filter index: 64 bits of BLAKE2b in hex (safe in any expression).

    Parts are joined by 0xff, a byte UTF-8 never holds: (key, value) pairs cannot run together.
    """
    joined = b"\xff".join(part.encode("utf-8", "surrogatepass") for part in parts)
    return hashlib.blake2b(joined, digest_size=8).hexdigest()


def concepts_json(concepts: Sequence[tuple[str, float]], metadata: Mapping[str, str]) -> dict[str, Any]:
    """The ``concepts`` JSON of a semantic row: the pairs as stored, and the filter index (layout v2).

    ``names`` maps "h<hash of a name>" to the best confidence of that name: a condition
    (name, c) holds when the best one reaches c. ``meta`` lists the hash of each
    (key, value) pair. 64-bit hashes keep the JSON under the server's 65536 bytes (a
    4096-byte metadata may hold ~2000 pairs); a collision can only let an item through
    (names keep the best of both, pairs are a set), never keep one out, and every
    candidate is checked against the filter itself (``_passes``).
    """
    names: dict[str, float] = {}
    for term, score in concepts:
        name = "h" + hash_of(term)  # a letter first: a path of digits alone could read as an index
        names[name] = max(float(score), names.get(name, float(score)))
    return {
        "terms": [term for term, _ in concepts],
        "scores": [float(score) for _, score in concepts],
        "v": LAYOUT,
        "names": names,
        "meta": sorted({hash_of(key, value) for key, value in metadata.items()}),
    }


def json_bytes(value: object) -> int:
    """How long Milvus takes a JSON value to be (pymilvus sends it compact, UTF-8)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def check_json_sizes(item: StoredItem) -> None:
    """Refuse an item whose JSON fields the server would refuse, before anything of it is written."""
    sizes = {
        "concepts": json_bytes(concepts_json(item.concepts, item.metadata)),
        "metadata": json_bytes(dict(item.metadata)),
    }
    for field, size in sizes.items():
        if size > JSON_BYTES:
            raise InvalidInputError(
                f"item {item.id!r}: its {field} (with the filter index of its concepts and metadata) take"
                f" {size} bytes as Milvus JSON, at most {JSON_BYTES}",
                field=field,
            )


def filter_expression(where: Filter | None) -> str:
    """The Milvus expression selecting the semantic rows that pass ``where`` ("" for none).

    Only hashes and a float's repr go into it: no key or value is quoted.
    """
    if where is None:
        return ""
    conditions = []
    for key, values in where.metadata:
        allowed = ",".join(f'"{pair}"' for pair in sorted({hash_of(key, value) for value in values}))
        conditions.append(f'json_contains_any(concepts["meta"], [{allowed}])')
    for condition in where.concepts:
        floor = float(condition.min_confidence)
        conditions.append(f'concepts["names"]["h{hash_of(condition.name)}"] >= {floor!r}')
    return " and ".join(conditions)


def phash_code(phash: int) -> bytes:
    return int(phash).to_bytes(8, "little")


def to_signed(phash: int) -> int:
    """A 64-bit pHash as INT64 (Milvus has no unsigned integers)."""
    return phash - (1 << 64) if phash >= 1 << 63 else phash


def to_unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def shared_bits(query: npt.NDArray[np.uint32], stored: npt.NDArray[np.uint32]) -> int:
    return int(np.intersect1d(query, stored, assume_unique=True).size)


NO_BITS: npt.NDArray[np.uint32] = np.zeros(0, dtype=np.uint32)
