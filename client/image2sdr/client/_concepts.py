"""The custom-concept calls: define one by examples, read, list and remove them."""

from __future__ import annotations

from collections.abc import Iterable

from image2sdr.v1 import image2sdr_pb2 as pb

from ._connection import USE_CLIENT_DEFAULT, Connection, Timeout, read_image
from ._convert import custom_concept_from_pb
from ._types import ConceptExample, CustomConcept, StoredId

__all__ = ["ConceptCalls"]


class ConceptCalls(Connection):
    """DefineConcept, GetConcept, ListConcepts and RemoveConcept as typed calls."""

    # -- custom concepts -----------------------------------------------------------

    def define_concept(
        self,
        name: str,
        positives: Iterable[ConceptExample],
        negatives: Iterable[ConceptExample] = (),
        *,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> CustomConcept:
        """Teach a concept by examples, no training run; redefining ``name`` replaces it.

        Each example is an image (bytes, or a file's path) or a stored item,
        ``StoredId("photos/cat.jpg")``.  ``positives`` show the concept (at least 3);
        ``negatives`` do not (more make it sharper).  Once defined, ``encode`` reports
        it in the images that show it (``Encoding.custom_concepts``) and
        ``find_similar(concept=name)`` searches by it.  An unknown example id is
        NotFound; too few positives, InvalidArgument (field ``positives``).
        """
        request = pb.DefineConceptRequest(
            name=name,
            positives=[_example(example) for example in positives],
            negatives=[_example(example) for example in negatives],
        )
        return custom_concept_from_pb(self._call(self._stub.DefineConcept, request, timeout))

    def get_concept(self, name: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> CustomConcept:
        """A custom concept by name (NotFound when none is defined under it)."""
        return custom_concept_from_pb(self._call(self._stub.GetConcept, pb.GetConceptRequest(name=name), timeout))

    def list_concepts(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> list[CustomConcept]:
        """Every custom concept, by name."""
        response = self._call(self._stub.ListConcepts, pb.ListConceptsRequest(), timeout)
        return [custom_concept_from_pb(concept) for concept in response.concepts]

    def remove_concept(self, name: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> None:
        """Forget a custom concept (NotFound when none is defined under ``name``)."""
        self._call(self._stub.RemoveConcept, pb.RemoveConceptRequest(name=name), timeout)


def _example(example: ConceptExample) -> pb.ConceptExample:
    """A custom concept's example: a ``StoredId`` by its id, anything else an image to read."""
    if isinstance(example, StoredId):
        return pb.ConceptExample(id=example.id)
    return pb.ConceptExample(image=read_image(example))
