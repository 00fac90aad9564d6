"""The SDR similarity index: SQLite as the source of truth, FAISS to find candidates fast.

Start at ``sdr_index.SdrIndex``; ``store.py`` is where SDRs are stored,
``faiss_index.py`` ranks by exact overlap, ``snapshot.py`` saves FAISS safely.
"""

from ..errors import (  # re-exported: callers of the index meet them here
    IdTooLongError,
    IndexClosedError,
    IndexLockedError,
    InvalidIdError,
    MetadataTooLargeError,
    TooManyConceptsError,
)
from .faiss_index import Layout
from .protocol import SEMANTIC, Item, ItemIndex, Match
from .sdr_index import SdrIndex

__all__ = [
    "SEMANTIC",
    "IdTooLongError",
    "IndexClosedError",
    "IndexLockedError",
    "InvalidIdError",
    "Item",
    "ItemIndex",
    "Layout",
    "Match",
    "MetadataTooLargeError",
    "SdrIndex",
    "TooManyConceptsError",
]
