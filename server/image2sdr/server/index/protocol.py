"""Kept so that ``from image2sdr.server.index.protocol import ...`` goes on working.

The values live in ``values.py`` and ``ItemIndex`` in ``item_index.py``; new code
imports them from ``image2sdr.server.index``.
"""

from .item_index import ItemIndex
from .values import (
    SEMANTIC,
    VISUAL,
    AddOutcome,
    ConceptCondition,
    Duplicate,
    DuplicateKind,
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
    "DuplicateThresholds",
    "Filter",
    "Item",
    "ItemIndex",
    "ItemPage",
    "Match",
    "OnDuplicate",
    "StoredConcept",
]
