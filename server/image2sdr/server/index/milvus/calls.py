"""Every call to Milvus: retried within its budget, at the read level that lets a replica read its own writes.

Only ``milvus.uri`` tells an embedded file (milvus-lite) from a server or a cluster
(``connection.py`` makes the client). Each call is retried within ``retry_total_s``, and
only when Milvus may answer later (an outage). Failures of another nature are told as
what they are, at once (``faults.py``): refused credentials (``UpstreamKeyError``,
naming the token variable), a collection missing (``IndexMismatchError``: the index is
damaged, a retry cannot help), a request Milvus refuses as malformed (a bug here).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, TypeVar

from ...config import IndexConfig
from ...errors import IndexClosedError, IndexMismatchError, UpstreamError
from ...upstream import MAX_BACKOFF_S, MIN_ATTEMPT_S, RetryPolicy, Secret, call_deadline
from ..codes import code_size
from ..engine import SnapshotHook
from ..values import SEMANTIC, VISUAL
from .connection import MilvusConnection
from .faults import Outage, is_auth_error, is_missing_collection, is_request_error, quiet_pymilvus, without_credentials

__all__ = ["CONCEPTS", "MAX_RESULTS", "PHASH", "THUMBS", "MilvusCalls"]


T = TypeVar("T")

PHASH = "phash"
CONCEPTS = "concepts"
THUMBS = "thumbs"
MAX_RESULTS = 16384  # Milvus's topk and query-window limit
_SETUP_S = 120.0  # at least this long for creating and loading the collections at start
_DELETE_SETTLE_S = 1.5  # after a delete, reads are Strong this long (see _level)
_OWN_WRITES_S = 10.0  # after a write, Bounded and Eventually reads are Session this long (see _level)
# pymilvus retries a request that failed fast (Milvus down) itself, sleeping up to 3 s
# between tries until the timeout it was given has passed: a request given t seconds may
# take 2t + 3. So each request runs on a worker and the call waits for it only as long as
# its budget allows (_attempt); a request left behind ends by its own timeout.
_RUNNER = ThreadPoolExecutor(max_workers=32, thread_name_prefix="milvus-request")
REPAIR_COMMAND = "python -m image2sdr.server.index.milvus.repair --config <your config.yml>"


class MilvusCalls(MilvusConnection):
    """One index's collections on one Milvus, and the calls to them (the base of the engine's parts)."""

    def __init__(
        self,
        config: IndexConfig,
        sdr_size: int = 16384,
        spaces: Sequence[str] = (SEMANTIC, VISUAL),
        *,
        data_dir: Path | None = None,
        repair: bool = False,
    ) -> None:
        if not spaces or spaces[0] != SEMANTIC or len(set(spaces)) != len(spaces):
            raise ValueError(f"spaces must start with {SEMANTIC!r} and not repeat, got {spaces!r}")
        settings = config.milvus
        self.config = config
        self.sdr_size = sdr_size
        self.uri = settings.uri or str(Path(data_dir if data_dir is not None else ".") / "milvus.db")
        self.embedded = self.uri.endswith(".db")  # as pymilvus decides: a .db path runs milvus-lite
        self.shown_uri = without_credentials(self.uri)  # the URI as errors and logs name it
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
        self._outage = Outage(self.shown_uri)
        self.problem = ""  # why the index cannot serve although Milvus answers (a collection missing); "" if none
        quiet_pymilvus()
        self._read_level = settings.consistency_level
        self._strong_until = 0.0  # monotonic time until which reads are made Strong (_level)
        self._session_until = 0.0  # monotonic time until which Bounded and Eventually reads are Session (_level)
        self._heavy: dict[str, tuple[bool, float]] = {}  # space: (heavy SDRs stored, when asked)
        self._forced = threading.local()  # .level: this thread's reads use it (_reading)
        self._write_lock = threading.Lock()  # duplicate screening and the add it decides (shared per embedded file)
        self._seq_lock = threading.Lock()
        self._last_seq = 0
        self._closed = False  # set by closing(): a call in flight stops retrying
        self.on_snapshot: SnapshotHook | None = None  # Milvus keeps its own storage: no snapshots here
        self._lite_socket: str | None = None  # the milvus-lite process the client talks to (embedded only)
        self._repair = repair  # at open, rebuild a missing collection instead of refusing to start (repair.py)
        self._client = self._connect()
        try:
            self._open()
        except BaseException:
            self._client.close()
            self._leave_embedded()
            raise

    def _open(self) -> None:
        """Create or check the collections (``schema.MilvusSchema`` does)."""

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
        self._leave_embedded()

    def available(self) -> bool:
        """Whether Milvus answers now (one cheap request per collection, no retries): the health check's question.

        False also when Milvus answers but a collection is missing; ``problem`` then says
        which. While Milvus does not answer, each check dials it on a fresh connection,
        so the first check after it is back finds it (gRPC's own reconnect backoff grows
        to minutes).
        """
        for name in (*self._spaces, PHASH, CONCEPTS, THUMBS):
            collection = self._names[name]
            try:
                # A query, not a ping: after a restart Milvus answers pings well before it has
                # loaded the collections again, and until then every search would time out.
                self._client.query(
                    collection,
                    filter='key == ""',
                    output_fields=["key"],
                    limit=1,
                    consistency_level=self._level(),  # Strong reads wait for Milvus's clock: so does this
                    timeout=min(2.0, self.config.milvus.timeout_s),
                )
            except Exception as exc:
                try:
                    self._failure("a health check", exc, collection)
                except (IndexMismatchError, UpstreamError):
                    return False
                self._redial()
                return False
        self._outage.ended()
        self.problem = ""
        return True

    def _call(self, what: str, request: Callable[[float], T], *, setup: bool = False, collection: str = "") -> T:
        """``request(timeout_s)``, tried again while Milvus does not answer, within the call's budget.

        UpstreamError (UNAVAILABLE) when the budget (``retry_total_s``, or the caller's
        deadline if sooner) runs out; the call never takes longer than the budget
        (``_RUNNER`` says why that needs a worker). Failures no retry can mend are
        raised at once (``_failure``).
        """
        policy = self._setup_policy if setup else self._policy
        started = time.monotonic()
        deadline = call_deadline(policy.total_s, started)
        tries = 0
        while True:
            self._check_open()  # a call racing close() fails at once instead of retrying
            tries += 1
            left = max(deadline - time.monotonic(), MIN_ATTEMPT_S)
            try:
                result = _attempt(request, min(policy.timeout_s, left), left)
            except Exception as exc:
                reason = self._failure(what, exc, collection)
                delay = random.uniform(0.0, min(MAX_BACKOFF_S, policy.backoff_s * 2 ** (tries - 1)))  # jitter
                if time.monotonic() + delay + MIN_ATTEMPT_S >= deadline:
                    elapsed = time.monotonic() - started
                    raise UpstreamError(
                        f"{policy.provider} unavailable: {what}: {reason} (gave up after {tries}"
                        f" attempt{'s' if tries > 1 else ''} in {elapsed:.1f} s)"
                    ) from None
                time.sleep(delay)
            else:
                self._outage.ended()
                return result

    def _failure(self, what: str, exc: Exception, collection: str) -> str:
        """Raise what no retry can mend, told for what it is; else note the outage and return its reason."""
        if is_auth_error(exc):
            raise self._refused_credentials(exc) from None
        if is_missing_collection(exc):
            self.problem = (
                f"Milvus collection {collection or '(one of this index)'} at {self.shown_uri} is missing"
                f" (dropped while the index was in use?): repair it with `{REPAIR_COMMAND}`"
            )
            raise IndexMismatchError(self.problem) from None
        if is_request_error(exc):  # our request is wrong: no retry can help
            raise UpstreamError(f"Milvus at {self.shown_uri} refused {what}: {self._describe(exc)}") from None
        self._revive_embedded()
        reason = self._describe(exc)
        self._outage.failed(reason)
        return reason

    def _query(
        self, name: str, expression: str, fields: Sequence[str], limit: int | None = None, *, level: str = ""
    ) -> list[dict[str, Any]]:
        collection = self._names[name]
        extra = {"limit": limit} if limit is not None else {}
        level = level or self._level()  # here: the request runs on another thread, without this one's forced level
        return list(
            self._call(
                "query",
                lambda t: self._client.query(
                    collection,
                    filter=expression,
                    output_fields=list(fields),
                    consistency_level=level,
                    timeout=t,
                    **extra,
                ),
                collection=collection,
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
        level = self._level()  # here: the request runs on another thread, without this one's forced level
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
                consistency_level=level,
                timeout=t,
            ),
            collection=collection,
        )
        hits = []
        for hit in results[0]:
            entity = hit["entity"]
            key = str(hit["id"]) if name == SEMANTIC else str(entity["key"])
            hits.append((key, int(entity["seq"]), float(hit["distance"])))
        return hits

    def _level(self) -> str:
        """The consistency level of the next read: the configured one, raised so this replica reads its own writes.

        Read-your-writes for whoever wrote through this process, at every level, without
        paying Strong on every read: for ``_OWN_WRITES_S`` after a write of this process,
        Bounded and Eventually reads ask for Session, which pymilvus answers with the
        timestamp of this process's last write to the collection (Milvus waits until
        it is applied: ~0 s for an old write, ~0.2-0.3 s right after one). Other
        replicas' writes are seen as the configured level says. Under Session, a
        Milvus 2.3 server shows this process's own deletes to its reads only some
        0.2-1 s later (inserts and upserts at once); reads in the second after a
        delete ask for Strong instead, so a removed item stays removed.
        """
        forced = getattr(self._forced, "level", "")
        if forced:
            return str(forced)
        if self._read_level == "Strong":
            return "Strong"
        now = time.monotonic()
        if now < self._strong_until:
            return "Strong"
        if now < self._session_until:
            return "Session"
        return self._read_level

    def _upsert(self, name: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            collection = self._names[name]
            self._call("upsert", lambda t: self._client.upsert(collection, rows, timeout=t), collection=collection)
            self._session_until = time.monotonic() + _OWN_WRITES_S

    def _stamped_upsert(self, collection: str, rows: list[dict[str, Any]], timeout_s: float) -> int:
        """Upsert ``rows`` (one request, not retried) and return the timestamp Milvus gave the write.

        ``MilvusClient.upsert`` drops that timestamp from its answer; its connection's own
        upsert returns it. Every replica's writes are stamped by Milvus's one clock, and a
        Strong read sees exactly those stamped before it began (``claims.py`` builds on it).
        """
        result = self._client._get_connection().upsert_rows(collection, rows, timeout=timeout_s)
        return int(result.timestamp)

    def _delete(self, name: str, expression: str) -> None:
        collection = self._names[name]
        self._call(
            "delete", lambda t: self._client.delete(collection, filter=expression, timeout=t), collection=collection
        )
        self._strong_until = time.monotonic() + _DELETE_SETTLE_S
        self._session_until = time.monotonic() + _OWN_WRITES_S

    def _reading(self, level: str) -> _ReadLevel:
        """Within this block, this thread's reads use ``level``."""
        return _ReadLevel(self._forced, level)

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

    def _keys_where(self, expression: str) -> list[str]:
        """Keys of every semantic row matching ``expression``."""
        return [str(row["key"]) for row in self._query_all(SEMANTIC, expression, ["key"])]

    def _count_where(self, expression: str, *, exact: bool = True) -> int:
        """Semantic rows matching ``expression`` (all of them for "").

        count(*) on a Milvus 2.3 server lags behind this process's own deletes under
        Session (queries do not): where a read would be Session (configured, or just
        after this process wrote) the count is Strong, which waits for the server's
        clock (~0.3 s here). ``exact=False`` reads at the configured level, for a count
        that only picks a search plan.
        """
        level = "Strong" if exact and self._level() == "Session" else ""
        rows = self._query(SEMANTIC, expression, ["count(*)"], level=level)
        return int(rows[0]["count(*)"])

    def _index_kind(self, name: str) -> dict[str, Any]:
        settings = self.config.milvus
        if name in (PHASH, CONCEPTS, THUMBS) or self.embedded or settings.index_type == "BIN_FLAT":
            return {"index_type": "BIN_FLAT"}
        return {"index_type": "BIN_IVF_FLAT", "params": {"nlist": settings.nlist}}

    def _next_seqs(self, count: int) -> list[int]:
        """Nanosecond stamps, increasing within this process: the listing and tie-breaking order.

        Across replicas the order is that of their clocks (keep them synchronised).
        """
        with self._seq_lock:
            first = max(time.time_ns(), self._last_seq + 1)
            self._last_seq = first + count - 1
        return list(range(first, first + count))

    def _check_open(self) -> None:
        if self._closed:
            raise IndexClosedError(f"{self.description} is closed")


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


class _NoAnswer(Exception):
    """A request that did not answer within what was left of its call's budget."""


def _attempt(request: Callable[[float], T], timeout_s: float, wait_s: float) -> T:
    """``request(timeout_s)`` on a worker, waited for ``wait_s`` at most (then left to end by its own timeout)."""
    future = _RUNNER.submit(request, timeout_s)
    try:
        return future.result(timeout=wait_s)
    except FutureTimeout:
        raise _NoAnswer(f"no answer within {wait_s:.1f} s") from None
