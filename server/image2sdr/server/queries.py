"""Where words become a query SDR: text and concept expressions, as SDR algebra over term SDRs.

A concept expression names terms that must be present (``all``), terms of which
any may be present (``any``) and terms that must not (``none``). Its query SDR
is built the way Encode merges concepts (``merge.Merger``): each ``all`` term
weighs 1, the ``any`` terms share one weight of 1 between them (so "cat or dog"
counts as much as one required term, whichever it is), and every bit of a
``none`` term is kept out (a weight no positive sum can outweigh), the places
going to the next strongest bits. The SDR has the configured number of active
bits, like any encoding, so overlaps compare with image queries.

Text is the same thing written as words: clauses separated by commas, each a
term or phrase; "not X" is a ``none`` term; "X or Y" makes alternatives.
"beach, dog, not person" needs beach and dog and excludes person.

Every match can then be explained: how many bits it shares with each term's SDR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError
from .index.validation import check_name_characters
from .merge import Merger, WeightedSdr
from .sdr import Sdr
from .terms.base import TermSource, normalize_term

__all__ = ["Expression", "Query", "QueryBuilder", "TermOverlap", "check_expression", "parse_text"]

_CLAUSES = re.compile(r"\s*,\s*")
_ALTERNATIVES = re.compile(r"\s+or\s+|\s*\|\s*", re.IGNORECASE)
_NEGATION = re.compile(r"^(?:(?:not|no)\s+|-\s*)(?P<term>\S.*)$", re.IGNORECASE)
_VETO = 1e6  # a none term's weight, negated: larger than any sum of positive weights


@dataclass(frozen=True)
class Expression:
    all: tuple[str, ...] = ()
    any: tuple[str, ...] = ()
    none: tuple[str, ...] = ()


@dataclass(frozen=True)
class TermOverlap:
    term: str
    overlap: int
    negated: bool


@dataclass(frozen=True)
class Query:
    """A query SDR and the term SDRs it was built from (for explanations)."""

    sdr: Sdr
    terms: tuple[tuple[str, Sdr, bool], ...]  # (term, its SDR, negated)
    short: bool  # the positive terms' bits (less the negated ones) were fewer than the active bits

    def explain(self, sdr: Sdr) -> list[TermOverlap]:
        """How many bits ``sdr`` shares with each term: most shared first, negated terms after."""
        overlaps = [
            TermOverlap(term, int(np.intersect1d(sdr.positions, term_sdr.positions, assume_unique=True).size), negated)
            for term, term_sdr, negated in self.terms
        ]
        return sorted(overlaps, key=lambda found: (found.negated, -found.overlap, found.term))


def parse_text(text: str, *, max_chars: int, max_terms: int, field: str = "text") -> Expression:
    """Words to an expression: comma-separated clauses; "not X" excludes X, "X or Y" are alternatives."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("text is empty: give a word or phrase", field=field)
    if len(text) > max_chars:
        raise InvalidInputError(f"text is {len(text)} characters, at most {max_chars}", field=field)
    required: list[str] = []
    alternatives: list[str] = []
    excluded: list[str] = []
    for clause in _CLAUSES.split(text.strip()):
        if not clause:
            continue
        negation = _NEGATION.match(clause)
        if negation:
            excluded.append(negation.group("term"))
            continue
        options = [option for option in _ALTERNATIVES.split(clause) if option]
        if len(options) > 1 and alternatives:
            # One group of alternatives shares one weight; two would silently become one group.
            raise InvalidInputError("only one clause of alternatives (X or Y) per query", field=field)
        (required if len(options) == 1 else alternatives).extend(options)
    return check_expression(Expression(tuple(required), tuple(alternatives), tuple(excluded)), max_terms, field)


def check_expression(expression: Expression, max_terms: int, field: str = "expression") -> Expression:
    """Terms normalised and de-duplicated; at least one positive term, at most ``max_terms`` in all.

    The terms are counted as sent, before any is read: an expression over the limit
    costs microseconds whatever it holds (a repeated term counts each time it is given).
    """
    groups = {"all": expression.all, "any": expression.any, "none": expression.none}
    count = sum(len(terms) for terms in groups.values())
    if count > max_terms:
        raise InvalidInputError(
            f"the query has {count} terms, at most {max_terms} (service.max_query_terms)", field=field
        )
    normal: dict[str, list[str]] = {}
    for name, terms in groups.items():
        found: dict[str, None] = {}  # insertion-ordered: de-duplication in one pass
        for number, term in enumerate(terms):
            where = f"{field}.{name}[{number}]" if field == "expression" else field
            found.setdefault(check_name_characters(normalize_term(term, field=where), where))
        normal[name] = list(found)
    if not normal["all"] and not normal["any"]:
        raise InvalidInputError("the query needs at least one term that is not negated", field=field)
    clash = set(normal["none"]) & (set(normal["all"]) | set(normal["any"]))
    if clash:
        raise InvalidInputError(f"{sorted(clash)[0]!r} is both wanted and negated", field=field)
    return Expression(tuple(normal["all"]), tuple(normal["any"]), tuple(normal["none"]))


class QueryBuilder:
    """Expressions to query SDRs with one term provider and the encoder's merge."""

    def __init__(self, terms: TermSource, merger: Merger) -> None:
        self.terms = terms
        self.merger = merger

    def build(self, expression: Expression, active_bits: int, *, field: str = "expression") -> Query:
        wanted = [*expression.all, *expression.any, *expression.none]
        found = dict(zip(wanted, self.terms.term_sdrs(wanted), strict=True))
        unknown = [term for term in wanted if found[term] is None or found[term].active == 0]  # type: ignore[union-attr]
        if unknown:
            raise InvalidInputError(f"the {self.terms.name} term provider does not know {unknown[0]!r}", field=field)
        sdrs = {term: sdr for term, sdr in found.items() if sdr is not None}
        weighted = [WeightedSdr(sdrs[term], 1.0) for term in expression.all]
        weighted += [WeightedSdr(sdrs[term], 1.0 / len(expression.any)) for term in expression.any]
        weighted += [WeightedSdr(sdrs[term], -_VETO) for term in expression.none]
        merged = self.merger.merge(weighted, active_bits)
        if not merged.sdr.active:
            raise InvalidInputError(
                "the negated terms hold every bit of the wanted ones: nothing to search", field=field
            )
        terms = tuple((term, sdrs[term], term in expression.none) for term in wanted)
        return Query(merged.sdr, terms, merged.short)
