"""A request's options against the config: the settings one batch is encoded with.

A per-request option is held to the same bounds as the config field it overrides;
one out of bounds fails the images that carry it, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from ..config import Confidence, Config, MaxConcepts, Sparsity, VisualShare
from ..errors import InvalidInputError
from .values import EncodeOptions

__all__ = ["Settings", "resolve"]

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    max_concepts: int
    min_confidence: float
    active_bits: int
    visual_bits: int  # of active_bits, taken from the visual SDR: round(visual_share * active_bits)


def resolve(config: Config, options: EncodeOptions | None, *, visual: bool) -> Settings:
    """The settings for ``options`` (None: the configured ones); ``visual``: the visual SDR is on."""
    options = options or EncodeOptions()
    configured = config.concepts
    max_concepts = _option("max_concepts", options.max_concepts, configured.max_concepts)
    min_confidence = _option("min_confidence", options.min_confidence, configured.min_confidence)
    sparsity = _option("sparsity", options.sparsity, config.sdr.sparsity)
    visual_share = _option("visual_share", options.visual_share, config.sdr.visual_share)
    if visual_share > 0 and not visual:
        raise InvalidInputError(
            f"visual_share {visual_share} asks for visual bits, but the visual SDR is off (visual.enabled)",
            field="visual_share",
        )
    active_bits = config.sdr.active_bits_for(sparsity)
    return Settings(max_concepts, min_confidence, active_bits, round(visual_share * active_bits))


# A per-request option is held to the same bounds as the config field it overrides.
_OPTION_BOUNDS: dict[str, TypeAdapter[Any]] = {
    "max_concepts": TypeAdapter(MaxConcepts),
    "min_confidence": TypeAdapter(Confidence),
    "sparsity": TypeAdapter(Sparsity),
    "visual_share": TypeAdapter(VisualShare),
}


def _option(name: str, value: T | None, configured: T) -> T:
    if value is None:
        return configured
    try:
        checked: T = _OPTION_BOUNDS[name].validate_python(value)
    except ValidationError as exc:
        raise InvalidInputError(f"{name}: {exc.errors()[0]['msg']}, got {value}", field=name) from None
    return checked
