"""Catalog search through the real gRPC service: words, concept expressions, filters,
listings by tag, and custom concepts taught by examples (issue 13).

A real server on port 0 with the real models and a real index on disk; the photos
are scikit-image's. Every refusal is checked for its status code, the field it
names, and for leaving what is stored as it was.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from PIL import Image

from image2sdr.server.config import Config, HttpConfig, IndexConfig, ServiceConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.serve import Server, create_server
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.images import half_size, mirrored
from tests.helpers.images import sample_photo as photo
from tests.helpers.servers import start_server
from tests.helpers.status import bad_request_field

TIMEOUT = 120
LONG_VALUES = [f"{n:0100}" for n in range(1000)]  # 100 kB in all: over index.max_filter_bytes
STORED = {  # id -> (photo, metadata)
    "cat": ("chelsea", {"source": "studio", "licence": "cc0"}),
    "mug": ("coffee", {"source": "studio", "licence": "cc-by"}),
    "rocket": ("rocket", {"source": "archive", "licence": "cc0"}),
    "astronaut": ("astronaut", {"source": "archive", "licence": "cc-by"}),
    "camera": ("camera", {"source": "upload", "licence": "cc0"}),
}


def crop(data: bytes, box: tuple[float, float, float, float]) -> bytes:
    """A crop of the photo (fractions of width and height), as a new JPEG."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    left, top, right, bottom = box
    buffer = io.BytesIO()
    image.crop((int(left * width), int(top * height), int(right * width), int(bottom * height))).save(
        buffer, "JPEG", quality=90
    )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("search"), models_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[pb_grpc.Image2SdrStub]:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.Image2SdrStub(channel)
        for item_id, (name, metadata) in STORED.items():
            target = pb.AddToIndex(id=item_id, metadata={**metadata, "slot": item_id})
            request = pb.EncodeRequest(image=photo(name), add_to_index=target)
            assert stub.Encode(request, timeout=TIMEOUT).indexed
        yield stub


def resource_type(error: grpc.RpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            info = error_details_pb2.ResourceInfo()
            assert status_pb2.Status.FromString(value).details[0].Unpack(info)
            return str(info.resource_type)
    raise AssertionError("no google.rpc.Status details")


def similar(stub: pb_grpc.Image2SdrStub, **fields: object) -> pb.FindSimilarResponse:
    return stub.FindSimilar(pb.FindSimilarRequest(**fields), timeout=TIMEOUT)  # type: ignore[arg-type]


def ids(matches: object) -> list[str]:
    return [match.id for match in matches]  # type: ignore[attr-defined]


# -- words -----------------------------------------------------------------------


def test_a_text_query_is_encoded_and_searched_in_one_call_and_explained(stub: pb_grpc.Image2SdrStub) -> None:
    answer = similar(stub, text="cat", k=5)
    assert ids(answer.matches)[0] == "cat"
    info = stub.Info(pb.InfoRequest(), timeout=TIMEOUT)
    assert len(answer.query.active) == info.active_bits
    (term,) = answer.matches[0].explanation
    assert term.term == "cat" and term.overlap > 0 and not term.negated
    # The same words as an expression give the same query.
    expression = similar(stub, expression=pb.ConceptExpression(all=["cat"]), k=5)
    assert list(expression.query.active) == list(answer.query.active)


def test_an_expression_subtracts_its_negated_terms_and_explains_each_term(stub: pb_grpc.Image2SdrStub) -> None:
    answer = similar(stub, text="cat, coffee, not rocket", k=5)
    negated = stub.EncodeText(pb.EncodeTextRequest(text="rocket"), timeout=TIMEOUT).sdr
    assert not set(answer.query.active) & set(negated.active)  # SDR algebra: none of rocket's bits
    assert set(ids(answer.matches[:2])) == {"cat", "mug"}
    explanation = answer.matches[0].explanation
    assert [t.term for t in explanation if not t.negated] and explanation[-1].negated
    assert explanation[-1].term == "rocket"
    overlaps = [t.overlap for t in explanation if not t.negated]
    assert overlaps == sorted(overlaps, reverse=True)  # most shared first
    either = similar(stub, expression=pb.ConceptExpression(any=["cat", "rocket"]), k=5)
    assert set(ids(either.matches[:2])) == {"cat", "rocket"}


def test_a_word_naming_a_stored_concept_ranks_its_items_first_where_the_sdr_alone_does_not(
    stub: pb_grpc.Image2SdrStub,
) -> None:
    # The astronaut photo's concepts include "boat" (confidence ~0.014) and the cat photo's
    # "furniture" (~0.002): neither SDR is dominated by them, so by overlap alone
    # (an expression still ranks that way) another photo comes first.
    for word, owner in (("boat", "astronaut"), ("furniture", "cat")):
        assert word in {c.name for c in stub.GetItem(pb.GetItemRequest(id=owner), timeout=TIMEOUT).concepts}
        by_overlap = ids(similar(stub, expression=pb.ConceptExpression(all=[word]), k=5).matches)
        assert by_overlap[0] != owner
        answer = similar(stub, text=word, k=5)
        assert ids(answer.matches)[0] == owner
        assert sorted(ids(answer.matches)) == sorted(by_overlap)  # the same items, only ranked anew
        assert answer.matches[0].explanation[0].term == word  # still explained by its terms
    # A WordNet synonym of the stored name finds it too ("piece of furniture" is "furniture").
    assert ids(similar(stub, text="piece of furniture", k=5).matches)[0] == "cat"
    # The caller's filter and k still hold: the concept's owner is not let in past them.
    studio = pb.Filter(metadata=[pb.MetadataCondition(key="source", values=["studio", "upload"])])
    assert "astronaut" not in ids(similar(stub, text="boat", k=5, filter=studio).matches)
    assert ids(similar(stub, text="furniture", k=1).matches) == ["cat"]
    # And min_overlap: above the owner's overlap, what is left ranks as overlap alone ranks it.
    first = similar(stub, text="boat", k=5).matches[0]
    above = ids(similar(stub, text="boat", k=5, min_overlap=first.overlap + 1).matches)
    by_overlap = ids(similar(stub, expression=pb.ConceptExpression(all=["boat"]), k=5).matches)
    assert above and "astronaut" not in above and above == by_overlap[: len(above)]


def test_a_filter_already_full_leaves_a_text_query_ranked_by_overlap_not_refused(
    tmp_path: Path, models_dir: Path, shared_encoder: Encoder
) -> None:
    # One condition allowed: the caller's takes it, and the stored-concept condition a text
    # query would add must not turn a valid request into INVALID_ARGUMENT.
    config = Config(
        data_dir=tmp_path,
        models_dir=models_dir,
        index=IndexConfig(max_filter_conditions=1),
        service=ServiceConfig(port=0, shutdown_grace_s=0.5),
        http=HttpConfig(enabled=False),
    )
    server = create_server(config, encoder=shared_encoder)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.Image2SdrStub(channel)
            for item_id, name in (("astronaut", "astronaut"), ("rocket", "rocket")):
                target = pb.AddToIndex(id=item_id, metadata={"slot": item_id})
                assert stub.Encode(pb.EncodeRequest(image=photo(name), add_to_index=target), timeout=TIMEOUT).indexed
            both = pb.Filter(metadata=[pb.MetadataCondition(key="slot", values=["astronaut", "rocket"])])
            by_overlap = ids(similar(stub, expression=pb.ConceptExpression(all=["boat"]), filter=both).matches)
            assert by_overlap[0] == "rocket"  # the astronaut's stored "boat" cannot lift it here
            assert ids(similar(stub, text="boat", filter=both).matches) == by_overlap
            assert ids(similar(stub, text="boat").matches)[0] == "astronaut"  # without a filter it can
    finally:
        server.stop()


# -- filters ---------------------------------------------------------------------


def test_a_filter_gives_the_best_items_that_pass_not_the_survivors_of_the_top_k(
    stub: pb_grpc.Image2SdrStub,
) -> None:
    unfiltered = ids(similar(stub, id="cat", k=10).matches)
    last = unfiltered[-1]  # the farthest item: far outside the unfiltered top 1
    only_it = pb.Filter(metadata=[pb.MetadataCondition(key="slot", values=[last])])
    assert ids(similar(stub, id="cat", k=1, filter=only_it).matches) == [last]
    either = pb.Filter(metadata=[pb.MetadataCondition(key="source", values=["studio", "upload"])])
    assert set(ids(similar(stub, text="cat", k=10, filter=either).matches)) == {"cat", "mug", "camera"}
    both = pb.Filter(
        metadata=[
            pb.MetadataCondition(key="source", values=["archive"]),
            pb.MetadataCondition(key="licence", values=["cc0"]),
        ]
    )
    assert ids(similar(stub, text="cat", k=10, filter=both).matches) == ["rocket"]
    nothing = pb.Filter(metadata=[pb.MetadataCondition(key="source", values=["nowhere"])])
    assert not similar(stub, text="cat", filter=nothing).matches


def test_search_by_tag_lists_the_items_with_a_stored_concept_and_counts_them(stub: pb_grpc.Image2SdrStub) -> None:
    cat = stub.GetItem(pb.GetItemRequest(id="cat"), timeout=TIMEOUT)
    name, confidence = cat.concepts[0].name, cat.concepts[0].confidence
    tagged = pb.Filter(concepts=[pb.ConceptCondition(name=name, min_confidence=0.0)])
    listed = stub.ListItems(pb.ListItemsRequest(filter=tagged), timeout=TIMEOUT)
    assert "cat" in [item.id for item in listed.items]
    assert listed.total == len(listed.items)
    above = pb.Filter(concepts=[pb.ConceptCondition(name=name, min_confidence=min(1.0, confidence + 0.01))])
    assert "cat" not in [item.id for item in stub.ListItems(pb.ListItemsRequest(filter=above)).items]
    everything = stub.ListItems(pb.ListItemsRequest(), timeout=TIMEOUT)
    assert everything.total >= len(STORED)
    # A listing by metadata pages newest first, and its token is bound to its filter.
    archive = pb.Filter(metadata=[pb.MetadataCondition(key="source", values=["archive"])])
    first = stub.ListItems(pb.ListItemsRequest(page_size=1, filter=archive), timeout=TIMEOUT)
    assert [item.id for item in first.items] == ["astronaut"] and first.total == 2
    second = stub.ListItems(
        pb.ListItemsRequest(page_size=1, page_token=first.next_page_token, filter=archive), timeout=TIMEOUT
    )
    assert [item.id for item in second.items] == ["rocket"] and not second.next_page_token
    with pytest.raises(grpc.RpcError) as refused:
        stub.ListItems(pb.ListItemsRequest(page_size=1, page_token=first.next_page_token), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(refused.value) == "page_token"


# -- custom concepts -----------------------------------------------------------------


def cat_examples() -> list[bytes]:
    chelsea = photo("chelsea")
    return [chelsea, half_size(chelsea), mirrored(chelsea), crop(chelsea, (0.05, 0.0, 0.95, 0.9))]


def define_cat(stub: pb_grpc.Image2SdrStub, name: str = "our cat") -> pb.CustomConcept:
    positives = [pb.ConceptExample(image=image) for image in cat_examples()[:3]]
    positives.append(pb.ConceptExample(id="cat"))  # a stored item is an example too
    negatives = [pb.ConceptExample(image=photo(n)) for n in ("coffee", "rocket", "astronaut", "moon")]
    request = pb.DefineConceptRequest(name=name, positives=positives, negatives=negatives)
    return stub.DefineConcept(request, timeout=TIMEOUT)


def test_a_concept_taught_by_examples_is_found_in_new_images_and_searched(stub: pb_grpc.Image2SdrStub) -> None:
    concept = define_cat(stub)
    info = stub.Info(pb.InfoRequest(), timeout=TIMEOUT)
    assert concept.name == "our cat" and concept.positives == 4 and concept.negatives == 4
    assert 0 < len(concept.sdr.active) <= info.active_bits and len(concept.visual.active) > 0
    assert concept.updated_ms > 0 and 0.0 <= concept.fit.recall <= 1.0
    assert info.custom_concepts >= 1
    assert stub.GetConcept(pb.GetConceptRequest(name="our cat"), timeout=TIMEOUT) == concept
    assert "our cat" in [c.name for c in stub.ListConcepts(pb.ListConceptsRequest(), timeout=TIMEOUT).concepts]

    unseen = crop(photo("chelsea"), (0.2, 0.1, 1.0, 1.0))
    found = stub.Encode(pb.EncodeRequest(image=unseen), timeout=TIMEOUT)
    (custom,) = [c for c in found.custom_concepts if c.name == "our cat"]
    assert custom.confidence >= 0.5 and not custom.used
    other = stub.Encode(pb.EncodeRequest(image=photo("camera")), timeout=TIMEOUT)
    assert "our cat" not in [c.name for c in other.custom_concepts]

    merged = stub.Encode(
        pb.EncodeRequest(image=unseen, options=pb.EncodeOptions(merge_custom_concepts=True)), timeout=TIMEOUT
    )
    assert [c.used for c in merged.custom_concepts if c.name == "our cat"] == [True]
    assert len(merged.sdr.active) == len(found.sdr.active)
    # Merged like a concept: the SDR leans towards the concept's bits (it may already hold them all).
    concept_bits = set(concept.sdr.active)
    assert len(concept_bits & set(merged.sdr.active)) >= len(concept_bits & set(found.sdr.active))

    by_concept = similar(stub, concept="our cat", k=3)
    assert ids(by_concept.matches)[0] == "cat"
    assert list(by_concept.query.active) == list(concept.sdr.active)
    visual = similar(stub, concept="our cat", k=3, space=pb.SPACE_VISUAL)
    assert ids(visual.matches)[0] == "cat"


def test_redefining_replaces_and_removing_forgets(stub: pb_grpc.Image2SdrStub) -> None:
    first = define_cat(stub, "pet")
    again = define_cat(stub, "pet")
    assert again.updated_ms >= first.updated_ms
    names = [c.name for c in stub.ListConcepts(pb.ListConceptsRequest(), timeout=TIMEOUT).concepts]
    assert names.count("pet") == 1
    stub.RemoveConcept(pb.RemoveConceptRequest(name="pet"), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as gone:
        stub.GetConcept(pb.GetConceptRequest(name="pet"), timeout=TIMEOUT)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND and resource_type(gone.value) == "custom concept"
    with pytest.raises(grpc.RpcError) as again_gone:
        stub.RemoveConcept(pb.RemoveConceptRequest(name="pet"), timeout=TIMEOUT)
    assert again_gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_concepts_survive_a_restart(tmp_path: Path, models_dir: Path) -> None:
    server = start_server(tmp_path, models_dir)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.Image2SdrStub(channel)
            request = pb.EncodeRequest(image=photo("chelsea"), add_to_index=pb.AddToIndex(id="cat"))
            assert stub.Encode(request, timeout=TIMEOUT).indexed
            defined = define_cat(stub)
    finally:
        server.stop()
    server = start_server(tmp_path, models_dir)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.Image2SdrStub(channel)
            assert stub.GetConcept(pb.GetConceptRequest(name="our cat"), timeout=TIMEOUT) == defined
    finally:
        server.stop()


# -- bad input -----------------------------------------------------------------------


def _refused(call: object, request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call(request, timeout=TIMEOUT)  # type: ignore[operator]
    return refused.value


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"text": "   "}, "text"),
        ({"text": "cat " * 400}, "text"),
        ({"expression": pb.ConceptExpression(none=["cat"])}, "expression"),
        ({"expression": pb.ConceptExpression(all=["cat"], none=["cat"])}, "expression"),
        ({"text": "cat", "space": pb.SPACE_VISUAL}, "space"),
        # Issue 22: counted before any term or value is read (a repeated term counts each time).
        ({"expression": pb.ConceptExpression(all=["dog"] * 60_000)}, "expression"),
        ({"expression": pb.ConceptExpression(all=["cat", "do\u202eg"])}, "expression.all[1]"),
        (
            {
                "text": "cat",
                "filter": pb.Filter(
                    metadata=[
                        pb.MetadataCondition(key=f"k{k}", values=[f"unseen{v}" for v in range(1000)]) for k in range(5)
                    ]
                ),
            },
            "filter",
        ),
        (
            {
                "text": "cat",
                "filter": pb.Filter(metadata=[pb.MetadataCondition(key="k", values=LONG_VALUES)]),
            },
            "filter",
        ),
        (
            {"text": "cat", "filter": pb.Filter(concepts=[pb.ConceptCondition(name="cat\u200b", min_confidence=0.5)])},
            "filter.concepts[0].name",
        ),
        (
            {"text": "cat", "filter": pb.Filter(metadata=[pb.MetadataCondition(key="_id", values=["x"])])},
            "filter.metadata[0].key",
        ),
        (
            {"text": "cat", "filter": pb.Filter(metadata=[pb.MetadataCondition(key="k" * 300, values=["x"])])},
            "filter.metadata[0].key",
        ),
        (
            {"text": "cat", "filter": pb.Filter(metadata=[pb.MetadataCondition(key="source")])},
            "filter.metadata[0].values",
        ),
        (
            {"text": "cat", "filter": pb.Filter(concepts=[pb.ConceptCondition(name="cat", min_confidence=1.5)])},
            "filter.concepts[0].min_confidence",
        ),
    ],
)
def test_bad_queries_are_invalid_argument_naming_the_field(
    stub: pb_grpc.Image2SdrStub, request_fields: dict[str, object], field: str
) -> None:
    error = _refused(stub.FindSimilar, pb.FindSimilarRequest(**request_fields))  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert bad_request_field(error) == field
    assert len(error.details() or "") < 300  # the limit and the field, never the input echoed


@pytest.mark.parametrize(
    ("character", "request_fields", "field"),
    [
        ("\u202e", {"add_to_index": pb.AddToIndex(id="invoice\u202egpj.exe")}, "add_to_index.id"),
        ("\u200b", {"add_to_index": pb.AddToIndex(id="meta", metadata={"sou\u200brce": "x"})}, "add_to_index.metadata"),
        ("\x7f", {"add_to_index": pb.AddToIndex(id="cat\x7f")}, "add_to_index.id"),
        ("\u2028", {"add_to_index": pb.AddToIndex(id="two\u2028lines")}, "add_to_index.id"),
    ],
)
def test_a_stored_name_with_a_control_format_or_separator_character_is_refused_naming_it(
    stub: pb_grpc.Image2SdrStub, character: str, request_fields: dict[str, object], field: str
) -> None:
    """Issue 22: names a caller stores held DEL, C1 controls, bidi overrides and zero-width characters."""
    before = stub.ListItems(pb.ListItemsRequest(page_size=100), timeout=TIMEOUT).total
    request = pb.EncodeRequest(image=photo("coffee"), **request_fields)  # type: ignore[arg-type]
    error = _refused(stub.Encode, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_request_field(error) == field
    assert f"U+{ord(character):04X}" in (error.details() or "")
    assert stub.ListItems(pb.ListItemsRequest(page_size=100), timeout=TIMEOUT).total == before


def test_a_concept_name_with_a_bidi_override_is_refused_before_its_examples_are_encoded(
    stub: pb_grpc.Image2SdrStub,
) -> None:
    three = [pb.ConceptExample(image=image) for image in cat_examples()[:3]]
    for name in ("cat\u202e", "cat\x9b", "\u200bcat"):
        error = _refused(stub.DefineConcept, pb.DefineConceptRequest(name=name, positives=three))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_request_field(error) == "name"
        assert f"U+{ord(next(c for c in name if not c.isalpha())):04X}" in (error.details() or "")


def test_bad_definitions_are_refused_and_store_nothing(stub: pb_grpc.Image2SdrStub) -> None:
    before = [c.name for c in stub.ListConcepts(pb.ListConceptsRequest(), timeout=TIMEOUT).concepts]
    two = [pb.ConceptExample(image=image) for image in cat_examples()[:2]]
    error = _refused(stub.DefineConcept, pb.DefineConceptRequest(name="few", positives=two))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_request_field(error) == "positives"
    missing = [*two, pb.ConceptExample(id="no such item")]
    error = _refused(stub.DefineConcept, pb.DefineConceptRequest(name="ghost", positives=missing))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "positives[2].id" in (error.details() or "")
    three = [pb.ConceptExample(image=image) for image in cat_examples()[:3]]
    error = _refused(stub.DefineConcept, pb.DefineConceptRequest(name="", positives=three))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_request_field(error) == "name"
    broken = [*two, pb.ConceptExample(image=b"not an image")]
    error = _refused(stub.DefineConcept, pb.DefineConceptRequest(name="broken", positives=broken))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_request_field(error) == "positives[2].image"
    error = _refused(stub.FindSimilar, pb.FindSimilarRequest(concept="never defined"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and resource_type(error) == "custom concept"
    after = [c.name for c in stub.ListConcepts(pb.ListConceptsRequest(), timeout=TIMEOUT).concepts]
    assert after == before
