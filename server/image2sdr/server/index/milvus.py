"""``MilvusIndex``: items kept and searched by Milvus: an embedded file, one server, or a cluster.

Milvus is the source of truth here (no SQLite, no FAISS snapshot), so several
service replicas can share one collection set; only ``milvus.uri`` tells an
embedded file (milvus-lite) from a server or a cluster.

Collections, named ``<prefix>_<what>``:

    semantic   one row per item: key, id, semantic code, seq, concepts, metadata, sha256, phash
    visual     key and visual code, for the items that have a visual SDR
    phash      key and the 64-bit pHash as a binary vector, for near-exact copies by Hamming

Three collections, not one, because Milvus 2.3 (the server tested here) allows one
vector field per collection. The primary key is a hash of the item id, never the
id itself: Milvus filter expressions have no escaping that both engines parse the
same (a newline or tab in an id broke milvus-lite's parser), and hex keys need none.

Codes are ``codes.pack_codes`` codes, padded to equal weight, searched with HAMMING:
the Hamming order is then the overlap order (see ``codes.py``). Milvus returns
``fetch`` candidates; their SDRs are read back and ranked by exact overlap, ties to
the lower ``seq`` (the item added or last replaced earlier).

Writes: the visual and pHash rows first, the semantic row last. An item exists once
its semantic row does, so a failed add leaves no item behind (at most the visual or
pHash row of an id the caller is told to add again). Nothing is acknowledged before
Milvus has accepted every part of it.
"""

from __future__ import annotations

import hashlib
import logging
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

from ..config import IndexConfig
from ..errors import (
    ConfigError,
    IndexClosedError,
    InvalidInputError,
    NoFingerprintError,
    NoSdrInSpaceError,
    NotFoundError,
    UpstreamError,
)
from ..fingerprints import Fingerprint
from ..sdr import Sdr
from ..upstream import RateLimiter, Retryable, RetryPolicy, Secret, call_with_retries
from .checks import ItemChecks, check_id, check_metadata, compare, duplicate_order, is_int, screen
from .codes import code_size, pack_codes
from .protocol import (
    SEMANTIC,
    VISUAL,
    AddOutcome,
    Duplicate,
    DuplicateThresholds,
    Item,
    ItemPage,
    Match,
    OnDuplicate,
)
from .store import StoredItem

__all__ = ["MilvusIndex"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

PHASH = "phash"
SCHEMA = "image2sdr items v1"  # in each collection's description; a later layout migrates from it
MAX_RESULTS = 16384  # Milvus's topk and query-window limit
_ID_BYTES = 65535  # VARCHAR's own limit: ids are bounded by index.max_id_length, not by the schema
_KEY_CHUNK = 1000  # keys per "key in [...]" expression
_FIRST_SPAN_NS = 1 << 36  # ~69 s: the first time window a listing page looks back over
_PAGE_TOKEN = re.compile(r"^m(\d{1,19})\.([0-9a-f]{32})$")
_SETUP_S = 120.0  # at least this long for creating and loading the collections at start
_DELETE_SETTLE_S = 1.5  # after a delete, Session reads are Strong this long (see _level)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_EMPTY: Mapping[str, str] = types.MappingProxyType({})


def item_key(item_id: str) -> str:
    """The primary key of an item: 128 bits of BLAKE2b of its id, as hex (safe in any expression)."""
    return hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass(frozen=True)
class _Row:
    stored: StoredItem
    seq: int


class MilvusIndex:
    """Items by id in Milvus collections, searchable by SDR overlap in each space. Thread-safe.

    Same contract as ``SdrIndex`` (``protocol.ItemIndex``). Across replicas, two
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
        self.embedded = not self.uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))
        self.shown_uri = _without_credentials(self.uri)  # the URI as errors and logs name it
        self._spaces = tuple(spaces)
        self._checks = ItemChecks(config, sdr_size, spaces)
        self._names = {name: f"{settings.collection}_{name}" for name in (*spaces, PHASH)}
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
        self._write_lock = threading.Lock()  # duplicate screening and the add it decides, per process
        self._seq_lock = threading.Lock()
        self._last_seq = 0
        self._closed = False
        self._client = self._connect()
        try:
            for name in (*spaces, PHASH):
                self._open_collection(name)
        except BaseException:
            self._client.close()
            raise

    # -- lifecycle ------------------------------------------------------------

    @property
    def spaces(self) -> tuple[str, ...]:
        return self._spaces

    def __enter__(self) -> MilvusIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
        self._client.close()

    def available(self) -> bool:
        """Whether Milvus answers now (one cheap request, no retries): the health check's question."""
        if self._closed:
            return False
        try:
            # A query, not a ping: after a restart Milvus answers pings well before it has
            # loaded the collections again, and until then every search would time out.
            for name in (*self._spaces, PHASH):
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
                return MilvusClient(uri=self.uri, token=self._token.reveal(), timeout=self.config.milvus.timeout_s)
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
        from pymilvus import DataType, MilvusClient  # noqa: PLC0415

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=SCHEMA)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=32)
        if name == PHASH:
            schema.add_field("code", DataType.BINARY_VECTOR, dim=64)
        else:
            schema.add_field("code", DataType.BINARY_VECTOR, dim=self._dim)
        if name == SEMANTIC:
            schema.add_field("id", DataType.VARCHAR, max_length=_ID_BYTES)
            schema.add_field("seq", DataType.INT64)
            schema.add_field("concepts", DataType.JSON)
            schema.add_field("metadata", DataType.JSON)
            schema.add_field("sha256", DataType.VARCHAR, max_length=64)
            schema.add_field("phash", DataType.INT64)
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
        logger.info("Milvus collection %s created at %s", collection, self.shown_uri)

    def _index_kind(self, name: str) -> dict[str, Any]:
        settings = self.config.milvus
        if name == PHASH or self.embedded or settings.index_type == "BIN_FLAT":
            return {"index_type": "BIN_FLAT"}
        return {"index_type": "BIN_IVF_FLAT", "params": {"nlist": settings.nlist}}

    def _check_layout(self, name: str) -> None:
        collection = self._names[name]
        described = self._call(
            "describe_collection", lambda t: self._client.describe_collection(collection, timeout=t), setup=True
        )
        dims = {field["name"]: field.get("params", {}).get("dim") for field in described.get("fields", [])}
        wanted = 64 if name == PHASH else self._dim
        if int(dims.get("code") or 0) != wanted:
            raise ConfigError(
                f"Milvus collection {collection} holds codes of {dims.get('code')} bits, this config makes"
                f" {wanted} (sdr.size and index.equalize_bits must match what it was created with)"
            )

    # -- calls to Milvus ------------------------------------------------------------

    def _call(self, what: str, request: Callable[[float], T], *, setup: bool = False) -> T:
        """``request(timeout_s)`` with the configured retries; UpstreamError (UNAVAILABLE) when they run out."""

        def attempt(timeout_s: float) -> T:
            try:
                return request(timeout_s)
            except Exception as exc:
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
        self, name: str, vectors: Sequence[bytes], limit: int, exclude: str | None = None
    ) -> list[list[tuple[str, float]]]:
        """(key, Hamming distance) of the nearest ``limit`` rows per vector, nearest first."""
        collection = self._names[name]
        params: dict[str, Any] = {"metric_type": "HAMMING"}
        if self._index_kind(name)["index_type"] == "BIN_IVF_FLAT":
            params["params"] = {"nprobe": self.config.milvus.nprobe}
        results = self._call(
            "search",
            lambda t: self._client.search(
                collection,
                data=list(vectors),
                limit=min(limit, MAX_RESULTS),
                anns_field="code",
                search_params=params,
                filter=f'key != "{exclude}"' if exclude else "",
                output_fields=[],
                consistency_level=self._level(),
                timeout=t,
            ),
        )
        return [[(str(hit["id"]), float(hit["distance"])) for hit in hits] for hits in results]

    def _level(self) -> str:
        """The consistency level of the next read.

        Under Session, a Milvus 2.3 server shows this process's own deletes to its
        reads only some 0.2-1 s later (inserts and upserts at once); reads in the
        second after a delete ask for Strong instead, so a removed item stays removed.
        """
        if self._read_level == "Session" and time.monotonic() < self._strong_until:
            return "Strong"
        return self._read_level

    def _upsert(self, name: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            collection = self._names[name]
            self._call("upsert", lambda t: self._client.upsert(collection, rows, timeout=t))

    def _delete(self, name: str, keys: Sequence[str]) -> None:
        collection = self._names[name]
        for chunk in _chunks(sorted(set(keys))):

            def delete(timeout_s: float, chunk: list[str] = chunk) -> object:
                return self._client.delete(collection, ids=chunk, timeout=timeout_s)

            self._call("delete", delete)
            self._strong_until = time.monotonic() + _DELETE_SETTLE_S

    # -- writes ---------------------------------------------------------------

    def add(
        self,
        item_id: str,
        sdr: Sdr,
        concepts: Sequence[tuple[str, float]] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Insert or replace one item (semantic space only); acknowledged once Milvus has it."""
        self.add_many([Item(item_id, sdr, tuple(concepts), metadata if metadata is not None else _EMPTY)])

    def add_many(
        self,
        items: Sequence[Item],
        *,
        on_duplicate: OnDuplicate = OnDuplicate.KEEP,
        thresholds: DuplicateThresholds | None = None,
    ) -> list[AddOutcome]:
        """Insert or replace many items; a repeated id keeps its last occurrence.

        Milvus has no transaction across collections: a batch that fails part-way
        raises, and the caller adds it again (each write is an upsert, so a retry
        completes it). What was already stored is never removed by a failed add.
        """
        prepared = self._checks.prepare(items)
        if not prepared:
            return []
        limits = self._checks.thresholds(thresholds)
        with self._write_lock:
            self._check_open()

            def stored_copies(fingerprint: Fingerprint, visual: Sdr | None) -> list[Duplicate]:
                return self._duplicates(fingerprint, visual, limits, self.config.max_k, exclude=None)

            outcomes, removed = screen(prepared, on_duplicate, limits, stored_copies, self.sdr_size)
            kept = [item for item, outcome in zip(prepared, outcomes, strict=True) if outcome.stored]
            if kept:
                self._write(kept)
            if removed:  # after the new item is in: a failure here loses nothing acknowledged
                self._delete_items([item_key(item_id) for item_id in removed])
        return outcomes

    def _write(self, kept: Sequence[StoredItem]) -> None:
        keys = [item_key(item.id) for item in kept]
        seqs = self._next_seqs(len(kept))
        # A replaced item may lose its visual SDR or fingerprint: its old rows go. Only
        # ids stored before can have any, and one query is cheaper than a blind delete.
        before = self._present(keys)
        for space in self._spaces[1:]:
            with_sdr = [(key, item) for key, item in zip(keys, kept, strict=True) if space in item.sdrs]
            self._upsert(space, [{"key": key, "code": code} for key, code in self._codes(with_sdr, space)])
            self._delete(
                space, [k for k, item in zip(keys, kept, strict=True) if space not in item.sdrs and k in before]
            )
        printed = [(key, item.fingerprint) for key, item in zip(keys, kept, strict=True) if item.fingerprint]
        self._upsert(PHASH, [{"key": key, "code": _phash_code(fp.phash)} for key, fp in printed])
        self._delete(PHASH, [k for k, item in zip(keys, kept, strict=True) if item.fingerprint is None and k in before])
        codes = dict(self._codes(list(zip(keys, kept, strict=True)), SEMANTIC))
        rows = [
            {
                "key": key,
                "id": item.id,
                "code": codes[key],
                "seq": seq,
                "concepts": {"terms": [term for term, _ in item.concepts], "scores": [s for _, s in item.concepts]},
                "metadata": dict(item.metadata),
                "sha256": item.fingerprint.sha256 if item.fingerprint else "",
                "phash": _signed(item.fingerprint.phash) if item.fingerprint else 0,
            }
            for key, item, seq in zip(keys, kept, seqs, strict=True)
        ]
        self._upsert(SEMANTIC, rows)  # the commit point: the items exist from here on

    def _codes(self, keyed: Sequence[tuple[str, StoredItem]], space: str) -> list[tuple[str, bytes]]:
        if not keyed:
            return []
        sdrs = [item.sdrs[space] for _, item in keyed]
        lengths = np.fromiter((sdr.size for sdr in sdrs), dtype=np.int64, count=len(sdrs))
        codes = pack_codes(np.concatenate(sdrs), lengths, self.sdr_size, self.config.equalize_bits, pad=True)
        return [(key, code.tobytes()) for (key, _), code in zip(keyed, codes, strict=True)]

    def _next_seqs(self, count: int) -> list[int]:
        """Nanosecond stamps, increasing within this process: the listing and tie-breaking order."""
        with self._seq_lock:
            first = max(time.time_ns(), self._last_seq + 1)
            self._last_seq = first + count - 1
        return list(range(first, first + count))

    def check_item(self, item_id: str, metadata: Mapping[str, str] | None = None) -> None:
        """Raise what ``add`` would raise for this id and metadata, storing nothing."""
        check_id(item_id, self.config.max_id_length)
        check_metadata(metadata if metadata is not None else _EMPTY, self.config.max_metadata_bytes)

    def remove(self, item_id: str) -> None:
        """Remove an item; NotFoundError if there is none with this id."""
        check_id(item_id, self.config.max_id_length)
        key = item_key(item_id)
        with self._write_lock:
            self._check_open()
            if not self._query(SEMANTIC, _keys_in([key]), ["key"]):
                raise NotFoundError(f"no item with id {item_id!r}", resource=item_id)
            self._delete_items([key])

    def _delete_items(self, keys: Sequence[str]) -> None:
        self._delete(SEMANTIC, keys)  # first: the items are gone from here on
        for name in (*self._spaces[1:], PHASH):
            self._delete(name, keys)

    # -- reads ----------------------------------------------------------------

    def get(self, item_id: str) -> Item:
        check_id(item_id, self.config.max_id_length)
        self._check_open()
        return self._item(self._row(item_id))

    def contains(self, item_ids: Sequence[str]) -> list[bool]:
        for item_id in item_ids:
            check_id(item_id, self.config.max_id_length)
        self._check_open()
        keys = [item_key(item_id) for item_id in item_ids]
        present = self._present(keys)
        return [key in present for key in keys]

    def _present(self, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` whose items are stored."""
        present: set[str] = set()
        for chunk in _chunks(sorted(set(keys))):
            present.update(str(row["key"]) for row in self._query(SEMANTIC, _keys_in(chunk), ["key"]))
        return present

    def count(self, space: str | None = None) -> int:
        """Items stored; with a space, those that have an SDR in it."""
        if space is not None and space not in self._spaces:
            raise InvalidInputError(
                f"unknown space {space!r}; this index keeps {', '.join(self.spaces)}", field="space"
            )
        self._check_open()
        # count(*) on a Milvus 2.3 server lags behind this process's own deletes under
        # Session (queries do not): a caller who asked to read its own writes gets Strong.
        level = "Strong" if self._read_level == "Session" else ""
        rows = self._query(space or SEMANTIC, "", ["count(*)"], level=level)
        return int(rows[0]["count(*)"])

    def list_items(self, page_size: int, page_token: str = "") -> ItemPage:
        """Stored items, newest first (by seq, then key); the token is the (seq, key) to continue below."""
        if not is_int(page_size) or not 1 <= page_size <= self.config.max_k:
            raise InvalidInputError(
                f"page_size must be an integer in [1, {self.config.max_k}], got {page_size!r}", field="page_size"
            )
        below = _page_position(page_token)
        self._check_open()
        found = self._newest(page_size, below)
        page = found[:page_size]
        rows = self._rows([key for _, key in page], self._spaces)
        items = tuple(self._item(rows[key]) for _, key in page if key in rows)
        more = len(found) > page_size
        token = f"m{page[-1][0]}.{page[-1][1]}" if more else ""
        return ItemPage(items, token, self.count())

    def _newest(self, page_size: int, below: tuple[int, str] | None) -> list[tuple[int, str]]:
        """At least ``page_size + 1`` (seq, key) pairs below ``below`` when there are, newest first.

        Milvus queries have no ORDER BY: look back over a time window that grows
        until it holds more than a page (or reaches the first item), shrinking it
        when it would pass the query limit.
        """
        top = below[0] if below is not None else time.time_ns()
        upper = ""
        if below is not None:  # strictly after the last item shown, in (seq, key) order
            upper = f' and (seq < {below[0]} or (seq == {below[0]} and key < "{below[1]}"))'
        span = _FIRST_SPAN_NS
        while True:
            start = max(top - span, 0)
            rows = self._query(SEMANTIC, f"seq >= {start}{upper}", ["key", "seq"], limit=MAX_RESULTS)
            if len(rows) >= MAX_RESULTS and span > 1:
                span //= 2
                continue
            if len(rows) > page_size or start == 0:
                return sorted(((int(row["seq"]), str(row["key"])) for row in rows), reverse=True)
            span *= 4

    def search(self, query: Sdr, k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC) -> list[Match]:
        """The k stored items sharing the most active bits with ``query`` in ``space``."""
        return self.search_many([query], k, min_overlap, space=space)[0]

    def search_many(
        self, queries: Sequence[Sdr], k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC
    ) -> list[list[Match]]:
        """``search`` for many queries at once: one Milvus search for all of them."""
        self._checks.search(k, min_overlap, space)
        for number, query in enumerate(queries):
            self._checks.sdr(query, f"queries[{number}]")
        if not queries:
            return []
        self._check_open()
        return self._ranked(queries, k, min_overlap, space, exclude=None)

    def neighbours(
        self, item_id: str, k: int = 10, min_overlap: int = 0, *, space: str = SEMANTIC
    ) -> tuple[Item, list[Match]]:
        """A stored item and its nearest neighbours in ``space``, the one searched with its own SDR."""
        check_id(item_id, self.config.max_id_length)
        self._checks.search(k, min_overlap, space)
        self._check_open()
        row = self._row(item_id)
        positions = row.stored.sdrs.get(space)
        if positions is None:
            raise NoSdrInSpaceError(f"item {item_id!r} has no SDR in space {space!r}", field="id")
        query = Sdr.trusted(positions, self.sdr_size)
        return self._item(row), self._ranked([query], k, min_overlap, space, exclude=item_key(item_id))[0]

    def _ranked(
        self, queries: Sequence[Sdr], k: int, min_overlap: int, space: str, exclude: str | None
    ) -> list[list[Match]]:
        """Candidates from Milvus, ranked by exact overlap (ties to the lower seq)."""
        fetch = max(k * self.config.candidate_factor, k + self.config.candidate_margin)
        vectors = [self._query_code(query) for query in queries]
        hits = self._search(space, vectors, fetch, exclude)
        rows = self._rows({key for found in hits for key, _ in found}, (space,))
        answers = []
        for query, found in zip(queries, hits, strict=True):
            scored = []
            for key, _ in found:
                row = rows.get(key)
                positions = row.stored.sdrs.get(space) if row is not None else None
                if row is None or positions is None:  # a row whose item is gone, or half-written
                    continue
                overlap = _overlap(query.positions, positions)
                if overlap >= min_overlap:
                    scored.append((overlap, row))
            scored.sort(key=lambda pair: (-pair[0], pair[1].seq))
            answers.append([self._match(row, {space: overlap}, overlap, float(overlap)) for overlap, row in scored[:k]])
        return answers

    def find_duplicates(
        self,
        fingerprint: Fingerprint | None,
        visual: Sdr | None,
        thresholds: DuplicateThresholds | None = None,
        k: int = 10,
        *,
        exclude: str | None = None,
    ) -> list[Duplicate]:
        """Stored copies of an image: same bytes, near-exact (pHash) or transformed (visual overlap)."""
        limits = self._checks.thresholds(thresholds)
        self._checks.search(k, 0, SEMANTIC)
        if visual is not None:
            self._checks.sdr(visual, "visual")
        self._check_open()
        return self._duplicates(fingerprint, visual, limits, k, exclude=item_key(exclude) if exclude else None)

    def duplicates_of(
        self, item_id: str, thresholds: DuplicateThresholds | None = None, k: int = 10
    ) -> tuple[Item, list[Duplicate]]:
        """A stored item and its stored copies, itself left out."""
        check_id(item_id, self.config.max_id_length)
        limits = self._checks.thresholds(thresholds)
        self._checks.search(k, 0, SEMANTIC)
        self._check_open()
        row = self._row(item_id)
        if row.stored.fingerprint is None:
            raise NoFingerprintError(f"item {item_id!r} was added without an image: it has no fingerprint", field="id")
        visual = row.stored.sdrs.get(VISUAL)
        query = Sdr.trusted(visual, self.sdr_size) if visual is not None else None
        found = self._duplicates(row.stored.fingerprint, query, limits, k, exclude=item_key(item_id))
        return self._item(row), found

    def _duplicates(
        self,
        fingerprint: Fingerprint | None,
        visual: Sdr | None,
        limits: DuplicateThresholds,
        k: int,
        *,
        exclude: str | None,
    ) -> list[Duplicate]:
        """Stored copies by all three tests, each item once under its strongest kind, best first."""
        keys: set[str] = set()
        if fingerprint is not None:
            if _SHA256.match(fingerprint.sha256):  # always, from fingerprints.py; the check keeps the filter safe
                same = self._query(SEMANTIC, f'sha256 == "{fingerprint.sha256}"', ["key"], limit=MAX_RESULTS)
                keys.update(str(row["key"]) for row in same)
            near = self._search(PHASH, [_phash_code(fingerprint.phash)], k + self.config.candidate_margin, exclude)
            keys.update(key for key, distance in near[0] if distance <= limits.max_phash_distance)
        if VISUAL in self._spaces and visual is not None and visual.active:
            hits = self._search(VISUAL, [self._query_code(visual)], k + len(keys) + self.config.candidate_margin)
            keys.update(key for key, _ in hits[0])
        keys.discard(exclude or "")
        found = []
        for row in self._rows(keys, self._spaces).values():
            duplicate = compare(fingerprint, visual, row.stored, limits, self.sdr_size)
            if duplicate is not None:
                item = self._item(row)
                found.append(
                    Duplicate(duplicate.id, duplicate.kind, duplicate.phash_distance, duplicate.visual_overlap, item)
                )
        return sorted(found, key=duplicate_order)[:k]

    def search_blend(
        self, semantic: Sdr, visual: Sdr, weight: float, k: int = 10, *, exclude: str | None = None
    ) -> list[Match]:
        """Top k by ``(1 - weight) * semantic overlap + weight * visual overlap``, exactly re-ranked.

        As in ``SdrIndex.search_blend``: candidates from each space, every candidate
        scored exactly in both, lists grown until the k-th score beats what an unseen
        item could reach (or until ``MAX_RESULTS`` candidates per space).
        """
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise InvalidInputError(f"blend_weight must be in [0, 1], got {weight!r}", field="blend_weight")
        self._checks.search(k, 0, VISUAL)
        self._checks.sdr(semantic, "semantic")
        self._checks.sdr(visual, "visual")
        self._check_open()
        queries = {SEMANTIC: semantic, VISUAL: visual}
        skip = item_key(exclude) if exclude else None
        fetch = max(k * self.config.candidate_factor, k + self.config.candidate_margin)
        while True:
            lists = {space: self._search(space, [self._query_code(q)], fetch, skip)[0] for space, q in queries.items()}
            rows = self._rows({key for found in lists.values() for key, _ in found}, self._spaces)
            scored = sorted(
                (self._blend_match(row, queries, weight) for row in rows.values()),
                key=lambda pair: (-pair[0].score, pair[1]),
            )
            best = [match for match, _ in scored[:k]]
            bound = 0.0
            for space, found in lists.items():
                share = weight if space == VISUAL else 1.0 - weight
                last = rows.get(found[-1][0]) if len(found) >= fetch else None
                if last is not None:  # the list may have left out items scoring up to its last
                    bound += share * _overlap(queries[space].positions, last.stored.sdrs.get(space, _NONE))
            # Strictly above: an unseen item tying the bound could win the tie on its seq.
            if (len(best) >= k and best[-1].score > bound) or all(len(f) < fetch for f in lists.values()):
                return best
            if fetch >= MAX_RESULTS:
                return best
            fetch = min(fetch * 4, MAX_RESULTS)

    def _blend_match(self, row: _Row, queries: Mapping[str, Sdr], weight: float) -> tuple[Match, int]:
        overlaps = {
            space: _overlap(query.positions, row.stored.sdrs.get(space, _NONE)) for space, query in queries.items()
        }
        score = (1.0 - weight) * overlaps[SEMANTIC] + weight * overlaps[VISUAL]
        return self._match(row, overlaps, overlaps[SEMANTIC], score), row.seq

    # -- rows -----------------------------------------------------------------

    def _row(self, item_id: str) -> _Row:
        key = item_key(item_id)
        row = self._rows([key], self._spaces).get(key)
        if row is None:
            raise NotFoundError(f"no item with id {item_id!r}", resource=item_id)
        return row

    def _rows(self, keys: Iterable[str], spaces: Sequence[str]) -> dict[str, _Row]:
        """The stored items with these keys (absent ones left out), with their SDRs in ``spaces``."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        fields = ["key", "id", "code", "seq", "concepts", "metadata", "sha256", "phash"]
        semantic = [row for chunk in _chunks(wanted) for row in self._query(SEMANTIC, _keys_in(chunk), fields)]
        others: dict[str, dict[str, npt.NDArray[np.uint32]]] = {}
        present = sorted(str(row["key"]) for row in semantic)
        for space in spaces:
            if space == SEMANTIC:
                continue
            for chunk in _chunks(present):
                for row in self._query(space, _keys_in(chunk), ["key", "code"]):
                    others.setdefault(str(row["key"]), {})[space] = self._positions(row["code"])
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
        raw = code[0] if isinstance(code, list) else code  # query returns [bytes]; search returns bytes
        if not isinstance(raw, bytes):
            raise TypeError(f"Milvus returned a binary vector as {type(raw).__name__}")
        packed = np.frombuffer(raw, dtype=np.uint8)
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
            raise IndexClosedError(f"the Milvus index at {self.shown_uri} is closed")


_NONE: npt.NDArray[np.uint32] = np.zeros(0, dtype=np.uint32)


def _overlap(query: npt.NDArray[np.uint32], stored: npt.NDArray[np.uint32]) -> int:
    return int(np.intersect1d(query, stored, assume_unique=True).size)


def _keys_in(keys: Sequence[str]) -> str:
    return "key in [" + ",".join(f'"{key}"' for key in keys) + "]"  # hex keys: nothing to escape


def _chunks(keys: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), _KEY_CHUNK):
        yield list(keys[start : start + _KEY_CHUNK])


def _phash_code(phash: int) -> bytes:
    return int(phash).to_bytes(8, "little")


def _signed(phash: int) -> int:
    """A 64-bit pHash as INT64 (Milvus has no unsigned integers)."""
    return phash - (1 << 64) if phash >= 1 << 63 else phash


def _unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def _page_position(token: object) -> tuple[int, str] | None:
    if token == "":
        return None
    match = _PAGE_TOKEN.match(token) if isinstance(token, str) else None
    if match is None:
        raise InvalidInputError(f"page_token {token!r} is not one this index gave out", field="page_token")
    return int(match.group(1)), match.group(2)


def _without_credentials(uri: str) -> str:
    """``uri`` with any user:password part masked, for errors and logs."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
