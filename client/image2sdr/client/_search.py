"""The search calls: stored items nearest to a query, stored copies of an image, terms nearest to an SDR."""

from __future__ import annotations

from image2sdr.v1 import image2sdr_pb2 as pb

from ._connection import USE_CLIENT_DEFAULT, Connection, Timeout, read_image
from ._convert import (
    duplicate_from_pb,
    expression_to_pb,
    filter_to_pb,
    match_from_pb,
    sdr_to_pb,
    space_to_pb,
    term_match_from_pb,
    thresholds_to_pb,
)
from ._query import Expression, Filter
from ._types import Duplicate, DuplicateThresholds, ImageSource, Matches, Sdr, Space, TermMatch

__all__ = ["SearchCalls"]


class SearchCalls(Connection):
    """FindSimilar, FindDuplicates and SimilarTerms as typed calls."""

    # -- search ---------------------------------------------------------------------

    def find_similar(
        self,
        *,
        image: ImageSource | None = None,
        sdr: Sdr | None = None,
        id: str | None = None,
        text: str | None = None,
        expression: Expression | None = None,
        concept: str | None = None,
        k: int = 10,
        min_overlap: int = 0,
        space: Space = "semantic",
        blend_weight: float | None = None,
        visual_sdr: Sdr | None = None,
        where: Filter | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> Matches:
        """Stored items nearest to exactly one query, by overlap.

        The query: an ``image``, an ``sdr``, a stored item's ``id`` (left out of its own
        answer), ``text`` (words: "beach, dog, not person"; "X or Y" for alternatives),
        an ``expression`` (``Expression(all=..., any=..., none=...)``) or a custom
        ``concept``'s name.  Text and expressions search the semantic space, and each
        match's ``explanation`` says how many bits it shares with each term.

        ``space``: "semantic" (what the picture shows), "visual" (how it looks; ``sdr``
        is then a visual SDR) or "blend", ranked by ``(1 - blend_weight) * semantic
        overlap + blend_weight * visual overlap`` (``blend_weight`` in [0, 1], the
        server's 0.5 when None; by SDR, ``sdr`` is the semantic and ``visual_sdr`` the
        visual one).  ``where``: only items passing the ``Filter`` (the k best of
        those, not the survivors of an unfiltered top k).  The answer is a list that
        also says how many stored items a visual or blended search skipped for having
        no visual SDR.
        """
        queries = {"image": image, "sdr": sdr, "id": id, "text": text, "expression": expression, "concept": concept}
        given = [name for name, query in queries.items() if query is not None]
        if len(given) != 1:
            raise ValueError(f"find_similar takes exactly one of {', '.join(f'{name}=' for name in queries)}")
        request = pb.FindSimilarRequest(
            k=k, min_overlap=min_overlap, space=space_to_pb(space), filter=filter_to_pb(where)
        )
        if blend_weight is not None:
            request.blend_weight = blend_weight
        if visual_sdr is not None:
            request.visual_sdr.CopyFrom(sdr_to_pb(visual_sdr))
        _set_query(request, image=image, sdr=sdr, id=id, text=text, expression=expression, concept=concept)
        response = self._call(self._stub.FindSimilar, request, timeout)
        matches = (match_from_pb(match) for match in response.matches)
        return Matches(matches, skipped_without_visual=response.skipped_without_visual)

    def find_duplicates(
        self,
        *,
        image: ImageSource | None = None,
        id: str | None = None,
        k: int = 10,
        thresholds: DuplicateThresholds | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> list[Duplicate]:
        """Stored copies of an image, or of a stored item (itself left out), strongest kind first.

        Kinds: "same_bytes" (identical file), "near_exact" (pHash within
        ``thresholds.max_phash_distance`` bits: re-encoded, resized), "transformed"
        (visual overlap at least ``thresholds.min_visual_share``: cropped, mirrored, ...).
        A threshold left None takes the server's default (``info().duplicate_thresholds``).
        Nothing is stored.  An item added without an image has no fingerprint: InvalidArgument.
        """
        if (image is None) == (id is None):
            raise ValueError("find_duplicates takes exactly one of image=, id=")
        request = pb.FindDuplicatesRequest(k=k, thresholds=thresholds_to_pb(thresholds))
        if image is not None:
            request.image = read_image(image)
        else:
            request.id = str(id)
        response = self._call(self._stub.FindDuplicates, request, timeout)
        return [duplicate_from_pb(duplicate) for duplicate in response.duplicates]

    def similar_terms(self, sdr: Sdr, *, k: int = 10, timeout: Timeout = USE_CLIENT_DEFAULT) -> list[TermMatch]:
        """The vocabulary terms whose SDRs overlap ``sdr`` most: an SDR back into words."""
        request = pb.SimilarTermsRequest(sdr=sdr_to_pb(sdr), k=k)
        response = self._call(self._stub.SimilarTerms, request, timeout)
        return [term_match_from_pb(term) for term in response.terms]


def _set_query(
    request: pb.FindSimilarRequest,
    *,
    image: ImageSource | None,
    sdr: Sdr | None,
    id: str | None,
    text: str | None,
    expression: Expression | None,
    concept: str | None,
) -> None:
    """Fills the request's ``query`` oneof with the one query given (an empty string still sets it)."""
    if image is not None:
        request.image = read_image(image)
    elif sdr is not None:
        request.sdr.CopyFrom(sdr_to_pb(sdr))
    elif expression is not None:
        request.expression.CopyFrom(expression_to_pb(expression))
    elif id is not None:
        request.id = str(id)
    elif text is not None:
        request.text = text
    elif concept is not None:
        request.concept = concept
