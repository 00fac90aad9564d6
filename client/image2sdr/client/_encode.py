"""The encode calls: one image, a stream of them, a term to its SDR."""

from __future__ import annotations

import queue
from collections.abc import Iterable, Iterator, Mapping

import grpc

from image2sdr.v1 import image2sdr_pb2 as pb

from ._connection import USE_CLIENT_DEFAULT, Connection, Timeout, _too_large, _unreadable, read_image
from ._convert import add_to_index_message, encode_options_message, encoding_from_pb, result_from_pb, sdr_from_pb
from ._exceptions import Internal, error_from_rpc_error
from ._types import DuplicateThresholds, EncodeItem, Encoding, ImageSource, ItemError, OnDuplicate, Sdr

__all__ = ["EncodeCalls"]


class EncodeCalls(Connection):
    """Encode, EncodeStream and EncodeText as typed calls."""

    # -- encoding ----------------------------------------------------------------

    def encode(
        self,
        image: ImageSource,
        *,
        max_concepts: int | None = None,
        min_confidence: float | None = None,
        sparsity: float | None = None,
        visual_share: float | None = None,
        merge_custom_concepts: bool = False,
        add_to_index: str | None = None,
        metadata: Mapping[str, str] | None = None,
        on_duplicate: OnDuplicate = "keep",
        duplicate_thresholds: DuplicateThresholds | None = None,
        request_id: str = "",
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Encoding:
        """One image (bytes, or the path of a file) to its SDR; ``add_to_index`` stores it under that id.

        ``on_duplicate`` decides what happens when the index holds a copy of the image
        already (``find_duplicates``' rules, ``duplicate_thresholds`` or the server's):
        ``"keep"`` stores it anyway, ``"skip"`` stores nothing and names the copy in
        ``Encoding.duplicate``, ``"replace"`` removes the copies (``Encoding.replaced``).
        The custom concepts found in the image are in ``Encoding.custom_concepts``;
        ``merge_custom_concepts=True`` also merges them into the SDR (and stores them
        with the item, so a filter on concepts finds it by them).
        """
        request = pb.EncodeRequest(
            image=read_image(image),
            options=encode_options_message(max_concepts, min_confidence, sparsity, visual_share, merge_custom_concepts),
            request_id=request_id,
            add_to_index=add_to_index_message(add_to_index, metadata, on_duplicate, duplicate_thresholds),
        )
        return encoding_from_pb(self._call(self._stub.Encode, request, timeout))

    def encode_stream(
        self,
        items: Iterable[ImageSource | EncodeItem],
        *,
        max_concepts: int | None = None,
        min_confidence: float | None = None,
        sparsity: float | None = None,
        visual_share: float | None = None,
        merge_custom_concepts: bool = False,
        timeout: float | None = None,
    ) -> Iterator[Encoding | ItemError]:
        """Many images over one stream, answered in the order given.

        A bad item (not an image, unreadable, too large) comes back as an ``ItemError``
        in its place and the stream goes on.  Files are read lazily, as the stream
        sends them.  ``timeout`` bounds the whole stream; by default there is none.
        """
        options = encode_options_message(max_concepts, min_confidence, sparsity, visual_share, merge_custom_concepts)
        # What the answers must line up with: the request id of each request sent,
        # or, in its place, the ItemError of an item that could not be sent.
        expected: queue.SimpleQueue[str | ItemError] = queue.SimpleQueue()
        requests = self._stream_requests(items, options, expected)
        responses = self._stub.EncodeStream(requests, timeout=timeout, metadata=self._metadata)
        try:
            for response in responses:
                yield from _local_errors_then(expected, response.request_id)
                yield result_from_pb(response)
            yield from _remaining_local_errors(expected)
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc
        finally:
            responses.cancel()  # a no-op once the stream is done; stops it if the caller stopped early

    def _stream_requests(
        self,
        items: Iterable[ImageSource | EncodeItem],
        options: pb.EncodeOptions | None,
        expected: queue.SimpleQueue[str | ItemError],
    ) -> Iterator[pb.EncodeRequest]:
        for position, entry in enumerate(items):
            item = entry if isinstance(entry, EncodeItem) else EncodeItem(entry)
            request_id = item.request_id or str(position)
            try:
                image = read_image(item.image)
            except OSError as exc:
                expected.put(ItemError(request_id, _unreadable(item.image, exc)))
                continue
            request = pb.EncodeRequest(
                image=image,
                options=options,
                request_id=request_id,
                add_to_index=add_to_index_message(item.add_to_index, item.metadata, item.on_duplicate),
            )
            if request.ByteSize() > self.max_message_bytes:
                expected.put(ItemError(request_id, _too_large(request.ByteSize(), self.max_message_bytes)))
                continue
            expected.put(request_id)  # before the request leaves, so its answer always finds it
            yield request

    def encode_text(self, text: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Sdr:
        """A term or phrase to its term SDR."""
        response = self._call(self._stub.EncodeText, pb.EncodeTextRequest(text=text), timeout)
        return sdr_from_pb(response.sdr)


def _local_errors_then(expected: queue.SimpleQueue[str | ItemError], request_id: str) -> Iterator[ItemError]:
    """The items that failed before the request ``request_id`` answers; checks the order."""
    while True:
        try:
            entry = expected.get_nowait()
        except queue.Empty:
            raise Internal(f"the server answered request {request_id!r}, which was never sent") from None
        if isinstance(entry, ItemError):
            yield entry
            continue
        if entry != request_id:
            raise Internal(f"answers out of order: expected request {entry!r}, got {request_id!r}")
        return


def _remaining_local_errors(expected: queue.SimpleQueue[str | ItemError]) -> Iterator[ItemError]:
    while not expected.empty():
        entry = expected.get_nowait()
        if not isinstance(entry, ItemError):
            raise Internal(f"the stream ended without an answer to request {entry!r}")
        yield entry
