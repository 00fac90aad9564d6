"""The custom concepts a service knows: defined from examples, kept in the index, found in encodings.

``custom_concepts`` holds the arithmetic (a concept's SDRs, threshold and
confidence scale from its examples); this module keeps the definitions in the
index (durable, and shared by every replica of a Milvus-backed service) and
scores each encoding against them. Encode reads the definitions from a copy
refreshed every ``concepts.custom.refresh_s`` seconds and at once after a
change made here, so a busy service does not ask the index on every image.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .config import Config
from .custom_concepts import CustomConcept, Example, define
from .errors import ConceptNotFoundError, InvalidInputError, LimitExceededError, NotFoundError, UpstreamError
from .index.checks import check_concept_name
from .index.protocol import SEMANTIC, VISUAL, ItemIndex
from .sdr import Sdr

__all__ = ["ConceptLibrary", "Defined", "Detection"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Defined:
    """A custom concept and when it was last (re)defined."""

    concept: CustomConcept
    updated_ms: int


@dataclass(frozen=True)
class Detection:
    name: str
    confidence: float
    sdr: Sdr  # the concept's semantic SDR: what Encode merges when asked to


class ConceptLibrary:
    def __init__(self, index: ItemIndex, config: Config) -> None:
        self.index = index
        self.config = config.concepts.custom
        self.sdr_size = config.sdr.size
        self.active_bits = config.sdr.active_bits
        self._lock = threading.Lock()
        self._copy: dict[str, Defined] | None = None
        self._read_at = 0.0

    # -- definitions ----------------------------------------------------------

    def define(self, name: str, positives: Sequence[Example], negatives: Sequence[Example]) -> Defined:
        """Fit a concept on its examples and store it, replacing one of the same name."""
        check_concept_name(name, "name")
        limit = self.config.max_examples
        for field, examples in (("positives", positives), ("negatives", negatives)):
            if len(examples) > limit:
                raise InvalidInputError(f"{len(examples)} {field}, at most {limit}", field=field)
        concept = define(name, positives, negatives, active_bits=self.active_bits, sdr_size=self.sdr_size)
        known = {stored.name for stored in self.index.list_concepts()}
        if name not in known and len(known) >= self.config.max_defined:
            raise LimitExceededError(
                f"{len(known)} custom concepts are defined, concepts.custom.max_defined allows no more",
                limit=self.config.max_defined,
                actual=len(known) + 1,
            )
        stored = self.index.put_concept(name, concept.to_document())
        self._forget()
        return Defined(concept, stored.updated_ms)

    def get(self, name: str, field: str = "name") -> Defined:
        check_concept_name(name, field)
        try:
            stored = self.index.get_concept(name)
        except NotFoundError:
            raise ConceptNotFoundError(f"no custom concept named {name!r} ({field})", resource=name) from None
        return Defined(CustomConcept.from_document(stored.name, stored.document, self.sdr_size), stored.updated_ms)

    def all(self) -> list[Defined]:
        """Every custom concept, by name."""
        return [
            Defined(CustomConcept.from_document(stored.name, stored.document, self.sdr_size), stored.updated_ms)
            for stored in self.index.list_concepts()
        ]

    def remove(self, name: str) -> None:
        check_concept_name(name, "name")
        try:
            self.index.remove_concept(name)
        except NotFoundError:
            raise ConceptNotFoundError(f"no custom concept named {name!r} (name)", resource=name) from None
        self._forget()

    def count(self) -> int:
        return len(self._current())

    # -- detection ------------------------------------------------------------

    def detect(self, semantic: Sdr, visual: Sdr | None) -> list[Detection]:
        """The custom concepts present in an encoding (confidence >= report_min_confidence), strongest first."""
        sdrs = {SEMANTIC: semantic} if visual is None else {SEMANTIC: semantic, VISUAL: visual}
        found = []
        for defined in self._current().values():
            confidence = defined.concept.confidence(sdrs)
            if confidence >= self.config.report_min_confidence:
                found.append(Detection(defined.concept.name, confidence, defined.concept.sdrs[SEMANTIC]))
        return sorted(found, key=lambda detection: (-detection.confidence, detection.name))

    def _current(self) -> dict[str, Defined]:
        with self._lock:
            fresh = self._copy is not None and time.monotonic() - self._read_at < self.config.refresh_s
            if fresh and self._copy is not None:
                return self._copy
        try:
            copy = {defined.concept.name: defined for defined in self.all()}
        except UpstreamError as exc:
            # The index is down (Milvus): encoding goes on with the definitions last read,
            # and tries again after refresh_s rather than on every image.
            logger.warning("custom concepts not refreshed: %s", exc)
            with self._lock:
                self._read_at = time.monotonic()
                return self._copy or {}
        with self._lock:
            self._copy, self._read_at = copy, time.monotonic()
        return copy

    def _forget(self) -> None:
        with self._lock:
            self._copy = None
