"""The use cases: what each call of the service does, with no transport in sight.

    service.py        UseCases: one method per call, in the core's own types
    encode.py         encode an image, store it when asked (one call, or a stream's batch)
    search.py         FindSimilar by image, SDR, id, words or custom concept; one space or a blend
    duplicates.py     FindDuplicates: stored copies of an image or an item
    items.py          get, remove, exist, list
    custom_concepts.py  define (from images or stored items), get, list, remove
    maps.py           CreateMap, GetMap (jobs)
    explanations.py   Explain: occlusion heatmaps
    terms.py          EncodeText, SimilarTerms
    info.py           Info
    health.py         serving or not, and why (the edges mirror it)
    context.py        CallContext: the time left and whether the caller has gone, filled by each edge
    parts.py          the core every use case works with, and rules several share (k, thresholds)

The edges (``grpc_api``, ``http_api``) convert their messages (``messages``) and call
``UseCases``; nothing here imports grpc, protobuf or fastapi (tests/test_layout.py checks).
"""

from .context import NO_DEADLINE, CallContext, Deadline, caller_gone, working_for
from .health import Health, HealthState, IndexWatch
from .service import UseCases

__all__ = [
    "NO_DEADLINE",
    "CallContext",
    "Deadline",
    "Health",
    "HealthState",
    "IndexWatch",
    "UseCases",
    "caller_gone",
    "working_for",
]
