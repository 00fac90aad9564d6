"""Claims on a photo's bytes, so that replicas adding the same photo at once under SKIP or REPLACE store it once.

Milvus has no conditional insert, and an upsert keyed by the content hash would let the
*last* writer win, which the first writer, already answered, cannot learn. What Milvus does
give is one clock: every write is stamped with a timestamp from its single oracle, and a
Strong read sees exactly the writes stamped before it began. So each write that looks for
copies first claims the SHA-256 of every photo it offers:

1. it writes one claim row per hash (key "claim", name the hash, a nonce of its own), and
   learns the timestamp Milvus gave that write (its *stamp*);
2. it writes the stamp into those rows (until then they read seq 0);
3. it reads every claim on those hashes, Strong, and waits while one is unstamped or
   stamped earlier than its own (ties by nonce): an earlier claimant is deciding;
4. it looks for copies (Strong), writes what it decided, and deletes its claim rows.

A claim that a read in step 3 does not see was written after that read began, so it is
stamped later: the claimant that is first by stamp goes first, whichever replica it is on,
and a later one finds its item in step 4 (SKIPPED, naming it). Claims expire (``part``
holds when, in wall-clock ms) so a replica that dies holding one blocks that photo for a
minute at most (longer with a long ``retry_total_s``: ``_lease_s``); one an engine finds of its
own (its release failed) it drops, since it holds its write lock while it claims. A
claimant never commits once its own claim may have expired, counting ``SKEW_S`` of clock
difference between replicas. A waiter that is not let through within
its call budget fails UNAVAILABLE (try again); nothing is stored.

Near copies (a pHash within the distance, a transformed copy by its visual SDR) have no key
every replica could claim: across replicas they are serialised only when their bytes are
identical. Within one replica (and on an embedded file, whose engines share one lock) every
copy check and the add it decides are atomic.

The rows live in the ``concepts`` collection (``parts`` 0, like the meta row, so no concept
listing sees them): no collection or field was added, and an index written before opens
as it was.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import UpstreamError
from .calls import CONCEPTS
from .expressions import NO_MARK, in_chunks, rows_in
from .search import MilvusSearch

__all__ = ["CLAIM_KEY", "LEASE_S", "SKEW_S", "Claim", "MilvusClaims"]

logger = logging.getLogger(__name__)

CLAIM_KEY = "claim"  # the key of claim rows (item and name keys are 32 hex digits, the meta row's "meta")
LEASE_S = 60.0  # a claim expires this long after it was written, at least (see _lease_s)
SKEW_S = 10.0  # the clock difference between replicas a claim's expiry allows for
_SHA256 = re.compile(r"[0-9a-f]{64}")  # fullmatch: what goes into a row key and an expression unescaped
_POLL_S = 0.05  # between reads of the claims while an earlier claimant decides (each read is Strong: ~0.2 s)


@dataclass(frozen=True)
class Claim:
    """One write's claim rows, its Milvus stamp, and when (monotonic) it was written."""

    rows: tuple[str, ...]
    nonce: str
    stamp: int
    started: float
    lease_s: float


class MilvusClaims(MilvusSearch):
    """Claims taken, waited on and released around a write that looks for copies."""

    _claimant = ""  # this engine's mark in its claims' nonces (set at its first claim)

    def _claim(self, hashes: Sequence[str]) -> Claim | None:
        """Claim these SHA-256 hashes and return once no earlier claim on them is left (None: nothing to claim).

        An embedded file is opened by this process alone, whose engines on it share one
        write lock: nothing to claim there.
        """
        hashes = sorted({sha for sha in hashes if _SHA256.fullmatch(sha)})  # always, from fingerprints.py
        if not hashes or self.embedded:
            return None
        if not self._claimant:
            self._claimant = secrets.token_hex(4)
        nonce = self._claimant + secrets.token_hex(4)
        lease_s = self._lease_s()
        expires = time.time_ns() // 1_000_000 + int(lease_s * 1000)
        rows = [
            {"row": f"{CLAIM_KEY}.{sha}.{nonce}", "key": CLAIM_KEY, "name": sha, "seq": 0, "part": expires}
            | {"parts": 0, "text": "", "code": NO_MARK}
            for sha in hashes
        ]
        started = time.monotonic()
        stamp = self._claim_write(rows)
        claim = Claim(tuple(str(row["row"]) for row in rows), nonce, stamp, started, lease_s)
        try:
            self._claim_write([{**row, "seq": stamp} for row in rows])
            self._wait_turn(claim, hashes)
        except BaseException:
            self._release(claim)
            raise
        return claim

    def _lease_s(self) -> float:
        """Long enough for a write's every request to use its whole budget, and at least LEASE_S."""
        return max(LEASE_S, 6 * self._policy.total_s + SKEW_S)

    def _claim_write(self, rows: list[dict[str, Any]]) -> int:
        """Upsert claim rows; the Milvus timestamp of the write.

        Not ``_upsert``: a claim is no write of an item, so it leaves the read levels as they are.
        """
        collection = self._names[CONCEPTS]
        return self._call("claim", lambda t: self._stamped_upsert(collection, rows, t), collection=collection)

    def _wait_turn(self, claim: Claim, hashes: Sequence[str]) -> None:
        deadline = claim.started + self._policy.total_s
        while True:
            ahead = self._claims_ahead(claim, hashes)
            if not ahead:
                return
            if time.monotonic() + _POLL_S >= deadline:
                raise UpstreamError(
                    f"another replica is adding the same photo ({len(ahead)} claim{'s' if len(ahead) > 1 else ''}"
                    " ahead of this add, unfinished): nothing stored; try again",
                    retry_after_s=1.0,
                )
            time.sleep(_POLL_S)

    def _claims_ahead(self, claim: Claim, hashes: Sequence[str]) -> list[str]:
        """Live claims on these hashes that go before this one: stamped earlier, or not stamped yet."""
        rows = []
        for chunk in in_chunks(list(hashes)):
            names = "[" + ",".join(f'"{sha}"' for sha in chunk) + "]"  # hex digests: nothing to escape
            expression = f'key == "{CLAIM_KEY}" and name in {names}'
            rows += self._query(CONCEPTS, expression, ["row", "seq", "part"], level="Strong")
        now = time.time_ns() // 1_000_000
        mine = set(claim.rows)
        ahead, expired = [], []
        for row in rows:
            name, seq = str(row["row"]), int(row["seq"])
            nonce = name.rsplit(".", 1)[-1]
            if name in mine:
                continue
            if int(row["part"]) <= now or nonce.startswith(self._claimant):
                # Its replica died holding it or let it lapse, or it is this engine's own, left by a
                # release that failed (this engine holds its write lock: no other write of its is
                # deciding). Either way it never commits now.
                expired.append(name)
            elif seq == 0 or (seq, nonce) < (claim.stamp, claim.nonce):
                ahead.append(name)
        if expired:
            self._drop_claims(expired)
        return ahead

    def _check_lease(self, claim: Claim | None) -> None:
        """Refuse to commit once this claim may have expired for another replica (it may then have gone ahead)."""
        if claim is None:
            return
        elapsed = time.monotonic() - claim.started
        if elapsed + self._policy.total_s + SKEW_S > claim.lease_s:
            raise UpstreamError(
                f"this add took {elapsed:.0f} s to reach its commit, past its claim on the photo's bytes:"
                " nothing stored; try again",
                retry_after_s=1.0,
            )

    def _release(self, claim: Claim | None) -> None:
        if claim is not None:
            self._drop_claims(list(claim.rows))

    def _drop_claims(self, rows: list[str]) -> None:
        """Delete claim rows, best effort (a claim left behind expires). Not ``_delete``: no read turns Strong."""
        collection = self._names[CONCEPTS]
        try:
            self._call(
                "delete",
                lambda t: self._client.delete(collection, filter=rows_in(rows), timeout=t),
                collection=collection,
            )
        except UpstreamError as exc:
            logger.warning("%d claim rows stay behind until they expire: %s", len(rows), exc)
