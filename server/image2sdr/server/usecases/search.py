"""FindSimilar: the stored items nearest a query, by each kind of query, in one space or a blend of both.

A query is an image (encoded as Encode would), an SDR, a stored item's id, words
(text or a concept expression, built into a query SDR by ``queries``), or a custom
concept's SDR.  Everything that can be refused without work is, before any image
is encoded: k, space, blend weight, filter.

Text also matches the concept names stored with each item: a word that names a
stored concept (exactly, or as a WordNet synonym: "basset hound" names "basset")
ranks the items holding it first, surest first, so a rare name finds its photo
even when the photo's SDR, dominated by broad concepts, overlaps the word's little.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..encoder import EncodeOptions
from ..errors import InvalidInputError, NoSdrInSpaceError
from ..index.filters import MAX_CONCEPT_NAME_BYTES, FilterLimits, check_filter
from ..index.values import SEMANTIC, VISUAL, ConceptCondition, Filter, Match
from ..queries import Expression, Query, TermOverlap, check_expression, parse_text
from ..sdr import Sdr
from ..vocabulary import concept_names, synonym_names
from .parts import Parts, encode_query, encoded_in, k_value

__all__ = [
    "BLEND",
    "CONFIDENCE_TIERS",
    "DEFAULT_BLEND_WEIGHT",
    "ByCustomConcept",
    "ByExpression",
    "ById",
    "ByImage",
    "BySdr",
    "ByText",
    "SimilarAnswer",
    "SimilarQuery",
    "SimilarRequest",
    "find_similar",
]

BLEND = "blend"  # FindSimilar's third space: not an index space, both of them weighted
DEFAULT_BLEND_WEIGHT = 0.5  # what an unset blend_weight means: both overlaps count alike
# A text query ranks the items whose stored concepts it names by the best such concept's
# confidence in these tiers (surest first), each tier by SDR overlap, then every other item
# by overlap.  Tiers, not the confidence itself: each is one filtered search the index
# answers exactly (a ConceptCondition's min_confidence), on FAISS and Milvus alike.
CONFIDENCE_TIERS = (0.5, 0.1, 0.0)
MAX_NAMED_CONCEPTS = 8  # concept names one text query may boost (its terms and their synonyms)


@dataclass(frozen=True)
class ByImage:
    image: bytes


@dataclass(frozen=True)
class BySdr:
    sdr: Sdr


@dataclass(frozen=True)
class ById:
    id: str


@dataclass(frozen=True)
class ByText:
    text: str


@dataclass(frozen=True)
class ByExpression:
    expression: Expression


@dataclass(frozen=True)
class ByCustomConcept:
    """A custom concept, by name."""

    name: str


SimilarQuery = ByImage | BySdr | ById | ByText | ByExpression | ByCustomConcept


@dataclass(frozen=True)
class SimilarRequest:
    query: SimilarQuery | None
    k: int = 0  # 0: the default
    min_overlap: int = 0
    space: str = SEMANTIC  # SEMANTIC, VISUAL or BLEND
    blend_weight: float | None = None  # SPACE_BLEND only; None: DEFAULT_BLEND_WEIGHT
    visual_sdr: Sdr | None = None  # with an SDR query in BLEND: its visual half
    where: Filter | None = None
    options: EncodeOptions | None = None  # for an image query (and the sparsity of a words query)
    merge_custom: bool = False


@dataclass(frozen=True)
class SimilarAnswer:
    """The matches, the SDRs searched (by space), each match's terms (words queries), and what was not searched."""

    space: str
    matches: list[Match]
    queries: dict[str, Sdr]
    explanations: list[list[TermOverlap]] = field(default_factory=list)  # per match; empty but for words
    skipped_without_visual: int = 0  # items without a visual SDR, when the visual space was searched


def find_similar(parts: Parts, request: SimilarRequest) -> SimilarAnswer:
    k = k_value(request.k, parts.config.index.max_k)
    weight = _blend_weight(request)
    if request.visual_sdr is not None and not (request.space == BLEND and isinstance(request.query, BySdr)):
        raise InvalidInputError("visual_sdr goes with sdr and SPACE_BLEND only", field="visual_sdr")
    index_config = parts.config.index
    limits = FilterLimits.of(index_config)
    chosen = check_filter(request.where, index_config.max_metadata_bytes, limits) if request.where else None
    if isinstance(request.query, (ByText, ByExpression)) and request.space != SEMANTIC:
        raise InvalidInputError("text and expression queries search SPACE_SEMANTIC", field="space")
    words_and_names = _words(parts, request)
    explanations: list[list[TermOverlap]] = []
    if words_and_names is not None:
        words, names = words_and_names
        queries = {SEMANTIC: words.sdr}
        matches = _find_named(parts, words, names, k, min_overlap=request.min_overlap, chosen=chosen)
        explanations = [words.explain(match.item.sdr) for match in matches]
    elif request.space == BLEND:
        queries, matches = _find_blended(parts, request, weight, k, chosen)
    else:
        queries, matches = _find_in(parts, request, request.space, k, chosen)
    skipped = parts.index.count() - parts.index.count(VISUAL) if VISUAL in queries else 0
    return SimilarAnswer(request.space, matches, queries, explanations, skipped)


def _blend_weight(request: SimilarRequest) -> float:
    """The visual overlap's weight in a blended search; set for any other space, it is a mistake."""
    weight = request.blend_weight
    if weight is None:
        return DEFAULT_BLEND_WEIGHT
    if request.space != BLEND:
        raise InvalidInputError("blend_weight applies to SPACE_BLEND only", field="blend_weight")
    if not 0.0 <= weight <= 1.0:  # NaN fails too
        raise InvalidInputError(f"blend_weight must be in [0, 1], got {weight:g}", field="blend_weight")
    return float(weight)


def _words(parts: Parts, request: SimilarRequest) -> tuple[Query, tuple[str, ...]] | None:
    """The query SDR of a text or expression query and the stored concept names it names (None: another kind).

    Only text names concepts: an expression is SDR algebra over terms, ranked by overlap as before.
    """
    query, service = request.query, parts.config.service
    if isinstance(query, ByText):
        parsed = parse_text(query.text, max_chars=service.max_text_chars, max_terms=service.max_query_terms)
        field_name, names = "text", _named_concepts(parts, parsed)
    elif isinstance(query, ByExpression):
        parsed = check_expression(query.expression, service.max_query_terms)
        field_name, names = "expression", ()
    else:
        return None
    sparsity = request.options.sparsity if request.options is not None else None
    geometry = parts.config.sdr
    active_bits = geometry.active_bits_for(sparsity) if sparsity is not None else geometry.active_bits
    return parts.queries.build(parsed, active_bits, field=field_name), names


def _named_concepts(parts: Parts, parsed: Expression) -> tuple[str, ...]:
    """The stored concept names a text query's wanted terms name: each term, then what it is a synonym of."""
    synonyms = synonym_names(parts.config.models_dir)
    found: dict[str, None] = {}
    for term in (*parsed.all, *parsed.any):
        for name in concept_names(term, synonyms):
            if len(name.encode("utf-8")) <= MAX_CONCEPT_NAME_BYTES:
                found.setdefault(name)
    return tuple(found)[:MAX_NAMED_CONCEPTS]


def _find_named(
    parts: Parts, words: Query, names: tuple[str, ...], k: int, *, min_overlap: int, chosen: Filter | None
) -> list[Match]:
    """The k best items by (tier of their best named concept's confidence, SDR overlap): one exact ranking.

    Each tier is a filtered search per name (the caller's filter and min_overlap
    kept); an item found in a surer tier is not shown again.  Asking each search
    for k is enough: with p items placed, at most p of its answers were, so its
    k hold the best k - p still wanted.  When the caller's filter already holds
    as many conditions as a filter may (one more would be refused), the query
    ranks by overlap alone.
    """
    query = words.sdr
    placed: dict[str, Match] = {}
    if chosen is not None and len(chosen.metadata) + len(chosen.concepts) >= parts.config.index.max_filter_conditions:
        names = ()
    base = chosen or Filter()
    for tier in CONFIDENCE_TIERS:
        if len(placed) >= k or not names:
            break
        found: dict[str, Match] = {}
        for name in names:
            where = replace(base, concepts=(*base.concepts, ConceptCondition(name, tier)))
            for match in parts.index.search(query, k, min_overlap, space=SEMANTIC, where=where):
                if match.id not in placed:
                    found.setdefault(match.id, match)
        for match in sorted(found.values(), key=lambda match: -match.overlap)[: k - len(placed)]:
            placed[match.id] = match
    if len(placed) < k:
        rest = parts.index.search(query, k, min_overlap, space=SEMANTIC, where=chosen)
        for match in rest:
            if len(placed) == k:
                break
            placed.setdefault(match.id, match)
    return list(placed.values())


def _concept_in(parts: Parts, name: str, space: str) -> Sdr:
    """A custom concept's SDR in ``space`` (FindSimilar by concept)."""
    sdr = parts.library.get(name, "concept").concept.sdrs.get(space)
    if sdr is None:
        raise InvalidInputError(
            f"custom concept {name!r} has no {space} SDR (an example had none): search SPACE_SEMANTIC",
            field="concept",
        )
    return sdr


def _find_in(
    parts: Parts, request: SimilarRequest, space: str, k: int, chosen: Filter | None
) -> tuple[dict[str, Sdr], list[Match]]:
    """A search in one space: the SDR searched (by space) and the matches."""
    query, index = request.query, parts.index
    if isinstance(query, ById):
        try:
            item, matches = index.neighbours(query.id, k, request.min_overlap, space=space, where=chosen)
        except NoSdrInSpaceError as exc:
            exc.field = "id"
            raise
        searched = item.in_space(space)
        return ({} if searched is None else {space: searched}), matches
    if isinstance(query, ByImage):
        encoding = encode_query(parts, query.image, request.options, request.merge_custom)
        searched = encoded_in(encoding, space)
    elif isinstance(query, BySdr):
        searched = query.sdr
    elif isinstance(query, ByCustomConcept):
        searched = _concept_in(parts, query.name, space)
    else:
        raise InvalidInputError("set one of image, sdr, id, text, expression or concept", field="query")
    return {space: searched}, index.search(searched, k, request.min_overlap, space=space, where=chosen)


def _find_blended(
    parts: Parts, request: SimilarRequest, weight: float, k: int, chosen: Filter | None
) -> tuple[dict[str, Sdr], list[Match]]:
    """A search over both spaces, ranked by the weighted sum of the two overlaps."""
    query, exclude = request.query, None
    if isinstance(query, ByCustomConcept):
        semantic, visual = _concept_in(parts, query.name, SEMANTIC), _concept_in(parts, query.name, VISUAL)
    elif isinstance(query, ById):
        item = parts.index.get(query.id)
        stored_visual = item.in_space(VISUAL)
        if stored_visual is None:
            raise NoSdrInSpaceError(f"item {item.id!r} has no visual SDR (added without an image)", field="id")
        semantic, visual, exclude = item.sdr, stored_visual, item.id
    elif isinstance(query, ByImage):
        encoding = encode_query(parts, query.image, request.options, request.merge_custom)
        semantic, visual = encoding.sdr, encoded_in(encoding, VISUAL)
    elif isinstance(query, BySdr):
        if request.visual_sdr is None:
            raise InvalidInputError("SPACE_BLEND by SDR needs visual_sdr too", field="visual_sdr")
        semantic, visual = query.sdr, request.visual_sdr
    else:
        raise InvalidInputError("set one of image, sdr, id or concept", field="query")
    matches = parts.index.search_blend(semantic, visual, weight, k, exclude=exclude, where=chosen)
    kept = [match for match in matches if match.score >= request.min_overlap]
    return {SEMANTIC: semantic, VISUAL: visual}, kept
