"""One loaded encoder per models directory for the whole test session: servers share it.

Loading the models takes seconds; every real server of the suite used to load its own.
``shared_encoder`` builds one (default config, its term cache in a directory of its own)
and hands the same one to every caller; ``close_shared`` (the session's end) closes them.
``with_fresh_cache`` is the shared models behind a term cache of its own, for a test that
counts cache misses; ``with_config`` the shared models under another config (thumbnails,
say: what the encoder reads of its config, not what loads the models).  Close neither:
their models are the shared ones (close the fresh cache).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from image2sdr.server.config import Config
from image2sdr.server.encoder import Encoder
from image2sdr.server.terms.cache import CachedTermSource, TermCache

__all__ = ["close_shared", "shared_encoder", "with_config", "with_fresh_cache"]

_SHARED: dict[Path, tuple[Encoder, Path]] = {}


def shared_encoder(models_dir: Path) -> Encoder:
    """The session's encoder for ``models_dir`` (default config), loaded on first use."""
    if models_dir not in _SHARED:
        data_dir = Path(tempfile.mkdtemp(prefix="image2sdr-shared-encoder-"))
        _SHARED[models_dir] = (Encoder.from_config(Config(data_dir=data_dir, models_dir=models_dir)), data_dir)
    return _SHARED[models_dir][0]


def with_fresh_cache(shared: Encoder, data_dir: Path) -> tuple[Encoder, TermCache]:
    """The shared models behind a new, empty term cache under ``data_dir``; close the cache, not the encoder."""
    terms = shared.term_source
    provider = terms.source if isinstance(terms, CachedTermSource) else terms
    cache = TermCache(data_dir / "terms", shared.config.terms.cache)
    return Encoder(shared.config, shared.concept_source, CachedTermSource(provider, cache), shared.appearance), cache


def with_config(shared: Encoder, config: Config) -> Encoder:
    """The shared models under ``config`` (what loads them must be the default: the SDR geometry, the
    concept and term providers and their models; merge settings such as ``sdr.confidence_power`` may differ)."""
    return Encoder(config, shared.concept_source, shared.term_source, shared.appearance)


def close_shared() -> None:
    for encoder, data_dir in _SHARED.values():
        encoder.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    _SHARED.clear()
