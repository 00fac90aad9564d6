"""Searches in Milvus proven exact: plans under a filter, widening rounds, heavy SDRs apart, copies, blends.

Codes are padded to equal weight (``codes.py``) and searched with HAMMING: for every
SDR of at most ``equalize_bits`` active bits the Hamming order is then the overlap
order, and an item not yet returned shares at most ``(|q| + equalize_bits - d_last) / 2``
bits with the query. Searches fetch more candidates until the k-th exact overlap is
above that bound (ties to the lower ``seq``), and score the few heavier SDRs
(flagged ``heavy``) exactly in a filtered search of their own. The visual and pHash
rows have no JSON field: a filtered search there is restricted to the passing items'
keys when few pass, and otherwise checks the filter on each candidate (``_plan``).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ...sdr import Sdr
from ..duplicates import visual_floor
from ..engine import CopyQuery
from ..filters import passes
from ..values import SEMANTIC, VISUAL, DuplicateThresholds, Filter, Item, Match
from .calls import MAX_RESULTS, PHASH
from .expressions import NO_BITS, filter_expression, in_chunks, item_key, keys_in, phash_code, shared_bits
from .rows import MilvusRows, Row

__all__ = ["MilvusSearch"]

logger = logging.getLogger(__name__)


_PREFILTER_MAX = 4096  # passing items up to which a visual/pHash search is restricted to their keys
_HEAVY_RECHECK_S = 10.0  # how stale "no heavy SDRs here" may be (see _has_heavy)
_SHA256 = re.compile(r"[0-9a-f]{64}")  # fullmatch


@dataclass(frozen=True)
class _Plan:
    """How one space is searched under a filter (``MilvusIndex._plan``)."""

    restrictions: tuple[str, ...]  # one search per expression ("": the whole space), answers merged
    where: Filter | None  # checked on every candidate read
    fallback: str = ""  # broad: the passing items' expression, searched by key chunks when unproven


class MilvusSearch(MilvusRows):
    """Searches, neighbours, copies and blends."""

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

        def settled(scored: Sequence[tuple[int, Row]], bound: float) -> bool:
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
        expression = filter_expression(where)
        if space == SEMANTIC:
            return _Plan((expression,), where)
        scope = f"in_{space} == true and {expression}"
        if self._count_where(scope, exact=False) > _PREFILTER_MAX:  # a stale count only changes the plan
            return _Plan(("",), where, scope)
        return _Plan(tuple(keys_in(chunk) for chunk in in_chunks(self._keys_where(scope), _PREFILTER_MAX)), where)

    def _scan(
        self,
        space: str,
        query: Sdr,
        settled: Callable[[Sequence[tuple[int, Row]], float], bool],
        exclude: str | None,
        first: int | None = None,
        *,
        plan: _Plan | None = None,
    ) -> tuple[list[tuple[int, Row]], float]:
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
                self._scan_part(space, query, settled, exclude, first, restriction=keys_in(chunk), where=plan.where)
                for chunk in in_chunks(keys, _PREFILTER_MAX)
            ]
        scored = sorted((pair for found, _, _ in parts for pair in found), key=lambda pair: (-pair[0], pair[1].seq))
        return scored, max((bound for _, bound, _ in parts), default=-1.0)

    def _scan_part(
        self,
        space: str,
        query: Sdr,
        settled: Callable[[Sequence[tuple[int, Row]], float], bool],
        exclude: str | None,
        first: int | None,
        *,
        restriction: str,
        where: Filter | None,
    ) -> tuple[list[tuple[int, Row]], float, bool]:
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
        rows: dict[str, Row] = {}
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
                    scored.append((shared_bits(query.positions, positions), row))
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

    def copies(self, query: CopyQuery, exclude: str | None) -> list[Item]:
        skip = item_key(exclude) if exclude else None
        return [self._item(row) for row in self._copy_rows(query, skip).values()]

    def copies_of(
        self, item_id: str, limits: DuplicateThresholds, k: int, verify: int = 0
    ) -> tuple[Item, list[Item]] | None:
        row = self._row(item_id)
        if row is None:
            return None
        item = self._item(row)
        if row.stored.fingerprint is None:
            return item, []
        query = CopyQuery(row.stored.fingerprint, item.spaces.get(VISUAL), limits, k, verify)
        return item, [self._item(other) for other in self._copy_rows(query, item_key(item_id)).values()]

    def _copy_rows(self, query: CopyQuery, exclude: str | None) -> dict[str, Row]:
        """Stored items that may copy the image by any of the three tests (``duplicates.py`` judges)."""
        keys: set[str] = set()
        fingerprint, visual, limits = query.fingerprint, query.visual, query.limits
        if fingerprint is not None:
            if _SHA256.fullmatch(fingerprint.sha256):  # always, from fingerprints.py; the check keeps the filter safe
                same = self._query(SEMANTIC, f'sha256 == "{fingerprint.sha256}"', ["key"], limit=MAX_RESULTS)
                keys.update(str(row["key"]) for row in same)
            keys.update(self._near_phashes(fingerprint.phash, limits.max_phash_distance, exclude))
        if VISUAL in self._spaces and visual is not None and visual.active:
            floor = visual_floor(visual, limits)
            scored, _ = self._scan(VISUAL, visual, lambda _, bound: bound < floor, exclude, self._first_fetch(query.k))
            keys.update(item_key(row.stored.id) for overlap, row in scored if overlap >= floor)
            # The nearest by look, below the share too: the keypoints judge them (``duplicates.py``).
            keys.update(item_key(row.stored.id) for _, row in scored[: query.verify])
        keys.discard(exclude or "")
        return self._rows(keys)

    def _near_phashes(self, phash: int, max_distance: int, exclude: str | None) -> set[str]:
        """Keys of the items whose pHash lies within ``max_distance`` bits: every one, not the top few."""
        fetch = self._first_fetch(1)
        while True:
            hits = self._search(PHASH, phash_code(phash), fetch, exclude=exclude)
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

            def settled(_: Sequence[tuple[int, Row]], bound: float, last: bool = last) -> bool:
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

    def _blend_match(self, row: Row, queries: Mapping[str, Sdr], weight: float) -> tuple[Match, int]:
        sdrs = row.stored.sdrs
        overlaps = {space: shared_bits(query.positions, sdrs.get(space, NO_BITS)) for space, query in queries.items()}
        score = (1.0 - weight) * overlaps[SEMANTIC] + weight * overlaps[VISUAL]
        return self._match(row, overlaps, overlaps[SEMANTIC], score), row.seq
