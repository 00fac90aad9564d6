"""``Image2SdrClient``: the image2sdr.v1 service as typed Python calls."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

from ._convert import (
    add_to_index_message,
    custom_concept_from_pb,
    duplicate_from_pb,
    encode_options_message,
    encoding_from_pb,
    explanation_from_pb,
    expression_to_pb,
    filter_to_pb,
    info_from_pb,
    item_from_pb,
    item_page_from_pb,
    map_job_from_pb,
    match_from_pb,
    result_from_pb,
    sdr_from_pb,
    sdr_to_pb,
    space_to_pb,
    term_match_from_pb,
    thresholds_to_pb,
)
from ._exceptions import Image2SdrError, Internal, InvalidArgument, ResourceExhausted, error_from_rpc_error
from ._query import Expression, Filter
from ._targets import Target, channel_target, lists_addresses, service_config
from ._types import (
    ConceptExample,
    CustomConcept,
    Duplicate,
    DuplicateThresholds,
    EncodeItem,
    Encoding,
    Explanation,
    ImageSource,
    Info,
    Item,
    ItemError,
    ItemPage,
    MapJob,
    Matches,
    OnDuplicate,
    Sdr,
    Space,
    StoredId,
    TermMatch,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TIMEOUT_S",
    "MAX_IDS_PER_CALL",
    "USE_CLIENT_DEFAULT",
    "Image2SdrClient",
    "UseClientDefault",
]

DEFAULT_TIMEOUT_S = 30.0  # per unary call; streams have no deadline unless given one
DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # the server's default limit, both directions
MAX_IDS_PER_CALL = 1000  # ItemsExist: the server refuses more ids in one call


class UseClientDefault:
    """The type of ``USE_CLIENT_DEFAULT``: an argument left to the client's own setting.

    As in httpx: ``timeout=USE_CLIENT_DEFAULT`` (the default) takes the client's
    ``timeout``, while ``timeout=None`` means no deadline for this one call.
    """

    def __repr__(self) -> str:
        return "USE_CLIENT_DEFAULT"


USE_CLIENT_DEFAULT = UseClientDefault()
Timeout = float | None | UseClientDefault  # seconds; None: no deadline; USE_CLIENT_DEFAULT: the client's


class Image2SdrClient:
    """A connection to an image2sdr server, or to several replicas of it.

    ``target`` is one server ("host:port") or any gRPC target string, such as
    "dns:///name:port", whose every DNS record is a replica.  A list of "HOST:PORT"
    addresses names replicas directly; several must be IP addresses, all IPv4 or all
    IPv6 (names go through DNS: give one name with a record per replica).  Calls go to
    the replicas in turn (gRPC's ``round_robin``); one that is down is passed over until
    it is back.  ``health_check=True`` also passes over replicas whose grpc.health.v1
    status is not SERVING; with none SERVING, every call, ``health()`` too, raises
    ``Unavailable`` without reaching a server.

    ``token`` is sent as ``authorization: Bearer <token>`` on every call.  Any of
    ``root_certificates`` (PEM CA bundle), ``certificate_chain`` and ``private_key``
    (PEM, for mutual TLS) or ``tls=True`` (system roots) makes the channel TLS.
    ``server_name`` is the name the server certificates are checked against (and the
    call's authority); TLS over a list of addresses needs it, as the list is no name.
    ``channel`` hands in a channel made elsewhere; the client then leaves closing it to
    you, and the options that shape a channel are not used.
    Failed calls raise the ``Image2SdrError`` family.
    """

    def __init__(
        self,
        target: Target,
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        tls: bool = False,
        server_name: str | None = None,
        health_check: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel: grpc.Channel | None = None,
    ) -> None:
        if (certificate_chain is None) != (private_key is None):
            raise ValueError("certificate_chain and private_key go together (mutual TLS)")
        self.target = channel_target(target)
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._owns_channel = channel is None
        if channel is None:
            secure = tls or any(x is not None for x in (root_certificates, certificate_chain, private_key))
            if secure and server_name is None and lists_addresses(self.target):
                raise ValueError("TLS over several addresses needs server_name=, the name in the servers' certificates")
            credentials = (
                grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain) if secure else None
            )
            channel = _channel(self.target, credentials, _options(max_message_bytes, server_name, health_check))
        self._channel = channel
        self._stub = pb_grpc.Image2SdrStub(channel)  # type: ignore[no-untyped-call]  # generated, no .pyi
        self._health = health_pb2_grpc.HealthStub(channel)

    def __enter__(self) -> Image2SdrClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

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

    # -- search and the index ------------------------------------------------------

    def find_similar(
        self,
        *,
        image: ImageSource | None = None,
        sdr: Sdr | None = None,
        id: str | None = None,
        text: str | None = None,
        expression: Expression | None = None,
        concept: str | None = None,
        k: int = 10,
        min_overlap: int = 0,
        space: Space = "semantic",
        blend_weight: float | None = None,
        visual_sdr: Sdr | None = None,
        where: Filter | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Matches:
        """Stored items nearest to exactly one query, by overlap.

        The query: an ``image``, an ``sdr``, a stored item's ``id`` (left out of its own
        answer), ``text`` (words: "beach, dog, not person"; "X or Y" for alternatives),
        an ``expression`` (``Expression(all=..., any=..., none=...)``) or a custom
        ``concept``'s name.  Text and expressions search the semantic space, and each
        match's ``explanation`` says how many bits it shares with each term.

        ``space``: "semantic" (what the picture shows), "visual" (how it looks; ``sdr``
        is then a visual SDR) or "blend", ranked by ``(1 - blend_weight) * semantic
        overlap + blend_weight * visual overlap`` (``blend_weight`` in [0, 1], the
        server's 0.5 when None; by SDR, ``sdr`` is the semantic and ``visual_sdr`` the
        visual one).  ``where``: only items passing the ``Filter`` (the k best of
        those, not the survivors of an unfiltered top k).  The answer is a list that
        also says how many stored items a visual or blended search skipped for having
        no visual SDR.
        """
        queries = {"image": image, "sdr": sdr, "id": id, "text": text, "expression": expression, "concept": concept}
        given = [name for name, query in queries.items() if query is not None]
        if len(given) != 1:
            raise ValueError(f"find_similar takes exactly one of {', '.join(f'{name}=' for name in queries)}")
        request = pb.FindSimilarRequest(
            k=k, min_overlap=min_overlap, space=space_to_pb(space), filter=filter_to_pb(where)
        )
        if blend_weight is not None:
            request.blend_weight = blend_weight
        if visual_sdr is not None:
            request.visual_sdr.CopyFrom(sdr_to_pb(visual_sdr))
        _set_query(request, image=image, sdr=sdr, id=id, text=text, expression=expression, concept=concept)
        response = self._call(self._stub.FindSimilar, request, timeout)
        matches = (match_from_pb(match) for match in response.matches)
        return Matches(matches, skipped_without_visual=response.skipped_without_visual)

    def find_duplicates(
        self,
        *,
        image: ImageSource | None = None,
        id: str | None = None,
        k: int = 10,
        thresholds: DuplicateThresholds | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> list[Duplicate]:
        """Stored copies of an image, or of a stored item (itself left out), strongest kind first.

        Kinds: "same_bytes" (identical file), "near_exact" (pHash within
        ``thresholds.max_phash_distance`` bits: re-encoded, resized), "transformed"
        (visual overlap at least ``thresholds.min_visual_share``: cropped, mirrored, ...).
        A threshold left None takes the server's default (``info().duplicate_thresholds``).
        Nothing is stored.  An item added without an image has no fingerprint: InvalidArgument.
        """
        if (image is None) == (id is None):
            raise ValueError("find_duplicates takes exactly one of image=, id=")
        request = pb.FindDuplicatesRequest(k=k, thresholds=thresholds_to_pb(thresholds))
        if image is not None:
            request.image = read_image(image)
        else:
            request.id = str(id)
        response = self._call(self._stub.FindDuplicates, request, timeout)
        return [duplicate_from_pb(duplicate) for duplicate in response.duplicates]

    def similar_terms(self, sdr: Sdr, *, k: int = 10, timeout: Timeout = USE_CLIENT_DEFAULT) -> list[TermMatch]:
        """The vocabulary terms whose SDRs overlap ``sdr`` most: an SDR back into words."""
        request = pb.SimilarTermsRequest(sdr=sdr_to_pb(sdr), k=k)
        response = self._call(self._stub.SimilarTerms, request, timeout)
        return [term_match_from_pb(term) for term in response.terms]

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

    # -- custom concepts -----------------------------------------------------------

    def define_concept(
        self,
        name: str,
        positives: Iterable[ConceptExample],
        negatives: Iterable[ConceptExample] = (),
        *,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> CustomConcept:
        """Teach a concept by examples, no training run; redefining ``name`` replaces it.

        Each example is an image (bytes, or a file's path) or a stored item,
        ``StoredId("photos/cat.jpg")``.  ``positives`` show the concept (at least 3);
        ``negatives`` do not (more make it sharper).  Once defined, ``encode`` reports
        it in the images that show it (``Encoding.custom_concepts``) and
        ``find_similar(concept=name)`` searches by it.  An unknown example id is
        NotFound; too few positives, InvalidArgument (field ``positives``).
        """
        request = pb.DefineConceptRequest(
            name=name,
            positives=[_example(example) for example in positives],
            negatives=[_example(example) for example in negatives],
        )
        return custom_concept_from_pb(self._call(self._stub.DefineConcept, request, timeout))

    def get_concept(self, name: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> CustomConcept:
        """A custom concept by name (NotFound when none is defined under it)."""
        return custom_concept_from_pb(self._call(self._stub.GetConcept, pb.GetConceptRequest(name=name), timeout))

    def list_concepts(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> list[CustomConcept]:
        """Every custom concept, by name."""
        response = self._call(self._stub.ListConcepts, pb.ListConceptsRequest(), timeout)
        return [custom_concept_from_pb(concept) for concept in response.concepts]

    def remove_concept(self, name: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> None:
        """Forget a custom concept (NotFound when none is defined under ``name``)."""
        self._call(self._stub.RemoveConcept, pb.RemoveConceptRequest(name=name), timeout)

    # -- explanations ----------------------------------------------------------------

    def explain(
        self,
        image: ImageSource,
        *,
        concept: str | None = None,
        custom_concept: str | None = None,
        like: str | None = None,
        space: Space = "semantic",
        patch: int | None = None,
        stride: int | None = None,
        max_concepts: int | None = None,
        min_confidence: float | None = None,
        sparsity: float | None = None,
        visual_share: float | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Explanation:
        """Which parts of the image give it exactly one target: an occlusion heatmap and its PNG.

        The target: a ``concept`` the image has (as ``encode`` names it; one it lacks is
        InvalidArgument, field ``concept``), a ``custom_concept`` (unknown: NotFound), or a
        stored item to compare with, ``like=id`` (the score is the overlap of the SDRs in
        ``space``, "semantic" or "visual"; unknown id: NotFound).  A grey square of
        ``patch`` pixels slides in steps of ``stride`` (None: the server's shares of the
        shorter side); a patch larger than the image is InvalidArgument (field ``patch``).
        The encode options shape the encodings behind a custom concept or ``like`` score.
        """
        targets = {"concept": concept, "custom_concept": custom_concept, "like": like}
        given = {name: value for name, value in targets.items() if value is not None}
        if len(given) != 1:
            raise ValueError("explain takes exactly one of concept=, custom_concept=, like=")
        request = pb.ExplainRequest(image=read_image(image), space=space_to_pb(space))
        ((kind, value),) = given.items()
        setattr(request, kind, value)
        if patch is not None:
            request.patch = patch
        if stride is not None:
            request.stride = stride
        options = encode_options_message(max_concepts, min_confidence, sparsity, visual_share, False)
        if options is not None:
            request.options.CopyFrom(options)
        return explanation_from_pb(self._call(self._stub.Explain, request, timeout))

    # -- maps --------------------------------------------------------------------------

    def create_map(
        self,
        *,
        ids: Sequence[str] | None = None,
        where: Filter | None = None,
        concept: str | None = None,
        space: Space = "semantic",
        columns: int = 0,
        rows: int = 0,
        cell_pixels: int = 0,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> MapJob:
        """Start laying stored items out on a grid by similarity; answers at once with the job (poll ``get_map``).

        The items: at most one of ``ids``, ``where`` (a ``Filter``) or ``concept`` (a
        custom concept's name: the items it finds present); none means every stored
        item. At most ``info().limits.max_map_items`` of them (more, or none:
        InvalidArgument naming the field). ``space``: "semantic" or "visual" (items
        without a visual SDR are left out and counted). ``columns``/``rows``: 0 for the
        smallest square; ``cell_pixels``: 0 lets the server pick (a map ~2048 px wide).
        """
        given = [name for name, value in (("ids", ids), ("where", where), ("concept", concept)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"create_map takes at most one of ids=, where=, concept=; got {', '.join(given)}")
        request = pb.CreateMapRequest(space=space_to_pb(space), columns=columns, rows=rows, cell_pixels=cell_pixels)
        if ids is not None:
            if isinstance(ids, str):
                raise TypeError("ids= takes a sequence of ids, not one string")
            request.ids.ids.extend(ids)
        elif where is not None:
            chosen = filter_to_pb(where)
            request.filter.CopyFrom(chosen if chosen is not None else pb.Filter())
        elif concept is not None:
            request.concept = concept
        return map_job_from_pb(self._call(self._stub.CreateMap, request, timeout))

    def get_map(self, id: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> MapJob:
        """A map job's progress, and once done its cells and PNG (a failed one carries ``error``)."""
        return map_job_from_pb(self._call(self._stub.GetMap, pb.GetMapRequest(id=id), timeout))

    def make_map(
        self,
        *,
        poll_s: float = 0.25,
        progress: Callable[[MapJob], None] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
        **choice: Any,
    ) -> MapJob:
        """``create_map`` (same keywords), then poll until it is done; a failed job raises its error.

        ``progress`` is called with each report while it runs; ``timeout`` applies per call.
        """
        job = self.create_map(timeout=timeout, **choice)
        while not job.finished:
            if progress is not None:
                progress(job)
            time.sleep(poll_s)
            job = self.get_map(job.id, timeout=timeout)
        if progress is not None:
            progress(job)
        if job.error is not None:
            raise job.error
        return job

    # -- the service ---------------------------------------------------------------

    def info(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> Info:
        return info_from_pb(self._call(self._stub.Info, pb.InfoRequest(), timeout))

    def health(self, service: str = "", *, timeout: Timeout = USE_CLIENT_DEFAULT) -> str:
        """The grpc.health.v1 status name: "SERVING", "NOT_SERVING", ... ("" asks about the server)."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def _call(self, method: Callable[..., Any], request: Any, timeout: Timeout) -> Any:
        try:
            deadline = self.timeout if isinstance(timeout, UseClientDefault) else timeout
            return method(request, timeout=deadline, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc


def read_image(image: ImageSource) -> bytes:
    """The encoded image: ``bytes`` as they are, a ``str`` or path-like read from that file."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    return Path(os.fspath(image)).read_bytes()


def _set_query(
    request: pb.FindSimilarRequest,
    *,
    image: ImageSource | None,
    sdr: Sdr | None,
    id: str | None,
    text: str | None,
    expression: Expression | None,
    concept: str | None,
) -> None:
    """Fills the request's ``query`` oneof with the one query given (an empty string still sets it)."""
    if image is not None:
        request.image = read_image(image)
    elif sdr is not None:
        request.sdr.CopyFrom(sdr_to_pb(sdr))
    elif expression is not None:
        request.expression.CopyFrom(expression_to_pb(expression))
    elif id is not None:
        request.id = str(id)
    elif text is not None:
        request.text = text
    elif concept is not None:
        request.concept = concept


def _example(example: ConceptExample) -> pb.ConceptExample:
    """A custom concept's example: a ``StoredId`` by its id, anything else an image to read."""
    if isinstance(example, StoredId):
        return pb.ConceptExample(id=example.id)
    return pb.ConceptExample(image=read_image(example))


ChannelOptions = list[tuple[str, str | int]]


def _options(max_message_bytes: int, server_name: str | None, health_check: bool) -> ChannelOptions:
    options: ChannelOptions = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.service_config", service_config(health_check)),
    ]
    if server_name is not None:
        # The authority is what gRPC checks the certificate against (and sends as :authority).
        options.append(("grpc.default_authority", server_name))
    return options


def _channel(target: str, credentials: grpc.ChannelCredentials | None, options: ChannelOptions) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)


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


def _unreadable(image: ImageSource, exc: OSError) -> Image2SdrError:
    return InvalidArgument(f"cannot read {os.fspath(image)!s}: {exc.strerror or exc}")


def _too_large(size: int, limit: int) -> Image2SdrError:
    return ResourceExhausted(f"request of {size} bytes exceeds the {limit}-byte message limit")
