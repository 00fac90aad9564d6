"""Listing items newest first without ORDER BY: time windows over the seqs, a cursor of (seq, key)."""

from __future__ import annotations

import re
import time

from ..engine import Listing
from ..filters import passes
from ..paging import BadCursorError
from ..values import SEMANTIC, Filter
from .calls import MAX_RESULTS
from .expressions import filter_expression
from .rows import MilvusRows

__all__ = ["MilvusListing"]


_FIRST_SPAN_NS = 1 << 36  # ~69 s: the first time window a listing page looks back over
_CURSOR = re.compile(r"m(\d{1,19})\.([0-9a-f]{32})")  # fullmatch: (seq, key) to continue below
_INT64_MAX = (1 << 63) - 1


class MilvusListing(MilvusRows):
    """Pages of items, newest first."""

    def list_items(self, page_size: int, cursor: str, where: Filter | None) -> Listing:
        """Newest first (by seq, then key); the cursor is ``m<seq>.<key>``, the position to continue below."""
        below = _position_of(cursor)
        expression = filter_expression(where)
        found = self._newest(page_size, below, expression)
        page = found[:page_size]
        rows = self._rows([key for _, key in page])
        # A row replaced since _newest read it may no longer pass: skipped, as a removed one is.
        items = tuple(self._item(rows[key]) for _, key in page if key in rows and passes(rows[key].stored, where))
        following = f"m{page[-1][0]}.{page[-1][1]}" if len(found) > page_size else ""
        return Listing(items, following, self._count_where(expression))

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


def _position_of(cursor: str) -> tuple[int, str] | None:
    """The (seq, key) a cursor continues below; None for the first page."""
    if not cursor:
        return None
    match = _CURSOR.fullmatch(cursor)
    if match is None or int(match.group(1)) > _INT64_MAX:
        raise BadCursorError(cursor)
    return int(match.group(1)), match.group(2)
