"""``MilvusIndex``: items kept and searched by Milvus: an embedded file, one server, or a cluster.

Milvus is the source of truth here (no SQLite, no FAISS snapshot), so several
service replicas can share one collection set; only ``milvus.uri`` tells an
embedded file (milvus-lite) from a server or a cluster.

Collections, named ``<prefix>_<what>``:

    semantic   one row per item: key, id, semantic code, seq, concepts, metadata, sha256, phash
    visual     the visual code of each item version that has one, keyed "<key>.<seq>"
    phash      the 64-bit pHash of each item version that has one, as a binary vector, same keys

Three collections, not one, because Milvus 2.3 (the server tested here) allows one
vector field per collection. The primary key is a hash of the item id, never the
id itself: Milvus filter expressions have no escaping that both engines parse the
same (a newline or tab in an id broke milvus-lite's parser), and hex keys need none.

Codes are ``codes.pack_codes`` codes, padded to equal weight, searched with HAMMING:
for every SDR of at most ``equalize_bits`` active bits the Hamming order is then
the overlap order (see ``codes.py``), and an item not yet returned shares at most
``(|q| + equalize_bits - d_last) / 2`` bits with the query. Searches fetch more
candidates until the k-th exact overlap is above that bound (ties to the lower
``seq``: the item added or last replaced earlier), and score the few heavier SDRs
(flagged ``heavy``) exactly in a filtered search of their own.

Writes are versioned by ``seq``. A visual or pHash row belongs to one version of an
item, ``<key>.<seq>``; readers take only the rows whose seq is the one in the item's
semantic row. The side rows are written first and the semantic row last, so a
write that fails part-way leaves the stored item exactly as it was (the new side
rows are ignored), and nothing is acknowledged before Milvus has accepted all of
it. Rows of older versions are deleted after the commit, best effort.

    concepts   custom concepts (``put_concept``): each version of a document in chunks,
               keyed "<name key>.<seq>.<part>", and one meta row recording the layout version
    thumbs     the thumbnail of each item version that has one, base64 in chunks (Milvus
               2.3 has no bytes field), keyed "<key>.<seq>.<part>": a side row like the
               visual ones, written before the semantic row and read only for the current
               seq, so an add without a thumbnail leaves the item none. Collections of the
               release before thumbnails have no ``thumbs``; it is created at open, empty.

Filters (``where``) are Milvus expressions on the semantic row's ``concepts`` JSON,
which holds, beside the concept terms and scores, a filter index: ``names`` maps a
hash of each concept name to its best confidence (``concepts["names"]["h<hash>"] >=
0.5``), ``meta`` lists a hash of each (key, value) pair (``json_contains_any(
concepts["meta"], [...])``). Filters name hashes, never the strings themselves: the
two engines cannot both address every key in a JSON path nor match every value
(Milvus 2.3.5 splits paths at ``][`` and refuses an empty key; milvus-lite 2.5
misses values with control characters), and hex needs no escaping, so no key or
value can change an expression. Every candidate is checked against the filter
itself too, so a hash collision could only cost time.
Items written by the release before this index existed (layout v1) are migrated in
place when the index opens (``_migrate``): their rows are rewritten with the filter
index, keeping their key, seq and everything else, and the meta row records v2.
The visual and pHash rows have no JSON field (Milvus 2.3 cannot add one): a filtered
search there is restricted to the passing items' keys when few pass, and otherwise
checks the filter on each candidate, with the same proof of exactness (see ``_plan``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt

from ...config import IndexConfig
from ...errors import ConfigError, IndexClosedError, InvalidInputError, UpstreamError
from ...fingerprints import Fingerprint
from ...sdr import Sdr
from ...upstream import RateLimiter, Retryable, RetryPolicy, Secret, call_with_retries
from ..codes import code_size, pack_codes
from ..duplicates import visual_floor
from ..engine import Decide, Listing, SnapshotHook
from ..filters import passes
from ..paging import BadCursorError
from ..values import SEMANTIC, VISUAL, DuplicateThresholds, Filter, Item, Match, StoredConcept, StoredItem

__all__ = ["MilvusEngine", "item_key"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")

PHASH = "phash"
CONCEPTS = "concepts"
THUMBS = "thumbs"
_THUMB_CHARS = 65532  # base64 characters (ASCII) per chunk of a thumbnail: under VARCHAR's 65535 bytes
_THUMB_BATCH_CHARS = 8 << 20  # base64 characters per upsert request, at most (beside one large chunk)
SCHEMA = "image2sdr items v2"  # in each collection's description (v1: before the filter index)
LAYOUT = 2  # concepts["v"] of a semantic row that holds the filter index; the meta row records it
_META_ROW = "meta.items"  # the concepts collection's row recording the items' layout version
_META_KEY = "meta"  # its key: never a name key (those are 32 hex digits)
_MIGRATE_CHUNK = 2000  # semantic rows rewritten per request while migrating (each read is Strong: ~0.3 s of wait)
_PREFILTER_MAX = 4096  # passing items up to which a visual/pHash search is restricted to their keys
_TEXT_CHARS = 16383  # characters per stored chunk of a document: at most 65532 bytes, under VARCHAR's 65535
_NAME_BYTES = 1024  # VARCHAR length of a concept name (check_concept_name allows far fewer)
_JSON_BYTES = 65536  # a JSON field value, at most (the server refuses more; milvus-lite does not)
_NO_MARK = bytes(1)  # the concepts' 8-bit vector: Milvus 2.3 needs one per collection; never searched
MAX_RESULTS = 16384  # Milvus's topk and query-window limit
_ID_BYTES = 65535  # VARCHAR's own limit: ids are bounded by index.max_id_length, not by the schema
_KEY_CHUNK = 1000  # keys per "key in [...]" expression
_FIRST_SPAN_NS = 1 << 36  # ~69 s: the first time window a listing page looks back over
_CURSOR = re.compile(r"m(\d{1,19})\.([0-9a-f]{32})")  # fullmatch: (seq, key) to continue below
_SETUP_S = 120.0  # at least this long for creating and loading the collections at start
_HEAVY_RECHECK_S = 10.0  # how stale "no heavy SDRs here" may be (see _has_heavy)
_DELETE_SETTLE_S = 1.5  # after a delete, Session reads are Strong this long (see _level)
_SHA256 = re.compile(r"[0-9a-f]{64}")  # fullmatch
_INT64_MAX = (1 << 63) - 1


def item_key(item_id: str) -> str:
    """The primary key of an item: 128 bits of BLAKE2b of its id, as hex (safe in any expression)."""
    return hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass(frozen=True)
class _Row:
    stored: StoredItem
    seq: int


class MilvusEngine:
    """Items by id in Milvus collections, searchable by SDR overlap in each space. Thread-safe.

    Across replicas, two
    concurrent adds of one photo under SKIP may both be stored: the duplicate check
    and the add are atomic within one process only.
    """

    def __init__(
        self,
        config: IndexConfig,
        sdr_size: int = 16384,
        spaces: Sequence[str] = (SEMANTIC, VISUAL),
        *,
        data_dir: Path | None = None,
    ) -> None:
        if not spaces or spaces[0] != SEMANTIC or len(set(spaces)) != len(spaces):
            raise ValueError(f"spaces must start with {SEMANTIC!r} and not repeat, got {spaces!r}")
        settings = config.milvus
        self.config = config
        self.sdr_size = sdr_size
        self.uri = settings.uri or str(Path(data_dir if data_dir is not None else ".") / "milvus.db")
        self.embedded = self.uri.endswith(".db")  # as pymilvus decides: a .db path runs milvus-lite
        self.shown_uri = _without_credentials(self.uri)  # the URI as errors and logs name it
        self._spaces = tuple(spaces)
        self._names = {name: f"{settings.collection}_{name}" for name in (*spaces, PHASH, CONCEPTS, THUMBS)}
        self._dim = code_size(sdr_size, config.equalize_bits) * 8
        self._token = Secret(os.environ.get(settings.token_env, "").strip())
        self._policy = RetryPolicy(
            f"Milvus at {self.shown_uri}", settings.timeout_s, settings.retry_total_s, settings.backoff_s
        )
        # Creating and loading a collection may take far longer than a request (Milvus
        # builds and loads the index); the connection itself was already checked.
        self._setup_policy = RetryPolicy(
            self._policy.provider, max(settings.timeout_s, _SETUP_S), max(settings.retry_total_s, _SETUP_S), 1.0
        )
        self._unlimited = RateLimiter(1e9)  # retries and budgets as for the providers; no rate cap
        self._read_level = settings.consistency_level
        self._strong_until = 0.0  # monotonic time until which Session reads are made Strong (_level)
        self._heavy: dict[str, tuple[bool, float]] = {}  # space: (heavy SDRs stored, when asked)
        self._forced = threading.local()  # .level: this thread's reads use it (_reading)
        self._write_lock = threading.Lock()  # duplicate screening and the add it decides, per process
        self._seq_lock = threading.Lock()
        self._last_seq = 0
        self._closed = False  # set by closing(): a call in flight stops retrying
        self.on_snapshot: SnapshotHook | None = None  # Milvus keeps its own storage: no snapshots here
        self._client = self._connect()
        try:
            for name in (*spaces, PHASH, CONCEPTS, THUMBS):
                self._open_collection(name)
            self._migrate()
        except BaseException:
            self._client.close()
            raise

    # -- lifecycle ------------------------------------------------------------

    @property
    def spaces(self) -> tuple[str, ...]:
        return self._spaces

    @property
    def description(self) -> str:
        return f"the Milvus index at {self.shown_uri}"

    def closing(self) -> None:
        self._closed = True

    def close(self) -> None:
        self._closed = True
        self._client.close()
        if self.embedded:  # stop the milvus-lite process, so the file can be opened again
            from milvus_lite.server_manager import server_manager_instance  # noqa: PLC0415

            server_manager_instance.release_server(self.uri)

    def available(self) -> bool:
        """Whether Milvus answers now (one cheap request, no retries): the health check's question."""
        try:
            # A query, not a ping: after a restart Milvus answers pings well before it has
            # loaded the collections again, and until then every search would time out.
            for name in (*self._spaces, PHASH, CONCEPTS, THUMBS):
                self._client.query(
                    self._names[name],
                    filter='key == ""',
                    output_fields=["key"],
                    limit=1,
                    consistency_level=self._level(),  # Strong reads wait for Milvus's clock: so does this
                    timeout=min(2.0, self.config.milvus.timeout_s),
                )
        except Exception:
            return False
        return True

    def _connect(self) -> Any:
        from pymilvus import MilvusClient  # noqa: PLC0415 - only the milvus backend pays for the import

        if self.embedded:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():  # milvus-lite 2.5 imports pkg_resources, deprecated but pinned
                warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
                # dedicated: a connection of its own, which close() really closes
                return MilvusClient(
                    uri=self.uri, token=self._token.reveal(), timeout=self.config.milvus.timeout_s, dedicated=True
                )
        except Exception as exc:
            raise UpstreamError(f"cannot reach Milvus at {self.shown_uri}: {self._describe(exc)}") from None

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
            schema.add_field("concepts", DataType.JSON)  # terms, scores and the filter index (_concepts_json)
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

    def _index_kind(self, name: str) -> dict[str, Any]:
        settings = self.config.milvus
        if name in (PHASH, CONCEPTS, THUMBS) or self.embedded or settings.index_type == "BIN_FLAT":
            return {"index_type": "BIN_FLAT"}
        return {"index_type": "BIN_IVF_FLAT", "params": {"nlist": settings.nlist}}

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

    # -- layout migration ------------------------------------------------------------

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
            for chunk in _chunks(keys, _MIGRATE_CHUNK):
                rows = self._query(SEMANTIC, _keys_in(chunk), fields)
                stale = [self._migrated(row, fields) for row in rows if (row["concepts"] or {}).get("v") != LAYOUT]
                fitting = [row for row in stale if _json_bytes(row["concepts"]) <= _JSON_BYTES]
                if len(fitting) < len(stale):  # kept as they are: never dropped, but no filter finds them
                    ids = sorted({str(row["id"]) for row in stale} - {str(row["id"]) for row in fitting})
                    logger.error(
                        "Milvus: %d items cannot hold the filter index (JSON over %d bytes): %s",
                        len(ids),
                        _JSON_BYTES,
                        ", ".join(map(repr, ids[:20])),
                    )
                self._upsert(SEMANTIC, fitting)
            recorded = self._query(CONCEPTS, f'row == "{_META_ROW}"', ["seq"])
        if not recorded or int(recorded[0]["seq"]) < LAYOUT:
            note = json.dumps({"layout": LAYOUT, "migrated_items": len(keys), "at_ms": time.time_ns() // 1_000_000})
            meta = {"row": _META_ROW, "key": _META_KEY, "name": "", "seq": LAYOUT, "part": 0, "parts": 0}
            self._upsert(CONCEPTS, [{**meta, "text": note, "code": _NO_MARK}])
        if keys:
            logger.info("Milvus: %d items of %s migrated to layout v%d", len(keys), self.shown_uri, LAYOUT)

    def _semantic_fields(self) -> list[str]:
        fields = ["key", "id", "code", "seq", "heavy", "concepts", "metadata", "sha256", "phash"]
        return fields + [f"in_{space}" for space in self._spaces[1:]]

    def _migrated(self, row: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
        """A v1 semantic row as layout v2 writes it: the same, with the filter index in ``concepts``."""
        rewritten = {name: row[name] for name in fields}
        rewritten["code"] = _code_bytes(row["code"])
        old = row["concepts"] or {}
        pairs = zip(old.get("terms", []), (float(score) for score in old.get("scores", [])), strict=True)
        rewritten["concepts"] = _concepts_json(list(pairs), row["metadata"] or {})
        return rewritten

    def _keys_where(self, expression: str) -> list[str]:
        """Keys of every semantic row matching ``expression``."""
        return [str(row["key"]) for row in self._query_all(SEMANTIC, expression, ["key"])]

    # -- calls to Milvus ------------------------------------------------------------

    def _call(self, what: str, request: Callable[[float], T], *, setup: bool = False) -> T:
        """``request(timeout_s)`` with the configured retries; UpstreamError (UNAVAILABLE) when they run out."""

        def attempt(timeout_s: float) -> T:
            self._check_open()  # a call racing close() fails at once instead of retrying
            try:
                return request(timeout_s)
            except Exception as exc:
                if _is_request_error(exc):  # our request is wrong: no retry can help
                    raise UpstreamError(f"Milvus at {self.shown_uri} refused {what}: {self._describe(exc)}") from None
                raise Retryable(f"{what}: {self._describe(exc)}") from None

        return call_with_retries(attempt, self._setup_policy if setup else self._policy, self._unlimited)

    def _describe(self, exc: Exception) -> str:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return self._token.redact(str(message))[:300]

    def _query(
        self, name: str, expression: str, fields: Sequence[str], limit: int | None = None, *, level: str = ""
    ) -> list[dict[str, Any]]:
        collection = self._names[name]
        extra = {"limit": limit} if limit is not None else {}
        return list(
            self._call(
                "query",
                lambda t: self._client.query(
                    collection,
                    filter=expression,
                    output_fields=list(fields),
                    consistency_level=level or self._level(),
                    timeout=t,
                    **extra,
                ),
            )
        )

    def _search(
        self,
        name: str,
        vector: bytes,
        limit: int,
        *,
        exclude: str | None = None,
        heavy: bool = False,
        restriction: str = "",
    ) -> list[tuple[str, int, float]]:
        """(key, seq, Hamming distance) of the nearest ``limit`` rows, nearest first.

        ``heavy``: only the rows flagged heavy (SDRs above equalize_bits, whose distance
        overstates how far they are). ``exclude``: an item key left out. ``restriction``:
        a filter expression the rows must match (Milvus returns the nearest that do).
        """
        collection = self._names[name]
        params: dict[str, Any] = {"metric_type": "HAMMING"}
        if self._index_kind(name)["index_type"] == "BIN_IVF_FLAT":
            params["params"] = {"nprobe": self.config.milvus.nprobe}
        conditions = [f'key != "{exclude}"'] if exclude else []
        if heavy:
            conditions.append("heavy == true")
        if restriction:
            conditions.append(f"({restriction})")
        fields = ["seq"] if name == SEMANTIC else ["key", "seq"]
        results = self._call(
            "search",
            lambda t: self._client.search(
                collection,
                data=[vector],
                limit=min(limit, MAX_RESULTS),
                anns_field="code",
                search_params=params,
                filter=" and ".join(conditions),
                output_fields=fields,
                consistency_level=self._level(),
                timeout=t,
            ),
        )
        hits = []
        for hit in results[0]:
            entity = hit["entity"]
            key = str(hit["id"]) if name == SEMANTIC else str(entity["key"])
            hits.append((key, int(entity["seq"]), float(hit["distance"])))
        return hits

    def _level(self) -> str:
        """The consistency level of the next read.

        Under Session, a Milvus 2.3 server shows this process's own deletes to its
        reads only some 0.2-1 s later (inserts and upserts at once); reads in the
        second after a delete ask for Strong instead, so a removed item stays removed.
        """
        forced = getattr(self._forced, "level", "")
        if forced:
            return str(forced)
        if self._read_level == "Session" and time.monotonic() < self._strong_until:
            return "Strong"
        return self._read_level

    def _upsert(self, name: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            collection = self._names[name]
            self._call("upsert", lambda t: self._client.upsert(collection, rows, timeout=t))

    def _delete(self, name: str, expression: str) -> None:
        collection = self._names[name]
        self._call("delete", lambda t: self._client.delete(collection, filter=expression, timeout=t))
        self._strong_until = time.monotonic() + _DELETE_SETTLE_S

    # -- writes ---------------------------------------------------------------

    def write(self, offered: Sequence[StoredItem], decide: Decide) -> None:
        """Decide, write the kept items and delete what the decision replaces, under this process's write lock.

        Each item is written as a new version (side rows first, its semantic row
        last), so a batch that fails part-way leaves every stored item as it was;
        the caller adds it again. Copies are looked for reading Strong, so the
        decision sees every acknowledged add, this replica's or another's.
        """
        for item in offered:
            _check_json_sizes(item)
        with self._write_lock:
            decided = decide(self._strong_copies)
            if decided.store:
                self._write(decided.store)
            if decided.delete:  # after the new item is in: a failure here loses nothing acknowledged
                self._delete_items([item_key(item_id) for item_id in decided.delete])

    def _strong_copies(
        self, fingerprint: Fingerprint | None, visual: Sdr | None, limits: DuplicateThresholds, k: int
    ) -> list[Item]:
        with self._reading("Strong"):
            return self.copies(fingerprint, visual, limits, k, None)

    def _write(self, kept: Sequence[StoredItem]) -> None:
        keys = [item_key(item.id) for item in kept]
        seqs = self._next_seqs(len(kept))
        versions = list(zip(keys, seqs, kept, strict=True))
        for space in self._spaces[1:]:
            self._upsert(space, self._side_rows(versions, space))
        self._upsert(
            PHASH,
            [
                {"version": f"{key}.{seq}", "key": key, "seq": seq, "code": _phash_code(item.fingerprint.phash)}
                for key, seq, item in versions
                if item.fingerprint is not None
            ],
        )
        for batch in _thumb_batches(_thumb_rows(versions)):
            self._upsert(THUMBS, batch)
        semantic = self._codes([item.sdrs[SEMANTIC] for item in kept])
        rows = [
            {
                "key": key,
                "id": item.id,
                "code": code,
                "seq": seq,
                "heavy": heavy,
                "concepts": _concepts_json(item.concepts, item.metadata),
                "metadata": dict(item.metadata),
                "sha256": item.fingerprint.sha256 if item.fingerprint else "",
                "phash": _signed(item.fingerprint.phash) if item.fingerprint else 0,
                **{f"in_{space}": space in item.sdrs for space in self._spaces[1:]},
            }
            for (key, seq, item), (code, heavy) in zip(versions, semantic, strict=True)
        ]
        self._upsert(SEMANTIC, rows)  # the commit point: these versions are the items from here on
        if any(heavy for _, heavy in semantic):
            self._heavy[SEMANTIC] = (True, time.monotonic())
        self._drop_old_versions(keys, seqs)

    def _side_rows(self, versions: Sequence[tuple[str, int, StoredItem]], space: str) -> list[dict[str, Any]]:
        having = [(key, seq, item) for key, seq, item in versions if space in item.sdrs]
        codes = self._codes([item.sdrs[space] for _, _, item in having])
        if any(heavy for _, heavy in codes):
            self._heavy[space] = (True, time.monotonic())
        return [
            {"version": f"{key}.{seq}", "key": key, "seq": seq, "code": code, "heavy": heavy}
            for (key, seq, _), (code, heavy) in zip(having, codes, strict=True)
        ]

    def _drop_old_versions(self, keys: Sequence[str], seqs: Sequence[int]) -> None:
        """Delete the side rows of replaced versions; best effort, readers ignore them anyway.

        Looked up first, then deleted by primary key: a delete by expression cost
        ~0.27 s per 1,000-item batch on the test server even when, as for new items,
        there was nothing to delete.
        """
        current = dict(zip(keys, seqs, strict=True))
        try:
            for name in (*self._spaces[1:], PHASH, THUMBS):
                primary = "row" if name == THUMBS else "version"
                for chunk in _chunks(sorted(current)):
                    rows = self._query(name, _keys_in(chunk), [primary, "key", "seq"])
                    old = [str(row[primary]) for row in rows if int(row["seq"]) != current[str(row["key"])]]
                    if old:
                        self._delete(name, _rows_in(old) if name == THUMBS else _versions_in(old))
        except UpstreamError as exc:
            logger.warning("old versions of %d items stay behind (ignored by reads): %s", len(keys), exc)

    def _codes(self, sdrs: Sequence[npt.NDArray[np.uint32]]) -> list[tuple[bytes, bool]]:
        """(padded code, heavy) per SDR."""
        if not sdrs:
            return []
        lengths = np.fromiter((sdr.size for sdr in sdrs), dtype=np.int64, count=len(sdrs))
        codes = pack_codes(np.concatenate(sdrs), lengths, self.sdr_size, self.config.equalize_bits, pad=True)
        limit = self.config.equalize_bits
        return [(code.tobytes(), bool(length > limit)) for code, length in zip(codes, lengths.tolist(), strict=True)]

    def _next_seqs(self, count: int) -> list[int]:
        """Nanosecond stamps, increasing within this process: the listing and tie-breaking order.

        Across replicas the order is that of their clocks (keep them synchronised).
        """
        with self._seq_lock:
            first = max(time.time_ns(), self._last_seq + 1)
            self._last_seq = first + count - 1
        return list(range(first, first + count))

    def remove(self, item_id: str) -> bool:
        """Remove an item (its absence read Strong); False when none has this id."""
        key = item_key(item_id)
        with self._write_lock:
            if not self._query(SEMANTIC, _keys_in([key]), ["key"], level="Strong"):
                return False
            self._delete_items([key])
        return True

    def _delete_items(self, keys: Sequence[str]) -> None:
        for chunk in _chunks(list(keys)):
            self._delete(SEMANTIC, _keys_in(chunk))  # first: the items are gone from here on
        try:
            for chunk in _chunks(list(keys)):
                for name in (*self._spaces[1:], PHASH, THUMBS):
                    self._delete(name, _keys_in(chunk))
        except UpstreamError as exc:  # the items are gone; their side rows are ignored by reads
            logger.warning("side rows of %d removed items stay behind: %s", len(keys), exc)

    # -- reads ----------------------------------------------------------------

    def _reading(self, level: str) -> _ReadLevel:
        """Within this block, this thread's reads use ``level``."""
        return _ReadLevel(self._forced, level)

    def get(self, item_id: str) -> Item | None:
        row = self._row(item_id)
        return None if row is None else self._item(row)

    def contains(self, item_ids: Sequence[str]) -> set[str]:
        ids = {item_key(item_id): item_id for item_id in item_ids}
        present: set[str] = set()
        for chunk in _chunks(sorted(ids)):
            present.update(ids[str(row["key"])] for row in self._query(SEMANTIC, _keys_in(chunk), ["key"]))
        return present

    def thumbnails(self, item_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored thumbnails of these items (ids without one, or unknown, are absent).

        Two queries per 1,000 ids: the items' current seqs, then their thumbnail rows
        (those of older versions, not yet deleted, are ignored).
        """
        ids = {item_key(item_id): item_id for item_id in item_ids}
        found: dict[str, bytes] = {}
        for chunk in _chunks(sorted(ids)):
            current = {
                str(row["key"]): int(row["seq"]) for row in self._query(SEMANTIC, _keys_in(chunk), ["key", "seq"])
            }
            if not current:
                continue
            rows = self._query(THUMBS, _keys_in(sorted(current)), ["key", "seq", "part", "parts", "text"])
            for key, image in _assembled(rows, current).items():
                found[ids[key]] = image
        return found

    def count(self, space: str) -> int:
        return self._count_where("" if space == SEMANTIC else f"in_{space} == true")

    def list_items(self, page_size: int, cursor: str, where: Filter | None) -> Listing:
        """Newest first (by seq, then key); the cursor is ``m<seq>.<key>``, the position to continue below."""
        below = _position_of(cursor)
        expression = _filter_expression(where)
        found = self._newest(page_size, below, expression)
        page = found[:page_size]
        rows = self._rows([key for _, key in page])
        # A row replaced since _newest read it may no longer pass: skipped, as a removed one is.
        items = tuple(self._item(rows[key]) for _, key in page if key in rows and passes(rows[key].stored, where))
        following = f"m{page[-1][0]}.{page[-1][1]}" if len(found) > page_size else ""
        return Listing(items, following, self._count_where(expression))

    def _count_where(self, expression: str, *, exact: bool = True) -> int:
        """Semantic rows matching ``expression`` (all of them for "").

        count(*) on a Milvus 2.3 server lags behind this process's own deletes under
        Session (queries do not): a caller who asked to read its own writes gets Strong,
        which waits for the server's clock (~0.3 s here). ``exact=False`` reads at the
        configured level, for a count that only picks a search plan.
        """
        level = "Strong" if exact and self._read_level == "Session" else ""
        rows = self._query(SEMANTIC, expression, ["count(*)"], level=level)
        return int(rows[0]["count(*)"])

    def _newest(self, page_size: int, below: tuple[int, str] | None, expression: str = "") -> list[tuple[int, str]]:
        """The newest (seq, key) pairs matching ``expression`` below ``below``: more than ``page_size`` when there are.

        Milvus queries have no ORDER BY. The rows with ``seq >= start`` (and below the
        token) shrink as ``start`` rises; find a start whose rows number more than a
        page but fewer than a query returns: reach back from the newest x4 at a time
        while too few, then bisect between the highest start known to give too many and
        the lowest known to give too few. Seqs come from the writers' clocks, so the
        first page is not bounded above by this one's.
        """
        top = below[0] if below is not None else time.time_ns()
        upper = ""
        if below is not None:  # strictly after the last item shown, in (seq, key) order
            upper = f' and (seq < {below[0]} or (seq == {below[0]} and key < "{below[1]}"))'
        if expression:
            upper += f" and ({expression})"
        many: int | None = None  # a start known to give too many rows
        few = (below[0] if below is not None else _INT64_MAX) + 1  # a start known to give too few
        span = _FIRST_SPAN_NS
        start = max(top - span, 0)
        while True:
            rows = self._query(SEMANTIC, f"seq >= {start}{upper}", ["key", "seq"], limit=MAX_RESULTS)
            if len(rows) < MAX_RESULTS and (len(rows) > page_size or start == 0):
                return sorted(((int(row["seq"]), str(row["key"])) for row in rows), reverse=True)
            if len(rows) >= MAX_RESULTS:
                many = start
            else:
                few = start
            if many is None:
                span *= 4
                start = max(top - span, 0)
            elif few - many > 1:
                start = (many + few) // 2
            else:  # more rows in one nanosecond than a query returns: some of them, best effort
                return sorted(((int(row["seq"]), str(row["key"])) for row in rows), reverse=True)

    def search(
        self, queries: Sequence[Sdr], k: int, min_overlap: int, space: str, where: Filter | None
    ) -> list[list[Match]]:
        plan = self._plan(space, where)
        return [self._ranked(query, k, min_overlap, space, exclude=None, plan=plan) for query in queries]

    def neighbours(
        self, item_id: str, k: int, min_overlap: int, space: str, where: Filter | None
    ) -> tuple[Item, list[Match]] | None:
        """The item and its nearest in ``space`` passing ``where``, searched with its own SDR."""
        row = self._row(item_id)
        if row is None:
            return None
        positions = row.stored.sdrs.get(space)
        if positions is None:
            return self._item(row), []
        query = Sdr.trusted(positions, self.sdr_size)
        plan = self._plan(space, where)
        return self._item(row), self._ranked(query, k, min_overlap, space, exclude=item_key(item_id), plan=plan)

    def _ranked(
        self, query: Sdr, k: int, min_overlap: int, space: str, *, exclude: str | None, plan: _Plan
    ) -> list[Match]:
        """The k best passing by exact overlap (ties to the lower seq), proven against every unseen item."""

        def settled(scored: Sequence[tuple[int, _Row]], bound: float) -> bool:
            qualified = [overlap for overlap, _ in scored if overlap >= min_overlap]
            if len(qualified) >= k:  # strictly: an unseen item tying the k-th could be older
                return qualified[k - 1] > bound
            return bound < min_overlap  # no unseen item can qualify

        scored, _ = self._scan(space, query, settled, exclude, self._first_fetch(k), plan=plan)
        best = [(overlap, row) for overlap, row in scored if overlap >= min_overlap][:k]
        return [self._match(row, {space: overlap}, overlap, float(overlap)) for overlap, row in best]

    def _plan(self, space: str, where: Filter | None) -> _Plan:
        """How to search ``space`` for items passing ``where`` (one plan serves every query of a call).

        The semantic rows hold the filter index: Milvus searches only the passing ones.
        Visual and pHash rows do not (Milvus 2.3 cannot add a field to a collection):
        when at most _PREFILTER_MAX items pass, their keys restrict the search there;
        when more pass, candidates are checked one by one (a broad filter passes many
        of the nearest), and if that proves nothing within MAX_RESULTS candidates the
        passing keys are searched in chunks (``_scan``).
        """
        if where is None:
            return _Plan(("",), None)
        expression = _filter_expression(where)
        if space == SEMANTIC:
            return _Plan((expression,), where)
        scope = f"in_{space} == true and {expression}"
        if self._count_where(scope, exact=False) > _PREFILTER_MAX:  # a stale count only changes the plan
            return _Plan(("",), where, scope)
        return _Plan(tuple(_keys_in(chunk) for chunk in _chunks(self._keys_where(scope), _PREFILTER_MAX)), where)

    def _scan(
        self,
        space: str,
        query: Sdr,
        settled: Callable[[Sequence[tuple[int, _Row]], float], bool],
        exclude: str | None,
        first: int | None = None,
        *,
        plan: _Plan | None = None,
    ) -> tuple[list[tuple[int, _Row]], float]:
        """Candidates of ``space`` passing the plan's filter by exact overlap, best first, and the bound.

        Each of the plan's restrictions is searched (``_scan_part``) and the answers
        merged: an unseen item lies in some part, so it shares at most the highest of
        the parts' bounds, and ``settled`` held in each part holds for the merge. A
        broad plan that proved nothing within MAX_RESULTS candidates is searched again,
        restricted to chunks of the passing keys, so the answer stays exact.
        """
        plan = plan or _Plan(("",), None)
        parts = [
            self._scan_part(space, query, settled, exclude, first, restriction=part, where=plan.where)
            for part in plan.restrictions
        ]
        if plan.fallback and not all(proven for _, _, proven in parts):
            keys = self._keys_where(plan.fallback)
            logger.info("Milvus: a filtered %s search proved nothing within its window; %d keys", space, len(keys))
            parts = [
                self._scan_part(space, query, settled, exclude, first, restriction=_keys_in(chunk), where=plan.where)
                for chunk in _chunks(keys, _PREFILTER_MAX)
            ]
        scored = sorted((pair for found, _, _ in parts for pair in found), key=lambda pair: (-pair[0], pair[1].seq))
        return scored, max((bound for _, bound, _ in parts), default=-1.0)

    def _scan_part(
        self,
        space: str,
        query: Sdr,
        settled: Callable[[Sequence[tuple[int, _Row]], float], bool],
        exclude: str | None,
        first: int | None,
        *,
        restriction: str,
        where: Filter | None,
    ) -> tuple[list[tuple[int, _Row]], float, bool]:
        """(candidates, bound, proven) of one restricted search of ``space``.

        Fetches more until ``settled(scored, bound)`` holds, where ``bound`` is the most
        bits an item not yet seen (matching ``restriction``) can share with the query (-1
        once Milvus has returned every one), or until MAX_RESULTS candidates; proven
        says which. Only rows passing ``where`` are scored (checked here too: visual
        rows are not restricted by it when the plan is broad). Heavy SDRs, which the
        bound does not cover, are fetched by a filtered search of their own and scored
        exactly.
        """
        fetch = first or self._first_fetch(1)
        vector = self._query_code(query)
        heavy = []
        if self._has_heavy(space):
            heavy = self._search(space, vector, MAX_RESULTS, exclude=exclude, heavy=True, restriction=restriction)
        rows: dict[str, _Row] = {}
        read: set[str] = set()  # keys whose rows were read in an earlier round (present or not)
        while True:
            hits = self._search(space, vector, fetch, exclude=exclude, restriction=restriction)
            unread = {key for key, _, _ in hits + heavy} - read
            rows.update(self._rows(unread))  # a wider round re-reads none of the narrower one's rows
            read |= unread
            scored = []
            for key, seq, _ in {(h[0], h[1]): h for h in hits + heavy}.values():
                row = rows.get(key)
                positions = row.stored.sdrs.get(space) if row is not None and row.seq == seq else None
                # else an old version, or one half-written
                if row is not None and positions is not None and passes(row.stored, where):
                    scored.append((_overlap(query.positions, positions), row))
            scored.sort(key=lambda pair: (-pair[0], pair[1].seq))
            exhausted = len(hits) < min(fetch, MAX_RESULTS)
            bound = -1.0 if exhausted else (query.active + self.config.equalize_bits - hits[-1][2]) / 2
            proven = exhausted or settled(scored, bound)
            if proven or fetch >= MAX_RESULTS:
                return scored, bound, proven
            fetch = min(fetch * 4, MAX_RESULTS)

    def _has_heavy(self, space: str) -> bool:
        """Whether ``space`` may hold heavy SDRs: asked at most every _HEAVY_RECHECK_S (a scalar query).

        Nearly always none are stored (SDRs have sdr.sparsity bits, below the padding),
        and the filtered search for them costs as much as the main one. Another
        replica's first heavy SDR is seen within _HEAVY_RECHECK_S, this process's at once.
        """
        known, checked = self._heavy.get(space, (False, -math.inf))
        if known or time.monotonic() - checked < _HEAVY_RECHECK_S:
            return known
        found = bool(self._query(space, "heavy == true", ["seq"], limit=1))
        self._heavy[space] = (found, time.monotonic())
        return found

    def _first_fetch(self, k: int) -> int:
        return min(max(k * self.config.candidate_factor, k + self.config.candidate_margin), MAX_RESULTS)

    def copies(
        self,
        fingerprint: Fingerprint | None,
        visual: Sdr | None,
        limits: DuplicateThresholds,
        k: int,
        exclude: str | None,
    ) -> list[Item]:
        skip = item_key(exclude) if exclude else None
        return [self._item(row) for row in self._copy_rows(fingerprint, visual, limits, k, skip).values()]

    def copies_of(self, item_id: str, limits: DuplicateThresholds, k: int) -> tuple[Item, list[Item]] | None:
        row = self._row(item_id)
        if row is None:
            return None
        item = self._item(row)
        if row.stored.fingerprint is None:
            return item, []
        visual = item.spaces.get(VISUAL)
        found = self._copy_rows(row.stored.fingerprint, visual, limits, k, item_key(item_id))
        return item, [self._item(other) for other in found.values()]

    def _copy_rows(
        self,
        fingerprint: Fingerprint | None,
        visual: Sdr | None,
        limits: DuplicateThresholds,
        k: int,
        exclude: str | None,
    ) -> dict[str, _Row]:
        """Stored items that may copy the image by any of the three tests (``duplicates.py`` judges)."""
        keys: set[str] = set()
        if fingerprint is not None:
            if _SHA256.fullmatch(fingerprint.sha256):  # always, from fingerprints.py; the check keeps the filter safe
                same = self._query(SEMANTIC, f'sha256 == "{fingerprint.sha256}"', ["key"], limit=MAX_RESULTS)
                keys.update(str(row["key"]) for row in same)
            keys.update(self._near_phashes(fingerprint.phash, limits.max_phash_distance, exclude))
        if VISUAL in self._spaces and visual is not None and visual.active:
            floor = visual_floor(visual, limits)
            scored, _ = self._scan(VISUAL, visual, lambda _, bound: bound < floor, exclude, self._first_fetch(k))
            keys.update(item_key(row.stored.id) for overlap, row in scored if overlap >= floor)
        keys.discard(exclude or "")
        return self._rows(keys)

    def _near_phashes(self, phash: int, max_distance: int, exclude: str | None) -> set[str]:
        """Keys of the items whose pHash lies within ``max_distance`` bits: every one, not the top few."""
        fetch = self._first_fetch(1)
        while True:
            hits = self._search(PHASH, _phash_code(phash), fetch, exclude=exclude)
            if len(hits) < fetch or hits[-1][2] > max_distance or fetch >= MAX_RESULTS:
                return {key for key, _, distance in hits if distance <= max_distance}
            fetch = min(fetch * 4, MAX_RESULTS)

    def search_blend(
        self, semantic: Sdr, visual: Sdr, weight: float, k: int, *, exclude: str | None, where: Filter | None
    ) -> list[Match]:
        """Top k passing ``where`` by ``(1 - weight) * semantic overlap + weight * visual overlap``, exactly re-ranked.

        As in the FAISS engine (``faiss/appearance.py``): candidates from each space, every candidate
        scored exactly in both, lists grown until the k-th score is above what an
        unseen item could reach (from each list's last Hamming distance), or until
        MAX_RESULTS candidates per space (the last round under a broad filter searches
        the passing visual items completely, see ``_scan``).
        """
        queries = {SEMANTIC: semantic, VISUAL: visual}
        shares = {SEMANTIC: 1.0 - float(weight), VISUAL: float(weight)}
        plans = {space: self._plan(space, where) for space in queries}
        skip = item_key(exclude) if exclude else None
        fetch = self._first_fetch(k)
        while True:
            bounds: dict[str, float] = {}
            keys: set[str] = set()
            last = fetch >= MAX_RESULTS  # nothing to widen after this round: let _scan prove what it can

            def settled(_: Sequence[tuple[int, _Row]], bound: float, last: bool = last) -> bool:
                return not last

            for space, query in queries.items():
                scored, bounds[space] = self._scan(space, query, settled, skip, fetch, plan=plans[space])
                keys.update(item_key(row.stored.id) for _, row in scored)
            rows = self._rows(keys)
            ranked = sorted(
                (self._blend_match(row, queries, float(weight)) for row in rows.values() if passes(row.stored, where)),
                key=lambda pair: (-pair[0].score, pair[1]),
            )
            best = [match for match, _ in ranked[:k]]
            bound = sum(shares[space] * max(bounds[space], 0.0) for space in queries)
            complete = all(value < 0 for value in bounds.values())
            # Strictly above: an unseen item tying the bound could win the tie on its seq.
            if complete or (len(best) >= k and best[-1].score > bound) or fetch >= MAX_RESULTS:
                return best
            fetch = min(fetch * 4, MAX_RESULTS)

    def _blend_match(self, row: _Row, queries: Mapping[str, Sdr], weight: float) -> tuple[Match, int]:
        sdrs = row.stored.sdrs
        overlaps = {space: _overlap(query.positions, sdrs.get(space, _NONE)) for space, query in queries.items()}
        score = (1.0 - weight) * overlaps[SEMANTIC] + weight * overlaps[VISUAL]
        return self._match(row, overlaps, overlaps[SEMANTIC], score), row.seq

    # -- custom concepts ----------------------------------------------------------

    def put_concept(self, name: str, document: str) -> StoredConcept:
        """Store a custom concept, replacing one of the same name; acknowledged once Milvus has it.

        A new version is written whole (its chunks), then older versions are deleted:
        readers take the newest complete version, so a put failing part-way leaves the
        concept as it was, and of two replicas putting one name the later seq wins.
        """
        key = item_key(name)
        with self._write_lock:
            seq = self._next_seqs(1)[0]
            chunks = [document[at : at + _TEXT_CHARS] for at in range(0, len(document), _TEXT_CHARS)] or [""]
            version = {"key": key, "name": name, "seq": seq, "parts": len(chunks), "code": _NO_MARK}
            rows = [
                {**version, "row": f"{key}.{seq}.{part}", "part": part, "text": text}
                for part, text in enumerate(chunks)
            ]
            for batch in _chunks(rows, 16):  # <= 1 MiB of text per request
                self._upsert(CONCEPTS, batch)
            try:
                old = self._query(CONCEPTS, f'key == "{key}" and seq < {seq}', ["row"], level="Strong")
                if old:
                    self._delete(CONCEPTS, _rows_in([str(row["row"]) for row in old]))
            except UpstreamError as exc:  # readers take the newest version anyway
                logger.warning("old versions of concept %r stay behind: %s", name, exc)
        return StoredConcept(name, document, seq // 1_000_000)

    def get_concept(self, name: str) -> StoredConcept | None:
        """The custom concept (read Strong: another replica's put is seen at once), or None."""
        fields = ["row", "name", "seq", "part", "parts", "text"]
        found = _newest_complete(self._query(CONCEPTS, f'key == "{item_key(name)}"', fields, level="Strong"))
        return found[0] if found else None

    def list_concepts(self) -> list[StoredConcept]:
        """Every custom concept, by name (read Strong)."""
        with self._reading("Strong"):
            # The versions first (no text), then the text of the newest complete ones only.
            rows = self._query_all(CONCEPTS, "parts > 0", ["row", "key", "seq", "part", "parts"])
            wanted = {str(row["row"]) for row in _newest_rows(rows)}
            texts = [
                row
                for chunk in _chunks(sorted(wanted))
                for row in self._query(CONCEPTS, _rows_in(chunk), ["row", "name", "seq", "part", "parts", "text"])
            ]
        return sorted(_newest_complete(texts), key=lambda concept: concept.name)

    def remove_concept(self, name: str) -> bool:
        """Remove a custom concept (every version of it); False when there is none."""
        key = item_key(name)
        with self._write_lock:
            rows = self._query(CONCEPTS, f'key == "{key}"', ["row", "key", "seq", "part", "parts"], level="Strong")
            if not _newest_rows(rows):
                return False
            self._delete(CONCEPTS, _rows_in([str(row["row"]) for row in rows]))
        return True

    def _query_all(self, name: str, expression: str, fields: Sequence[str], prefix: str = "") -> list[dict[str, Any]]:
        """Every row of ``name`` matching ``expression``: split by key prefix while a query fills up."""
        conditions = [f"({expression})"] if expression else []
        if prefix:  # hex digits: nothing to escape
            conditions.append(f'key like "{prefix}%"')
        rows = self._query(name, " and ".join(conditions) or 'key != ""', fields, limit=MAX_RESULTS)
        if len(rows) < MAX_RESULTS or len(prefix) >= 32:
            return rows
        digits = "0123456789abcdef"
        return [row for digit in digits for row in self._query_all(name, expression, fields, prefix + digit)]

    # -- rows -----------------------------------------------------------------

    def _row(self, item_id: str) -> _Row | None:
        key = item_key(item_id)
        return self._rows([key]).get(key)

    def _rows(self, keys: Iterable[str]) -> dict[str, _Row]:
        """The stored items with these keys (absent ones left out), each with its current side rows."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        fields = ["key", "id", "code", "seq", "concepts", "metadata", "sha256", "phash"]
        semantic = [row for chunk in _chunks(wanted) for row in self._query(SEMANTIC, _keys_in(chunk), fields)]
        current = {str(row["key"]): int(row["seq"]) for row in semantic}
        others: dict[str, dict[str, npt.NDArray[np.uint32]]] = {}
        for space in self._spaces[1:]:
            for chunk in _chunks(sorted(current)):
                for row in self._query(space, _keys_in(chunk), ["key", "seq", "code"]):
                    key = str(row["key"])
                    if current.get(key) == int(row["seq"]):  # the current version's row, not an old one
                        others.setdefault(key, {})[space] = self._positions(row["code"])
        rows = {}
        for row in semantic:
            key = str(row["key"])
            sdrs = {SEMANTIC: self._positions(row["code"]), **others.get(key, {})}
            concepts = row["concepts"] or {}
            pairs = tuple(zip(concepts.get("terms", []), (float(s) for s in concepts.get("scores", [])), strict=True))
            printed = Fingerprint(str(row["sha256"]), _unsigned(int(row["phash"]))) if row["sha256"] else None
            stored = StoredItem(str(row["id"]), sdrs, pairs, dict(row["metadata"] or {}), printed)
            rows[key] = _Row(stored, int(row["seq"]))
        return rows

    def _positions(self, code: object) -> npt.NDArray[np.uint32]:
        """The SDR of a stored code: its first sdr_size bits (the padding after them is dropped)."""
        packed = np.frombuffer(_code_bytes(code), dtype=np.uint8)
        bits = np.unpackbits(packed, bitorder="little")[: self.sdr_size]
        return np.flatnonzero(bits).astype(np.uint32)

    def _query_code(self, query: Sdr) -> bytes:
        lengths = np.array([query.active], dtype=np.int64)
        codes = pack_codes(query.positions, lengths, self.sdr_size, self.config.equalize_bits, pad=False)
        return bytes(codes[0].tobytes())

    def _item(self, row: _Row) -> Item:
        stored = row.stored
        spaces = {
            name: Sdr.trusted(positions, self.sdr_size) for name, positions in stored.sdrs.items() if name != SEMANTIC
        }
        return Item(
            stored.id,
            Sdr.trusted(stored.sdrs[SEMANTIC], self.sdr_size),
            stored.concepts,
            types.MappingProxyType(dict(stored.metadata)),
            types.MappingProxyType(spaces),
            stored.fingerprint,
        )

    def _match(self, row: _Row, overlaps: Mapping[str, int], overlap: int, score: float) -> Match:
        return Match(row.stored.id, overlap, self._item(row), types.MappingProxyType(dict(overlaps)), score)

    def _check_open(self) -> None:
        if self._closed:
            raise IndexClosedError(f"{self.description} is closed")


_NONE: npt.NDArray[np.uint32] = np.zeros(0, dtype=np.uint32)


def _overlap(query: npt.NDArray[np.uint32], stored: npt.NDArray[np.uint32]) -> int:
    return int(np.intersect1d(query, stored, assume_unique=True).size)


def _keys_in(keys: Sequence[str]) -> str:
    return "key in [" + ",".join(f'"{key}"' for key in keys) + "]"  # hex keys: nothing to escape


def _check_json_sizes(item: StoredItem) -> None:
    """Refuse an item whose JSON fields the server would refuse, before anything of it is written."""
    sizes = {
        "concepts": _json_bytes(_concepts_json(item.concepts, item.metadata)),
        "metadata": _json_bytes(dict(item.metadata)),
    }
    for field, size in sizes.items():
        if size > _JSON_BYTES:
            raise InvalidInputError(
                f"item {item.id!r}: its {field} (with the filter index of its concepts and metadata) take"
                f" {size} bytes as Milvus JSON, at most {_JSON_BYTES}",
                field=field,
            )


def _rows_in(rows: Sequence[str]) -> str:
    return "row in [" + ",".join(f'"{row}"' for row in rows) + "]"  # "<hex>.<digits>.<digits>"


def _newest_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of each concept's newest complete version (every chunk present)."""
    versions: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        versions.setdefault((str(row["row"]).split(".")[0], int(row["seq"])), []).append(row)
    newest: dict[str, tuple[int, list[Mapping[str, Any]]]] = {}
    for (key, seq), parts in versions.items():
        complete = len({int(part["part"]) for part in parts}) == int(parts[0]["parts"])
        if complete and seq > newest.get(key, (-1, []))[0]:
            newest[key] = (seq, parts)
    return [row for _, parts in newest.values() for row in parts]


def _newest_complete(rows: Iterable[Mapping[str, Any]]) -> list[StoredConcept]:
    """Each concept's newest complete version, assembled from its chunks."""
    by_key: dict[str, list[Mapping[str, Any]]] = {}
    for row in _newest_rows(rows):
        by_key.setdefault(str(row["row"]).split(".")[0], []).append(row)
    concepts = []
    for parts in by_key.values():
        parts.sort(key=lambda part: int(part["part"]))
        first = parts[0]
        document = "".join(str(part["text"]) for part in parts)
        concepts.append(StoredConcept(str(first["name"]), document, int(first["seq"]) // 1_000_000))
    return concepts


def _thumb_rows(versions: Sequence[tuple[str, int, StoredItem]]) -> list[dict[str, Any]]:
    """The thumbs rows of these item versions: base64 of each thumbnail, in chunks."""
    rows: list[dict[str, Any]] = []
    for key, seq, item in versions:
        if item.thumbnail is None:
            continue
        text = base64.b64encode(item.thumbnail).decode("ascii")
        parts = [text[at : at + _THUMB_CHARS] for at in range(0, len(text), _THUMB_CHARS)]
        version = {"key": key, "seq": seq, "parts": len(parts), "code": _NO_MARK}
        rows.extend(
            {**version, "row": f"{key}.{seq}.{part}", "part": part, "text": chunk} for part, chunk in enumerate(parts)
        )
    return rows


def _thumb_batches(rows: Sequence[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
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


def _assembled(rows: Iterable[Mapping[str, Any]], current: Mapping[str, int]) -> dict[str, bytes]:
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


def _versions_in(versions: Sequence[str]) -> str:
    return "version in [" + ",".join(f'"{version}"' for version in versions) + "]"  # "<hex>.<digits>"


def _chunks(keys: Sequence[K], size: int = _KEY_CHUNK) -> Iterable[list[K]]:
    for start in range(0, len(keys), size):
        yield list(keys[start : start + size])


def _code_bytes(code: object) -> bytes:
    raw = code[0] if isinstance(code, list) else code  # query returns [bytes]; search returns bytes
    if not isinstance(raw, bytes):
        raise TypeError(f"Milvus returned a binary vector as {type(raw).__name__}")
    return raw


# -- filters --------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """How one space is searched under a filter (``MilvusIndex._plan``)."""

    restrictions: tuple[str, ...]  # one search per expression ("": the whole space), answers merged
    where: Filter | None  # checked on every candidate read
    fallback: str = ""  # broad: the passing items' expression, searched by key chunks when unproven


def _hashed(*parts: str) -> str:
    """Strings' name in the filter index: 64 bits of BLAKE2b in hex (safe in any expression).

    Parts are joined by 0xff, a byte UTF-8 never holds: (key, value) pairs cannot run together.
    """
    joined = b"\xff".join(part.encode("utf-8", "surrogatepass") for part in parts)
    return hashlib.blake2b(joined, digest_size=8).hexdigest()


def _concepts_json(concepts: Sequence[tuple[str, float]], metadata: Mapping[str, str]) -> dict[str, Any]:
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
        name = "h" + _hashed(term)  # a letter first: a path of digits alone could read as an index
        names[name] = max(float(score), names.get(name, float(score)))
    return {
        "terms": [term for term, _ in concepts],
        "scores": [float(score) for _, score in concepts],
        "v": LAYOUT,
        "names": names,
        "meta": sorted({_hashed(key, value) for key, value in metadata.items()}),
    }


def _json_bytes(value: object) -> int:
    """How long Milvus takes a JSON value to be (pymilvus sends it compact, UTF-8)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def _filter_expression(where: Filter | None) -> str:
    """The Milvus expression selecting the semantic rows that pass ``where`` ("" for none).

    Only hashes and a float's repr go into it: no key or value is quoted.
    """
    if where is None:
        return ""
    conditions = []
    for key, values in where.metadata:
        allowed = ",".join(f'"{pair}"' for pair in sorted({_hashed(key, value) for value in values}))
        conditions.append(f'json_contains_any(concepts["meta"], [{allowed}])')
    for condition in where.concepts:
        floor = float(condition.min_confidence)
        conditions.append(f'concepts["names"]["h{_hashed(condition.name)}"] >= {floor!r}')
    return " and ".join(conditions)


def _phash_code(phash: int) -> bytes:
    return int(phash).to_bytes(8, "little")


def _signed(phash: int) -> int:
    """A 64-bit pHash as INT64 (Milvus has no unsigned integers)."""
    return phash - (1 << 64) if phash >= 1 << 63 else phash


def _unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def _position_of(cursor: str) -> tuple[int, str] | None:
    """The (seq, key) a cursor continues below; None for the first page."""
    if not cursor:
        return None
    match = _CURSOR.fullmatch(cursor)
    if match is None or int(match.group(1)) > _INT64_MAX:
        raise BadCursorError(cursor)
    return int(match.group(1)), match.group(2)


def _without_credentials(uri: str) -> str:
    """``uri`` with any user:password part masked, for errors and logs."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class _ReadLevel:
    """Context manager: the reads of this thread use ``level`` inside the block."""

    def __init__(self, forced: threading.local, level: str) -> None:
        self._forced = forced
        self._level = level

    def __enter__(self) -> None:
        self._saved = getattr(self._forced, "level", "")
        self._forced.level = self._level

    def __exit__(self, *exc_info: object) -> None:
        self._forced.level = self._saved


def _is_request_error(exc: Exception) -> bool:
    """Whether Milvus (or pymilvus) refused the request itself: a bug here, not an outage to wait out."""
    from pymilvus.exceptions import DataTypeNotMatchException, MilvusException, ParamError  # noqa: PLC0415

    if isinstance(exc, (ParamError, DataTypeNotMatchException)):
        return True
    return isinstance(exc, MilvusException) and exc.code == _INVALID_PARAMETER


_INVALID_PARAMETER = 1100  # Milvus's ErrParameterInvalid (a bad expression, a wrong field)
