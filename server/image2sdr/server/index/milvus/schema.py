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

from ...errors import IndexMismatchError
from ..values import SEMANTIC
from .calls import CONCEPTS, PHASH, REPAIR_COMMAND, THUMBS, MilvusCalls
from .expressions import (
    JSON_BYTES,
    LAYOUT,
    NO_MARK,
    code_bytes,
    concepts_json,
    in_chunks,
    json_bytes,
    keys_in,
    phash_code,
    to_unsigned,
)

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
        """Check every collection, refuse to start on any mismatch (creating nothing), then create, load, migrate.

        Refused (``IndexMismatchError``, nothing created): a collection whose fields, code
        size, index kind or shard count differ from this config's; a side collection
        missing while items are stored (dropped: its rows are gone, and an empty one would
        answer as if the items had none), unless this open repairs (``repair.py``).
        Created quietly: every collection of a new index; ``concepts`` and ``thumbs`` for a
        collection set of a release that had none (``_predates``).
        """
        names = (*self._spaces, PHASH, CONCEPTS, THUMBS)
        present = [name for name in names if self._exists(name)]
        differences = [difference for name in present for difference in self._differences(name)]
        if differences:
            raise IndexMismatchError(
                f"the Milvus collections at {self.shown_uri} do not match this config: {'; '.join(differences)}."
                " Set the config to what they hold, or move them aside (another milvus.collection prefix)"
            )
        for name in present:
            self._load(name)
        missing = [name for name in names if name not in present]
        lost = [name for name in missing if present and not self._predates(name, present)]
        if lost and not self._repair:
            shown = ", ".join(self._names[name] for name in lost)
            raise IndexMismatchError(
                f"Milvus collection{'s' if len(lost) > 1 else ''} {shown} at {self.shown_uri} missing while"
                f" {self._names[SEMANTIC] if SEMANTIC in present else 'the others'} exist (dropped?): nothing was"
                f" created. Repair with `{REPAIR_COMMAND}`: it rebuilds what the item rows hold (pHashes), and"
                " marks the items without what is lost (visual SDRs, thumbnails, custom concepts)"
            )
        for name in missing:
            self._create(name)
        if lost:
            self._rebuild(lost)
        self._migrate()

    def _exists(self, name: str) -> bool:
        collection = self._names[name]
        return bool(
            self._call("has_collection", lambda t: self._client.has_collection(collection, timeout=t), setup=True)
        )

    def _load(self, name: str) -> None:
        collection = self._names[name]
        replicas = self.config.milvus.load_replicas
        extra = {"replica_number": replicas} if replicas > 1 else {}
        self._call(
            "load_collection",
            lambda t: self._client.load_collection(collection, timeout=t, **extra),
            setup=True,
            collection=collection,
        )

    def _create(self, name: str) -> None:
        collection = self._names[name]
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
        if settings.load_replicas > 1:  # create_collection loaded it with one
            self._load(name)
        logger.info("Milvus collection %s created at %s", collection, self.shown_uri)

    def _predates(self, name: str, present: Sequence[str]) -> bool:
        """Whether ``name`` is missing because the release that wrote the others had none (not dropped).

        ``concepts`` came with layout v2: an index whose items are all v1 (or that holds
        none) had none. ``thumbs`` came later: the meta row in ``concepts`` records that
        the collection set has one (``_migrate``), so one missing without that record predates it.
        """
        if SEMANTIC not in present:
            return False
        if name == CONCEPTS:
            with self._reading("Strong"):
                return not self._query(SEMANTIC, f'concepts["v"] == {LAYOUT}', ["key"], limit=1)
        if name == THUMBS:
            return CONCEPTS in present and not self._meta().get("thumbs", False)
        return False

    def _meta(self) -> dict[str, Any]:
        """The meta row's record (layout, migration, which collections the set has); {} if none."""
        with self._reading("Strong"):
            rows = self._query(CONCEPTS, f'row == "{_META_ROW}"', ["seq", "text"])
        if not rows:
            return {}
        try:
            recorded = json.loads(rows[0]["text"])
        except ValueError:
            return {}
        return {**recorded, "seq": int(rows[0]["seq"])} if isinstance(recorded, dict) else {}

    def _differences(self, name: str) -> list[str]:
        """What differs between collection ``name`` and what this config makes: fields, code size, index, shards."""
        collection = self._names[name]
        described = self._call(
            "describe_collection",
            lambda t: self._client.describe_collection(collection, timeout=t),
            setup=True,
            collection=collection,
        )
        found = {str(field["name"]): field for field in described.get("fields", [])}
        wanted = {field.name: field for field in self._schema(name).fields}
        differences = [f"{collection} lacks field {field!r}" for field in sorted(set(wanted) - set(found))]
        differences += [
            f"{collection} has field {field!r} this config does not make" for field in sorted(set(found) - set(wanted))
        ]
        for field in sorted(set(wanted) & set(found)):
            kind, want = found[field].get("type"), wanted[field].dtype
            if int(kind or 0) != int(want):
                differences.append(f"{collection}.{field} is {_type_name(kind)}, this config makes {_type_name(want)}")
        dim = (found.get("code") or {}).get("params", {}).get("dim")
        want_dim = wanted["code"].params.get("dim")
        if dim is not None and int(dim) != int(want_dim):
            differences.append(
                f"{collection} holds codes of {dim} bits, this config makes {want_dim}"
                " (sdr.size and index.equalize_bits must match what it was created with)"
            )
        return differences + self._drift(name, described)

    def _drift(self, name: str, described: Mapping[str, Any]) -> list[str]:
        """Settings fixed when a collection is created that differ from the config: refused, never reported late.

        Info names the config's index type: one that differs from the collection's would be a lie there.
        """
        collection = self._names[name]
        settings = self.config.milvus
        differences = []
        if not self.embedded and int(described.get("num_shards") or settings.shards) != settings.shards:
            differences.append(
                f"{collection} has {described['num_shards']} shards, milvus.shards says {settings.shards}"
            )
        index = self._index_of(collection)
        wanted = self._index_kind(name)
        if index is not None and str(index.get("index_type")) != wanted["index_type"]:
            differences.append(
                f"{collection} is indexed {index.get('index_type')}, milvus.index_type says {wanted['index_type']}"
            )
        elif index is not None and "params" in wanted:
            nlist = index.get("nlist", (index.get("params") or {}).get("nlist"))
            if nlist is not None and int(nlist) != wanted["params"]["nlist"]:
                differences.append(f"{collection} has nlist {nlist}, milvus.nlist says {wanted['params']['nlist']}")
        return differences

    def _index_of(self, collection: str) -> dict[str, Any] | None:
        """The description of the index on ``code`` (None if it has none, or the engine cannot say)."""
        names = self._call(
            "list_indexes",
            lambda t: self._client.list_indexes(collection, timeout=t),
            setup=True,
            collection=collection,
        )
        if "code" not in names:
            return None
        described = self._call(
            "describe_index",
            lambda t: self._client.describe_index(collection, "code", timeout=t),
            setup=True,
            collection=collection,
        )
        return dict(described) if described else None

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
        recorded = self._meta()
        if recorded.get("seq", 0) < LAYOUT or not recorded.get("thumbs", False):
            # "thumbs": this set has a thumbs collection from here on; one missing later was dropped (_predates)
            migrated = len(keys) if keys or recorded.get("seq", 0) < LAYOUT else recorded.get("migrated_items", 0)
            note = {"layout": LAYOUT, "migrated_items": migrated, "at_ms": time.time_ns() // 1_000_000, "thumbs": True}
            meta = {"row": _META_ROW, "key": _META_KEY, "name": "", "seq": LAYOUT, "part": 0, "parts": 0}
            self._upsert(CONCEPTS, [{**meta, "text": json.dumps(note), "code": NO_MARK}])
        if keys:
            logger.info("Milvus: %d items of %s migrated to layout v%d", len(keys), self.shown_uri, LAYOUT)

    def _rebuild(self, lost: Sequence[str]) -> None:
        """Refill collections created again by a repair from what the item rows hold, and make the items say the rest.

        pHashes are in each item's semantic row: rebuilt. Visual codes are nowhere else: the
        items lose their mark for that space (``in_<space>``, same seq), so counts, Info and
        ``skipped_without_visual`` say they have none. Thumbnails and custom concepts are
        gone: logged.
        """
        with self._reading("Strong"):
            for name in lost:
                if name == PHASH:
                    rows = self._query_all(SEMANTIC, 'sha256 != ""', ["key", "seq", "phash"])
                    versions = [
                        {
                            "version": f"{row['key']}.{row['seq']}",
                            "key": row["key"],
                            "seq": row["seq"],
                            "code": phash_code(to_unsigned(int(row["phash"]))),
                        }
                        for row in rows
                    ]
                    for batch in in_chunks(versions, _MIGRATE_CHUNK):
                        self._upsert(PHASH, batch)
                    logger.warning("Milvus repair: %s rebuilt from %d item rows", self._names[name], len(rows))
                elif name in self._spaces:
                    fields = self._semantic_fields()
                    keys = [str(row["key"]) for row in self._query_all(SEMANTIC, f"in_{name} == true", ["key"])]
                    for chunk in in_chunks(keys, _MIGRATE_CHUNK):
                        rows = [self._migrated(row, fields) for row in self._query(SEMANTIC, keys_in(chunk), fields)]
                        self._upsert(SEMANTIC, [{**row, f"in_{name}": False} for row in rows])
                    logger.warning(
                        "Milvus repair: %s created empty; %d items lost their %s SDR (add them again to restore it)",
                        self._names[name],
                        len(keys),
                        name,
                    )
                else:
                    logger.warning("Milvus repair: %s created empty (what it held is lost)", self._names[name])

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


def _type_name(kind: object) -> str:
    from pymilvus import DataType  # noqa: PLC0415

    try:
        return str(DataType(int(kind)).name)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return str(kind)
