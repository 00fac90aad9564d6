"""The encoder's pipeline: image bytes -> concepts -> term SDRs -> one merged SDR, and how the image looks.

See the package docstring for the stages; this module holds ``Encoder``, which
runs them on a batch, and the per-image plan between them.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from ..appearance import Appearance, FeatureResult
from ..concepts.base import Concept, ConceptResult, ConceptSource
from ..concepts.local import LocalConceptSource
from ..concepts.nsfw import MODERATION, WithNsfw
from ..config import Config
from ..errors import ConfigError, Image2SdrError, InvalidTermError, UpstreamError
from ..fingerprints import Fingerprint
from ..imaging import DecodedImage
from ..keypoints import ImageKeypoints
from ..merge import Merger, MergeResult, WeightedSdr
from ..sdr import Sdr
from ..terms.base import TermSource, normalize_term
from ..terms.cache import CachedTermSource, TermCache
from ..thumbnails import Thumbnail, check_format
from .decoding import Decoded, Prepare, Wanted, timed_decode, wanted
from .providers import appearance_for, classifier_of, close_provider, concept_source, term_source
from .settings import Settings, resolve
from .values import ConceptUse, EncodeOptions, Encoding, Outcome, StageTimings

__all__ = ["Encoder"]

logger = logging.getLogger(__name__)

# Images classified at a time within a batch, while the decode threads make the next ones.
_PIPELINE_STEP = 4

# "no person", "no people": Clarifai's way of saying what is absent.
_NEGATIVE = re.compile(r"^no\s+(?P<term>\S.*)$")


@dataclass(frozen=True)
class _Looks:
    """What an image's appearance adds to its encoding."""

    fingerprint: Fingerprint | None
    thumbnail: Thumbnail | None = None
    visual: Sdr | None = None
    keypoints: ImageKeypoints | None = None
    ranked: npt.NDArray[np.uint32] | None = None  # visual bits, strongest first (as many as the merge needs)
    appearance_ms: float = 0.0


@dataclass
class _Plan:
    """How one image's concepts map to terms, before the lookup."""

    uses: list[ConceptUse]
    terms: list[tuple[int, str, float]]  # (index into uses, term, signed weight)


class Encoder:
    def __init__(
        self, config: Config, concepts: ConceptSource, terms: TermSource, appearance: Appearance | None = None
    ) -> None:
        if terms.size != config.sdr.size:
            raise ConfigError(f"term provider gives {terms.size}-bit SDRs, config.sdr.size is {config.sdr.size}")
        if appearance is not None and appearance.size != config.sdr.size:
            raise ConfigError(f"visual SDRs have {appearance.size} bits, config.sdr.size is {config.sdr.size}")
        if config.index.thumbnails:  # refused at start, not on every image
            check_format(config.index.thumbnail_format)
        self.config = config
        self.concept_source = concepts
        self.term_source = terms
        self.appearance = appearance  # None: no visual SDRs (visual.enabled: false)
        sdr = config.sdr
        self.merger = Merger(sdr.size, sdr.dimensions, sdr.tie_break_seed, sdr.normalization, sdr.confidence_power)
        self._decoders = ThreadPoolExecutor(config.image.decode_threads, thread_name_prefix="decode")
        self._prepare = _preparer(concepts, appearance)
        # Moderation labels describe a policy, not what the picture shows: "sfw" is strong on almost
        # every image, so merged it would give all of them the same bits. They are reported and
        # stored (filters, tags, Explain) but left out of the SDR.
        self._unmerged = frozenset(MODERATION) if isinstance(concepts, WithNsfw) else frozenset()
        # Told of every image encoded, whichever call encoded it (the server's metrics); None: nobody.
        self.on_encoded: Callable[[Encoding], None] | None = None

    @classmethod
    def from_config(cls, config: Config) -> Encoder:
        """The providers the config selects (default: the offline local ones), with the disk term cache."""
        concepts = concept_source(config)
        try:
            appearance = appearance_for(config, concepts)
            terms = term_source(config)
        except BaseException:
            close_provider(concepts)
            raise
        cache = TermCache(config.data_dir / "terms", config.terms.cache)
        return cls(config, concepts, CachedTermSource(terms, cache), appearance)

    def close(self) -> None:
        self._decoders.shutdown(wait=True)
        close_provider(self.concept_source)
        close_provider(self.term_source)  # a CachedTermSource closes its cache and its provider

    # -- public API --------------------------------------------------------

    def encode(self, image: bytes, options: EncodeOptions | None = None) -> Encoding:
        (result,) = self.encode_batch([image], options)
        if isinstance(result, Exception):
            raise result
        return result

    def encode_batch(self, images: Sequence[bytes], options: EncodeOptions | None = None) -> list[Outcome]:
        """One result per image, in order: its Encoding or the error for that image alone."""
        return self._encode_batch(images, options, [wanted(options)] * len(images))

    def encode_many(self, requests: Sequence[tuple[bytes, EncodeOptions | None]]) -> list[Outcome]:
        """One result per (image, options), in order; images that share their options form one batch.

        A stream's items may each carry their own options, but a batch is encoded
        with one set of settings: grouping by equal options keeps one classifier call
        per distinct setting instead of one per image.  Bad options fail only the
        images that carry them.
        """
        groups: dict[EncodeOptions, list[int]] = {}
        for slot, (_, options) in enumerate(requests):
            # Whether an image is stored changes only its thumbnail and keypoints: one batch still.
            groups.setdefault(replace(options or EncodeOptions(), thumbnail=False, keypoints=False), []).append(slot)
        results: list[Outcome | None] = [None] * len(requests)
        for options, slots in groups.items():
            thumbnails = [wanted(requests[slot][1]) for slot in slots]
            try:
                outcomes = self._encode_batch([requests[slot][0] for slot in slots], options, thumbnails)
            except Exception as exc:  # the options themselves are bad: each of their images says so
                outcomes = [exc] * len(slots)
            for slot, outcome in zip(slots, outcomes, strict=True):
                results[slot] = outcome
        return [_filled(result) for result in results]

    def encode_concepts(self, concepts: Sequence[Concept], options: EncodeOptions | None = None) -> Encoding:
        """Merge given concepts (e.g. from a caller that ran its own classifier).

        There is no image, so no visual SDR, no fingerprint, and ``visual_share`` has nothing to give.
        """
        settings = self._settings(options)
        kept = [c for c in concepts if c.confidence >= settings.min_confidence][: settings.max_concepts]
        plans = [self._plan(kept, settings)]
        started = time.perf_counter()
        looked_up = self._lookup(plans)
        terms_ms = (time.perf_counter() - started) * 1000
        return self._merge(plans[0], looked_up, settings, StageTimings(terms_ms=terms_ms))

    def with_custom(self, encoding: Encoding, found: Sequence[tuple[ConceptUse, Sdr]]) -> Encoding:
        """``encoding`` with the custom concepts found in it; those marked used are merged into its SDR
        beside its own terms (each SDR weighted as a concept of its confidence; same visual places)."""
        extra = [WeightedSdr(sdr, self.merger.concept_weight(use.confidence)) for use, sdr in found if use.used]
        custom = tuple(use for use, _ in found)
        if not extra:
            return replace(encoding, custom=custom)
        merged = self.merger.merge([*encoding.merged, *extra], encoding.active_bits, encoding.visual_bits)
        return replace(encoding, sdr=merged.sdr, short=merged.short, custom=custom, merged=(*encoding.merged, *extra))

    def term_sdr(self, term: str) -> Sdr | None:
        """The SDR of one term or phrase, None if the provider does not know it."""
        (sdr,) = self.term_source.term_sdrs([normalize_term(term)])
        return sdr

    # -- stages --------------------------------------------------------------

    def _encode_batch(
        self, images: Sequence[bytes], options: EncodeOptions | None, thumbnails: Sequence[Wanted]
    ) -> list[Outcome]:
        """``encode_batch``, with each image's own word on its thumbnail and keypoints.

        Every image is handed to the decode threads at once, and the batch is then
        classified in steps (``_steps``): while the classifier runs on one step, the
        decode threads make the next one, so both cores stay busy.
        """
        settings = self._settings(options)
        results: list[Outcome | None] = [None] * len(images)
        side, prepare, config = self.concept_source.input_side, self._prepare, self.config
        # Each decode runs in the caller's context: it waits for the decode budget until the caller's deadline.
        pending = [
            self._decoders.submit(contextvars.copy_context().run, timed_decode, data, config, side, extras, prepare)
            for data, extras in zip(images, thumbnails, strict=True)
        ]
        for start, end in self._steps(len(images)):
            decoded, timed = _collect(pending, start, end, results)
            if decoded:
                self._encode_decoded(decoded, timed, settings, results)
        if self.on_encoded is not None:
            for result in results:
                if isinstance(result, Encoding):
                    self.on_encoded(result)
        return [_filled(result) for result in results]

    def _steps(self, count: int) -> list[tuple[int, int]]:
        """The slices of a batch classified one after another.

        Only the local classifier is worth the steps (a remote provider would pay its
        round trip once per step); a step of 4 costs the classifier no speed per image
        (batch 4 and batch 16 run alike here) and leaves the first decodes alone on
        the cores for the least time.
        """
        step = _PIPELINE_STEP if self._prepare is not None else max(count, 1)
        return [(start, min(start + step, count)) for start in range(0, count, step)]

    def _settings(self, options: EncodeOptions | None) -> Settings:
        return resolve(self.config, options, visual=self.appearance is not None)

    def _encode_decoded(
        self,
        decoded: list[tuple[int, DecodedImage]],
        timed: list[Decoded],
        settings: Settings,
        results: list[Outcome | None],
    ) -> None:
        started = time.perf_counter()
        found, features = self._observe([image for _, image in decoded], settings)
        concepts_ms = (time.perf_counter() - started) * 1000 / len(decoded)
        looks = self._looks(timed, features, settings)
        plans: dict[int, _Plan] = {}
        for (slot, _), outcome, look in zip(decoded, found, looks, strict=True):
            if isinstance(outcome, Exception):
                results[slot] = _as_core_error(outcome)
            elif isinstance(look, Exception):
                results[slot] = _as_core_error(look)
            else:
                plans[slot] = self._plan(outcome, settings)
        started = time.perf_counter()
        try:
            looked_up = self._lookup(list(plans.values()))
        except Exception as exc:  # a term provider is down: every image waits on it
            for slot in plans:
                results[slot] = exc
            return
        terms_ms = (time.perf_counter() - started) * 1000 / max(len(plans), 1)
        for (slot, _), decode, look in zip(decoded, timed, looks, strict=True):
            if slot in plans and not isinstance(look, Exception):
                timings = StageTimings(decode_ms=decode.ms, concepts_ms=concepts_ms, terms_ms=terms_ms)
                try:
                    results[slot] = self._merge(plans[slot], looked_up, settings, timings, look)
                except Exception as exc:
                    results[slot] = exc

    def _observe(
        self, images: list[DecodedImage], settings: Settings
    ) -> tuple[Sequence[ConceptResult], Sequence[FeatureResult | None]]:
        """Each image's concepts, and its pooled feature when the visual SDR is on."""
        source, appearance = self.concept_source, self.appearance
        none: list[FeatureResult | None] = [None] * len(images)
        try:
            if (
                isinstance(source, LocalConceptSource | WithNsfw)
                and appearance is not None
                and appearance.features is classifier_of(source)
            ):
                # One inference: the classifier's probabilities and its pooled feature together.
                observed = source.observe(images, settings.max_concepts, settings.min_confidence)
                found: list[ConceptResult] = [o if isinstance(o, Exception) else o.concepts for o in observed]
                return found, [o if isinstance(o, Exception) else o.features for o in observed]
            found = source.concepts(images, settings.max_concepts, settings.min_confidence)
        except Exception as exc:  # the provider failed as a whole: each of its images says so
            return [exc] * len(images), none
        if appearance is None:
            return found, none
        try:  # another concept provider: the local classifier runs for the feature alone
            return found, appearance.features.features(images)
        except Exception as exc:
            return found, [exc] * len(images)

    def _looks(
        self, timed: list[Decoded], features: Sequence[FeatureResult | None], settings: Settings
    ) -> list[_Looks | Exception]:
        """Fingerprints (made while decoding) with the visual SDRs, projected as one batch."""
        looks: list[_Looks | Exception] = [
            feature
            if isinstance(feature, Exception)
            else _Looks(
                decode.fingerprint, decode.thumbnail, keypoints=decode.keypoints, appearance_ms=decode.fingerprint_ms
            )
            for decode, feature in zip(timed, features, strict=True)
        ]
        rows = {row: feature for row, feature in enumerate(features) if isinstance(feature, np.ndarray)}
        if not rows or self.appearance is None:
            return looks
        started = time.perf_counter()
        ranked = self.appearance.rank(np.stack(list(rows.values())), max(self.appearance.active, settings.visual_bits))
        share_ms = (time.perf_counter() - started) * 1000 / len(rows)
        for row, bits in zip(rows, ranked, strict=True):
            fingerprint_ms = timed[row].fingerprint_ms
            visual = self.appearance.sdr(bits)
            looks[row] = _Looks(
                timed[row].fingerprint,
                timed[row].thumbnail,
                visual,
                timed[row].keypoints,
                bits[: settings.visual_bits],
                fingerprint_ms + share_ms,
            )
        return looks

    def _plan(self, concepts: Sequence[Concept], settings: Settings) -> _Plan:
        plan = _Plan(uses=[], terms=[])
        # Keyed by sign too: "person" adds its bits and "no person" then subtracts from them.
        seen: dict[tuple[str, float], str] = {}
        for concept in concepts:
            reason, term, sign = _term_of(concept, settings.min_confidence)
            if concept.name in self._unmerged:
                reason = "a moderation label (concepts.nsfw): reported and stored, not merged into the SDR"
                plan.uses.append(ConceptUse(concept.name, concept.confidence, used=False, reason=reason, label=True))
                continue
            if not reason and (term, sign) in seen:
                reason = f"same term as {seen[term, sign]!r}"
            if reason:
                plan.uses.append(ConceptUse(concept.name, concept.confidence, used=False, reason=reason))
                continue
            seen[term, sign] = concept.name
            plan.terms.append((len(plan.uses), term, sign * self.merger.concept_weight(concept.confidence)))
            plan.uses.append(ConceptUse(concept.name, concept.confidence, used=True))
        return plan

    def _lookup(self, plans: Sequence[_Plan]) -> dict[str, Sdr | None]:
        distinct = list(dict.fromkeys(term for plan in plans for _, term, _ in plan.terms))
        if not distinct:
            return {}
        return dict(zip(distinct, self.term_source.term_sdrs(distinct), strict=True))

    def _merge(
        self,
        plan: _Plan,
        looked_up: dict[str, Sdr | None],
        settings: Settings,
        timings: StageTimings,
        look: _Looks | None = None,
    ) -> Encoding:
        started = time.perf_counter()
        weighted: list[WeightedSdr] = []
        uses = list(plan.uses)
        for slot, term, weight in plan.terms:
            sdr = looked_up[term]
            if sdr is None or sdr.active == 0:
                uses[slot] = ConceptUse(
                    uses[slot].name,
                    uses[slot].confidence,
                    False,
                    f"term {term!r} is unknown to the {self.term_source.name} term provider",
                )
            else:
                weighted.append(WeightedSdr(sdr, weight))
        visual_bits = look.ranked if look is not None and settings.visual_bits else None
        merged: MergeResult = self.merger.merge(weighted, settings.active_bits, visual_bits)
        merge_ms = (time.perf_counter() - started) * 1000
        appearance_ms = look.appearance_ms if look is not None else 0.0
        timings = StageTimings(timings.decode_ms, timings.concepts_ms, timings.terms_ms, merge_ms, appearance_ms)
        return Encoding(
            sdr=merged.sdr,
            concepts=tuple(uses),
            short=merged.short,
            timings=timings,
            visual=look.visual if look is not None else None,
            fingerprint=look.fingerprint if look is not None else None,
            thumbnail=look.thumbnail if look is not None else None,
            keypoints=look.keypoints if look is not None else None,
            merged=tuple(weighted),
            visual_bits=visual_bits,
            active_bits=settings.active_bits,
        )


def _term_of(concept: Concept, min_confidence: float) -> tuple[str, str, float]:
    """(skip reason or "", normalised term, +1 or -1 for a negative concept)."""
    if not 0.0 <= concept.confidence <= 1.0:
        return f"confidence {concept.confidence} is outside [0, 1]", "", 0.0
    if concept.confidence < min_confidence:
        return f"confidence below min_confidence {min_confidence}", "", 0.0
    try:
        term = normalize_term(concept.name)
    except InvalidTermError as exc:
        return f"not a usable term: {exc}", "", 0.0
    negative = _NEGATIVE.match(term)
    if negative:
        return "", negative.group("term"), -1.0
    return "", term, 1.0


def _collect(
    pending: Sequence[Future[Decoded]], start: int, end: int, results: list[Outcome | None]
) -> tuple[list[tuple[int, DecodedImage]], list[Decoded]]:
    """The images of ``pending[start:end]`` once decoded; those that failed get their error in ``results``."""
    decoded: list[tuple[int, DecodedImage]] = []
    timed: list[Decoded] = []
    for slot in range(start, end):
        outcome = pending[slot].result()
        if isinstance(outcome.image, Exception):
            results[slot] = outcome.image
        else:
            decoded.append((slot, outcome.image))
            timed.append(outcome)
    return decoded, timed


def _preparer(concepts: ConceptSource, appearance: Appearance | None) -> Prepare | None:
    """What the local classifier makes of an image before inference, when it runs: done while decoding."""
    local = classifier_of(concepts)
    if isinstance(local, LocalConceptSource):
        return local.prepare
    if appearance is not None and isinstance(appearance.features, LocalConceptSource):
        return appearance.features.prepare
    return None


def _filled(result: Outcome | None) -> Outcome:
    if result is None:  # every path above fills its slot; an empty one is a bug here
        raise RuntimeError("encoder left a batch slot without a result")
    return result


def _as_core_error(exc: Exception) -> Exception:
    # A remote provider's raw failure is an outage to our caller; running short of
    # memory is the server's own trouble and is reported as such.
    if isinstance(exc, (Image2SdrError, MemoryError)):
        return exc
    return UpstreamError(f"concept provider failed: {exc}")
