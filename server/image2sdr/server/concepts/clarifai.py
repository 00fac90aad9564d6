"""The Clarifai concept provider: PostModelOutputs over gRPC with the official client.

One request carries up to ``max_batch`` (128) images, each sent as the
caller's original bytes, and asks for exactly the concepts the encoder wants
(``max_concepts``, ``min_value``; Clarifai's own default is 20).  Clarifai
answers per image: under MIXED_STATUS a failed input fails only its own item,
in-band, and the rest of the batch is used.  A request that fails as a whole
(after the retries, see ``upstream``) fails every item of that request with
``UpstreamError``, so an EncodeStream keeps going and reports UNAVAILABLE
per item.

Concept names pass through as Clarifai gives them, lower-cased: multi-word
("hard hat") and negative ("no person") concepts are the encoder's to merge,
never dropped here.  The key goes into the ``authorization`` metadata of each
call and nowhere else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence

import grpc
from clarifai_grpc.channel import clarifai_channel
from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc
from clarifai_grpc.grpc.api.status import status_code_pb2

from ..config import ClarifaiConceptsConfig
from ..errors import ImageDecodeError, UpstreamError, UpstreamKeyError
from ..imaging import DecodedImage
from ..upstream import RateLimiter, Retryable, RetryPolicy, Secret, call_with_retries, read_key
from .base import Concept, ConceptResult

__all__ = ["ClarifaiConceptSource", "clarifai_channel_for"]

logger = logging.getLogger(__name__)

PROVIDER = "Clarifai"
# Clarifai reads the image itself; decoding here only validates it, so a JPEG
# is decoded at 1/8 scale when that still leaves this many pixels a side.
VALIDATION_SIDE = 64
# Clarifai's values are float32: 0.99 arrives as 0.9900000095.  Six decimals
# give back the value it meant, the same on every machine.
CONFIDENCE_DECIMALS = 6
MAX_REQUEST_BYTES = 256 * 1024 * 1024  # images per request are also capped by their total size
_MAX_RECEIVE_BYTES = 64 * 1024 * 1024  # 128 outputs x 200 concepts fit many times over

_S = status_code_pb2
# Answers in the response body that mean "try again later".
_RETRY_STATUSES = frozenset(
    {
        _S.CONN_THROTTLED,
        _S.MODEL_BUSY_PLEASE_RETRY,
        _S.RUNNER_NEEDS_RETRY,
        _S.RPC_SERVER_UNAVAILABLE,
        _S.RPC_REQUEST_TIMEOUT,
        _S.INTERNAL_UNEXPECTED_TIMEOUT,
    }
)
_KEY_STATUSES = frozenset(
    {
        _S.CONN_ACCOUNT_ISSUES,
        _S.CONN_TOKEN_INVALID,
        _S.CONN_CREDENTIALS_INVALID,
        _S.CONN_INSUFFICIENT_SCOPES,
        _S.CONN_KEY_INVALID,
        _S.CONN_KEY_NOT_FOUND,
        _S.CONN_AUTH_METHOD_DISABLED,
    }
)
# Per-input failures that are about the image itself: retrying cannot help.
_IMAGE_STATUSES = frozenset({_S.MP_IMAGE_DECODE_ERROR, _S.INPUT_INVALID_ARGUMENT, _S.INPUT_DOWNLOAD_FAILED})
_RETRY_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
_KEY_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
_OK_OUTPUT = frozenset({0, _S.SUCCESS})  # 0: no per-output status at all


def clarifai_channel_for(config: ClarifaiConceptsConfig) -> grpc.Channel:
    """A channel to ``config.endpoint``; gRPC itself honours grpc_proxy / https_proxy / no_proxy."""
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", MAX_REQUEST_BYTES + 1024 * 1024),
        ("grpc.max_receive_message_length", _MAX_RECEIVE_BYTES),
    ]
    if config.proxy:
        options.append(("grpc.http_proxy", config.proxy))
    if config.tls:
        return grpc.secure_channel(config.endpoint, grpc.ssl_channel_credentials(), options=options)
    return grpc.insecure_channel(config.endpoint, options=options)


_STUB_LOCK = threading.Lock()


def _v2_stub(channel: grpc.Channel) -> service_pb2_grpc.V2Stub:
    # V2Stub takes its response decoder from a module global that only
    # ClarifaiChannel's factories set (gRPC or JSON).  Our channel is our own
    # (proxy and timeouts), so set the gRPC decoder for the construction only.
    with _STUB_LOCK:
        saved = clarifai_channel.wrap_response_deserializer
        clarifai_channel.wrap_response_deserializer = _grpc_deserializer
        try:
            return service_pb2_grpc.V2Stub(channel)
        finally:
            clarifai_channel.wrap_response_deserializer = saved


def _grpc_deserializer(message: type) -> Callable[[bytes], object]:
    return message.FromString  # type: ignore[attr-defined, no-any-return]


class ClarifaiConceptSource:
    """``ConceptSource`` backed by a Clarifai model (default: the general image model)."""

    name = "clarifai"

    def __init__(
        self,
        config: ClarifaiConceptsConfig,
        key: Secret,
        *,
        channel: grpc.Channel | None = None,
    ) -> None:
        self._config = config
        self._channel = channel or clarifai_channel_for(config)
        self._owns_channel = channel is None
        self._stub = _v2_stub(self._channel)
        self._metadata = (("authorization", f"Key {key.reveal()}"),)
        self._key = key
        self._limiter = RateLimiter(config.rate_per_s)
        self._policy = RetryPolicy(PROVIDER, config.timeout_s, config.retry_total_s, config.backoff_s)
        self.version = config.model_version or "latest"
        self.model = f"{config.user_id}/{config.app_id}/{config.model_id}@{self.version}"

    @classmethod
    def from_config(cls, config: ClarifaiConceptsConfig) -> ClarifaiConceptSource:
        return cls(config, read_key(config.api_key_env, "concepts.clarifai.api_key_env"))

    def __repr__(self) -> str:
        return f"ClarifaiConceptSource(model={self.model!r}, endpoint={self._config.endpoint!r})"

    @property
    def input_side(self) -> int:
        return VALIDATION_SIDE

    @property
    def max_batch(self) -> int:
        return self._config.max_batch

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def concepts(self, images: Sequence[DecodedImage], max_concepts: int, min_confidence: float) -> list[ConceptResult]:
        results: list[ConceptResult] = []
        for chunk in _chunks(images, self._config.max_batch):
            try:
                response = self._predict(chunk, max_concepts, min_confidence)
            except UpstreamError as exc:
                results.extend(exc for _ in chunk)
                continue
            results.extend(self._results(response, len(chunk), max_concepts, min_confidence))
        return results

    # -- one request -------------------------------------------------------------

    def _predict(
        self, images: Sequence[DecodedImage], max_concepts: int, min_confidence: float
    ) -> service_pb2.MultiOutputResponse:
        request = service_pb2.PostModelOutputsRequest(
            user_app_id=resources_pb2.UserAppIDSet(user_id=self._config.user_id, app_id=self._config.app_id),
            model_id=self._config.model_id,
            version_id=self._config.model_version,
            inputs=[_input(slot, image) for slot, image in enumerate(images)],
            model=resources_pb2.Model(
                output_info=resources_pb2.OutputInfo(
                    output_config=resources_pb2.OutputConfig(max_concepts=max_concepts, min_value=min_confidence)
                )
            ),
        )
        return call_with_retries(lambda timeout: self._attempt(request, timeout), self._policy, self._limiter)

    def _attempt(self, request: service_pb2.PostModelOutputsRequest, timeout: float) -> service_pb2.MultiOutputResponse:
        try:
            response = self._stub.PostModelOutputs(request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._transport_error(exc) from None  # the RpcError carries the call, metadata included
        status = response.status
        if status.code in (_S.SUCCESS, _S.MIXED_STATUS):
            return response
        if status.code == _S.FAILURE and _failed_per_input(response, len(request.inputs)):
            return response  # every input failed on its own (none decodable): answered per image
        said = self._said(status)
        if status.code in _RETRY_STATUSES:
            raise Retryable(said)
        if status.code in _KEY_STATUSES:
            raise _key_refused(said)
        raise UpstreamError(f"{PROVIDER} could not run {self.model}: {said}")

    def _transport_error(self, exc: grpc.RpcError) -> Exception:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = self._key.redact((exc.details() if isinstance(exc, grpc.Call) else "") or "")
        said = f"gRPC {code.name}: {details}" if details else f"gRPC {code.name}"
        if code in _RETRY_CODES:
            return Retryable(said)
        if code in _KEY_CODES:
            return _key_refused(said)
        return UpstreamError(f"{PROVIDER} call failed ({said})")

    def _said(self, status: object) -> str:
        code = getattr(status, "code", 0)
        name = _S.StatusCode.Name(code) if code in _S.StatusCode.values() else "unknown status"
        text = self._key.redact(f"{getattr(status, 'description', '')} {getattr(status, 'details', '')}".strip())
        return f"{name} {code}: {text}" if text else f"{name} {code}"

    # -- the answer ----------------------------------------------------------------

    def _results(
        self, response: service_pb2.MultiOutputResponse, count: int, max_concepts: int, min_confidence: float
    ) -> Iterator[ConceptResult]:
        outputs = list(response.outputs)
        if len(outputs) != count:
            error = UpstreamError(f"{PROVIDER} answered {len(outputs)} outputs for {count} images")
            return iter([error] * count)
        by_id = {output.input.id: output for output in outputs if output.input.id}
        ordered = [by_id.get(f"i{slot}", outputs[slot]) for slot in range(count)]
        return (self._result(output, max_concepts, min_confidence) for output in ordered)

    def _result(self, output: resources_pb2.Output, max_concepts: int, min_confidence: float) -> ConceptResult:
        if output.status.code not in _OK_OUTPUT:
            said = self._said(output.status)
            if output.status.code in _IMAGE_STATUSES:
                return ImageDecodeError(f"{PROVIDER} could not read this image ({said})", field="image")
            return UpstreamError(f"{PROVIDER} failed on this image ({said})")
        concepts = [_concept(concept) for concept in output.data.concepts]
        concepts = [concept for concept in concepts if concept.confidence >= min_confidence]
        concepts.sort(key=lambda concept: -concept.confidence)  # stable: Clarifai's order among equals
        return concepts[:max_concepts]


def _concept(concept: resources_pb2.Concept) -> Concept:
    name = " ".join((concept.name or concept.id).split()).lower()  # "Hard  Hat" -> "hard hat"
    return Concept(name, round(float(concept.value), CONFIDENCE_DECIMALS))


def _input(slot: int, image: DecodedImage) -> resources_pb2.Input:
    data = resources_pb2.Data(image=resources_pb2.Image(base64=image.data))  # raw bytes: gRPC needs no base64
    return resources_pb2.Input(id=f"i{slot}", data=data)


def _failed_per_input(response: service_pb2.MultiOutputResponse, inputs: int) -> bool:
    outputs = response.outputs
    return len(outputs) == inputs > 0 and all(output.status.code not in _OK_OUTPUT for output in outputs)


def _key_refused(said: str) -> UpstreamKeyError:
    return UpstreamKeyError(
        f"{PROVIDER} refused the API key ({said}); check the variable named by concepts.clarifai.api_key_env"
    )


def _chunks(images: Sequence[DecodedImage], max_batch: int) -> Iterator[Sequence[DecodedImage]]:
    """Runs of at most ``max_batch`` images and at most MAX_REQUEST_BYTES (one image always fits)."""
    start, size = 0, 0
    for end, image in enumerate(images):
        if end > start and (end - start == max_batch or size + len(image.data) > MAX_REQUEST_BYTES):
            yield images[start:end]
            start, size = end, 0
        size += len(image.data)
    if start < len(images):
        yield images[start:]
