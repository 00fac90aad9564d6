"""The Python client's catalog search (issue 13): words, expressions, filters, listings by tag, custom concepts.

The plain values and their protobuf mapping are checked without a socket; the calls
go to a real server on port 0 with the real models and the scikit-image photos, so
what the client sends is what the service understands, and its refusals come back as
the typed errors, naming the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from image2sdr.client import (
    ConceptCondition,
    CustomConcept,
    Expression,
    Filter,
    Image2SdrClient,
    InvalidArgument,
    NotFound,
    StoredId,
    TermOverlap,
)
from image2sdr.client import _convert as convert
from image2sdr.server.serve import Server
from image2sdr.v1 import image2sdr_pb2 as pb
from tests.helpers.images import encode_jpeg, half_size, mirrored
from tests.helpers.servers import start_server

TIMEOUT = 120.0  # encoding a concept's examples on a busy 2-core machine
CONCEPT = "our cat"
STORED = {  # id -> (scikit-image photo, metadata)
    "cat": ("chelsea", {"source": "studio", "licence": "cc0"}),
    "mug": ("coffee", {"source": "studio", "licence": "cc-by"}),
    "rocket": ("rocket", {"source": "archive", "licence": "cc0"}),
    "astronaut": ("astronaut", {"source": "archive", "licence": "cc-by"}),
    "camera": ("camera", {"source": "upload, scanned", "licence": "cc0"}),  # a value with a comma
}


def photo(name: str) -> bytes:
    pixels = getattr(skdata, name)()
    if pixels.ndim == 2:  # grayscale photos go as RGB, like any upload
        pixels = np.stack([pixels] * 3, axis=-1)
    return encode_jpeg(pixels)


def cropped(name: str) -> bytes:
    """A crop the concept never saw: the photo's right four fifths, lower nine tenths."""
    pixels = getattr(skdata, name)()
    height, width = pixels.shape[:2]
    return encode_jpeg(np.ascontiguousarray(pixels[height // 10 :, width // 5 :]))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("client-search"), models_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Image2SdrClient]:
    with Image2SdrClient(server.address, timeout=TIMEOUT) as client:
        for item_id, (name, metadata) in STORED.items():
            assert client.encode(photo(name), add_to_index=item_id, metadata=metadata).indexed
        yield client


@pytest.fixture(scope="module")
def concept(client: Image2SdrClient, tmp_path_factory: pytest.TempPathFactory) -> CustomConcept:
    """CONCEPT from images given as bytes, as a file's path, and as a stored item."""
    chelsea = photo("chelsea")
    on_disk = tmp_path_factory.mktemp("examples") / "mirrored.jpg"
    on_disk.write_bytes(mirrored(chelsea))
    negatives = [photo(name) for name in ("coffee", "rocket", "astronaut", "moon")]
    return client.define_concept(CONCEPT, [chelsea, half_size(chelsea), on_disk, StoredId("cat")], negatives)


# -- plain values and their messages (no server) -------------------------------------------


def test_a_filter_takes_one_value_or_several_and_concepts_in_three_spellings() -> None:
    where = Filter({"source": "upload", "licence": ["cc0", "cc-by"]}, concepts=["dog", ("cat", 0.5)])
    assert where.conditions == (("source", ("upload",)), ("licence", ("cc0", "cc-by")))
    assert where.concept_conditions == (ConceptCondition("dog", 0.0), ConceptCondition("cat", 0.5))
    assert Filter(concepts=[ConceptCondition("dog", 0.25)]).concept_conditions == (ConceptCondition("dog", 0.25),)
    assert not Filter() and where
    message = convert.filter_to_pb(where)
    assert message is not None
    assert [(c.key, list(c.values)) for c in message.metadata] == [
        ("source", ["upload"]),
        ("licence", ["cc0", "cc-by"]),
    ]
    assert [(c.name, c.min_confidence) for c in message.concepts] == [("dog", 0.0), ("cat", 0.5)]
    assert convert.filter_to_pb(None) is None
    with pytest.raises(ValueError, match="'source'"):
        Filter({"source": []})
    with pytest.raises(TypeError, match="Filter"):
        convert.filter_to_pb({"source": "upload"})  # type: ignore[arg-type]


def test_an_expression_takes_a_term_or_several() -> None:
    expression = Expression(all=["beach", "dog"], any="sand", none=("person",))
    assert (expression.all, expression.any, expression.none) == (("beach", "dog"), ("sand",), ("person",))
    message = convert.expression_to_pb(expression)
    assert [list(message.all), list(message.any), list(message.none)] == [["beach", "dog"], ["sand"], ["person"]]
    with pytest.raises(TypeError):
        Expression(all=[1])  # type: ignore[list-item]


def test_new_fields_come_from_protobuf() -> None:
    match = convert.match_from_pb(
        pb.Match(id="x", explanation=[pb.TermOverlap(term="dog", overlap=7), pb.TermOverlap(term="cat", negated=True)])
    )
    assert match.explanation == (TermOverlap("dog", 7, False), TermOverlap("cat", 0, True))
    sdr = pb.Sdr(size=16, dimensions=[4, 4], active=[1, 5])
    message = pb.CustomConcept(
        name="n", sdr=sdr, threshold=0.2, scale=0.05, positives=3, fit=pb.ConceptFit(f1=0.5), updated_ms=9
    )
    defined = convert.custom_concept_from_pb(message)
    assert defined.visual is None and defined.sdr.active == (1, 5) and defined.fit.f1 == 0.5
    assert (defined.positives, defined.negatives, defined.updated_ms) == (3, 0, 9)
    assert convert.custom_concept_from_pb(pb.CustomConcept(sdr=sdr, visual=sdr)).visual is not None
    found = pb.EncodeResponse(sdr=sdr, custom_concepts=[pb.Concept(name="n", confidence=0.9, used=True)])
    assert [(c.name, c.used) for c in convert.encoding_from_pb(found).custom_concepts] == [("n", True)]
    assert convert.info_from_pb(pb.InfoResponse(custom_concepts=2)).custom_concepts == 2
    merge = convert.encode_options_message(None, None, None, None, merge_custom_concepts=True)
    assert merge is not None and merge.merge_custom_concepts and not merge.HasField("sparsity")


def test_find_similar_takes_exactly_one_of_six_queries() -> None:
    with Image2SdrClient("127.0.0.1:1") as client:
        with pytest.raises(ValueError, match="exactly one of image=, sdr=, id=, text=, expression=, concept="):
            client.find_similar(text="cat", concept=CONCEPT)
        with pytest.raises(ValueError, match="exactly one"):
            client.find_similar(where=Filter({"source": "upload"}))


# -- words and filters -------------------------------------------------------------------


def test_a_text_query_is_one_call_and_each_match_says_why(client: Image2SdrClient) -> None:
    matches = client.find_similar(text="cat", k=3)
    assert matches[0].id == "cat"
    (term,) = matches[0].explanation
    assert term.term == "cat" and term.overlap > 0 and not term.negated
    words = client.find_similar(text="cat, coffee, not rocket", k=5)
    assert {match.id for match in words[:2]} == {"cat", "mug"}
    explanation = words[0].explanation
    assert explanation[-1] == TermOverlap("rocket", explanation[-1].overlap, True)
    expression = client.find_similar(expression=Expression(all=["cat", "coffee"], none="rocket"), k=5)
    assert [m.id for m in expression] == [m.id for m in words]


def test_a_filter_narrows_the_answer_to_the_best_items_that_pass(client: Image2SdrClient) -> None:
    nearest = client.find_similar(id="cat", k=1)[0].id
    scanned = client.find_similar(id="cat", k=1, where=Filter({"source": "upload, scanned"}))
    assert nearest != "camera" and [m.id for m in scanned] == ["camera"]  # not the survivors of the top 1
    either = client.find_similar(text="cat", k=10, where=Filter({"source": ["studio", "upload, scanned"]}))
    assert {m.id for m in either} == {"cat", "mug", "camera"}
    both = client.find_similar(text="cat", k=10, where=Filter({"source": "archive", "licence": "cc0"}))
    assert [m.id for m in both] == ["rocket"]
    assert client.find_similar(text="cat", where=Filter({"source": "nowhere"})) == []


def test_listing_by_tag_and_metadata_with_the_total(client: Image2SdrClient) -> None:
    cat = client.get_item("cat")
    tag = cat.concepts[0]
    tagged = client.list_items(where=Filter(concepts=[(tag.name, 0.0)]))
    assert "cat" in [item.id for item in tagged.items] and tagged.total == len(tagged.items)
    stricter = Filter(concepts=[(tag.name, min(1.0, tag.confidence + 0.01))])
    assert "cat" not in [item.id for item in client.iter_items(where=stricter)]
    assert client.list_items(page_size=1).total == len(STORED)
    archive = Filter({"source": "archive"})
    first = client.list_items(1, where=archive)
    assert [item.id for item in first.items] == ["astronaut"] and first.total == 2 and first.next_page_token
    assert [item.id for item in client.iter_items(page_size=1, where=archive)] == ["astronaut", "rocket"]
    with pytest.raises(InvalidArgument) as refused:
        client.list_items(1, first.next_page_token)  # a token is bound to its filter
    assert refused.value.field_violations[0].field == "page_token"


# -- custom concepts ---------------------------------------------------------------------


def test_a_concept_is_defined_from_photos_read_listed_and_searched(
    client: Image2SdrClient, concept: CustomConcept
) -> None:
    assert concept.name == CONCEPT and (concept.positives, concept.negatives) == (4, 4)
    assert concept.sdr.active and concept.visual is not None and concept.updated_ms > 0
    assert 0.0 <= concept.fit.precision <= 1.0 and 0.0 <= concept.fit.f1 <= 1.0
    assert client.get_concept(CONCEPT) == concept
    # A handful of stored items: too few for a background estimate, enough to suggest labels from.
    assert concept.background is None and concept.suggestions
    stored = {item.id for item in client.list_items(100).items}
    assert {s.id for s in concept.suggestions} <= stored and all(0 <= s.confidence <= 1 for s in concept.suggestions)
    assert concept in client.list_concepts()
    assert client.info().custom_concepts == len(client.list_concepts())
    assert client.find_similar(concept=CONCEPT, k=3)[0].id == "cat"
    assert client.find_similar(concept=CONCEPT, k=3, space="visual")[0].id == "cat"
    archive_only = client.find_similar(concept=CONCEPT, k=3, where=Filter({"source": "archive"}))
    assert {m.id for m in archive_only} <= {"rocket", "astronaut"}


def test_encode_reports_custom_concepts_and_merges_them_when_asked(
    client: Image2SdrClient, concept: CustomConcept
) -> None:
    unseen = cropped("chelsea")
    plain = client.encode(unseen)
    (found,) = [c for c in plain.custom_concepts if c.name == CONCEPT]
    assert found.confidence >= 0.5 and not found.used
    assert CONCEPT not in [c.name for c in client.encode(photo("camera")).custom_concepts]
    # A concept taught by the cat and the mug ("studio shots") brings bits the cat's SDR lacks.
    chelsea, coffee = photo("chelsea"), photo("coffee")
    negatives = [photo(name) for name in ("rocket", "astronaut", "moon")]
    studio = client.define_concept("studio shots", [chelsea, half_size(chelsea), coffee, half_size(coffee)], negatives)
    try:
        merged = client.encode(unseen, merge_custom_concepts=True)
        reported = client.encode(unseen)
    finally:
        client.remove_concept("studio shots")
    assert {c.name: c.used for c in merged.custom_concepts}["studio shots"] is True
    assert {c.name: c.used for c in reported.custom_concepts}["studio shots"] is False
    assert reported.sdr == plain.sdr  # reported, not merged, by default
    # Merged like one more concept of its confidence: the SDR leans to it, though ten overlapping
    # classifier terms may outweigh it (test_encoder shows a merge that changes the bits).
    assert len(merged.sdr.active) == len(plain.sdr.active)
    assert merged.sdr.overlap(studio.sdr) >= plain.sdr.overlap(studio.sdr)


def test_a_concept_is_replaced_by_its_name_and_removed(client: Image2SdrClient) -> None:
    chelsea = photo("chelsea")
    examples = [chelsea, half_size(chelsea), mirrored(chelsea)]
    first = client.define_concept("pet", examples, [photo("rocket")])
    again = client.define_concept("pet", examples, [photo("rocket"), photo("coffee")])
    assert again.negatives == 2 and again.updated_ms >= first.updated_ms
    assert [c.name for c in client.list_concepts()].count("pet") == 1
    client.remove_concept("pet")
    assert "pet" not in [c.name for c in client.list_concepts()]
    with pytest.raises(NotFound) as gone:
        client.get_concept("pet")
    assert gone.value.resource_name == "pet"


# -- bad input: the typed error, naming the field; nothing stored changes --------------------


def test_an_unknown_concept_is_not_found(client: Image2SdrClient) -> None:
    with pytest.raises(NotFound) as missing:
        client.find_similar(concept="never defined")
    assert missing.value.resource_name == "never defined"
    with pytest.raises(NotFound):
        client.remove_concept("never defined")


@pytest.mark.parametrize(
    ("where", "field"),
    [
        (Filter({"_id": "x"}), "filter.metadata[0].key"),
        (Filter({"k" * 300: "x"}), "filter.metadata[0].key"),
        (Filter(concepts=[("cat", 1.5)]), "filter.concepts[0].min_confidence"),
    ],
)
def test_a_bad_filter_is_invalid_argument_naming_the_field(client: Image2SdrClient, where: Filter, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        client.find_similar(text="cat", where=where)
    assert refused.value.field_violations[0].field == field
    with pytest.raises(InvalidArgument) as listing:
        client.list_items(where=where)
    assert listing.value.field_violations[0].field == field


def test_bad_queries_and_definitions_name_the_field_and_store_nothing(client: Image2SdrClient) -> None:
    before = client.list_concepts()
    for query, field in (({"text": ""}, "text"), ({"expression": Expression(none="cat")}, "expression")):
        with pytest.raises(InvalidArgument) as refused:
            client.find_similar(**query)  # type: ignore[arg-type]
        assert refused.value.field_violations[0].field == field
    chelsea = photo("chelsea")
    with pytest.raises(InvalidArgument) as few:
        client.define_concept("few", [chelsea, mirrored(chelsea)])
    assert few.value.field_violations[0].field == "positives"
    with pytest.raises(NotFound) as ghost:
        client.define_concept("ghost", [chelsea, mirrored(chelsea), StoredId("no such item")])
    assert "positives[2].id" in ghost.value.message
    assert client.list_concepts() == before
    with pytest.raises(FileNotFoundError):
        client.define_concept("unread", [Path("/nonexistent/cat.jpg")] * 3)


def test_one_concept_condition_is_one_condition_not_its_letters() -> None:
    assert Filter(concepts="dog").concept_conditions == (ConceptCondition("dog"),)
    assert Filter(concepts=("dog", 0.5)).concept_conditions == (ConceptCondition("dog", 0.5),)
    assert Filter(concepts=["dog", ("cat", 0.3)]).concept_conditions == (
        ConceptCondition("dog"),
        ConceptCondition("cat", 0.3),
    )
