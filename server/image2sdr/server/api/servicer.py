"""``Image2SdrServicer``: each RPC converts its request, calls the core, converts the answer.

Encoding lives in ``encoder``, storage and search behind the ``ItemIndex``
protocol, word decoding in ``vocabulary``; messages are mapped in
``conversion`` and core errors become status codes in ``status``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_status import rpc_status

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

from ..batching import OrderedBatcher
from ..config import Config
from ..custom_concepts import ConceptLibrary, ConceptSet, Example
from ..encoder import ConceptUse, EncodeOptions, Encoder, Encoding, Outcome
from ..errors import Image2SdrError, InvalidInputError, NoFingerprintError, NoSdrInSpaceError, NotFoundError
from ..explain import WORK_SIDE, ConceptTarget, Target, custom_target, explain, like_target, plan_grid, sends_bytes
from ..imaging import DecodedImage, decode_image
from ..index.protocol import SEMANTIC, VISUAL, AddOutcome, Filter, Item, ItemIndex, Match
from ..maps import items as map_items
from ..maps.jobs import MapJobs, MapRequest
from ..maps.layout import grid_shape
from ..maps.render import check_canvas
from ..queries import Query, QueryBuilder, check_expression, parse_text
from ..sdr import Sdr
from ..terms.base import SimilarTermsSource, TermSource, normalize_term
from ..upstream import caller_deadline
from ..vocabulary import Vocabulary
from .conversion import (
    BLEND,
    AddPolicy,
    add_policy,
    blend_weight,
    custom_concept_message,
    duplicate_message,
    encode_options,
    encode_response,
    error_response,
    explain_options,
    explain_response,
    explain_sizes,
    explain_space,
    expression,
    fingerprint_message,
    item_message,
    item_page_message,
    k_value,
    map_cell_pixels,
    map_job_message,
    map_space,
    match_message,
    page_size,
    sdr_from_message,
    sdr_message,
    search_space,
    stored_item,
    thresholds,
    thresholds_message,
    where,
)
from .malformed import Malformed
from .status import status_for
from .stream_limits import StreamSlots, peer_host

__all__ = ["MAX_IDS_PER_CALL", "SERVER_VERSION", "Image2SdrServicer", "similar_terms_source"]

SERVER_VERSION = "0.1.0"
MAX_IDS_PER_CALL = 1000  # ItemsExist: ids per call (the proto says so too)

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _unary(method: _Handler) -> _Handler:
    """Report core errors with their status and details; never as UNKNOWN."""

    @functools.wraps(method)
    def wrapper(self: Image2SdrServicer, request: Any, context: grpc.ServicerContext) -> Any:
        _check_deadline(context)
        try:
            with caller_deadline(context.time_remaining()):
                return method(self, request, context)
        except Exception as exc:
            context.abort_with_status(rpc_status.to_status(status_for(exc)))

    return wrapper  # type: ignore[return-value]


def _check_deadline(context: grpc.ServicerContext) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the work started")


def _caller_gone(context: grpc.ServicerContext) -> bool:
    """Whether the caller cancelled or its deadline passed: work on its answer can stop."""
    remaining = context.time_remaining()
    return not context.is_active() or (remaining is not None and remaining <= 0)


def similar_terms_source(terms: TermSource) -> SimilarTermsSource | None:
    """The term provider, when it can list a retina's nearest terms itself (the term cache forwards this)."""
    return terms if isinstance(terms, SimilarTermsSource) else None


class Image2SdrServicer(pb_grpc.Image2SdrServicer):
    def __init__(self, config: Config, encoder: Encoder, index: ItemIndex, vocabulary: Vocabulary) -> None:
        self.config = config
        self.encoder = encoder
        self.index = index
        self.vocabulary = vocabulary
        self.concepts = ConceptLibrary(index, config)
        self.queries = QueryBuilder(encoder.term_source, encoder.merger)
        # A map's PNG rides in one GetMap answer, beside its cells: leave them 1 MiB.
        self.maps = MapJobs(config.maps, max_png_bytes=config.service.max_message_bytes - (1 << 20))
        service = config.service
        self._streams = StreamSlots(service.max_streams, service.max_streams_per_peer)
        # One concept-provider call per batch: the provider's own size unless configured.
        self.stream_batch = service.stream_batch_for(encoder.concept_source.max_batch)

    @_unary
    def Encode(self, request: pb.EncodeRequest, context: grpc.ServicerContext) -> pb.EncodeResponse:
        options = encode_options(request)
        policy = self._check_target(request)  # a bad id or policy is refused before the encode, not after
        started = time.perf_counter()
        encoding = self._with_custom(request, self.encoder.encode(request.image, options))
        stored = None
        if request.HasField("add_to_index"):
            (stored,) = self.index.add_many(
                [stored_item(request, encoding, self.config.index.max_concepts)],
                on_duplicate=policy.on_duplicate,
                thresholds=policy.thresholds,
            )
        return self._respond(request, encoding, started, stored)

    def EncodeStream(
        self, requests: Iterator[pb.EncodeRequest | Malformed], context: grpc.ServicerContext
    ) -> Iterator[pb.EncodeResponse]:
        service = self.config.service
        peer = peer_host(context.peer())
        try:
            self._streams.acquire(peer)
        except Image2SdrError as busy:
            context.abort_with_status(rpc_status.to_status(status_for(busy)))
        batcher: OrderedBatcher[pb.EncodeRequest | Malformed, pb.EncodeResponse] = OrderedBatcher(
            requests,
            self._encode_batch,
            in_flight=service.stream_in_flight,
            batch=self.stream_batch,
            idle_timeout_s=service.stream_idle_timeout_s,
        )
        # However the call ends (cancelled, past its deadline, done), the reader and
        # the batches stop at once, as in grpc's cancellation example: no polling.
        if not context.add_callback(batcher.cancel):
            batcher.cancel()  # it has ended already
        try:
            with caller_deadline(context.time_remaining()):  # the stream's deadline bounds upstream retries
                yield from batcher
        except grpc.RpcError:
            return  # the caller cancelled; nothing is left to answer
        except Exception as exc:
            context.abort_with_status(rpc_status.to_status(status_for(exc)))
        finally:
            self._streams.release(peer)

    @_unary
    def EncodeText(self, request: pb.EncodeTextRequest, context: grpc.ServicerContext) -> pb.EncodeTextResponse:
        term = normalize_term(request.text)
        sdr = self.encoder.term_sdr(term)
        if sdr is None:
            raise InvalidInputError(
                f"the {self.encoder.term_source.name} term provider does not know {term!r}", field="text"
            )
        return pb.EncodeTextResponse(term=term, sdr=sdr_message(sdr, self.config.sdr.dimensions))

    @_unary
    def FindSimilar(self, request: pb.FindSimilarRequest, context: grpc.ServicerContext) -> pb.FindSimilarResponse:
        k = k_value(request.k, self.config.index.max_k)
        space = search_space(request)
        weight = blend_weight(request, space)
        if request.HasField("visual_sdr") and not (space == BLEND and request.WhichOneof("query") == "sdr"):
            raise InvalidInputError("visual_sdr goes with sdr and SPACE_BLEND only", field="visual_sdr")
        chosen = where(request.filter, self.config.index.max_metadata_bytes)
        if request.WhichOneof("query") in ("text", "expression") and space != SEMANTIC:
            raise InvalidInputError("text and expression queries search SPACE_SEMANTIC", field="space")
        words = self._words(request)
        if words is not None:
            queries = {SEMANTIC: words.sdr}
            matches = self.index.search(words.sdr, k, request.min_overlap, space=SEMANTIC, where=chosen)
        elif space == BLEND:
            queries, matches = self._find_blended(request, weight, k, chosen)
        else:
            queries, matches = self._find_in(request, space, k, chosen)
        dimensions = self.config.sdr.dimensions
        response = pb.FindSimilarResponse(
            matches=[match_message(m, space, words.explain(m.item.sdr) if words else ()) for m in matches]
        )
        if SEMANTIC in queries:
            response.query.CopyFrom(sdr_message(queries[SEMANTIC], dimensions))
        if VISUAL in queries:
            response.visual_query.CopyFrom(sdr_message(queries[VISUAL], dimensions))
            # Items without a visual SDR cannot be found by look; say how many were not searched.
            response.skipped_without_visual = self.index.count() - self.index.count(VISUAL)
        return response

    @_unary
    def FindDuplicates(
        self, request: pb.FindDuplicatesRequest, context: grpc.ServicerContext
    ) -> pb.FindDuplicatesResponse:
        k = k_value(request.k, self.config.index.max_k)
        applied = thresholds(request.thresholds, self.config.index, "thresholds")
        query = request.WhichOneof("query")
        if query == "id":
            with _blame("id", NoFingerprintError):
                item, found = self.index.duplicates_of(request.id, applied, k)
            fingerprint, visual = item.fingerprint, item.in_space(VISUAL)
        elif query == "image":
            encoding = self.encoder.encode(request.image)
            fingerprint, visual = encoding.fingerprint, encoding.visual
            found = self.index.find_duplicates(fingerprint, visual, applied, k)
        else:
            raise InvalidInputError("set one of image or id", field="query")
        response = pb.FindDuplicatesResponse(
            duplicates=[duplicate_message(d, visual) for d in found], thresholds=thresholds_message(applied)
        )
        if fingerprint is not None:
            response.fingerprint.CopyFrom(fingerprint_message(fingerprint))
        return response

    @_unary
    def SimilarTerms(self, request: pb.SimilarTermsRequest, context: grpc.ServicerContext) -> pb.SimilarTermsResponse:
        if not request.HasField("sdr"):
            raise InvalidInputError("sdr is required", field="sdr")
        query = sdr_from_message(request.sdr, self.config.sdr, "sdr")
        k = k_value(request.k, self.config.index.max_k)
        remote = None if self.config.service.vocabulary_file else similar_terms_source(self.encoder.term_source)
        # Cortical.io answers from its whole retina, unless a word list is configured.
        nearest = remote.similar_terms(query, k) if remote is not None else self.vocabulary.nearest(query, k)
        return pb.SimilarTermsResponse(terms=[pb.TermMatch(term=t, overlap=o) for t, o in nearest])

    @_unary
    def GetItem(self, request: pb.GetItemRequest, context: grpc.ServicerContext) -> pb.Item:
        message = item_message(self.index.get(request.id), self.config.sdr.dimensions)
        # Read after the item: one removed in between has none, and GetItem still answers.
        message.thumbnail = self.index.thumbnails([request.id]).get(request.id, b"")
        return message

    @_unary
    def RemoveItem(self, request: pb.RemoveItemRequest, context: grpc.ServicerContext) -> pb.RemoveItemResponse:
        self.index.remove(request.id)
        return pb.RemoveItemResponse()

    @_unary
    def ItemsExist(self, request: pb.ItemsExistRequest, context: grpc.ServicerContext) -> pb.ItemsExistResponse:
        ids = list(request.ids)
        if len(ids) > MAX_IDS_PER_CALL:
            raise InvalidInputError(
                f"{len(ids)} ids in one call, at most {MAX_IDS_PER_CALL}; ask in batches", field="ids"
            )
        try:
            exists = self.index.contains(ids)
        except InvalidInputError as exc:  # an id no item could have
            exc.field = "ids"
            raise
        return pb.ItemsExistResponse(exists=exists)

    @_unary
    def ListItems(self, request: pb.ListItemsRequest, context: grpc.ServicerContext) -> pb.ListItemsResponse:
        # The index checks the size against max_k and the token, naming page_size or page_token.
        chosen = where(request.filter, self.config.index.max_metadata_bytes)
        size = page_size(request.page_size, self.config.index.max_k)
        page = self.index.list_items(size, request.page_token, where=chosen)
        return item_page_message(page, self.config.sdr.dimensions)

    @_unary
    def CreateMap(self, request: pb.CreateMapRequest, context: grpc.ServicerContext) -> pb.MapJob:
        space, cell_pixels = map_space(request), map_cell_pixels(request)
        chosen = self._map_items(request, space)
        columns, rows = grid_shape(len(chosen.ids), request.columns, request.rows)
        if cell_pixels:
            check_canvas(columns, rows, cell_pixels)
        job = MapRequest(
            chosen.ids,
            chosen.sdrs,
            space,
            columns,
            rows,
            cell_pixels,
            chosen.skipped_without_visual,
            self.index.thumbnails,
        )
        return map_job_message(self.maps.create(job))

    @_unary
    def GetMap(self, request: pb.GetMapRequest, context: grpc.ServicerContext) -> pb.MapJob:
        return map_job_message(self.maps.get(request.id))

    @_unary
    def DefineConcept(self, request: pb.DefineConceptRequest, context: grpc.ServicerContext) -> pb.CustomConcept:
        # Everything that can be refused without the images is, before any is encoded.
        self.concepts.check_definition(request.name, len(request.positives), len(request.negatives))
        positives = self._examples(request.positives, "positives")
        negatives = self._examples(request.negatives, "negatives")
        defined = self.concepts.define(request.name, positives, negatives)
        return custom_concept_message(defined, self.config.sdr.dimensions)

    @_unary
    def GetConcept(self, request: pb.GetConceptRequest, context: grpc.ServicerContext) -> pb.CustomConcept:
        return custom_concept_message(self.concepts.get(request.name), self.config.sdr.dimensions)

    @_unary
    def ListConcepts(self, request: pb.ListConceptsRequest, context: grpc.ServicerContext) -> pb.ListConceptsResponse:
        dimensions = self.config.sdr.dimensions
        return pb.ListConceptsResponse(
            concepts=[custom_concept_message(defined, dimensions) for defined in self.concepts.all()]
        )

    @_unary
    def RemoveConcept(
        self, request: pb.RemoveConceptRequest, context: grpc.ServicerContext
    ) -> pb.RemoveConceptResponse:
        self.concepts.remove(request.name)
        return pb.RemoveConceptResponse()

    @_unary
    def Explain(self, request: pb.ExplainRequest, context: grpc.ServicerContext) -> pb.ExplainResponse:
        kind = request.WhichOneof("target")
        if kind is None:
            raise InvalidInputError("set one of concept, custom_concept or like", field="target")
        space, options = explain_space(request), explain_options(request)
        source = self.encoder.concept_source
        # A remote provider is sent the occluded images themselves: they are made at the working
        # size, not at its input_side (Clarifai's 64 px is for validation: a JPEG would go at 1/8).
        draft = WORK_SIDE if sends_bytes(source) else source.input_side
        image = decode_image(request.image, self.config.image, draft)
        grid = plan_grid(image.width, image.height, self.config.explain, *explain_sizes(request))
        target = self._explain_target(request, image, space, options)
        # Up to explain.max_variants classifier passes: none once the caller has gone.
        stopped = functools.partial(_caller_gone, context)
        return explain_response(explain(image, target, grid, self.config.explain.fill, stopped))

    @_unary
    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoResponse:
        config, encoder = self.config, self.encoder
        concepts, terms, look = encoder.concept_source, encoder.term_source, encoder.appearance
        return pb.InfoResponse(
            server_version=SERVER_VERSION,
            geometry=pb.Sdr(size=config.sdr.size, dimensions=list(config.sdr.dimensions)),
            sparsity=config.sdr.sparsity,
            active_bits=config.sdr.active_bits,
            visual_share=config.sdr.visual_share,
            concepts=pb.Provider(name=concepts.name, model=concepts.model, version=concepts.version),
            terms=pb.Provider(name=terms.name, model=terms.model, version=terms.version),
            index_kind=_index_kind(config),
            index_size=self.index.count(),
            index_visual_size=self.index.count(VISUAL),
            custom_concepts=self.concepts.count(),
            duplicate_thresholds=thresholds_message(thresholds(pb.DuplicateThresholds(), config.index, "")),
            limits=pb.Limits(
                max_message_bytes=config.service.max_message_bytes,
                max_image_bytes=config.image.max_bytes,
                max_pixels=config.image.max_pixels,
                min_image_side=config.image.min_side,
                max_k=self.config.index.max_k,
                stream_in_flight=config.service.stream_in_flight,
                max_map_items=config.maps.max_items,
            ),
            vocabulary_size=len(self.vocabulary),
            visual=None if look is None else pb.Provider(name=look.name, model=look.model, version=look.version),
        )

    # -- helpers --------------------------------------------------------------

    def _words(self, request: pb.FindSimilarRequest) -> Query | None:
        """The query SDR of a text or expression query (None for the other kinds)."""
        query, service = request.WhichOneof("query"), self.config.service
        if query == "text":
            parsed = parse_text(request.text, max_chars=service.max_text_chars, max_terms=service.max_query_terms)
            field = "text"
        elif query == "expression":
            parsed = check_expression(expression(request.expression), service.max_query_terms)
            field = "expression"
        else:
            return None
        options = encode_options(request)
        sparsity = options.sparsity if options is not None and options.sparsity is not None else None
        active_bits = self.config.sdr.active_bits_for(sparsity) if sparsity is not None else self.config.sdr.active_bits
        return self.queries.build(parsed, active_bits, field=field)

    def _explain_target(
        self, request: pb.ExplainRequest, image: DecodedImage, space: str, options: EncodeOptions | None
    ) -> Target:
        """What an explanation scores; refused before any occluded image is made."""
        kind = request.WhichOneof("target")
        if kind == "custom_concept":
            return custom_target(self.encoder, self.concepts, request.custom_concept, options)
        if kind == "like":
            return like_target(self.encoder, self.index, request.like, space, options)
        # As Encode would name it: the request's options, else the configured ones.
        configured = self.config.concepts
        chosen = options or EncodeOptions()
        top = configured.max_concepts if chosen.max_concepts is None else chosen.max_concepts
        floor = configured.min_confidence if chosen.min_confidence is None else chosen.min_confidence
        return ConceptTarget.checked(self.encoder.concept_source, request.concept, image, top, floor)

    def _concept_in(self, name: str, space: str) -> Sdr:
        """A custom concept's SDR in ``space`` (FindSimilar by concept)."""
        sdr = self.concepts.get(name, "concept").concept.sdrs.get(space)
        if sdr is None:
            raise InvalidInputError(
                f"custom concept {name!r} has no {space} SDR (an example had none): search SPACE_SEMANTIC",
                field="concept",
            )
        return sdr

    def _find_in(
        self, request: pb.FindSimilarRequest, space: str, k: int, chosen: Filter | None
    ) -> tuple[dict[str, Sdr], list[Match]]:
        """A FindSimilar in one space: the SDR searched (by space) and the matches."""
        query = request.WhichOneof("query")
        if query == "id":
            with _blame("id", NoSdrInSpaceError):
                item, matches = self.index.neighbours(request.id, k, request.min_overlap, space=space, where=chosen)
            searched = item.in_space(space)
        else:
            if query == "image":
                searched = self._encoded_in(self._encode_query(request), space)
            elif query == "sdr":
                searched = sdr_from_message(request.sdr, self.config.sdr, "sdr")
            elif query == "concept":
                searched = self._concept_in(request.concept, space)
            else:
                raise InvalidInputError("set one of image, sdr, id, text, expression or concept", field="query")
            matches = self.index.search(searched, k, request.min_overlap, space=space, where=chosen)
        return ({} if searched is None else {space: searched}), matches

    def _find_blended(
        self, request: pb.FindSimilarRequest, weight: float, k: int, chosen: Filter | None
    ) -> tuple[dict[str, Sdr], list[Match]]:
        """A FindSimilar over both spaces, ranked by the weighted sum of the two overlaps."""
        query, exclude = request.WhichOneof("query"), None
        if query == "concept":
            semantic, visual = self._concept_in(request.concept, SEMANTIC), self._concept_in(request.concept, VISUAL)
        elif query == "id":
            item = self.index.get(request.id)
            stored_visual = item.in_space(VISUAL)
            if stored_visual is None:
                raise NoSdrInSpaceError(f"item {item.id!r} has no visual SDR (added without an image)", field="id")
            semantic, visual, exclude = item.sdr, stored_visual, item.id
        elif query == "image":
            encoding = self._encode_query(request)
            semantic, visual = encoding.sdr, self._encoded_in(encoding, VISUAL)
        elif query == "sdr":
            if not request.HasField("visual_sdr"):
                raise InvalidInputError("SPACE_BLEND by SDR needs visual_sdr too", field="visual_sdr")
            semantic = sdr_from_message(request.sdr, self.config.sdr, "sdr")
            visual = sdr_from_message(request.visual_sdr, self.config.sdr, "visual_sdr")
        else:
            raise InvalidInputError("set one of image, sdr, id or concept", field="query")
        matches = self.index.search_blend(semantic, visual, weight, k, exclude=exclude, where=chosen)
        kept = [match for match in matches if match.score >= request.min_overlap]
        return {SEMANTIC: semantic, VISUAL: visual}, kept

    def _map_items(self, request: pb.CreateMapRequest, space: str) -> map_items.Chosen:
        """The items a map is asked for, read now: a bad choice is the caller's error before any job starts."""
        limit, index_config = self.config.maps.max_items, self.config.index
        kind = request.WhichOneof("items")
        if kind == "ids":
            return map_items.by_ids(self.index, list(request.ids.ids), space, limit)
        if kind == "concept":
            concept = ConceptSet([self.concepts.get(request.concept, "concept").concept], self.config.sdr.size)
            return map_items.by_concept(self.index, concept, space, limit, index_config.max_k)
        chosen = where(request.filter, index_config.max_metadata_bytes) if kind == "filter" else None
        return map_items.by_filter(
            self.index,
            chosen,
            space,
            limit,
            max_value_bytes=index_config.max_metadata_bytes,
            page_size=index_config.max_k,
        )

    def _examples(self, examples: Sequence[pb.ConceptExample], field: str) -> list[Example]:
        """DefineConcept's examples as SDRs: stored items read first, then the images encoded in one batch."""
        found: list[Example | None] = [None] * len(examples)
        images = [(n, example.image) for n, example in enumerate(examples) if example.WhichOneof("example") == "image"]
        for n, example in enumerate(examples):
            kind = example.WhichOneof("example")
            if kind == "id":
                try:
                    item = self.index.get(example.id)
                except InvalidInputError as exc:
                    exc.field = f"{field}[{n}].id"
                    raise
                except NotFoundError as exc:
                    raise NotFoundError(f"{exc} ({field}[{n}].id)", resource=example.id) from None
                found[n] = Example(item.sdr, item.in_space(VISUAL))
            elif kind != "image":
                raise InvalidInputError("an example is an image or a stored item's id", field=f"{field}[{n}]")
        outcomes = self.encoder.encode_batch([image for _, image in images])
        for (n, _), outcome in zip(images, outcomes, strict=True):
            if isinstance(outcome, Exception):
                if isinstance(outcome, InvalidInputError):
                    outcome.field = f"{field}[{n}].image"
                raise outcome
            found[n] = Example(outcome.sdr, outcome.visual)
        return [example for example in found if example is not None]

    def _encode_query(self, request: pb.FindSimilarRequest) -> Encoding:
        """A query image encoded as Encode would (custom concepts merged when the options ask)."""
        return self._with_custom(request, self.encoder.encode(request.image, encode_options(request)))

    def _with_custom(self, request: pb.EncodeRequest | pb.FindSimilarRequest, encoding: Encoding) -> Encoding:
        """The custom concepts found in an encoding, merged into its SDR when the request asks."""
        merge = request.HasField("options") and request.options.merge_custom_concepts
        found = [
            (ConceptUse(detection.name, detection.confidence, used=merge), detection.sdr)
            for detection in self.concepts.detect(encoding.sdr, encoding.visual)
        ]
        return self.encoder.with_custom(encoding, found) if found else encoding

    def _custom_outcome(self, request: pb.EncodeRequest, outcome: Outcome) -> Outcome:
        if not isinstance(outcome, Encoding):
            return outcome
        try:
            return self._with_custom(request, outcome)
        except Exception as exc:  # that item's failure; the stream goes on
            return exc

    def _encoded_in(self, encoding: Encoding, space: str) -> Sdr:
        """An encoding's SDR in ``space``; the visual one is missing only when the server's visual channel is off."""
        sdr = encoding.sdr if space == SEMANTIC else encoding.visual
        if sdr is None:
            raise InvalidInputError("this server's visual channel is off: search SPACE_SEMANTIC", field="space")
        return sdr

    def _encode_batch(self, requests: Sequence[pb.EncodeRequest | Malformed]) -> list[pb.EncodeResponse]:
        """EncodeStream's unit of work: one batch, each item answered on its own, in order.

        Whatever goes wrong with one item (it did not parse, its options or target are
        bad, its image is damaged, the server failed on it) is that item's in-band
        error; the items around it are encoded and stored as usual.  The encoder
        groups the batch by options; the batch's items go into the index together.
        """
        started = time.perf_counter()
        answers: list[pb.EncodeResponse | None] = [None] * len(requests)
        accepted: list[_Accepted] = []
        for slot, request in enumerate(requests):
            if isinstance(request, Malformed):
                answers[slot] = error_response("", InvalidInputError(request.message, field="request"))
                continue
            try:
                options = encode_options(request)
                policy = self._check_target(request)
            except Image2SdrError as exc:
                answers[slot] = error_response(request.request_id, exc)
                continue
            accepted.append(_Accepted(slot, request, options, policy))
        encoded = self.encoder.encode_many([(entry.request.image, entry.options) for entry in accepted])
        outcomes = [
            self._custom_outcome(entry.request, outcome) for entry, outcome in zip(accepted, encoded, strict=True)
        ]
        stored = self._store_outcomes(accepted, outcomes)
        for entry, outcome, added in zip(accepted, outcomes, stored, strict=True):
            failed = added if isinstance(added, Exception) else outcome  # storing failed: the item failed
            answers[entry.slot] = self._answer(entry.request, failed, started, added)
        return [answer for answer in answers if answer is not None]

    def _store_outcomes(self, accepted: Sequence[_Accepted], outcomes: Sequence[Outcome]) -> list[_Stored]:
        """Store the encodings that ask for it; per item, what the index did (or why it failed).

        Consecutive items with the same duplicate policy go into the index together, in
        one transaction each, so the items of a stream are checked and stored in stream
        order; if a transaction fails, that is the error of each of its items.
        """
        stored: list[_Stored] = [None] * len(accepted)
        run: list[tuple[int, Item]] = []
        policy = AddPolicy()
        for position, (entry, outcome) in enumerate(zip(accepted, outcomes, strict=True)):
            if not (isinstance(outcome, Encoding) and entry.request.HasField("add_to_index")):
                continue
            if run and entry.policy != policy:
                self._store_run(run, policy, stored)
                run = []
            policy = entry.policy
            run.append((position, stored_item(entry.request, outcome, self.config.index.max_concepts)))
        if run:
            self._store_run(run, policy, stored)
        return stored

    def _store_run(self, run: list[tuple[int, Item]], policy: AddPolicy, stored: list[_Stored]) -> None:
        items = [item for _, item in run]
        try:
            added: list[_Stored] = list(
                self.index.add_many(items, on_duplicate=policy.on_duplicate, thresholds=policy.thresholds)
            )
        except Exception as exc:  # storing failed: those items' error, the stream goes on
            added = [exc] * len(run)
        for (position, _), outcome in zip(run, added, strict=True):
            stored[position] = outcome

    def _answer(
        self, request: pb.EncodeRequest, outcome: Outcome, started: float, stored: _Stored = None
    ) -> pb.EncodeResponse:
        if isinstance(outcome, Exception):
            return error_response(request.request_id, outcome)
        return self._respond(request, outcome, started, None if isinstance(stored, Exception) else stored)

    def _respond(
        self, request: pb.EncodeRequest, encoding: Encoding, started: float, stored: AddOutcome | None = None
    ) -> pb.EncodeResponse:
        total_ms = (time.perf_counter() - started) * 1000
        return encode_response(request, encoding, self.config.sdr.dimensions, total_ms, stored)

    def _check_target(self, request: pb.EncodeRequest) -> AddPolicy:
        """Refuse an add the index would refuse, before any work; the add's duplicate policy."""
        if not request.HasField("add_to_index"):
            return AddPolicy()
        policy = add_policy(request, self.config.index)
        target = request.add_to_index
        try:
            self.index.check_item(target.id, dict(target.metadata))
        except InvalidInputError as exc:
            exc.field = f"add_to_index.{exc.field}"
            raise
        return policy


@dataclass(frozen=True)
class _Accepted:
    """A stream item that passed the checks: where its answer goes, and what it asks for."""

    slot: int
    request: pb.EncodeRequest
    options: EncodeOptions | None
    policy: AddPolicy


# What the index did with a stream item: stored or not (an AddOutcome), failed, or not asked to store.
_Stored = AddOutcome | Exception | None


@contextmanager
def _blame(field: str, *kinds: type[InvalidInputError]) -> Iterator[None]:
    """Name ``field`` as the culprit of these core errors (the index does not know the request's field names)."""
    try:
        yield
    except kinds as exc:
        exc.field = field
        raise


def _index_kind(config: Config) -> str:
    """What Info names as the index: the FAISS structure ("exact", "ivf") or "milvus <index type>"."""
    if config.index.backend == "milvus":
        return f"milvus {config.index.milvus.index_type}"
    return config.index.kind
