"""FindDuplicates: the stored copies of an image or of a stored item (same bytes, near-exact, transformed).

The cascade (file hash, pHash, visual SDR, then keypoints on the best candidates) is ``index/duplicates.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..encoder import EncodeOptions
from ..errors import InvalidInputError, NoFingerprintError
from ..fingerprints import Fingerprint
from ..index.values import VISUAL, Duplicate, DuplicateThresholds
from ..sdr import Sdr
from .parts import AskedThresholds, Parts, k_value, thresholds
from .search import ById, ByImage

__all__ = ["DuplicatesAnswer", "DuplicatesRequest", "find_duplicates"]


@dataclass(frozen=True)
class DuplicatesRequest:
    query: ByImage | ById | None
    k: int = 0
    thresholds: AskedThresholds = field(default_factory=AskedThresholds)


@dataclass(frozen=True)
class DuplicatesAnswer:
    duplicates: list[Duplicate]
    thresholds: DuplicateThresholds  # those applied, the configured ones filled in
    fingerprint: Fingerprint | None  # the query's
    query_visual: Sdr | None  # the query's visual SDR: shares are taken of its bits


def find_duplicates(parts: Parts, request: DuplicatesRequest) -> DuplicatesAnswer:
    k = k_value(request.k, parts.config.index.max_k)
    applied = thresholds(request.thresholds, parts.config.index, "thresholds")
    query = request.query
    if isinstance(query, ById):
        try:
            item, found = parts.index.duplicates_of(query.id, applied, k)
        except NoFingerprintError as exc:
            exc.field = "id"
            raise
        fingerprint, visual = item.fingerprint, item.in_space(VISUAL)
    elif isinstance(query, ByImage):
        # Its keypoints are made on the decode threads, for the cascade's last stage.
        encoding = parts.encoder.encode(query.image, EncodeOptions(keypoints=True))
        fingerprint, visual = encoding.fingerprint, encoding.visual
        found = parts.index.find_duplicates(fingerprint, visual, applied, k, points=encoding.keypoints)
    else:
        raise InvalidInputError("set one of image or id", field="query")
    return DuplicatesAnswer(found, applied, fingerprint, visual)
