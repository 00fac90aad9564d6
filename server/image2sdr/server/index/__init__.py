"""The SDR similarity index: SQLite as the source of truth, FAISS to find candidates fast.

Start at ``protocol.ItemIndex`` (what the service needs) and ``sdr_index.SdrIndex``
(the implementation). ``store.py`` is where items and their SDRs are stored;
``backend.py`` is the seam to the FAISS structures, ``flat.py`` (exact) and
``ivf.py`` (approximate); ``live.py`` turns Hamming distances into exact
overlaps; ``snapshot.py`` saves a backend safely. ``milvus.MilvusIndex`` is the
other engine: Milvus both stores and searches (``index.backend: milvus``).
``checks.py`` holds the rules both engines apply to items, searches and copies.
"""

from ..errors import (  # re-exported: callers of the index meet them here
    IdTooLongError,
    IndexClosedError,
    IndexLockedError,
    InvalidIdError,
    MetadataTooLargeError,
    NoFingerprintError,
    NoSdrInSpaceError,
    TooManyConceptsError,
)
from .backend import Layout
from .milvus import MilvusIndex
from .protocol import (
    SEMANTIC,
    VISUAL,
    AddOutcome,
    Duplicate,
    DuplicateKind,
    DuplicateThresholds,
    Item,
    ItemIndex,
    ItemPage,
    Match,
    OnDuplicate,
)
from .sdr_index import SdrIndex

__all__ = [
    "SEMANTIC",
    "VISUAL",
    "AddOutcome",
    "Duplicate",
    "DuplicateKind",
    "DuplicateThresholds",
    "IdTooLongError",
    "IndexClosedError",
    "IndexLockedError",
    "InvalidIdError",
    "Item",
    "ItemIndex",
    "ItemPage",
    "Layout",
    "Match",
    "MetadataTooLargeError",
    "MilvusIndex",
    "NoFingerprintError",
    "NoSdrInSpaceError",
    "OnDuplicate",
    "SdrIndex",
    "TooManyConceptsError",
]
