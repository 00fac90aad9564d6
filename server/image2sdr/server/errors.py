"""Errors raised by the image2sdr core (no gRPC here; the service maps them).

Image2SdrError
├── ConfigError            the configuration cannot be used
├── ModelsMissingError     `make models` has not been run (or its output is damaged)
├── InvalidInputError      the caller sent something unusable  -> INVALID_ARGUMENT
│   ├── ImageDecodeError       not an image, truncated, unsupported, zero-sized
│   ├── ImageTooSmallError     below image.min_side
│   ├── InvalidSdrError        positions out of range, unsorted, duplicated, wrong size
│   ├── InvalidTermError       an empty or over-long term
│   ├── InvalidIdError         an item id that is empty, not a string, or holds NUL
│   │   └── IdTooLongError         longer than index.max_id_length
│   ├── NoSdrInSpaceError      a stored item named as the query has no SDR in that space
│   └── NoFingerprintError     a stored item named as the query was added without an image
├── LimitExceededError     over a configured size limit        -> RESOURCE_EXHAUSTED
│   ├── ImageTooLargeError     more bytes than image.max_bytes
│   ├── PixelLimitError        more pixels than image.max_pixels (decompression bomb)
│   ├── StreamLimitError       no stream slot left, in all or for this peer
│   ├── BusyError              a long call past its share, a stream given up for a waiting caller (+ RetryInfo)
│   ├── MetadataTooLargeError  an item's metadata over index.max_metadata_bytes
│   └── TooManyConceptsError   an item with more concepts than index.max_concepts
├── IndexLockedError       another process has the index directory open  -> FAILED_PRECONDITION
├── IndexClosedError       the index was closed (the server is stopping)  -> FAILED_PRECONDITION
├── IndexMismatchError     the stored index is not what this config expects (a collection missing,
│                          fields or index kind that differ): an operator repairs it -> FAILED_PRECONDITION
├── StreamIdleError        a stream sent nothing for too long     -> DEADLINE_EXCEEDED
├── DeadlineExceededError  the caller went (deadline, cancel): long work stopped unfinished -> DEADLINE_EXCEEDED
├── StoppingError          the server stopped before accepted work was done (a map job) -> UNAVAILABLE
├── NotFoundError          an unknown id                       -> NOT_FOUND
│   ├── ConceptNotFoundError   an unknown custom concept name   -> NOT_FOUND
│   └── MapJobNotFoundError    an unknown (or long finished) map job -> NOT_FOUND
└── UpstreamError          a provider failed                   -> UNAVAILABLE (+ its Retry-After, if it sent one)
    └── UpstreamKeyError       it refused the configured key   -> FAILED_PRECONDITION (no retry can help)
"""

from __future__ import annotations

__all__ = [
    "BusyError",
    "ConceptNotFoundError",
    "ConfigError",
    "DeadlineExceededError",
    "IdTooLongError",
    "Image2SdrError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "ImageTooSmallError",
    "IndexClosedError",
    "IndexLockedError",
    "IndexMismatchError",
    "InvalidIdError",
    "InvalidInputError",
    "InvalidSdrError",
    "InvalidTermError",
    "LimitExceededError",
    "MapJobNotFoundError",
    "MetadataTooLargeError",
    "ModelsMissingError",
    "NoFingerprintError",
    "NoSdrInSpaceError",
    "NotFoundError",
    "PixelLimitError",
    "StoppingError",
    "StreamIdleError",
    "StreamLimitError",
    "TooManyConceptsError",
    "UpstreamError",
    "UpstreamKeyError",
]


class Image2SdrError(Exception):
    """Base of every error the core raises on purpose."""


class ConfigError(Image2SdrError):
    pass


class ModelsMissingError(Image2SdrError):
    pass


class InvalidInputError(Image2SdrError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field  # which request field is at fault, for BadRequest details


class ImageDecodeError(InvalidInputError):
    pass


class ImageTooSmallError(InvalidInputError):
    pass


class InvalidSdrError(InvalidInputError):
    pass


class InvalidTermError(InvalidInputError):
    pass


class InvalidIdError(InvalidInputError):
    """An empty item id, or one that is not a string."""


class IdTooLongError(InvalidIdError):
    """An id over ``max_id_length``: a malformed argument, not a quota (INVALID_ARGUMENT)."""


class LimitExceededError(Image2SdrError):
    def __init__(self, message: str, *, limit: int, actual: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.actual = actual


class ImageTooLargeError(LimitExceededError):
    pass


class PixelLimitError(LimitExceededError):
    pass


class StreamLimitError(LimitExceededError):
    pass


class BusyError(LimitExceededError):
    """Every slot of a kind is taken now (long calls, streams given up for a waiting caller): retry later."""

    def __init__(self, message: str, *, limit: int, actual: int, retry_after_s: float = 1.0) -> None:
        super().__init__(message, limit=limit, actual=actual)
        self.retry_after_s = retry_after_s


class MetadataTooLargeError(LimitExceededError):
    pass


class TooManyConceptsError(LimitExceededError):
    pass


class IndexLockedError(Image2SdrError):
    """Another process has this index directory open."""


class IndexClosedError(Image2SdrError):
    """The index was closed; open a new one."""


class IndexMismatchError(Image2SdrError):
    """The stored index differs from what this server expects; no retry helps, an operator must act.

    A Milvus collection missing (dropped under the index), a schema missing fields, an
    index kind or shard count other than the config's: the message names what differs
    and how to repair it.
    """


class NoSdrInSpaceError(InvalidInputError):
    """A stored item was named as the query in a space it has no SDR in (say, added by SDR alone)."""


class NoFingerprintError(InvalidInputError):
    """A stored item was named as the query for duplicates, but it was added without an image."""


class StreamIdleError(Image2SdrError):
    """The caller kept a stream open without sending; its slot is given back."""


class DeadlineExceededError(Image2SdrError):
    """The caller cancelled or its deadline passed: long work (an explanation) was stopped, nobody waits for it."""


class NotFoundError(Image2SdrError):
    resource_type = "item"  # what kind of thing was looked for (google.rpc.ResourceInfo)

    def __init__(self, message: str, *, resource: str = "") -> None:
        super().__init__(message)
        self.resource = resource  # the id that was not found


class ConceptNotFoundError(NotFoundError):
    resource_type = "custom concept"


class MapJobNotFoundError(NotFoundError):
    resource_type = "map job"


class StoppingError(Image2SdrError):
    """The server is stopping: work it had accepted ends unfinished (a map job, say); try again elsewhere."""


class UpstreamError(Image2SdrError):
    """A remote provider failed after its retries; the caller may try later."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # the provider's own word on when to come back, if it said


class UpstreamKeyError(UpstreamError):
    """A provider refused the key this server is configured with: an operator must fix it, a retry cannot."""
