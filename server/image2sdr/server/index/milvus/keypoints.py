"""Keypoints in the ``points`` collection: one row per item version that has them, base64 of the blob.

A side row like the thumbnails (``thumbnails.py``): keyed "<key>.<seq>", written
before the semantic row and read only for the current seq, so an add without
keypoints leaves the item none, and a write that fails part-way changes nothing.
The blob (``keypoints.py``, about 3.5 KB) is base64 in one VARCHAR (Milvus 2.3 has
no bytes field): about 4.6 KB a row.  A collection set from the release before
keypoints has no ``points``; it is created at open, empty, and its items are judged
without keypoints until they are added again.  Its vector field is there because
Milvus 2.3 wants one: 8 zero bits.

The collection is created by the first write that stores keypoints, not at open:
creating one costs about 3 s on a Milvus server, and a collection set that only
ever holds SDRs (or a test's) should not pay it.  Until a process has seen it
exist, each read or delete asks Milvus whether it does (another replica may have
made it); after that, nobody asks again.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from ...errors import UpstreamError
from ..values import SEMANTIC, StoredItem
from .expressions import NO_MARK, in_chunks, item_key, keys_in, versions_in
from .rows import MilvusRows

__all__ = ["POINTS", "MilvusKeypoints", "point_rows"]

POINTS = "points"
_TEXT_CHARS = 8192  # base64 characters a row holds, at most: a blob of ~6 KB (keypoints.py writes ~3.5 KB)


class MilvusKeypoints(MilvusRows):
    """Writes and reads the keypoint rows; creates the ``points`` collection with the first ones written."""

    _points_seen = False  # whether this process knows ``points`` exists

    def _open(self) -> None:
        super()._open()  # schema.py's: the other collections, checked, created, migrated
        self._names[POINTS] = f"{self.config.milvus.collection}_{POINTS}"
        self._points_seen = False
        if self._has_points():
            self._load(POINTS)

    def _has_points(self) -> bool:
        if not self._points_seen:
            self._points_seen = self._exists(POINTS)
        return self._points_seen

    def _ensure_points(self) -> None:
        """Create ``points`` if it is missing (under the write lock: one writer of this process at a time)."""
        if self._has_points():
            return
        try:
            self._create(POINTS)
        except UpstreamError:
            if not self._exists(POINTS):  # not another replica's creation racing this one: a real failure
                raise
        self._points_seen = True

    def _schema(self, name: str) -> Any:
        if name != POINTS:
            return super()._schema(name)
        from pymilvus import DataType, MilvusClient  # noqa: PLC0415

        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description="image2sdr points v1"
        )
        schema.add_field("version", DataType.VARCHAR, is_primary=True, max_length=64)  # "<key>.<seq>"
        schema.add_field("key", DataType.VARCHAR, max_length=32)  # item_key(id)
        schema.add_field("seq", DataType.INT64)  # the item version it belongs to
        schema.add_field("text", DataType.VARCHAR, max_length=_TEXT_CHARS)  # base64 of the blob
        schema.add_field("code", DataType.BINARY_VECTOR, dim=8)
        return schema

    def _index_kind(self, name: str) -> dict[str, Any]:
        if name == POINTS:
            return {"index_type": "BIN_FLAT"}
        return super()._index_kind(name)

    def keypoints(self, item_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored keypoint blobs of these items (ids without, or unknown, are absent): two queries per 1,000."""
        ids = {item_key(item_id): item_id for item_id in item_ids}
        found: dict[str, bytes] = {}
        if not ids or not self._has_points():
            return found
        for chunk in in_chunks(sorted(ids)):
            current = {
                str(row["key"]): int(row["seq"]) for row in self._query(SEMANTIC, keys_in(chunk), ["key", "seq"])
            }
            if not current:
                continue
            for row in self._query(POINTS, keys_in(sorted(current)), ["key", "seq", "text"]):
                key = str(row["key"])
                if current.get(key) == int(row["seq"]):
                    found[ids[key]] = base64.b64decode(str(row["text"]))
        return found

    def _write_keypoints(self, versions: Sequence[tuple[str, int, StoredItem]]) -> None:
        """Before the semantic rows: these versions' keypoints (the first ones create the collection)."""
        rows = point_rows(versions)
        if rows:
            self._ensure_points()
            self._upsert(POINTS, rows)

    def _drop_keypoints(self, keys: Sequence[str], current: dict[str, int] | None = None) -> None:
        """Delete the rows of these keys (all, or those of other versions than ``current``); best effort."""
        try:
            if not self._has_points():
                return
            for chunk in in_chunks(sorted(keys)):
                rows = self._query(POINTS, keys_in(chunk), ["version", "key", "seq"])
                old = [
                    str(row["version"])
                    for row in rows
                    if current is None or int(row["seq"]) != current.get(str(row["key"]))
                ]
                for part in in_chunks(old):
                    self._delete(POINTS, versions_in(part))
        except UpstreamError:  # the rows stay behind; reads take only the current version's
            return


def point_rows(versions: Sequence[tuple[str, int, StoredItem]]) -> list[dict[str, Any]]:
    """The points rows of these item versions (those with keypoints)."""
    return [
        {
            "version": f"{key}.{seq}",
            "key": key,
            "seq": seq,
            "text": base64.b64encode(item.keypoints.to_blob()).decode("ascii"),
            "code": NO_MARK,
        }
        for key, seq, item in versions
        if item.keypoints is not None
    ]
