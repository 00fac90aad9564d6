"""The providers a config selects: concepts, terms, and the visual SDR's feature source.

Remote providers are imported only when selected: their client libraries are
large, and an offline deployment need not load them.
"""

from __future__ import annotations

from ..appearance import Appearance
from ..concepts.base import ConceptSource
from ..concepts.local import LocalConceptSource
from ..concepts.nsfw import WithNsfw
from ..config import Config
from ..errors import ModelsMissingError
from ..terms.base import TermSource

__all__ = ["appearance_for", "classifier_of", "close_provider", "concept_source", "term_source"]


def concept_source(config: Config) -> ConceptSource:
    if config.concepts.provider == "clarifai":
        from ..concepts.clarifai import ClarifaiConceptSource  # noqa: PLC0415

        source: ConceptSource = ClarifaiConceptSource.from_config(config.concepts.clarifai)
    else:
        source = LocalConceptSource(config.models_dir, config.concepts.local)
    if not config.concepts.nsfw.enabled:
        return source
    try:
        return WithNsfw.from_config(source, config.concepts.nsfw)
    except BaseException:
        close_provider(source)
        raise


def classifier_of(source: ConceptSource) -> object:
    """The provider under the nsfw wrapper: the local classifier the visual SDR can share."""
    return source.base if isinstance(source, WithNsfw) else source


def appearance_for(config: Config, concepts: ConceptSource) -> Appearance | None:
    """The visual SDR's projection and its feature source: the local classifier, shared when it gives the concepts."""
    if not config.visual.enabled:
        return None
    local = classifier_of(concepts)
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


def term_source(config: Config) -> TermSource:
    if config.terms.provider == "cortical":
        from ..terms.cortical import CorticalTermSource  # noqa: PLC0415

        return CorticalTermSource.from_config(config.terms.cortical, config.sdr)
    from ..terms.local import LocalTermSource  # noqa: PLC0415  (loads a model)

    return LocalTermSource(config.models_dir, config.terms.local, config.sdr)


def close_provider(provider: object) -> None:
    """Release what a provider holds (a channel, an HTTP client); local ones hold nothing to close."""
    close = getattr(provider, "close", None)
    if callable(close):
        close()
