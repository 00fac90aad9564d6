from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OnDuplicate(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ON_DUPLICATE_UNSPECIFIED: _ClassVar[OnDuplicate]
    ON_DUPLICATE_KEEP: _ClassVar[OnDuplicate]
    ON_DUPLICATE_SKIP: _ClassVar[OnDuplicate]
    ON_DUPLICATE_REPLACE: _ClassVar[OnDuplicate]

class Space(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPACE_UNSPECIFIED: _ClassVar[Space]
    SPACE_SEMANTIC: _ClassVar[Space]
    SPACE_VISUAL: _ClassVar[Space]
    SPACE_BLEND: _ClassVar[Space]

class DuplicateKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DUPLICATE_KIND_UNSPECIFIED: _ClassVar[DuplicateKind]
    DUPLICATE_KIND_SAME_BYTES: _ClassVar[DuplicateKind]
    DUPLICATE_KIND_NEAR_EXACT: _ClassVar[DuplicateKind]
    DUPLICATE_KIND_TRANSFORMED: _ClassVar[DuplicateKind]

class DuplicateStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DUPLICATE_STAGE_UNSPECIFIED: _ClassVar[DuplicateStage]
    DUPLICATE_STAGE_FILE_HASH: _ClassVar[DuplicateStage]
    DUPLICATE_STAGE_PHASH: _ClassVar[DuplicateStage]
    DUPLICATE_STAGE_VISUAL: _ClassVar[DuplicateStage]
    DUPLICATE_STAGE_KEYPOINTS: _ClassVar[DuplicateStage]

class MapState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MAP_STATE_UNSPECIFIED: _ClassVar[MapState]
    MAP_STATE_QUEUED: _ClassVar[MapState]
    MAP_STATE_RUNNING: _ClassVar[MapState]
    MAP_STATE_DONE: _ClassVar[MapState]
    MAP_STATE_FAILED: _ClassVar[MapState]
ON_DUPLICATE_UNSPECIFIED: OnDuplicate
ON_DUPLICATE_KEEP: OnDuplicate
ON_DUPLICATE_SKIP: OnDuplicate
ON_DUPLICATE_REPLACE: OnDuplicate
SPACE_UNSPECIFIED: Space
SPACE_SEMANTIC: Space
SPACE_VISUAL: Space
SPACE_BLEND: Space
DUPLICATE_KIND_UNSPECIFIED: DuplicateKind
DUPLICATE_KIND_SAME_BYTES: DuplicateKind
DUPLICATE_KIND_NEAR_EXACT: DuplicateKind
DUPLICATE_KIND_TRANSFORMED: DuplicateKind
DUPLICATE_STAGE_UNSPECIFIED: DuplicateStage
DUPLICATE_STAGE_FILE_HASH: DuplicateStage
DUPLICATE_STAGE_PHASH: DuplicateStage
DUPLICATE_STAGE_VISUAL: DuplicateStage
DUPLICATE_STAGE_KEYPOINTS: DuplicateStage
MAP_STATE_UNSPECIFIED: MapState
MAP_STATE_QUEUED: MapState
MAP_STATE_RUNNING: MapState
MAP_STATE_DONE: MapState
MAP_STATE_FAILED: MapState

class Sdr(_message.Message):
    __slots__ = ("size", "dimensions", "active")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    size: int
    dimensions: _containers.RepeatedScalarFieldContainer[int]
    active: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, size: _Optional[int] = ..., dimensions: _Optional[_Iterable[int]] = ..., active: _Optional[_Iterable[int]] = ...) -> None: ...

class Fingerprint(_message.Message):
    __slots__ = ("sha256", "phash")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PHASH_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    phash: int
    def __init__(self, sha256: _Optional[str] = ..., phash: _Optional[int] = ...) -> None: ...

class EncodeOptions(_message.Message):
    __slots__ = ("max_concepts", "min_confidence", "sparsity", "visual_share", "merge_custom_concepts")
    MAX_CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SPARSITY_FIELD_NUMBER: _ClassVar[int]
    VISUAL_SHARE_FIELD_NUMBER: _ClassVar[int]
    MERGE_CUSTOM_CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    max_concepts: int
    min_confidence: float
    sparsity: float
    visual_share: float
    merge_custom_concepts: bool
    def __init__(self, max_concepts: _Optional[int] = ..., min_confidence: _Optional[float] = ..., sparsity: _Optional[float] = ..., visual_share: _Optional[float] = ..., merge_custom_concepts: _Optional[bool] = ...) -> None: ...

class DuplicateThresholds(_message.Message):
    __slots__ = ("max_phash_distance", "min_visual_share")
    MAX_PHASH_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    MIN_VISUAL_SHARE_FIELD_NUMBER: _ClassVar[int]
    max_phash_distance: int
    min_visual_share: float
    def __init__(self, max_phash_distance: _Optional[int] = ..., min_visual_share: _Optional[float] = ...) -> None: ...

class AddToIndex(_message.Message):
    __slots__ = ("id", "metadata", "on_duplicate", "duplicate_thresholds")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ON_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    metadata: _containers.ScalarMap[str, str]
    on_duplicate: OnDuplicate
    duplicate_thresholds: DuplicateThresholds
    def __init__(self, id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., on_duplicate: _Optional[_Union[OnDuplicate, str]] = ..., duplicate_thresholds: _Optional[_Union[DuplicateThresholds, _Mapping]] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("image", "options", "request_id", "add_to_index")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ADD_TO_INDEX_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    options: EncodeOptions
    request_id: str
    add_to_index: AddToIndex
    def __init__(self, image: _Optional[bytes] = ..., options: _Optional[_Union[EncodeOptions, _Mapping]] = ..., request_id: _Optional[str] = ..., add_to_index: _Optional[_Union[AddToIndex, _Mapping]] = ...) -> None: ...

class Concept(_message.Message):
    __slots__ = ("name", "confidence", "used", "skip_reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    confidence: float
    used: bool
    skip_reason: str
    def __init__(self, name: _Optional[str] = ..., confidence: _Optional[float] = ..., used: _Optional[bool] = ..., skip_reason: _Optional[str] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("decode_ms", "concepts_ms", "terms_ms", "merge_ms", "total_ms", "appearance_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    CONCEPTS_MS_FIELD_NUMBER: _ClassVar[int]
    TERMS_MS_FIELD_NUMBER: _ClassVar[int]
    MERGE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    APPEARANCE_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    concepts_ms: float
    terms_ms: float
    merge_ms: float
    total_ms: float
    appearance_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., concepts_ms: _Optional[float] = ..., terms_ms: _Optional[float] = ..., merge_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., appearance_ms: _Optional[float] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("request_id", "sdr", "concepts", "short", "timings", "indexed", "error", "visual", "fingerprint", "duplicate", "replaced", "custom_concepts")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SDR_FIELD_NUMBER: _ClassVar[int]
    CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    SHORT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    VISUAL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    sdr: Sdr
    concepts: _containers.RepeatedCompositeFieldContainer[Concept]
    short: bool
    timings: StageTimings
    indexed: bool
    error: _status_pb2.Status
    visual: Sdr
    fingerprint: Fingerprint
    duplicate: Duplicate
    replaced: _containers.RepeatedScalarFieldContainer[str]
    custom_concepts: _containers.RepeatedCompositeFieldContainer[Concept]
    def __init__(self, request_id: _Optional[str] = ..., sdr: _Optional[_Union[Sdr, _Mapping]] = ..., concepts: _Optional[_Iterable[_Union[Concept, _Mapping]]] = ..., short: _Optional[bool] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ..., indexed: _Optional[bool] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., visual: _Optional[_Union[Sdr, _Mapping]] = ..., fingerprint: _Optional[_Union[Fingerprint, _Mapping]] = ..., duplicate: _Optional[_Union[Duplicate, _Mapping]] = ..., replaced: _Optional[_Iterable[str]] = ..., custom_concepts: _Optional[_Iterable[_Union[Concept, _Mapping]]] = ...) -> None: ...

class EncodeTextRequest(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class EncodeTextResponse(_message.Message):
    __slots__ = ("term", "sdr")
    TERM_FIELD_NUMBER: _ClassVar[int]
    SDR_FIELD_NUMBER: _ClassVar[int]
    term: str
    sdr: Sdr
    def __init__(self, term: _Optional[str] = ..., sdr: _Optional[_Union[Sdr, _Mapping]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("metadata", "concepts")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    metadata: _containers.RepeatedCompositeFieldContainer[MetadataCondition]
    concepts: _containers.RepeatedCompositeFieldContainer[ConceptCondition]
    def __init__(self, metadata: _Optional[_Iterable[_Union[MetadataCondition, _Mapping]]] = ..., concepts: _Optional[_Iterable[_Union[ConceptCondition, _Mapping]]] = ...) -> None: ...

class MetadataCondition(_message.Message):
    __slots__ = ("key", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class ConceptCondition(_message.Message):
    __slots__ = ("name", "min_confidence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    min_confidence: float
    def __init__(self, name: _Optional[str] = ..., min_confidence: _Optional[float] = ...) -> None: ...

class ConceptExpression(_message.Message):
    __slots__ = ("all", "any", "none")
    ALL_FIELD_NUMBER: _ClassVar[int]
    ANY_FIELD_NUMBER: _ClassVar[int]
    NONE_FIELD_NUMBER: _ClassVar[int]
    all: _containers.RepeatedScalarFieldContainer[str]
    any: _containers.RepeatedScalarFieldContainer[str]
    none: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, all: _Optional[_Iterable[str]] = ..., any: _Optional[_Iterable[str]] = ..., none: _Optional[_Iterable[str]] = ...) -> None: ...

class FindSimilarRequest(_message.Message):
    __slots__ = ("image", "sdr", "id", "text", "expression", "concept", "k", "min_overlap", "options", "space", "blend_weight", "visual_sdr", "filter")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SDR_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    BLEND_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    VISUAL_SDR_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    sdr: Sdr
    id: str
    text: str
    expression: ConceptExpression
    concept: str
    k: int
    min_overlap: int
    options: EncodeOptions
    space: Space
    blend_weight: float
    visual_sdr: Sdr
    filter: Filter
    def __init__(self, image: _Optional[bytes] = ..., sdr: _Optional[_Union[Sdr, _Mapping]] = ..., id: _Optional[str] = ..., text: _Optional[str] = ..., expression: _Optional[_Union[ConceptExpression, _Mapping]] = ..., concept: _Optional[str] = ..., k: _Optional[int] = ..., min_overlap: _Optional[int] = ..., options: _Optional[_Union[EncodeOptions, _Mapping]] = ..., space: _Optional[_Union[Space, str]] = ..., blend_weight: _Optional[float] = ..., visual_sdr: _Optional[_Union[Sdr, _Mapping]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class TermOverlap(_message.Message):
    __slots__ = ("term", "overlap", "negated")
    TERM_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    NEGATED_FIELD_NUMBER: _ClassVar[int]
    term: str
    overlap: int
    negated: bool
    def __init__(self, term: _Optional[str] = ..., overlap: _Optional[int] = ..., negated: _Optional[bool] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("id", "overlap", "concepts", "metadata", "scored_by", "semantic_overlap", "visual_overlap", "score", "explanation")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SCORED_BY_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    VISUAL_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    overlap: int
    concepts: _containers.RepeatedCompositeFieldContainer[Concept]
    metadata: _containers.ScalarMap[str, str]
    scored_by: _containers.RepeatedScalarFieldContainer[Space]
    semantic_overlap: int
    visual_overlap: int
    score: float
    explanation: _containers.RepeatedCompositeFieldContainer[TermOverlap]
    def __init__(self, id: _Optional[str] = ..., overlap: _Optional[int] = ..., concepts: _Optional[_Iterable[_Union[Concept, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., scored_by: _Optional[_Iterable[_Union[Space, str]]] = ..., semantic_overlap: _Optional[int] = ..., visual_overlap: _Optional[int] = ..., score: _Optional[float] = ..., explanation: _Optional[_Iterable[_Union[TermOverlap, _Mapping]]] = ...) -> None: ...

class FindSimilarResponse(_message.Message):
    __slots__ = ("matches", "query", "visual_query", "skipped_without_visual")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    VISUAL_QUERY_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_WITHOUT_VISUAL_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    query: Sdr
    visual_query: Sdr
    skipped_without_visual: int
    def __init__(self, matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ..., query: _Optional[_Union[Sdr, _Mapping]] = ..., visual_query: _Optional[_Union[Sdr, _Mapping]] = ..., skipped_without_visual: _Optional[int] = ...) -> None: ...

class CopyTransform(_message.Message):
    __slots__ = ("rotation_degrees", "scale", "crop_left", "crop_top", "crop_right", "crop_bottom", "mirrored")
    ROTATION_DEGREES_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    CROP_LEFT_FIELD_NUMBER: _ClassVar[int]
    CROP_TOP_FIELD_NUMBER: _ClassVar[int]
    CROP_RIGHT_FIELD_NUMBER: _ClassVar[int]
    CROP_BOTTOM_FIELD_NUMBER: _ClassVar[int]
    MIRRORED_FIELD_NUMBER: _ClassVar[int]
    rotation_degrees: float
    scale: float
    crop_left: float
    crop_top: float
    crop_right: float
    crop_bottom: float
    mirrored: bool
    def __init__(self, rotation_degrees: _Optional[float] = ..., scale: _Optional[float] = ..., crop_left: _Optional[float] = ..., crop_top: _Optional[float] = ..., crop_right: _Optional[float] = ..., crop_bottom: _Optional[float] = ..., mirrored: _Optional[bool] = ...) -> None: ...

class Duplicate(_message.Message):
    __slots__ = ("id", "kind", "phash_distance", "visual_overlap", "visual_share", "concepts", "metadata", "stage", "inliers", "transform")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PHASH_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    VISUAL_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    VISUAL_SHARE_FIELD_NUMBER: _ClassVar[int]
    CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    INLIERS_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: DuplicateKind
    phash_distance: int
    visual_overlap: int
    visual_share: float
    concepts: _containers.RepeatedCompositeFieldContainer[Concept]
    metadata: _containers.ScalarMap[str, str]
    stage: DuplicateStage
    inliers: int
    transform: CopyTransform
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[DuplicateKind, str]] = ..., phash_distance: _Optional[int] = ..., visual_overlap: _Optional[int] = ..., visual_share: _Optional[float] = ..., concepts: _Optional[_Iterable[_Union[Concept, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., stage: _Optional[_Union[DuplicateStage, str]] = ..., inliers: _Optional[int] = ..., transform: _Optional[_Union[CopyTransform, _Mapping]] = ...) -> None: ...

class FindDuplicatesRequest(_message.Message):
    __slots__ = ("image", "id", "thresholds", "k")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    id: str
    thresholds: DuplicateThresholds
    k: int
    def __init__(self, image: _Optional[bytes] = ..., id: _Optional[str] = ..., thresholds: _Optional[_Union[DuplicateThresholds, _Mapping]] = ..., k: _Optional[int] = ...) -> None: ...

class FindDuplicatesResponse(_message.Message):
    __slots__ = ("duplicates", "fingerprint", "thresholds")
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    duplicates: _containers.RepeatedCompositeFieldContainer[Duplicate]
    fingerprint: Fingerprint
    thresholds: DuplicateThresholds
    def __init__(self, duplicates: _Optional[_Iterable[_Union[Duplicate, _Mapping]]] = ..., fingerprint: _Optional[_Union[Fingerprint, _Mapping]] = ..., thresholds: _Optional[_Union[DuplicateThresholds, _Mapping]] = ...) -> None: ...

class SimilarTermsRequest(_message.Message):
    __slots__ = ("sdr", "k")
    SDR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    sdr: Sdr
    k: int
    def __init__(self, sdr: _Optional[_Union[Sdr, _Mapping]] = ..., k: _Optional[int] = ...) -> None: ...

class TermMatch(_message.Message):
    __slots__ = ("term", "overlap")
    TERM_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    term: str
    overlap: int
    def __init__(self, term: _Optional[str] = ..., overlap: _Optional[int] = ...) -> None: ...

class SimilarTermsResponse(_message.Message):
    __slots__ = ("terms",)
    TERMS_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.RepeatedCompositeFieldContainer[TermMatch]
    def __init__(self, terms: _Optional[_Iterable[_Union[TermMatch, _Mapping]]] = ...) -> None: ...

class GetItemRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "sdr", "concepts", "metadata", "visual", "fingerprint", "thumbnail")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SDR_FIELD_NUMBER: _ClassVar[int]
    CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    VISUAL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    sdr: Sdr
    concepts: _containers.RepeatedCompositeFieldContainer[Concept]
    metadata: _containers.ScalarMap[str, str]
    visual: Sdr
    fingerprint: Fingerprint
    thumbnail: bytes
    def __init__(self, id: _Optional[str] = ..., sdr: _Optional[_Union[Sdr, _Mapping]] = ..., concepts: _Optional[_Iterable[_Union[Concept, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., visual: _Optional[_Union[Sdr, _Mapping]] = ..., fingerprint: _Optional[_Union[Fingerprint, _Mapping]] = ..., thumbnail: _Optional[bytes] = ...) -> None: ...

class RemoveItemRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RemoveItemResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ItemsExistRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ItemsExistResponse(_message.Message):
    __slots__ = ("exists",)
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    exists: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, exists: _Optional[_Iterable[bool]] = ...) -> None: ...

class ListItemsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: Filter
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class ListItemsResponse(_message.Message):
    __slots__ = ("items", "next_page_token", "total")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    next_page_token: str
    total: int
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class ConceptExample(_message.Message):
    __slots__ = ("image", "id")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    id: str
    def __init__(self, image: _Optional[bytes] = ..., id: _Optional[str] = ...) -> None: ...

class DefineConceptRequest(_message.Message):
    __slots__ = ("name", "positives", "negatives")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POSITIVES_FIELD_NUMBER: _ClassVar[int]
    NEGATIVES_FIELD_NUMBER: _ClassVar[int]
    name: str
    positives: _containers.RepeatedCompositeFieldContainer[ConceptExample]
    negatives: _containers.RepeatedCompositeFieldContainer[ConceptExample]
    def __init__(self, name: _Optional[str] = ..., positives: _Optional[_Iterable[_Union[ConceptExample, _Mapping]]] = ..., negatives: _Optional[_Iterable[_Union[ConceptExample, _Mapping]]] = ...) -> None: ...

class ConceptFit(_message.Message):
    __slots__ = ("precision", "recall", "f1")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    precision: float
    recall: float
    f1: float
    def __init__(self, precision: _Optional[float] = ..., recall: _Optional[float] = ..., f1: _Optional[float] = ...) -> None: ...

class ConceptBackground(_message.Message):
    __slots__ = ("items", "flagged", "precision", "recall", "prevalence")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    PREVALENCE_FIELD_NUMBER: _ClassVar[int]
    items: int
    flagged: float
    precision: float
    recall: float
    prevalence: float
    def __init__(self, items: _Optional[int] = ..., flagged: _Optional[float] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ..., prevalence: _Optional[float] = ...) -> None: ...

class ConceptSuggestion(_message.Message):
    __slots__ = ("id", "confidence")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    confidence: float
    def __init__(self, id: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class CustomConcept(_message.Message):
    __slots__ = ("name", "sdr", "visual", "threshold", "scale", "positives", "negatives", "fit", "updated_ms", "background", "suggestions", "positive_ids", "negative_ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SDR_FIELD_NUMBER: _ClassVar[int]
    VISUAL_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    POSITIVES_FIELD_NUMBER: _ClassVar[int]
    NEGATIVES_FIELD_NUMBER: _ClassVar[int]
    FIT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_IDS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    sdr: Sdr
    visual: Sdr
    threshold: float
    scale: float
    positives: int
    negatives: int
    fit: ConceptFit
    updated_ms: int
    background: ConceptBackground
    suggestions: _containers.RepeatedCompositeFieldContainer[ConceptSuggestion]
    positive_ids: _containers.RepeatedScalarFieldContainer[str]
    negative_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., sdr: _Optional[_Union[Sdr, _Mapping]] = ..., visual: _Optional[_Union[Sdr, _Mapping]] = ..., threshold: _Optional[float] = ..., scale: _Optional[float] = ..., positives: _Optional[int] = ..., negatives: _Optional[int] = ..., fit: _Optional[_Union[ConceptFit, _Mapping]] = ..., updated_ms: _Optional[int] = ..., background: _Optional[_Union[ConceptBackground, _Mapping]] = ..., suggestions: _Optional[_Iterable[_Union[ConceptSuggestion, _Mapping]]] = ..., positive_ids: _Optional[_Iterable[str]] = ..., negative_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetConceptRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListConceptsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListConceptsResponse(_message.Message):
    __slots__ = ("concepts",)
    CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    concepts: _containers.RepeatedCompositeFieldContainer[CustomConcept]
    def __init__(self, concepts: _Optional[_Iterable[_Union[CustomConcept, _Mapping]]] = ...) -> None: ...

class RemoveConceptRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveConceptResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ItemIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateMapRequest(_message.Message):
    __slots__ = ("ids", "filter", "concept", "space", "columns", "rows", "cell_pixels")
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CELL_PIXELS_FIELD_NUMBER: _ClassVar[int]
    ids: ItemIds
    filter: Filter
    concept: str
    space: Space
    columns: int
    rows: int
    cell_pixels: int
    def __init__(self, ids: _Optional[_Union[ItemIds, _Mapping]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., concept: _Optional[str] = ..., space: _Optional[_Union[Space, str]] = ..., columns: _Optional[int] = ..., rows: _Optional[int] = ..., cell_pixels: _Optional[int] = ...) -> None: ...

class MapCell(_message.Message):
    __slots__ = ("id", "column", "row", "thumbnail")
    ID_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    column: int
    row: int
    thumbnail: bool
    def __init__(self, id: _Optional[str] = ..., column: _Optional[int] = ..., row: _Optional[int] = ..., thumbnail: _Optional[bool] = ...) -> None: ...

class MapJob(_message.Message):
    __slots__ = ("id", "state", "progress", "stage", "error", "space", "columns", "rows", "items", "cells", "png", "cell_pixels", "created_ms", "elapsed_ms", "neighbourhood_kept", "skipped_without_visual")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    CELL_PIXELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURHOOD_KEPT_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_WITHOUT_VISUAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: MapState
    progress: float
    stage: str
    error: _status_pb2.Status
    space: Space
    columns: int
    rows: int
    items: int
    cells: _containers.RepeatedCompositeFieldContainer[MapCell]
    png: bytes
    cell_pixels: int
    created_ms: int
    elapsed_ms: float
    neighbourhood_kept: float
    skipped_without_visual: int
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[MapState, str]] = ..., progress: _Optional[float] = ..., stage: _Optional[str] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., space: _Optional[_Union[Space, str]] = ..., columns: _Optional[int] = ..., rows: _Optional[int] = ..., items: _Optional[int] = ..., cells: _Optional[_Iterable[_Union[MapCell, _Mapping]]] = ..., png: _Optional[bytes] = ..., cell_pixels: _Optional[int] = ..., created_ms: _Optional[int] = ..., elapsed_ms: _Optional[float] = ..., neighbourhood_kept: _Optional[float] = ..., skipped_without_visual: _Optional[int] = ...) -> None: ...

class GetMapRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("image", "concept", "custom_concept", "like", "space", "patch", "stride", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_CONCEPT_FIELD_NUMBER: _ClassVar[int]
    LIKE_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    concept: str
    custom_concept: str
    like: str
    space: Space
    patch: int
    stride: int
    options: EncodeOptions
    def __init__(self, image: _Optional[bytes] = ..., concept: _Optional[str] = ..., custom_concept: _Optional[str] = ..., like: _Optional[str] = ..., space: _Optional[_Union[Space, str]] = ..., patch: _Optional[int] = ..., stride: _Optional[int] = ..., options: _Optional[_Union[EncodeOptions, _Mapping]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("target", "score", "columns", "rows", "heat", "patch", "stride", "variants", "png", "elapsed_ms")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    HEAT_FIELD_NUMBER: _ClassVar[int]
    PATCH_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    target: str
    score: float
    columns: int
    rows: int
    heat: _containers.RepeatedScalarFieldContainer[float]
    patch: int
    stride: int
    variants: int
    png: bytes
    elapsed_ms: float
    def __init__(self, target: _Optional[str] = ..., score: _Optional[float] = ..., columns: _Optional[int] = ..., rows: _Optional[int] = ..., heat: _Optional[_Iterable[float]] = ..., patch: _Optional[int] = ..., stride: _Optional[int] = ..., variants: _Optional[int] = ..., png: _Optional[bytes] = ..., elapsed_ms: _Optional[float] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Provider(_message.Message):
    __slots__ = ("name", "model", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    version: str
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_bytes", "max_image_bytes", "max_pixels", "min_image_side", "max_k", "stream_in_flight", "max_map_items")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MIN_IMAGE_SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    STREAM_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_MAP_ITEMS_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_image_bytes: int
    max_pixels: int
    min_image_side: int
    max_k: int
    stream_in_flight: int
    max_map_items: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_pixels: _Optional[int] = ..., min_image_side: _Optional[int] = ..., max_k: _Optional[int] = ..., stream_in_flight: _Optional[int] = ..., max_map_items: _Optional[int] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("server_version", "geometry", "sparsity", "active_bits", "concepts", "terms", "index_kind", "index_size", "limits", "vocabulary_size", "visual", "visual_share", "duplicate_thresholds", "index_visual_size", "custom_concepts")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    SPARSITY_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_BITS_FIELD_NUMBER: _ClassVar[int]
    CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    INDEX_SIZE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_SIZE_FIELD_NUMBER: _ClassVar[int]
    VISUAL_FIELD_NUMBER: _ClassVar[int]
    VISUAL_SHARE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VISUAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    geometry: Sdr
    sparsity: float
    active_bits: int
    concepts: Provider
    terms: Provider
    index_kind: str
    index_size: int
    limits: Limits
    vocabulary_size: int
    visual: Provider
    visual_share: float
    duplicate_thresholds: DuplicateThresholds
    index_visual_size: int
    custom_concepts: int
    def __init__(self, server_version: _Optional[str] = ..., geometry: _Optional[_Union[Sdr, _Mapping]] = ..., sparsity: _Optional[float] = ..., active_bits: _Optional[int] = ..., concepts: _Optional[_Union[Provider, _Mapping]] = ..., terms: _Optional[_Union[Provider, _Mapping]] = ..., index_kind: _Optional[str] = ..., index_size: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., vocabulary_size: _Optional[int] = ..., visual: _Optional[_Union[Provider, _Mapping]] = ..., visual_share: _Optional[float] = ..., duplicate_thresholds: _Optional[_Union[DuplicateThresholds, _Mapping]] = ..., index_visual_size: _Optional[int] = ..., custom_concepts: _Optional[int] = ...) -> None: ...
