"""The SDR similarity index: ``ItemIndex`` (every rule) over an engine (storage and search).

Start at ``item_index.ItemIndex`` (what the service calls) and ``engine.Engine``
(what an engine implements). The rules ``ItemIndex`` applies are in
``validation.py`` (items, searches), ``filters.py``, ``duplicates.py`` and
``paging.py``; the values passed in and out in ``values.py``. The engines live in
``faiss/`` (SQLite stores the items, FAISS searches them) and ``milvus/`` (Milvus
does both). ``open_index(config)`` opens the one the config names (``opening.py``).
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
from .faiss.backend import Layout
from .item_index import ItemIndex
from .opening import MilvusIndex, SdrIndex, open_index
from .values import (
    SEMANTIC,
    VISUAL,
    AddOutcome,
    ConceptCondition,
    Duplicate,
    DuplicateKind,
    DuplicateStage,
    DuplicateThresholds,
    Filter,
    Item,
    ItemPage,
    Match,
    OnDuplicate,
    StoredConcept,
)

__all__ = [
    "SEMANTIC",
    "VISUAL",
    "AddOutcome",
    "ConceptCondition",
    "Duplicate",
    "DuplicateKind",
    "DuplicateStage",
    "DuplicateThresholds",
    "Filter",
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
    "StoredConcept",
    "TooManyConceptsError",
    "open_index",
]
