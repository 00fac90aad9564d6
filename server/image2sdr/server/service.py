"""The gRPC edge: thin servicers over the plain core, and ``create_server``.

Servicer methods translate protobuf <-> core types and core errors -> status
codes (``grpc_status``), and nothing else: encoding lives in ``encoder``,
storage and search in ``index``, word decoding in ``vocabulary``.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc

from .auth import BearerTokenInterceptor
from .config import Config
from .encoder import ConceptUse, EncodeOptions, Encoder, Encoding, Outcome
from .errors import ConfigError, Image2SdrError, InvalidInputError
from .grpc_status import status_for
from .index import Item, Match, SdrIndex
from .malformed import Malformed, MalformedRequestInterceptor
from .sdr import Sdr
from .streaming import OrderedBatcher, StreamSlots, peer_host
from .terms.base import SimilarTermsSource, TermSource, normalize_term
from .upstream import caller_deadline
from .vocabulary import Vocabulary, default_terms, read_terms

__all__ = ["SERVICE_NAME", "Image2SdrServicer", "Server", "create_server"]

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Image2Sdr"].full_name
SERVER_VERSION = "0.1.0"
DEFAULT_K = 10

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


class Image2SdrServicer(pb_grpc.Image2SdrServicer):
    def __init__(self, config: Config, encoder: Encoder, index: SdrIndex, vocabulary: Vocabulary) -> None:
        self.config = config
        self.encoder = encoder
        self.index = index
        self.vocabulary = vocabulary
        service = config.service
        self._streams = StreamSlots(service.max_streams, service.max_streams_per_peer)
        # One concept-provider call per batch: the provider's own size unless configured.
        self.stream_batch = service.stream_batch_for(encoder.concept_source.max_batch)

    @_unary
    def Encode(self, request: pb.EncodeRequest, context: grpc.ServicerContext) -> pb.EncodeResponse:
        options = _options(request.options) if request.HasField("options") else None
        self._check_target(request)  # a bad id is refused before the encode, not after
        started = time.perf_counter()
        encoding = self.encoder.encode(request.image, options)
        self._store([(request, encoding)])
        return self._respond(request, encoding, started)

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
            is_active=context.is_active,
            idle_timeout_s=service.stream_idle_timeout_s,
        )
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
        return pb.EncodeTextResponse(term=term, sdr=_sdr_message(sdr, self.config.sdr.dimensions))

    @_unary
    def FindSimilar(self, request: pb.FindSimilarRequest, context: grpc.ServicerContext) -> pb.FindSimilarResponse:
        k = _k(request.k, self.config.index.max_k)
        query = request.WhichOneof("query")
        if query == "id":
            item, matches = self.index.neighbours(request.id, k, request.min_overlap)  # one consistent read
            searched = item.sdr
        else:
            if query == "image":
                options = _options(request.options) if request.HasField("options") else None
                searched = self.encoder.encode(request.image, options).sdr
            elif query == "sdr":
                searched = self._sdr_from_message(request.sdr, "sdr")
            else:
                raise InvalidInputError("set one of image, sdr or id", field="query")
            matches = self.index.search(searched, k, request.min_overlap)
        return pb.FindSimilarResponse(
            matches=[_match_message(m) for m in matches], query=_sdr_message(searched, self.config.sdr.dimensions)
        )

    @_unary
    def SimilarTerms(self, request: pb.SimilarTermsRequest, context: grpc.ServicerContext) -> pb.SimilarTermsResponse:
        if not request.HasField("sdr"):
            raise InvalidInputError("sdr is required", field="sdr")
        query = self._sdr_from_message(request.sdr, "sdr")
        remote = None if self.config.service.vocabulary_file else _similar_terms_source(self.encoder.term_source)
        if remote is not None:  # Cortical.io: its whole retina, unless a word list is configured
            nearest = remote.similar_terms(query, _k(request.k, self.config.index.max_k))
        else:
            nearest = self.vocabulary.nearest(query, _k(request.k, self.config.index.max_k))
        return pb.SimilarTermsResponse(terms=[pb.TermMatch(term=t, overlap=o) for t, o in nearest])

    @_unary
    def GetItem(self, request: pb.GetItemRequest, context: grpc.ServicerContext) -> pb.Item:
        return _item_message(self.index.get(request.id), self.config.sdr.dimensions)

    @_unary
    def RemoveItem(self, request: pb.RemoveItemRequest, context: grpc.ServicerContext) -> pb.RemoveItemResponse:
        self.index.remove(request.id)
        return pb.RemoveItemResponse()

    @_unary
    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoResponse:
        config, encoder = self.config, self.encoder
        concepts, terms = encoder.concept_source, encoder.term_source
        return pb.InfoResponse(
            server_version=SERVER_VERSION,
            geometry=pb.Sdr(size=config.sdr.size, dimensions=list(config.sdr.dimensions)),
            sparsity=config.sdr.sparsity,
            active_bits=config.sdr.active_bits,
            concepts=pb.Provider(name=concepts.name, model=concepts.model, version=concepts.version),
            terms=pb.Provider(name=terms.name, model=terms.model, version=terms.version),
            index_kind=config.index.kind,
            index_size=self.index.count(),
            limits=pb.Limits(
                max_message_bytes=config.service.max_message_bytes,
                max_image_bytes=config.image.max_bytes,
                max_pixels=config.image.max_pixels,
                min_image_side=config.image.min_side,
                max_k=self.config.index.max_k,
                stream_in_flight=config.service.stream_in_flight,
            ),
            vocabulary_size=len(self.vocabulary),
        )

    # -- helpers --------------------------------------------------------------

    def _encode_batch(self, requests: Sequence[pb.EncodeRequest | Malformed]) -> list[pb.EncodeResponse]:
        """EncodeStream's unit of work: one batch, each item answered on its own, in order.

        Whatever goes wrong with one item (it did not parse, its options or target are
        bad, its image is damaged, the server failed on it) is that item's in-band
        error; the items around it are encoded and stored as usual.
        """
        started = time.perf_counter()
        responses: list[pb.EncodeResponse | None] = [None] * len(requests)
        groups: dict[EncodeOptions, list[tuple[int, pb.EncodeRequest]]] = {}
        for slot, request in enumerate(requests):
            if isinstance(request, Malformed):
                responses[slot] = _error_response("", InvalidInputError(request.message, field="request"))
                continue
            try:
                options = _options(request.options) if request.HasField("options") else EncodeOptions()
                self._check_target(request)
            except Image2SdrError as exc:
                responses[slot] = _error_response(request.request_id, exc)
                continue
            groups.setdefault(options, []).append((slot, request))
        for options, members in groups.items():
            answers = self._encode_group([request for _, request in members], options, started)
            for (slot, _), response in zip(members, answers, strict=True):
                responses[slot] = response
        return [r for r in responses if r is not None]

    def _encode_group(
        self, requests: Sequence[pb.EncodeRequest], options: EncodeOptions, started: float
    ) -> list[pb.EncodeResponse]:
        """Requests that share their options: one encoder batch."""
        try:
            results: list[Outcome] = list(self.encoder.encode_batch([r.image for r in requests], options))
        except Exception as exc:  # the options themselves are bad, or the batch failed as a whole
            results = [exc] * len(requests)
        encoded = [(i, r, e) for i, (r, e) in enumerate(zip(requests, results, strict=True)) if isinstance(e, Encoding)]
        try:  # the group's items go into the index in one transaction, not one commit per image
            self._store([(r, e) for _, r, e in encoded])
        except Exception as exc:  # storing failed: those items' error, the stream goes on
            for i, r, _ in encoded:
                if r.HasField("add_to_index"):
                    results[i] = exc
        return [self._answer(r, result, started) for r, result in zip(requests, results, strict=True)]

    def _answer(self, request: pb.EncodeRequest, result: Outcome, started: float) -> pb.EncodeResponse:
        if isinstance(result, Exception):
            return _error_response(request.request_id, result)
        return self._respond(request, result, started)

    def _store(self, encoded: Sequence[tuple[pb.EncodeRequest, Encoding]]) -> None:
        """Add the encodings whose requests ask for it to the index, all in one transaction."""
        items = [
            Item(
                request.add_to_index.id,
                encoding.sdr,
                tuple((c.name, c.confidence) for c in encoding.used),
                dict(request.add_to_index.metadata),
            )
            for request, encoding in encoded
            if request.HasField("add_to_index")
        ]
        if items:
            self.index.add_many(items)

    def _check_target(self, request: pb.EncodeRequest) -> None:
        if not request.HasField("add_to_index"):
            return
        target = request.add_to_index
        try:
            self.index.check_item(target.id, dict(target.metadata))
        except InvalidInputError as exc:
            exc.field = f"add_to_index.{exc.field}"
            raise

    def _respond(self, request: pb.EncodeRequest, encoding: Encoding, started: float) -> pb.EncodeResponse:
        """The answer to an encoded request (stored already, when it asked to be)."""
        timings = encoding.timings
        return pb.EncodeResponse(
            request_id=request.request_id,
            sdr=_sdr_message(encoding.sdr, self.config.sdr.dimensions),
            concepts=[_concept_message(c) for c in encoding.concepts],
            short=encoding.short,
            timings=pb.StageTimings(
                decode_ms=timings.decode_ms,
                concepts_ms=timings.concepts_ms,
                terms_ms=timings.terms_ms,
                merge_ms=timings.merge_ms,
                total_ms=(time.perf_counter() - started) * 1000,
            ),
            indexed=request.HasField("add_to_index"),
        )

    def _sdr_from_message(self, message: pb.Sdr, field: str) -> Sdr:
        size = self.config.sdr.size
        if message.size != size:
            raise InvalidInputError(f"SDR size is {message.size}, this service uses {size}", field=f"{field}.size")
        if message.dimensions and tuple(message.dimensions) != self.config.sdr.dimensions:
            raise InvalidInputError(
                f"SDR dimensions {list(message.dimensions)} differ from {list(self.config.sdr.dimensions)}",
                field=f"{field}.dimensions",
            )
        try:
            return Sdr.from_positions(message.active, size, self.config.sdr.dimensions)
        except InvalidInputError as exc:
            exc.field = f"{field}.active"
            raise


# -- protobuf <-> core ---------------------------------------------------------


def _options(message: pb.EncodeOptions) -> EncodeOptions:
    return EncodeOptions(
        max_concepts=message.max_concepts if message.HasField("max_concepts") else None,
        min_confidence=message.min_confidence if message.HasField("min_confidence") else None,
        sparsity=message.sparsity if message.HasField("sparsity") else None,
    )


def _k(k: int, max_k: int) -> int:
    if k == 0:
        return min(DEFAULT_K, max_k)
    if k > max_k:
        raise InvalidInputError(f"k must be in [1, {max_k}], got {k}", field="k")
    return k


def _sdr_message(sdr: Sdr, dimensions: Sequence[int]) -> pb.Sdr:
    # Every SDR of this service has the configured geometry; the stores (term cache,
    # index) keep only positions, so the dimensions are stamped here, not trusted.
    return pb.Sdr(size=sdr.size, dimensions=list(dimensions), active=sdr.positions.tolist())


def _concept_message(use: ConceptUse) -> pb.Concept:
    return pb.Concept(name=use.name, confidence=use.confidence, used=use.used, skip_reason=use.reason)


def _stored_concepts(concepts: Sequence[tuple[str, float]]) -> list[pb.Concept]:
    return [pb.Concept(name=name, confidence=confidence, used=True) for name, confidence in concepts]


def _match_message(match: Match) -> pb.Match:
    return pb.Match(
        id=match.id,
        overlap=match.overlap,
        concepts=_stored_concepts(match.item.concepts),
        metadata=dict(match.item.metadata),
    )


def _item_message(item: Item, dimensions: Sequence[int]) -> pb.Item:
    return pb.Item(
        id=item.id,
        sdr=_sdr_message(item.sdr, dimensions),
        concepts=_stored_concepts(item.concepts),
        metadata=dict(item.metadata),
    )


def _error_response(request_id: str, exc: BaseException) -> pb.EncodeResponse:
    return pb.EncodeResponse(request_id=request_id, error=status_for(exc))


# -- the server -------------------------------------------------------------------


@dataclass
class Server:
    """A started server and what it owns; ``stop`` shuts everything down in order."""

    grpc_server: grpc.Server
    port: int
    health: health.HealthServicer
    encoder: Encoder
    index: SdrIndex
    grace_s: float

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace_s: float | None = None) -> None:
        # Health first, so load balancers stop sending new calls; then let the
        # calls in flight finish within the grace period; then close storage.
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(self.grace_s if grace_s is None else grace_s).wait()
        self.index.close()
        self.encoder.close()

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()


def create_server(config: Config, *, encoder: Encoder | None = None, index: SdrIndex | None = None) -> Server:
    """Build, bind and start the service; ``config.service.port = 0`` picks a free port.

    If anything fails on the way, what this call opened is closed again (the index
    holds a lock on its directory), so a caller may fix the config and retry.
    """
    opened: list[Encoder | SdrIndex] = []
    try:
        if encoder is None:
            encoder = Encoder.from_config(config)
            opened.append(encoder)
        if index is None:
            index = SdrIndex(config.data_dir / "index", config.index, config.sdr.size)
            opened.append(index)
        return _start(config, encoder, index)
    except BaseException:
        for resource in reversed(opened):
            resource.close()
        raise


def _start(config: Config, encoder: Encoder, index: SdrIndex) -> Server:
    vocabulary = Vocabulary(_vocabulary_terms(config, encoder.term_source), encoder.term_source)
    service = config.service
    options = [
        ("grpc.max_receive_message_length", service.max_message_bytes),
        ("grpc.max_send_message_length", service.max_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.http2.bdp_probe", int(service.http2_bdp_probe)),
    ]
    interceptors = _interceptors(config)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=service.workers, thread_name_prefix="rpc"),
        interceptors=interceptors,
        options=options,
        maximum_concurrent_rpcs=service.workers * 4,
    )
    servicer = Image2SdrServicer(config, encoder, index, vocabulary)
    pb_grpc.add_Image2SdrServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = _bind(server, config)
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("image2sdr serving on %s:%d (%s)", service.host, port, "TLS" if service.tls.cert_file else "plaintext")
    return Server(server, port, health_servicer, encoder, index, service.shutdown_grace_s)


def _similar_terms_source(terms: TermSource) -> SimilarTermsSource | None:
    return terms if isinstance(terms, SimilarTermsSource) else None  # the term cache forwards the capability


def _vocabulary_terms(config: Config, terms: TermSource) -> list[str]:
    if config.service.vocabulary_file is not None:
        return read_terms(config.service.vocabulary_file)
    if _similar_terms_source(terms) is not None:
        return []  # SimilarTerms asks the provider; no word list to fingerprint
    return default_terms(config.models_dir)


def _interceptors(config: Config) -> list[grpc.ServerInterceptor]:
    # The token is checked first: a caller without it learns nothing, not even that its bytes were bad.
    token = os.environ.get(config.service.token_env, "")
    interceptors: list[grpc.ServerInterceptor] = [BearerTokenInterceptor(token)] if token else []
    service = pb.DESCRIPTOR.services_by_name["Image2Sdr"]
    request_types = {method.name: method.input_type.full_name for method in service.methods}
    return [*interceptors, MalformedRequestInterceptor(SERVICE_NAME, request_types)]


def _bind(server: grpc.Server, config: Config) -> int:
    service = config.service
    address = f"{service.host}:{service.port}"
    tls = service.tls
    try:
        if tls.cert_file is None or tls.key_file is None:
            port = int(server.add_insecure_port(address))
        else:
            credentials = grpc.ssl_server_credentials(
                [(_read(tls.key_file), _read(tls.cert_file))],
                root_certificates=_read(tls.client_ca_file) if tls.client_ca_file else None,
                require_client_auth=tls.client_ca_file is not None,
            )
            port = int(server.add_secure_port(address, credentials))
    except RuntimeError as exc:  # grpc >= 1.6x raises "Failed to bind" instead of returning 0
        raise ConfigError(f"cannot listen on {address}: is another process using the port?") from exc
    if port == 0:
        raise ConfigError(f"cannot listen on {address}")
    return port


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
