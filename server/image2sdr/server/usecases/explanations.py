"""Explain: which regions of an image make a concept, a custom concept or a match with a stored item.

Everything that can be refused is, before any occluded image is made; the work stops
between batches once the caller has gone (``context.caller_gone``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..encoder import EncodeOptions
from ..errors import InvalidInputError
from ..explain import (
    WORK_SIDE,
    ConceptTarget,
    Explanation,
    Target,
    custom_target,
    explain,
    like_target,
    plan_grid,
    sends_bytes,
)
from ..imaging import DecodedImage, decode_image
from ..index.values import SEMANTIC
from .context import CallContext, caller_gone
from .parts import Parts
from .search import ByCustomConcept, ById

__all__ = ["ByClassifierConcept", "ExplainRequest", "explain_image"]


@dataclass(frozen=True)
class ByClassifierConcept:
    """A concept the classifier names (as Encode would for this image)."""

    name: str


@dataclass(frozen=True)
class ExplainRequest:
    image: bytes
    target: ByClassifierConcept | ByCustomConcept | ById | None  # ById: the match with that stored item ("like")
    space: str = SEMANTIC  # the space a ``like`` compares in
    options: EncodeOptions | None = None
    patch: int | None = None  # pixels; None: a share of the image's shorter side
    stride: int | None = None


def explain_image(parts: Parts, request: ExplainRequest, call: CallContext) -> Explanation:
    target_kind = request.target
    if target_kind is None:
        raise InvalidInputError("set one of concept, custom_concept or like", field="target")
    if request.space != SEMANTIC and not isinstance(target_kind, ById):
        raise InvalidInputError("space applies to a `like` target only", field="space")
    config, source = parts.config, parts.encoder.concept_source
    # A remote provider is sent the occluded images themselves: they are made at the working
    # size, not at its input_side (Clarifai's 64 px is for validation: a JPEG would go at 1/8).
    draft = WORK_SIDE if sends_bytes(source) else source.input_side
    image = decode_image(request.image, config.image, draft)
    grid = plan_grid(image.width, image.height, config.explain, request.patch, request.stride)
    target = _target(parts, target_kind, request, image)
    # Up to explain.max_variants classifier passes: none once the caller has gone.
    return explain(image, target, grid, config.explain.fill, functools.partial(caller_gone, call))


def _target(
    parts: Parts, wanted: ByClassifierConcept | ByCustomConcept | ById, request: ExplainRequest, image: DecodedImage
) -> Target:
    """What an explanation scores; refused before any occluded image is made."""
    encoder = parts.encoder
    if isinstance(wanted, ByCustomConcept):
        return custom_target(encoder, parts.library, wanted.name, request.options)
    if isinstance(wanted, ById):
        return like_target(encoder, parts.index, wanted.id, request.space, request.options)
    # As Encode would name it: the request's options, else the configured ones.
    configured, chosen = parts.config.concepts, request.options or EncodeOptions()
    top = configured.max_concepts if chosen.max_concepts is None else chosen.max_concepts
    floor = configured.min_confidence if chosen.min_confidence is None else chosen.min_confidence
    return ConceptTarget.checked(encoder.concept_source, wanted.name, image, top, floor)
