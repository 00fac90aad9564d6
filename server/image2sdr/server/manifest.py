"""What `make models` exported: short ids of the model files, for cache keys and Info.

``make models`` writes each file's sha256 into ``manifest.json``; reading it is
free, while hashing 90 MB at every start would cost about a third of a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

__all__ = ["MANIFEST_FILE", "file_fingerprint"]

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"


def file_fingerprint(models_dir: Path, name: str) -> str:
    """The first 12 hex digits of the file's sha256, so a re-export with other weights shows."""
    manifest = models_dir / MANIFEST_FILE
    try:
        digest = json.loads(manifest.read_text(encoding="utf-8"))["files"][name]
        if isinstance(digest, str) and len(digest) >= 12:
            return digest[:12]
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("no usable %s in %s; hashing %s instead", MANIFEST_FILE, models_dir, name)
    sha = hashlib.sha256()
    with (models_dir / name).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:12]
