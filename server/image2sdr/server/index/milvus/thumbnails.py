"""Thumbnails in the ``thumbs`` collection: base64 in chunks (Milvus 2.3 has no bytes field), per item version.

Written before the semantic row and read only for the current seq, so an add
without a thumbnail leaves the item none.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..values import SEMANTIC, StoredItem
from .calls import THUMBS
from .expressions import NO_MARK, in_chunks, item_key, keys_in
from .rows import MilvusRows

__all__ = ["MilvusThumbnails", "thumb_batches", "thumb_rows"]


_THUMB_CHARS = 65532  # base64 characters (ASCII) per chunk of a thumbnail: under VARCHAR's 65535 bytes
_THUMB_BATCH_CHARS = 8 << 20  # base64 characters per upsert request, at most (beside one large chunk)


class MilvusThumbnails(MilvusRows):
    """Reads the thumbnails of many items at once."""

    def thumbnails(self, item_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored thumbnails of these items (ids without one, or unknown, are absent).

        Two queries per 1,000 ids: the items' current seqs, then their thumbnail rows
        (those of older versions, not yet deleted, are ignored).
        """
        ids = {item_key(item_id): item_id for item_id in item_ids}
        found: dict[str, bytes] = {}
        for chunk in in_chunks(sorted(ids)):
            current = {
                str(row["key"]): int(row["seq"]) for row in self._query(SEMANTIC, keys_in(chunk), ["key", "seq"])
            }
            if not current:
                continue
            rows = self._query(THUMBS, keys_in(sorted(current)), ["key", "seq", "part", "parts", "text"])
            for key, image in assembled(rows, current).items():
                found[ids[key]] = image
        return found


def thumb_rows(versions: Sequence[tuple[str, int, StoredItem]]) -> list[dict[str, Any]]:
    """The thumbs rows of these item versions: base64 of each thumbnail, in chunks."""
    rows: list[dict[str, Any]] = []
    for key, seq, item in versions:
        if item.thumbnail is None:
            continue
        text = base64.b64encode(item.thumbnail).decode("ascii")
        parts = [text[at : at + _THUMB_CHARS] for at in range(0, len(text), _THUMB_CHARS)]
        version = {"key": key, "seq": seq, "parts": len(parts), "code": NO_MARK}
        rows.extend(
            {**version, "row": f"{key}.{seq}.{part}", "part": part, "text": chunk} for part, chunk in enumerate(parts)
        )
    return rows


def thumb_batches(rows: Sequence[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """``rows`` in upsert requests of at most _THUMB_BATCH_CHARS of text (Milvus caps a request's size)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        if batch and size + len(row["text"]) > _THUMB_BATCH_CHARS:
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += len(row["text"])
    if batch:
        yield batch


def assembled(rows: Iterable[Mapping[str, Any]], current: Mapping[str, int]) -> dict[str, bytes]:
    """Each key's thumbnail from the chunks of its current version; one with a chunk missing is none."""
    parts: dict[str, dict[int, str]] = {}
    expected: dict[str, int] = {}
    for row in rows:
        key = str(row["key"])
        if current.get(key) == int(row["seq"]):
            parts.setdefault(key, {})[int(row["part"])] = str(row["text"])
            expected[key] = int(row["parts"])
    return {
        key: base64.b64decode("".join(chunks[part] for part in range(expected[key])))
        for key, chunks in parts.items()
        if len(chunks) == expected[key]
    }
