"""Words and concept expressions to query SDRs (queries.py), with the real term model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from image2sdr.server.config import LocalTermsConfig, SdrConfig
from image2sdr.server.errors import InvalidInputError
from image2sdr.server.merge import Merger
from image2sdr.server.queries import Expression, QueryBuilder, check_expression, parse_text
from image2sdr.server.terms.local import LocalTermSource

SDR = SdrConfig()


@pytest.fixture(scope="module")
def builder(models_dir: Path) -> QueryBuilder:
    terms = LocalTermSource(models_dir, LocalTermsConfig(threads=1), SDR)
    return QueryBuilder(terms, Merger(SDR.size, SDR.dimensions, SDR.tie_break_seed, SDR.normalization))


def parse(text: str) -> Expression:
    return parse_text(text, max_chars=200, max_terms=8)


def test_text_clauses_become_required_alternative_and_negated_terms() -> None:
    assert parse("beach, dog, not person") == Expression(("beach", "dog"), (), ("person",))
    assert parse("Cat or DOG, north") == Expression(("north",), ("cat", "dog"), ())
    assert parse("red car | blue car, no people, - snow") == Expression((), ("red car", "blue car"), ("people", "snow"))
    assert parse("  coffee   mug ,, ") == Expression(("coffee mug",), (), ())  # normalised, empty clauses dropped


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("not cat", "not negated"),
        ("x" * 201, "at most 200"),
        (", ".join(f"term{n}" for n in range(9)), "at most 8"),
        ("cat, not cat", "both wanted and negated"),
    ],
)
def test_bad_text_is_refused_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as refused:
        parse(text)
    assert refused.value.field == "text"


def test_expression_terms_are_named_by_their_place() -> None:
    with pytest.raises(InvalidInputError) as refused:
        check_expression(Expression(("cat", " "), (), ()), 8)
    assert refused.value.field == "expression.all[1]"


def test_terms_are_counted_as_sent_before_any_is_read() -> None:
    """Issue 22: terms were read and de-duplicated one by one before the limit was checked (32,000
    cost 4.7 s of CPU), and a term repeated 60,000 times counted once."""
    with pytest.raises(InvalidInputError, match=r"60000 terms, at most 32 \(service.max_query_terms\)") as refused:
        check_expression(Expression(("dog",) * 60_000), 32)
    assert refused.value.field == "expression" and len(str(refused.value)) < 100
    with pytest.raises(InvalidInputError, match="33 terms") as refused:  # the bad last term is never read
        check_expression(Expression((*(f"t{n}" for n in range(32)), "")), 32)
    assert refused.value.field == "expression"
    assert check_expression(Expression(("Dog", "dog ", "cat"), ("Cat",)), 4) == Expression(("dog", "cat"), ("cat",))


@pytest.mark.parametrize("character", ["\u202e", "\u200b", "\x7f", "\x9b", "\ufeff"])
def test_a_term_with_a_control_or_format_character_is_refused_naming_its_code_point(character: str) -> None:
    with pytest.raises(InvalidInputError, match=f"U\\+{ord(character):04X}") as refused:
        check_expression(Expression(("cat", f"do{character}g")), 8)
    assert refused.value.field == "expression.all[1]"
    assert check_expression(Expression(("coffee\tmug\u2028",)), 8) == Expression(("coffee mug",))  # whitespace


def test_negated_terms_keep_every_one_of_their_bits_out(builder: QueryBuilder) -> None:
    query = builder.build(Expression(("cat", "kitten"), (), ("dog",)), SDR.active_bits)
    dog = builder.terms.term_sdrs(["dog"])[0]
    assert dog is not None
    assert not np.intersect1d(query.sdr.positions, dog.positions).size
    assert query.sdr.active == SDR.active_bits  # the places go to the next strongest bits
    plain = builder.build(Expression(("cat", "kitten")), SDR.active_bits)
    assert np.intersect1d(plain.sdr.positions, dog.positions).size > 0  # cat and dog do share bits


def test_alternatives_share_one_weight_and_explanations_rank_terms(builder: QueryBuilder) -> None:
    query = builder.build(Expression(("beach",), ("dog", "cat"), ()), SDR.active_bits)
    beach, dog, cat = builder.terms.term_sdrs(["beach", "dog", "cat"])
    assert beach is not None and dog is not None and cat is not None
    shared = {
        name: int(np.intersect1d(query.sdr.positions, sdr.positions).size)
        for name, sdr in (("beach", beach), ("dog", dog), ("cat", cat))
    }
    assert shared["beach"] > shared["dog"] and shared["beach"] > shared["cat"]  # required outweighs each option
    explained = query.explain(beach)
    assert explained[0].term == "beach" and explained[0].overlap == beach.active
    assert [found.overlap for found in explained] == sorted((found.overlap for found in explained), reverse=True)
