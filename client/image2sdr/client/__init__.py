"""Typed Python client for the image2sdr gRPC service (contract: protos/image2sdr/v1/image2sdr.proto).

Example::

    from image2sdr.client import Image2SdrClient

    with Image2SdrClient("localhost:50051") as client:
        encoding = client.encode("cat.jpg")
        print(encoding.sdr.active, [c.name for c in encoding.concepts if c.used])
"""

from ._client import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TIMEOUT_S,
    MAX_IDS_PER_CALL,
    USE_CLIENT_DEFAULT,
    Image2SdrClient,
    UseClientDefault,
    read_image,
)
from ._exceptions import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Image2SdrError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuotaViolation,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from ._types import (
    Concept,
    Duplicate,
    DuplicateKind,
    DuplicateThresholds,
    EncodeItem,
    Encoding,
    Fingerprint,
    ImageSource,
    Info,
    Item,
    ItemError,
    Limits,
    Match,
    Matches,
    OnDuplicate,
    Provider,
    Sdr,
    Space,
    StageTimings,
    TermMatch,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TIMEOUT_S",
    "MAX_IDS_PER_CALL",
    "USE_CLIENT_DEFAULT",
    "AlreadyExists",
    "Cancelled",
    "Concept",
    "DeadlineExceeded",
    "Duplicate",
    "DuplicateKind",
    "DuplicateThresholds",
    "EncodeItem",
    "Encoding",
    "FailedPrecondition",
    "FieldViolation",
    "Fingerprint",
    "Image2SdrClient",
    "Image2SdrError",
    "ImageSource",
    "Info",
    "Internal",
    "InvalidArgument",
    "Item",
    "ItemError",
    "Limits",
    "Match",
    "Matches",
    "NotFound",
    "OnDuplicate",
    "PermissionDenied",
    "Provider",
    "QuotaViolation",
    "ResourceExhausted",
    "Sdr",
    "Space",
    "StageTimings",
    "TermMatch",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UseClientDefault",
    "read_image",
]
