"""Info: what this service is (geometry, providers, index, limits) and how much it holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..config import Config
from ..index.values import VISUAL, DuplicateThresholds
from ..version import SERVER_VERSION
from .parts import AskedThresholds, Parts, thresholds

__all__ = ["SERVER_VERSION", "Provider", "ServiceInfo", "info"]


@dataclass(frozen=True)
class Provider:
    name: str
    model: str
    version: str


@dataclass(frozen=True)
class ServiceInfo:
    server_version: str
    config: Config  # the geometry, sparsity and limits the service runs with
    concepts: Provider
    terms: Provider
    visual: Provider | None  # None: the visual channel is off
    index_kind: str
    index_size: int
    index_visual_size: int
    custom_concepts: int
    duplicate_thresholds: DuplicateThresholds
    vocabulary_size: int


def info(parts: Parts) -> ServiceInfo:
    config, encoder = parts.config, parts.encoder
    look = encoder.appearance
    return ServiceInfo(
        server_version=SERVER_VERSION,
        config=config,
        concepts=_provider(encoder.concept_source),
        terms=_provider(encoder.term_source),
        visual=None if look is None else _provider(look),
        index_kind=_index_kind(config),
        index_size=parts.index.count(),
        index_visual_size=parts.index.count(VISUAL),
        custom_concepts=parts.library.count(),
        duplicate_thresholds=thresholds(AskedThresholds(), config.index, ""),
        vocabulary_size=len(parts.vocabulary),
    )


class _Named(Protocol):
    """What every provider says of itself (concept, term and visual sources alike)."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def version(self) -> str: ...


def _provider(source: _Named) -> Provider:
    return Provider(source.name, source.model, source.version)


def _index_kind(config: Config) -> str:
    """What Info names as the index: the FAISS structure ("exact", "ivf") or "milvus <index type>"."""
    if config.index.backend == "milvus":
        return f"milvus {config.index.milvus.index_type}"
    return config.index.kind
