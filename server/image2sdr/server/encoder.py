"""The encoder: image bytes -> concepts -> term SDRs -> one merged SDR, and how the image looks.

``Encoder`` ties the stages together and knows nothing of gRPC.  Its
providers are injected (``ConceptSource``, ``TermSource``), so a remote
service can replace either stage; ``Encoder.from_config`` builds the embedded
offline defaults.  Batches are the unit of work: images decode on a thread
pool, the classifier sees the whole batch in one call, every distinct term of
the batch is looked up once, and each image then merges on its own;
``encode_many`` forms such batches from images with options of their own.
A bad image fails only its own slot in a batch, whatever goes wrong with it;
a failure of a whole stage (the classifier, a term provider) fails the images
waiting on it, each in its own slot, and never the call that carries them.

Every image also gets its fingerprint (SHA-256 of the bytes, pHash of the
pixels) and, unless ``visual.enabled`` is off, its visual SDR: the local
classifier's pooled feature projected by ``appearance``.  With the local
concept provider one inference gives both the concepts and the feature; with
Clarifai the local classifier runs once more per image, for the feature alone.
``visual_share`` > 0 gives the merged SDR's first places to the visual SDR's
strongest bits (``merge``).  An image whose encoding will be stored
(``EncodeOptions.thumbnail``, set by the service for ``add_to_index``) also gets
a small thumbnail when ``index.thumbnails`` is above 0 (``thumbnails``), made
on the decode threads from the image already decoded, for the index to keep;
queries, examples and Explain's variants do not pay its ~3 ms.

With ``concepts.nsfw`` the provider gives its ``max_concepts`` as ever and the
"nsfw"/"sfw" pair comes on top (``ConceptUse.label``): reported and stored, never
merged, so the SDR is the one the provider's concepts give without the pair.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter, ValidationError

from .appearance import Appearance, FeatureResult
from .concepts.base import Concept, ConceptResult, ConceptSource
from .concepts.local import LocalConceptSource
from .concepts.nsfw import MODERATION, WithNsfw
from .config import Confidence, Config, MaxConcepts, Sparsity, VisualShare
from .errors import (
    ConfigError,
    Image2SdrError,
    InvalidInputError,
    InvalidTermError,
    ModelsMissingError,
    UpstreamError,
)
from .fingerprints import Fingerprint, fingerprint
from .imaging import DecodedImage, decode_image
from .merge import Merger, MergeResult, WeightedSdr
from .sdr import Sdr
from .terms.base import TermSource, normalize_term
from .terms.cache import CachedTermSource, TermCache
from .thumbnails import check_format, make_thumbnail

__all__ = ["ConceptUse", "EncodeOptions", "Encoder", "Encoding", "Outcome", "StageTimings"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# "no person", "no people": Clarifai's way of saying what is absent.
_NEGATIVE = re.compile(r"^no\s+(?P<term>\S.*)$")


@dataclass(frozen=True)
class EncodeOptions:
    """Per-request overrides; None takes the configured value."""

    max_concepts: int | None = None
    min_confidence: float | None = None
    sparsity: float | None = None
    visual_share: float | None = None  # share of the SDR's active bits taken from the visual SDR
    # Internal (not in the proto): the encoding will be stored, so make its thumbnail
    # (index.thumbnails). The service sets it for add_to_index; nothing else needs one.
    thumbnail: bool = False


@dataclass(frozen=True)
class ConceptUse:
    name: str
    confidence: float
    used: bool
    reason: str = ""  # why a concept was skipped; empty when used
    label: bool = False  # reported and stored but never merged, beside max_concepts (the nsfw/sfw pair)


@dataclass(frozen=True)
class StageTimings:
    """Milliseconds per stage; batch-wide stages are shared out evenly per image."""

    decode_ms: float = 0.0
    concepts_ms: float = 0.0
    terms_ms: float = 0.0
    merge_ms: float = 0.0
    appearance_ms: float = 0.0  # fingerprint and visual SDR projection (the feature comes with the concepts)


@dataclass(frozen=True)
class Encoding:
    sdr: Sdr
    concepts: tuple[ConceptUse, ...]  # as found, strongest first
    short: bool  # the term SDRs' union held fewer than w bits
    timings: StageTimings = field(default_factory=StageTimings)
    visual: Sdr | None = None  # how the image looks (None: visual.enabled is off, or no image)
    fingerprint: Fingerprint | None = None  # SHA-256 and pHash of the image (None: no image)
    custom: tuple[ConceptUse, ...] = ()  # custom concepts found (concept_library); used: merged into sdr
    # What the merge took, so that more terms (custom concepts) can be merged in later: ``with_terms``.
    merged: tuple[WeightedSdr, ...] = field(default=(), compare=False, repr=False)
    visual_bits: npt.NDArray[np.uint32] | None = field(default=None, compare=False, repr=False)
    active_bits: int = field(default=0, compare=False, repr=False)
    # WebP or JPEG bytes for the index (None: index.thumbnails is 0, or no image).
    thumbnail: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def used(self) -> tuple[ConceptUse, ...]:
        return tuple(c for c in self.concepts if c.used)

    @property
    def skipped(self) -> tuple[ConceptUse, ...]:
        return tuple(c for c in self.concepts if not c.used)

    @property
    def labels(self) -> tuple[ConceptUse, ...]:
        """Concepts reported and stored but not merged (concepts.nsfw's pair)."""
        return tuple(c for c in self.concepts if c.label)

    def stored_concepts(self, max_concepts: int) -> tuple[tuple[str, float], ...]:
        """What an add stores as the item's concepts: those merged (the provider's, then custom ones),
        then the labels if all fit in ``max_concepts`` (index.max_concepts).

        The labels come on top of the provider's max_concepts, and a concept may come
        with several names (the local roll-up's synonyms), so an item could pass the
        index's limit: then the labels are left out, and then the provider's weakest
        names, rather than fail the add.
        """
        custom = tuple((c.name, c.confidence) for c in self.custom if c.used)
        found = tuple((c.name, c.confidence) for c in self.used)[: max(max_concepts - len(custom), 0)]
        merged = found + custom
        labels = tuple((c.name, c.confidence) for c in self.labels)
        return merged + labels if len(merged) + len(labels) <= max_concepts else merged


# One image's result in a batch: its encoding, or what went wrong with it alone.
# Core errors say what the caller did wrong; anything else is the server's fault.
Outcome = Encoding | Exception


@dataclass(frozen=True)
class _Settings:
    max_concepts: int
    min_confidence: float
    active_bits: int
    visual_bits: int  # of active_bits, taken from the visual SDR: round(visual_share * active_bits)


@dataclass(frozen=True)
class _Looks:
    """What an image's appearance adds to its encoding."""

    fingerprint: Fingerprint | None
    thumbnail: bytes | None = None
    visual: Sdr | None = None
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
        self.merger = Merger(
            config.sdr.size, config.sdr.dimensions, config.sdr.tie_break_seed, config.sdr.normalization
        )
        self._decoders = ThreadPoolExecutor(config.image.decode_threads, thread_name_prefix="decode")
        # Moderation labels describe a policy, not what the picture shows: "sfw" is strong on almost
        # every image, so merged it would give all of them the same bits. They are reported and
        # stored (filters, tags, Explain) but left out of the SDR.
        self._unmerged = frozenset(MODERATION) if isinstance(concepts, WithNsfw) else frozenset()
        # Told of every image encoded, whichever call encoded it (the server's metrics); None: nobody.
        self.on_encoded: Callable[[Encoding], None] | None = None

    @classmethod
    def from_config(cls, config: Config) -> Encoder:
        """The providers the config selects (default: the offline local ones), with the disk term cache."""
        concepts = _concept_source(config)
        try:
            appearance = _appearance(config, concepts)
            terms = _term_source(config)
        except BaseException:
            _close(concepts)
            raise
        cache = TermCache(config.data_dir / "terms", config.terms.cache)
        return cls(config, concepts, CachedTermSource(terms, cache), appearance)

    def close(self) -> None:
        self._decoders.shutdown(wait=True)
        _close(self.concept_source)
        _close(self.term_source)  # a CachedTermSource closes its cache and its provider

    # -- public API --------------------------------------------------------

    def encode(self, image: bytes, options: EncodeOptions | None = None) -> Encoding:
        (result,) = self.encode_batch([image], options)
        if isinstance(result, Exception):
            raise result
        return result

    def encode_batch(self, images: Sequence[bytes], options: EncodeOptions | None = None) -> list[Outcome]:
        """One result per image, in order: its Encoding or the error for that image alone."""
        return self._encode_batch(images, options, [_wants_thumbnail(options)] * len(images))

    def encode_many(self, requests: Sequence[tuple[bytes, EncodeOptions | None]]) -> list[Outcome]:
        """One result per (image, options), in order; images that share their options form one batch.

        A stream's items may each carry their own options, but a batch is encoded
        with one set of settings: grouping by equal options keeps one classifier call
        per distinct setting instead of one per image.  Bad options fail only the
        images that carry them.
        """
        groups: dict[EncodeOptions, list[int]] = {}
        for slot, (_, options) in enumerate(requests):
            # Whether an image is stored changes only its thumbnail: one batch still.
            groups.setdefault(replace(options or EncodeOptions(), thumbnail=False), []).append(slot)
        results: list[Outcome | None] = [None] * len(requests)
        for options, slots in groups.items():
            thumbnails = [_wants_thumbnail(requests[slot][1]) for slot in slots]
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
        beside its own terms (each SDR weighted by its confidence; same bits, same visual places)."""
        extra = [WeightedSdr(sdr, use.confidence) for use, sdr in found if use.used]
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
        self, images: Sequence[bytes], options: EncodeOptions | None, thumbnails: Sequence[bool]
    ) -> list[Outcome]:
        """``encode_batch``, with each image's own word on its thumbnail."""
        settings = self._settings(options)
        results: list[Outcome | None] = [None] * len(images)
        decoded, decode_ms = self._decode_all(images, thumbnails, results)
        if decoded:
            self._encode_decoded(decoded, decode_ms, settings, results)
        if self.on_encoded is not None:
            for result in results:
                if isinstance(result, Encoding):
                    self.on_encoded(result)
        return [_filled(result) for result in results]

    def _settings(self, options: EncodeOptions | None) -> _Settings:
        options = options or EncodeOptions()
        configured = self.config.concepts
        max_concepts = _option("max_concepts", options.max_concepts, configured.max_concepts)
        min_confidence = _option("min_confidence", options.min_confidence, configured.min_confidence)
        sparsity = _option("sparsity", options.sparsity, self.config.sdr.sparsity)
        visual_share = _option("visual_share", options.visual_share, self.config.sdr.visual_share)
        if visual_share > 0 and self.appearance is None:
            raise InvalidInputError(
                f"visual_share {visual_share} asks for visual bits, but the visual SDR is off (visual.enabled)",
                field="visual_share",
            )
        active_bits = self.config.sdr.active_bits_for(sparsity)
        return _Settings(max_concepts, min_confidence, active_bits, round(visual_share * active_bits))

    def _decode_all(
        self, images: Sequence[bytes], thumbnails: Sequence[bool], results: list[Outcome | None]
    ) -> tuple[list[tuple[int, DecodedImage]], list[_Decoded]]:
        side = self.concept_source.input_side
        outcomes = list(
            self._decoders.map(lambda data, wanted: _timed_decode(data, self.config, side, wanted), images, thumbnails)
        )
        decoded: list[tuple[int, DecodedImage]] = []
        timed: list[_Decoded] = []
        for slot, outcome in enumerate(outcomes):
            if isinstance(outcome.image, Exception):
                results[slot] = outcome.image
            else:
                decoded.append((slot, outcome.image))
                timed.append(outcome)
        return decoded, timed

    def _encode_decoded(
        self,
        decoded: list[tuple[int, DecodedImage]],
        timed: list[_Decoded],
        settings: _Settings,
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
        self, images: list[DecodedImage], settings: _Settings
    ) -> tuple[Sequence[ConceptResult], Sequence[FeatureResult | None]]:
        """Each image's concepts, and its pooled feature when the visual SDR is on."""
        source, appearance = self.concept_source, self.appearance
        none: list[FeatureResult | None] = [None] * len(images)
        try:
            if (
                isinstance(source, LocalConceptSource | WithNsfw)
                and appearance is not None
                and appearance.features is _classifier(source)
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
        self, timed: list[_Decoded], features: Sequence[FeatureResult | None], settings: _Settings
    ) -> list[_Looks | Exception]:
        """Fingerprints (made while decoding) with the visual SDRs, projected as one batch."""
        looks: list[_Looks | Exception] = [
            feature
            if isinstance(feature, Exception)
            else _Looks(decode.fingerprint, decode.thumbnail, appearance_ms=decode.fingerprint_ms)
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
                bits[: settings.visual_bits],
                fingerprint_ms + share_ms,
            )
        return looks

    def _plan(self, concepts: Sequence[Concept], settings: _Settings) -> _Plan:
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
            plan.terms.append((len(plan.uses), term, sign * concept.confidence))
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
        settings: _Settings,
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
            merged=tuple(weighted),
            visual_bits=visual_bits,
            active_bits=settings.active_bits,
        )


# Remote providers are imported only when selected: their client libraries are
# large, and an offline deployment need not load them.
def _concept_source(config: Config) -> ConceptSource:
    if config.concepts.provider == "clarifai":
        from .concepts.clarifai import ClarifaiConceptSource  # noqa: PLC0415

        source: ConceptSource = ClarifaiConceptSource.from_config(config.concepts.clarifai)
    else:
        source = LocalConceptSource(config.models_dir, config.concepts.local)
    if not config.concepts.nsfw.enabled:
        return source
    try:
        return WithNsfw.from_config(source, config.concepts.nsfw)
    except BaseException:
        _close(source)
        raise


def _classifier(source: ConceptSource) -> object:
    """The provider under the nsfw wrapper: the local classifier the visual SDR can share."""
    return source.base if isinstance(source, WithNsfw) else source


def _appearance(config: Config, concepts: ConceptSource) -> Appearance | None:
    """The visual SDR's projection and its feature source: the local classifier, shared when it gives the concepts."""
    if not config.visual.enabled:
        return None
    local = _classifier(concepts)
    if isinstance(local, LocalConceptSource):
        return Appearance(local, config.visual, config.sdr)
    try:
        classifier = LocalConceptSource(config.models_dir, config.concepts.local)
    except ModelsMissingError as exc:
        raise ModelsMissingError(
            f"{exc} (the visual SDR needs the local classifier, whatever the concept provider; "
            "or set visual.enabled: false to run without visual SDRs)"
        ) from exc
    return Appearance(classifier, config.visual, config.sdr)


def _term_source(config: Config) -> TermSource:
    if config.terms.provider == "cortical":
        from .terms.cortical import CorticalTermSource  # noqa: PLC0415

        return CorticalTermSource.from_config(config.terms.cortical, config.sdr)
    from .terms.local import LocalTermSource  # noqa: PLC0415  (loads a model)

    return LocalTermSource(config.models_dir, config.terms.local, config.sdr)


def _close(provider: object) -> None:
    """Release what a provider holds (a channel, an HTTP client); local ones hold nothing to close."""
    close = getattr(provider, "close", None)
    if callable(close):
        close()


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


@dataclass(frozen=True)
class _Decoded:
    image: DecodedImage | Exception
    ms: float
    fingerprint: Fingerprint | None = None  # None when the image did not decode
    fingerprint_ms: float = 0.0  # the fingerprint's and the thumbnail's
    thumbnail: bytes | None = None


def _timed_decode(data: bytes, config: Config, side: int | None, thumbnail: bool) -> _Decoded:
    # The fingerprint and thumbnail are made here, on the decode threads, while the image is at hand.
    started = time.perf_counter()
    try:
        image = decode_image(data, config.image, side)
    except Exception as exc:  # MemoryError included: this image fails, the batch goes on
        return _Decoded(exc, (time.perf_counter() - started) * 1000)
    decoded = time.perf_counter()
    try:
        found = fingerprint(data, image.image)
        small = _thumbnail(image, config) if thumbnail else None
    except Exception as exc:  # as for decoding: this image fails alone
        return _Decoded(exc, (decoded - started) * 1000)
    return _Decoded(image, (decoded - started) * 1000, found, (time.perf_counter() - decoded) * 1000, small)


def _wants_thumbnail(options: EncodeOptions | None) -> bool:
    return options is not None and options.thumbnail


def _thumbnail(image: DecodedImage, config: Config) -> bytes | None:
    """The image's thumbnail for the index, or None when they are off.

    A JPEG decoded at a reduced scale (draft) keeps both sides at least the
    classifier's input side (224 px or so): a thumbnail larger than that comes out
    at the drafted size, never enlarged.
    """
    side = config.index.thumbnails
    if not side:
        return None
    return make_thumbnail(image.image, side, config.index.thumbnail_format, config.index.thumbnail_quality)


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
