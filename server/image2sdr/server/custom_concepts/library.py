"""The custom concepts a service knows: defined from examples, kept in the index, found in encodings.

``fit`` holds the arithmetic (a concept's SDRs, threshold and confidence scale
from its examples); this module keeps the definitions in the index (durable, and
shared by every replica of a Milvus-backed service, as ``document`` JSON) and
scores each encoding against all of them at once (``scoring.ConceptSet``).

Encode never waits on the index for them. The library holds a copy of the
definitions, read once when the service starts and refreshed in the background
every ``concepts.custom.refresh_s`` seconds (one refresh at a time): a concept
defined through another replica reaches Encode here within that time, and an
index that is down (Milvus) leaves Encode running on the copy it has. A change
made through this replica is applied to the copy at once; a refresh that began
before it is discarded (a generation counter), so it cannot bring the old list back.
A definition that cannot be read (damaged, or written by a newer release) is
logged and left out; it can still be removed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from ..config import Config
from ..errors import (
    ConceptNotFoundError,
    IndexClosedError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
)
from ..index.filters import check_concept_name
from ..index.item_index import ItemIndex
from ..index.values import SEMANTIC, VISUAL, StoredConcept
from ..sdr import Sdr
from .background import background_scores
from .concept import MIN_POSITIVES, ConceptDocumentError, CustomConcept, Example
from .document import from_document, to_document
from .fit import define
from .scoring import ConceptSet

__all__ = ["ConceptLibrary", "Defined", "Detection"]

logger = logging.getLogger(__name__)

STAND_IN_NEGATIVES = 32  # stored items taken as negatives when a definition gives none
STAND_IN_POOL = 256  # ... spread over this many of the newest
BACKGROUND_ITEMS = 2000  # stored items read as the unlabelled background of a definition (newest first)
SUGGESTIONS = 10  # stored items a definition is least sure of, offered for labelling


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


@dataclass(frozen=True)
class _Copy:
    """The definitions as last read, and their scorer (None: no concept)."""

    known: Mapping[str, Defined]
    scorer: ConceptSet | None


class ConceptLibrary:
    def __init__(self, index: ItemIndex, config: Config) -> None:
        self.index = index
        self.config = config.concepts.custom
        self.sdr_size = config.sdr.size
        self.active_bits = config.sdr.active_bits
        self.max_k = config.index.max_k
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every change made here: older refreshes are discarded
        self._refreshing = False
        self._copy = self._copy_of(self._read())
        self._read_at = time.monotonic()

    # -- definitions ----------------------------------------------------------

    def check_definition(self, name: str, positives: int, negatives: int) -> None:
        """Refuse a definition before its examples are encoded: name, counts, room for one more."""
        check_concept_name(name, "name")
        if positives < MIN_POSITIVES:
            raise InvalidInputError(
                f"a concept needs at least {MIN_POSITIVES} positive examples, got {positives}", field="positives"
            )
        limit = self.config.max_examples
        for field, count in (("positives", positives), ("negatives", negatives)):
            if count > limit:
                raise InvalidInputError(f"{count} {field}, at most {limit}", field=field)
        known = {stored.name for stored in self.index.list_concepts()}
        if name not in known and len(known) >= self.config.max_defined:
            raise LimitExceededError(
                f"{len(known)} custom concepts are defined, concepts.custom.max_defined allows no more",
                limit=self.config.max_defined,
                actual=len(known) + 1,
            )

    def define(
        self,
        name: str,
        positives: Sequence[Example],
        negatives: Sequence[Example],
        *,
        positive_ids: Sequence[str] = (),
        negative_ids: Sequence[str] = (),
    ) -> Defined:
        """Fit a concept on its examples and the stored collection, and store it, replacing one of the same name.

        Without negatives a threshold has nothing to stand on (measured: such a concept
        flags ~60 % of unrelated images), so stored items stand in for them: up to
        ``STAND_IN_NEGATIVES`` of the newest, spread over the first page, none equal to a
        positive. The fit report counts them.

        Up to ``BACKGROUND_ITEMS`` of the newest stored items, less the examples
        (the stored ones by id, ``positive_ids`` and ``negative_ids``, kept with the
        definition for the next refinement; images given are known by their SDR), are the
        background: presumed negatives that shape the bits lightly and the threshold
        (``fit``), and the report's estimate of what the concept flags there.  The
        ``SUGGESTIONS`` background items nearest its threshold come back with it: labelled
        and given as examples by id in the next definition, they refine it.
        """
        self.check_definition(name, len(positives), len(negatives))
        if not negatives:
            negatives = self._stand_ins(positives)
        labelled = {*positive_ids, *negative_ids}
        ids, background = self._background([*positives, *negatives], labelled)
        concept = define(
            name, positives, negatives, active_bits=self.active_bits, sdr_size=self.sdr_size, background=background
        )
        if not concept.sdrs[SEMANTIC].active:
            raise InvalidInputError(
                "the positive examples share no bit that the negatives lack: give examples that show one thing",
                field="positives",
            )
        concept = dataclasses.replace(
            concept,
            suggestions=_least_sure(concept, ids, background),
            positive_ids=tuple(positive_ids),
            negative_ids=tuple(negative_ids),
        )
        stored = self.index.put_concept(name, to_document(concept))
        defined = Defined(concept, stored.updated_ms)
        self._change(lambda known: {**known, name: defined})
        return defined

    def get(self, name: str, field: str = "name") -> Defined:
        check_concept_name(name, field)
        try:
            stored = self.index.get_concept(name)
        except NotFoundError:
            raise ConceptNotFoundError(f"no custom concept named {name!r} ({field})", resource=name) from None
        return self._parse(stored)

    def all(self) -> list[Defined]:
        """Every readable custom concept, by name."""
        return sorted(self._read().values(), key=lambda defined: defined.concept.name)

    def remove(self, name: str) -> None:
        check_concept_name(name, "name")
        try:
            self.index.remove_concept(name)
        except NotFoundError:
            raise ConceptNotFoundError(f"no custom concept named {name!r} (name)", resource=name) from None
        self._change(lambda known: {key: value for key, value in known.items() if key != name})

    def count(self) -> int:
        return len(self._current().known)

    def _stand_ins(self, positives: Sequence[Example]) -> list[Example]:
        """Stored items as negatives: spread over the newest page, with a visual SDR when every positive has one."""
        page = self.index.list_items(min(STAND_IN_POOL, self.max_k)).items
        shown = {tuple(example.semantic.positions.tolist()) for example in positives}
        visual = all(example.visual is not None for example in positives)
        pool = [
            Example(item.sdr, item.in_space(VISUAL))
            for item in page
            if tuple(item.sdr.positions.tolist()) not in shown and (not visual or item.in_space(VISUAL) is not None)
        ]
        step = max(1, len(pool) // STAND_IN_NEGATIVES)
        return pool[::step][:STAND_IN_NEGATIVES]

    def _background(self, examples: Sequence[Example], labelled: Collection[str]) -> tuple[list[str], list[Example]]:
        """The newest stored items that are not examples: their ids and SDRs."""
        shown = {tuple(example.semantic.positions.tolist()) for example in examples}
        ids: list[str] = []
        found: list[Example] = []
        token = ""
        while len(found) < BACKGROUND_ITEMS:
            page = self.index.list_items(min(BACKGROUND_ITEMS, self.max_k), token)
            for item in page.items:
                if item.id not in labelled and tuple(item.sdr.positions.tolist()) not in shown:
                    ids.append(item.id)
                    found.append(Example(item.sdr, item.in_space(VISUAL)))
            token = page.next_page_token
            if not token:
                break
        return ids[:BACKGROUND_ITEMS], found[:BACKGROUND_ITEMS]

    # -- detection ------------------------------------------------------------

    def detect(self, semantic: Sdr, visual: Sdr | None) -> list[Detection]:
        """The custom concepts present in an encoding (confidence >= report_min_confidence), strongest first."""
        copy = self._current()
        if copy.scorer is None:
            return []
        sdrs = {SEMANTIC: semantic} if visual is None else {SEMANTIC: semantic, VISUAL: visual}
        found = [
            Detection(name, confidence, copy.known[name].concept.sdrs[SEMANTIC])
            for name, confidence in copy.scorer.confidences(sdrs)
            if confidence >= self.config.report_min_confidence
        ]
        return sorted(found, key=lambda detection: (-detection.confidence, detection.name))

    # -- the copy ---------------------------------------------------------------

    def _read(self) -> dict[str, Defined]:
        found = {}
        for stored in self.index.list_concepts():
            try:
                found[stored.name] = self._parse(stored)
            except ConceptDocumentError as exc:
                logger.warning("custom concept %r left out: %s", stored.name, exc)
        return found

    def _parse(self, stored: StoredConcept) -> Defined:
        return Defined(from_document(stored.name, stored.document, self.sdr_size), stored.updated_ms)

    def _copy_of(self, known: Mapping[str, Defined]) -> _Copy:
        concepts = [defined.concept for _, defined in sorted(known.items())]
        return _Copy(dict(known), ConceptSet(concepts, self.sdr_size) if concepts else None)

    def _current(self) -> _Copy:
        """The copy Encode uses now; starts a background refresh when it is older than refresh_s."""
        with self._lock:
            copy = self._copy
            due = not self._refreshing and time.monotonic() - self._read_at >= self.config.refresh_s
            if due:
                self._refreshing = True
                generation = self._generation
        if due:
            threading.Thread(target=self._refresh, args=(generation,), name="concepts-refresh", daemon=True).start()
        return copy

    def _refresh(self, generation: int) -> None:
        try:
            fresh = self._copy_of(self._read())
        except IndexClosedError:
            fresh = None  # the service is stopping
        except Exception as exc:  # the index is down (Milvus): keep the copy, try again after refresh_s
            logger.warning("custom concepts not refreshed: %s", exc)
            fresh = None
        with self._lock:
            self._refreshing = False
            if fresh is None:
                self._read_at = time.monotonic()
            elif generation == self._generation:
                self._copy, self._read_at = fresh, time.monotonic()

    def _change(self, update: Callable[[Mapping[str, Defined]], Mapping[str, Defined]]) -> None:
        """Apply a change made through this replica to the copy now."""
        with self._lock:
            self._generation += 1
            self._copy = self._copy_of(update(self._copy.known))


def _least_sure(
    concept: CustomConcept, ids: Sequence[str], background: Sequence[Example]
) -> tuple[tuple[str, float], ...]:
    """The background items whose confidence is nearest one half (the threshold), nearest first."""
    fit = concept.fits[0]
    found, scores = background_scores(concept.bits, fit, background)
    rows = [int(row) for row in found]
    confidences = [fit.confidence(float(score)) for score in scores]
    order = sorted(range(len(rows)), key=lambda n: (abs(confidences[n] - 0.5), ids[rows[n]]))
    return tuple((ids[rows[n]], confidences[n]) for n in order[:SUGGESTIONS])
