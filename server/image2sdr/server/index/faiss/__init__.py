"""The FAISS engine: SQLite stores the items (``store.py``, ``schema.py``), FAISS searches them.

``engine.FaissEngine`` is the entry; ``spaces.py`` keeps one FAISS backend per
space and its snapshot (``snapshot.py``); ``backend.py`` is the seam to the FAISS
structures and what both kinds share, ``flat.py`` (exact) and ``ivf.py``
(approximate, its lists trained in ``kmeans.py`` and read in ``ivf_lists.py``);
``live.py`` turns Hamming distances into exact overlaps; ``selection.py`` turns a
filter into the labels that pass (``bitmaps.py``: label sets); ``appearance.py`` finds
copies and blends; ``rows.py`` decodes a stored row.
"""

from .engine import LOCK_FILE, STORE_FILE, FaissEngine
from .schema import SCHEMA_VERSION
from .spaces import LEGACY_SNAPSHOT_FILE, snapshot_file

__all__ = ["LEGACY_SNAPSHOT_FILE", "LOCK_FILE", "SCHEMA_VERSION", "STORE_FILE", "FaissEngine", "snapshot_file"]
