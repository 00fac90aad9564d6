"""What a search asks for, as plain values: term expressions and filters (see _convert.py for the messages)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

__all__ = ["ConceptCondition", "ConceptLike", "Expression", "Filter"]


def _terms(value: str | Iterable[str], name: str) -> tuple[str, ...]:
    """A term or several as a tuple; one ``str`` is one term, not its letters."""
    terms = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(term, str) for term in terms):
        raise TypeError(f"{name}: terms are str")
    return terms


@dataclass(frozen=True)
class Expression:
    """A query as SDR algebra over term SDRs (``find_similar(expression=...)``).

    ``all``: terms that must be present (each weighs 1); ``any``: alternatives, one of
    which may be present (they share one weight); ``none``: terms whose bits are taken
    out of the query.  At least one term in ``all`` or ``any``.  A single ``str`` is one
    term: ``Expression(all=["beach", "dog"], none="person")``.
    """

    all: Sequence[str] = ()
    any: Sequence[str] = ()
    none: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in ("all", "any", "none"):
            object.__setattr__(self, name, _terms(getattr(self, name), name))


@dataclass(frozen=True)
class ConceptCondition:
    """An item's stored concepts include ``name`` (exactly as stored) with at least ``min_confidence``."""

    name: str
    min_confidence: float = 0.0  # [0, 1]


# One concept condition: a name (any confidence), (name, min_confidence), or the condition itself.
ConceptLike = str | tuple[str, float] | ConceptCondition


def _condition(value: ConceptLike) -> ConceptCondition:
    if isinstance(value, ConceptCondition):
        return value
    if isinstance(value, str):
        return ConceptCondition(value)
    name, min_confidence = value
    return ConceptCondition(name, float(min_confidence))


def _concept_list(concepts: Sequence[ConceptLike] | ConceptLike) -> tuple[ConceptLike, ...]:
    """One name, one (name, min_confidence) pair or one condition is a list of one, not its letters."""
    if isinstance(concepts, (str, ConceptCondition)):
        return (concepts,)
    if isinstance(concepts, tuple) and len(concepts) == 2 and isinstance(concepts[1], (int, float)):
        return ((str(concepts[0]), float(concepts[1])),)
    return tuple(cast("Sequence[ConceptLike]", concepts))


def _values(key: str, value: str | Iterable[str]) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else tuple(value)
    if not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"metadata {key!r}: give a str value, or a non-empty list of them")
    return values


@dataclass(frozen=True)
class Filter:
    """What an item must satisfy to be found or listed: every condition holds (AND).

    ``metadata``: key to value (``{"source": "upload"}``) or to a list of values, any of
    which will do (``{"source": ["a", "b"]}``).  ``concepts``: stored concepts the item
    must have (search by tag), each a name, ``(name, min_confidence)`` or a
    ``ConceptCondition``: ``Filter({"source": "upload"}, concepts=[("dog", 0.5)])``.
    Keys starting with "_" are the service's own (InvalidArgument).
    """

    metadata: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    concepts: Sequence[ConceptLike] | ConceptLike = ()

    def __post_init__(self) -> None:
        metadata = {key: _values(key, value) for key, value in self.metadata.items()}
        object.__setattr__(self, "metadata", metadata)
        object.__setattr__(self, "concepts", tuple(_condition(concept) for concept in _concept_list(self.concepts)))

    # The fields hold tuples and ConceptConditions once built; these views say so to the type checker.
    @property
    def conditions(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The metadata conditions as (key, values) pairs, in the order given."""
        return tuple((key, _values(key, value)) for key, value in self.metadata.items())

    @property
    def concept_conditions(self) -> tuple[ConceptCondition, ...]:
        return tuple(_condition(concept) for concept in _concept_list(self.concepts))

    def __bool__(self) -> bool:
        return bool(self.metadata or self.concepts)
