"""The collections of one index, created or checked at open, and the migration of items written by layout v1.

Collections, named ``<prefix>_<what>``: ``semantic`` (one row per item), one per
other space (the code of each item version that has one, keyed "<key>.<seq>"),
``phash`` (the pHash of each version, as a 64-bit binary vector), ``concepts``
(custom concepts and the layout's meta row) and ``thumbs``. Five, not one, because
Milvus 2.3 allows one vector field per collection.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import ConfigError
from ..values import SEMANTIC
from .calls import CONCEPTS, PHASH, THUMBS, MilvusCalls
from .expressions import JSON_BYTES, LAYOUT, NO_MARK, code_bytes, concepts_json, in_chunks, json_bytes, keys_in

__all__ = ["SCHEMA", "MilvusSchema"]

logger = logging.getLogger(__name__)


SCHEMA = "image2sdr items v2"  # in each collection's description (v1: before the filter index)
_META_ROW = "meta.items"  # the concepts collection's row recording the items' layout version
_META_KEY = "meta"  # its key: never a name key (those are 32 hex digits)
_MIGRATE_CHUNK = 2000  # semantic rows rewritten per request while migrating (each read is Strong: ~0.3 s of wait)
_NAME_BYTES = 1024  # VARCHAR length of a concept name (check_concept_name allows far fewer)
_ID_BYTES = 65535  # VARCHAR's own limit: ids are bounded by index.max_id_length, not by the schema


class MilvusSchema(MilvusCalls):
    """Creates, checks and migrates the collections."""

    def _open(self) -> None:
        """Create or check every collection, then migrate what an older release wrote."""
        for name in (*self._spaces, PHASH, CONCEPTS, THUMBS):
            self._open_collection(name)
        self._migrate()

    def _open_collection(self, name: str) -> None:
        collection = self._names[name]
        if self._call("has_collection", lambda t: self._client.has_collection(collection, timeout=t), setup=True):
            self._check_layout(name)
            replicas = self.config.milvus.load_replicas
            extra = {"replica_number": replicas} if replicas > 1 else {}
            self._call(
                "load_collection", lambda t: self._client.load_collection(collection, timeout=t, **extra), setup=True
            )
            return
        schema = self._schema(name)
        params = self._client.prepare_index_params()
        params.add_index(field_name="code", metric_type="HAMMING", **self._index_kind(name))
        settings = self.config.milvus
        self._call(
            "create_collection",
            lambda t: self._client.create_collection(
                collection,
                schema=schema,
                index_params=params,
                consistency_level=settings.consistency_level,
                num_shards=settings.shards,
                timeout=t,
            ),
            setup=True,
        )
        replicas = settings.load_replicas
        if replicas > 1:  # create_collection loaded it with one
            self._call(
                "load_collection",
                lambda t: self._client.load_collection(collection, replica_number=replicas, timeout=t),
                setup=True,
            )
        logger.info("Milvus collection %s created at %s", collection, self.shown_uri)

    def _schema(self, name: str) -> Any:
        from pymilvus import DataType, MilvusClient  # noqa: PLC0415

        if name == CONCEPTS:
            return self._concepts_schema()
        if name == THUMBS:
            return self._thumbs_schema()
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=SCHEMA)
        if name == SEMANTIC:
            schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=32)
        else:  # one row per item version: "<key>.<seq>"
            schema.add_field("version", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("key", DataType.VARCHAR, max_length=32)
        schema.add_field("code", DataType.BINARY_VECTOR, dim=64 if name == PHASH else self._dim)
        schema.add_field("seq", DataType.INT64)
        if name != PHASH:
            schema.add_field("heavy", DataType.BOOL)  # more active bits than equalize_bits: scored apart
        if name == SEMANTIC:
            schema.add_field("id", DataType.VARCHAR, max_length=_ID_BYTES)
            schema.add_field("concepts", DataType.JSON)  # terms, scores and the filter index (concepts_json)
            schema.add_field("metadata", DataType.JSON)
            schema.add_field("sha256", DataType.VARCHAR, max_length=64)
            schema.add_field("phash", DataType.INT64)
            for space in self._spaces[1:]:
                schema.add_field(f"in_{space}", DataType.BOOL)  # has an SDR there (count per space)
        return schema

    def _concepts_schema(self) -> Any:
        """Custom concepts: one row per chunk of one version of a document, and the meta row.

        Milvus 2.3 wants a vector field (and an index on it) in every collection it
        loads. Concepts are only ever looked up by key, so theirs is the smallest there
        is, 8 bits, always zero: a real vector (the concept's SDR) would mean reading
        the document, which is opaque to the index.
        """
        from pymilvus import DataType, MilvusClient  # noqa: PLC0415

        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=f"image2sdr concepts v1; items v{LAYOUT}"
        )
        schema.add_field("row", DataType.VARCHAR, is_primary=True, max_length=96)  # "<key>.<seq>.<part>"
        schema.add_field("key", DataType.VARCHAR, max_length=32)  # item_key(name); "meta" for the meta row
        schema.add_field("name", DataType.VARCHAR, max_length=_NAME_BYTES)
        schema.add_field("seq", DataType.INT64)  # the version: a nanosecond stamp (updated_ms = seq // 10**6)
        schema.add_field("part", DataType.INT64)
        schema.add_field("parts", DataType.INT64)  # chunks in this version; 0 for the meta row
        schema.add_field("text", DataType.VARCHAR, max_length=65535)
        schema.add_field("code", DataType.BINARY_VECTOR, dim=8)
        return schema

    def _thumbs_schema(self) -> Any:
        """Thumbnails: one row per chunk of one item version's thumbnail, looked up by key.

        As for concepts, the vector field is there because Milvus 2.3 wants one: 8 zero bits.
        """
        from pymilvus import DataType, MilvusClient  # noqa: PLC0415

        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description="image2sdr thumbs v1"
        )
        schema.add_field("row", DataType.VARCHAR, is_primary=True, max_length=96)  # "<key>.<seq>.<part>"
        schema.add_field("key", DataType.VARCHAR, max_length=32)  # item_key(id)
        schema.add_field("seq", DataType.INT64)  # the item version it belongs to
        schema.add_field("part", DataType.INT64)
        schema.add_field("parts", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=65535)  # base64 of the image bytes
        schema.add_field("code", DataType.BINARY_VECTOR, dim=8)
        return schema

    def _check_layout(self, name: str) -> None:
        collection = self._names[name]
        described = self._call(
            "describe_collection", lambda t: self._client.describe_collection(collection, timeout=t), setup=True
        )
        dims = {field["name"]: field.get("params", {}).get("dim") for field in described.get("fields", [])}
        wanted = {PHASH: 64, CONCEPTS: 8, THUMBS: 8}.get(name, self._dim)
        if int(dims.get("code") or 0) != wanted:
            raise ConfigError(
                f"Milvus collection {collection} holds codes of {dims.get('code')} bits, this config makes"
                f" {wanted} (sdr.size and index.equalize_bits must match what it was created with)"
            )

    def _migrate(self) -> None:
        """Give every semantic row without the filter index (layout v1) its index, in place.

        Run at every open, before this process serves. The rows still to migrate are
        found by ``concepts["v"] != 2``, which holds where the key is missing on both
        engines (``not``/``exists`` on JSON fail on milvus-lite), so a migration cut
        short resumes at the next open, and rows an older replica writes later are
        caught at the next start. Each batch is read again by key just before it is
        rewritten with the same key, seq, code and fields: only ``concepts`` gains the
        index. Stop replicas of the older release first: one writing an item between
        that read and the rewrite would lose its write. Nothing is ever dropped.
        """
        with self._reading("Strong"):
            keys = sorted(self._keys_where(f'concepts["v"] != {LAYOUT}'))
            if keys:
                logger.info("Milvus: migrating %d items of %s to layout v%d", len(keys), self.shown_uri, LAYOUT)
            fields = self._semantic_fields()
            for chunk in in_chunks(keys, _MIGRATE_CHUNK):
                rows = self._query(SEMANTIC, keys_in(chunk), fields)
                stale = [self._migrated(row, fields) for row in rows if (row["concepts"] or {}).get("v") != LAYOUT]
                fitting = [row for row in stale if json_bytes(row["concepts"]) <= JSON_BYTES]
                if len(fitting) < len(stale):  # kept as they are: never dropped, but no filter finds them
                    ids = sorted({str(row["id"]) for row in stale} - {str(row["id"]) for row in fitting})
                    logger.error(
                        "Milvus: %d items cannot hold the filter index (JSON over %d bytes): %s",
                        len(ids),
                        JSON_BYTES,
                        ", ".join(map(repr, ids[:20])),
                    )
                self._upsert(SEMANTIC, fitting)
            recorded = self._query(CONCEPTS, f'row == "{_META_ROW}"', ["seq"])
        if not recorded or int(recorded[0]["seq"]) < LAYOUT:
            note = json.dumps({"layout": LAYOUT, "migrated_items": len(keys), "at_ms": time.time_ns() // 1_000_000})
            meta = {"row": _META_ROW, "key": _META_KEY, "name": "", "seq": LAYOUT, "part": 0, "parts": 0}
            self._upsert(CONCEPTS, [{**meta, "text": note, "code": NO_MARK}])
        if keys:
            logger.info("Milvus: %d items of %s migrated to layout v%d", len(keys), self.shown_uri, LAYOUT)

    def _semantic_fields(self) -> list[str]:
        fields = ["key", "id", "code", "seq", "heavy", "concepts", "metadata", "sha256", "phash"]
        return fields + [f"in_{space}" for space in self._spaces[1:]]

    def _migrated(self, row: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
        """A v1 semantic row as layout v2 writes it: the same, with the filter index in ``concepts``."""
        rewritten = {name: row[name] for name in fields}
        rewritten["code"] = code_bytes(row["code"])
        old = row["concepts"] or {}
        pairs = zip(old.get("terms", []), (float(score) for score in old.get("scores", [])), strict=True)
        rewritten["concepts"] = concepts_json(list(pairs), row["metadata"] or {})
        return rewritten
