"""The calls on stored items one at a time or a page at a time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from image2sdr.v1 import image2sdr_pb2 as pb

from ._connection import USE_CLIENT_DEFAULT, Connection, Timeout
from ._convert import filter_to_pb, item_from_pb, item_page_from_pb
from ._query import Filter
from ._types import Item, ItemPage

__all__ = ["ItemCalls"]


class ItemCalls(Connection):
    """GetItem, RemoveItem, ItemsExist and ListItems as typed calls."""

    # -- stored items ----------------------------------------------------------------

    def get_item(self, id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Item:
        return item_from_pb(self._call(self._stub.GetItem, pb.GetItemRequest(id=id), timeout))

    def remove_item(self, id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> None:
        self._call(self._stub.RemoveItem, pb.RemoveItemRequest(id=id), timeout)

    def items_exist(self, ids: Sequence[str], *, timeout: Timeout = USE_CLIENT_DEFAULT) -> list[bool]:
        """For each id, whether an item is stored under it; one call for up to ``MAX_IDS_PER_CALL`` ids."""
        response = self._call(self._stub.ItemsExist, pb.ItemsExistRequest(ids=ids), timeout)
        return list(response.exists)

    def list_items(
        self,
        page_size: int = 0,
        page_token: str = "",
        *,
        where: Filter | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> ItemPage:
        """One page of the stored items, newest first (the last added or replaced first).

        ``page_size``: 1 to the server's ``max_k`` (``info().limits.max_k``); 0 takes its
        default (100).  ``page_token``: "" for the first page, then each page's
        ``next_page_token`` until it is "".  A token holds across writes: items stored
        after the listing began are not listed, removed ones are skipped, none twice.
        ``where``: only items passing the ``Filter`` (search by tag: ``concepts=``); a
        token is good only with the filter it was given under.  ``total`` counts the
        items passing it.
        """
        request = pb.ListItemsRequest(page_size=page_size, page_token=page_token, filter=filter_to_pb(where))
        return item_page_from_pb(self._call(self._stub.ListItems, request, timeout))

    def iter_items(
        self, *, page_size: int = 0, where: Filter | None = None, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> Iterator[Item]:
        """Every stored item (passing ``where``), newest first, fetched a page at a time (``timeout`` is per page)."""
        token = ""
        while True:
            page = self.list_items(page_size, token, where=where, timeout=timeout)
            yield from page.items
            token = page.next_page_token
            if not token:
                return
