"""What every use case works with, built once per service, and the small rules several share."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, IndexConfig
from ..custom_concepts import ConceptLibrary
from ..encoder import ConceptUse, EncodeOptions, Encoder, Encoding
from ..errors import InvalidInputError
from ..fingerprints import PHASH_BITS
from ..index.item_index import ItemIndex
from ..index.values import SEMANTIC, DuplicateThresholds
from ..queries import QueryBuilder
from ..sdr import Sdr
from ..vocabulary import Vocabulary

__all__ = ["DEFAULT_K", "AskedThresholds", "Parts", "encoded_in", "k_value", "thresholds", "with_custom"]

DEFAULT_K = 10  # what k = 0 (unset) means


@dataclass(frozen=True)
class Parts:
    """The core a service runs on: its config, encoder, index, vocabulary and custom concepts."""

    config: Config
    encoder: Encoder
    index: ItemIndex
    vocabulary: Vocabulary
    library: ConceptLibrary  # the custom concepts' definitions (kept in the index)
    queries: QueryBuilder  # words and expressions -> query SDRs


@dataclass(frozen=True)
class AskedThresholds:
    """Duplicate thresholds as a caller gave them; None: the configured one."""

    max_phash_distance: int | None = None
    min_visual_share: float | None = None


def thresholds(asked: AskedThresholds, defaults: IndexConfig, field: str) -> DuplicateThresholds:
    """The thresholds that apply, each unset one taken from the config; ``field`` names them in errors."""
    distance = defaults.duplicate_max_phash_distance
    if asked.max_phash_distance is not None:
        distance = asked.max_phash_distance
        if not 0 <= distance <= PHASH_BITS:
            raise InvalidInputError(
                f"max_phash_distance must be in [0, {PHASH_BITS}], got {distance}", field=f"{field}.max_phash_distance"
            )
    share = defaults.duplicate_min_visual_share
    if asked.min_visual_share is not None:
        share = asked.min_visual_share
        if not 0.0 <= share <= 1.0:  # NaN fails too
            raise InvalidInputError(
                f"min_visual_share must be in [0, 1], got {share:g}", field=f"{field}.min_visual_share"
            )
    return DuplicateThresholds(max_phash_distance=distance, min_visual_share=float(share))


def k_value(k: int, max_k: int) -> int:
    """The number of answers asked for: 0 is the default."""
    if k == 0:
        return min(DEFAULT_K, max_k)
    if not 0 < k <= max_k:
        raise InvalidInputError(f"k must be in [1, {max_k}], got {k}", field="k")
    return k


def with_custom(parts: Parts, encoding: Encoding, merge: bool) -> Encoding:
    """The custom concepts found in an encoding, merged into its SDR when ``merge`` asks."""
    found = [
        (ConceptUse(detection.name, detection.confidence, used=merge), detection.sdr)
        for detection in parts.library.detect(encoding.sdr, encoding.visual)
    ]
    return parts.encoder.with_custom(encoding, found) if found else encoding


def encode_query(parts: Parts, image: bytes, options: EncodeOptions | None, merge: bool) -> Encoding:
    """A query image encoded as Encode would (custom concepts merged when asked)."""
    return with_custom(parts, parts.encoder.encode(image, options), merge)


def encoded_in(encoding: Encoding, space: str) -> Sdr:
    """An encoding's SDR in ``space``; the visual one is missing only when the server's visual channel is off."""
    sdr = encoding.sdr if space == SEMANTIC else encoding.visual
    if sdr is None:
        raise InvalidInputError("this server's visual channel is off: search SPACE_SEMANTIC", field="space")
    return sdr
