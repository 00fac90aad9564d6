"""The one typed configuration of image2sdr, with every default in one place.

``config_example.yml`` at the repository root mirrors these classes field for
field; ``tests/test_config.py`` checks that the two never drift apart.
Secrets never live in the YAML: a provider names the environment variable that
holds its key (``api_key_env``), and only that variable is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import ConfigError

__all__ = [
    "CacheConfig",
    "ConceptsConfig",
    "Config",
    "ImageConfig",
    "IndexConfig",
    "LocalConceptsConfig",
    "LocalTermsConfig",
    "SdrConfig",
    "TermsConfig",
    "load_config",
]


class _Section(BaseModel):
    # A typo in a YAML key must fail loudly, not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SdrConfig(_Section):
    size: int = Field(16384, gt=0, le=1 << 20)  # bits; 128 x 128
    dimensions: tuple[int, ...] = (128, 128)  # product must equal size
    sparsity: float = Field(0.02, gt=0.0, le=0.5)  # active share: w = round(size * sparsity)
    tie_break_seed: int = Field(42, ge=0)  # fixes which of equally scored bits win a merge
    # How each term SDR's bits are weighted in a merge:
    #   "density": a term with n bits gives each bit confidence * w / n, so a dense
    #              (common) word weighs no more than a sparse one in total;
    #   "none":    each bit gets the plain confidence (the 2018 prototype).
    normalization: Literal["density", "none"] = "density"

    @model_validator(mode="after")
    def _dimensions_match_size(self) -> SdrConfig:
        product = 1
        for side in self.dimensions:
            product *= side
        if product != self.size:
            raise ValueError(f"dimensions {list(self.dimensions)} hold {product} bits, size is {self.size}")
        return self

    @property
    def active_bits(self) -> int:
        return round(self.size * self.sparsity)


class ImageConfig(_Section):
    max_bytes: int = Field(20 * 1024 * 1024, gt=0)  # 20 MiB, Clarifai's own per-image limit
    max_pixels: int = Field(50_000_000, gt=0)  # width x height, checked before decoding
    min_side: int = Field(16, ge=1)  # px; smaller images carry nothing to classify
    decode_threads: int = Field(2, ge=1, le=64)  # images decoded in parallel (Pillow releases the GIL)


class LocalConceptsConfig(_Section):
    batch_size: int = Field(16, ge=1, le=256)  # images per onnxruntime call
    threads: int = Field(0, ge=0)  # onnxruntime intra-op threads; 0 = one per core
    # WordNet synsets too abstract to describe an image (by lemma name).
    excluded: tuple[str, ...] = (
        "entity.n.01",
        "physical_entity.n.01",
        "abstraction.n.06",
        "object.n.01",
        "whole.n.02",
        "artifact.n.01",
        "instrumentality.n.03",
        "living_thing.n.01",
        "organism.n.01",
        "causal_agent.n.01",
        "matter.n.03",
        "substance.n.07",
        "substance.n.01",
        "part.n.01",
        "part.n.02",
        "relation.n.01",
        "unit.n.03",
        "group.n.01",
        "measure.n.02",
        "attribute.n.02",
        "psychological_feature.n.01",
        "thing.n.12",
        "commodity.n.01",
        "artefact.n.01",
        "device.n.01",
        "container.n.01",
        "structure.n.01",
        "covering.n.02",
        "implement.n.01",
        "equipment.n.01",
        "conveyance.n.03",
        "vertebrate.n.01",
        "chordate.n.01",
        "placental.n.01",
        "solid.n.01",
        "fluid.n.01",
        "foodstuff.n.02",
        "nutriment.n.01",
        "food.n.02",
        "geological_formation.n.01",
        "natural_object.n.01",
    )


class ConceptsConfig(_Section):
    provider: Literal["local"] = "local"
    max_concepts: int = Field(10, ge=1, le=200)  # concepts kept per image
    min_confidence: float = Field(0.0, ge=0.0, le=1.0)  # concepts below are left out
    local: LocalConceptsConfig = LocalConceptsConfig()


class LocalTermsConfig(_Section):
    seed: int = Field(20181107, ge=0)  # fixes the projection; part of every cache key
    batch_size: int = Field(64, ge=1, le=1024)  # phrases per onnxruntime call
    threads: int = Field(0, ge=0)  # onnxruntime intra-op threads; 0 = one per core


class CacheConfig(_Section):
    size_limit: int = Field(1 << 30, gt=0)  # bytes on disk; 1 GiB (~1.5M term SDRs)
    memory_items: int = Field(20_000, ge=0)  # term SDRs also kept in RAM (LRU); 0 = none


class TermsConfig(_Section):
    provider: Literal["local"] = "local"
    local: LocalTermsConfig = LocalTermsConfig()
    cache: CacheConfig = CacheConfig()


class IndexConfig(_Section):
    kind: Literal["exact", "hnsw", "ivf"] = "exact"


class Config(_Section):
    data_dir: Path = Path("data")  # term cache, index store and snapshots live here
    models_dir: Path = Path("models")  # written by `make models`
    sdr: SdrConfig = SdrConfig()
    image: ImageConfig = ImageConfig()
    concepts: ConceptsConfig = ConceptsConfig()
    terms: TermsConfig = TermsConfig()
    index: IndexConfig = IndexConfig()


# Environment variables that override the file (deployment concerns, not tuning).
_ENV_OVERRIDES = {
    "IMAGE2SDR_DATA_DIR": "data_dir",
    "IMAGE2SDR_MODELS_DIR": "models_dir",
}


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read YAML at ``path`` (or take the defaults) and apply environment overrides."""
    raw: dict[str, object] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping at the top level")
        raw = dict(loaded or {})
    for variable, field in _ENV_OVERRIDES.items():
        if os.environ.get(variable):
            raw[field] = os.environ[variable]
    try:
        return Config.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid config: {exc}") from exc
