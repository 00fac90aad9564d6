"""Kept so that ``from image2sdr.server.index.protocol import ...`` goes on working.

The values live in ``values.py`` and ``ItemIndex`` in ``item_index.py``; new code
imports them from ``image2sdr.server.index``.
"""

from . import values
from .item_index import ItemIndex
from .values import *  # noqa: F403 - every value, as this module offered them before

__all__ = ["ItemIndex", *values.__all__]  # noqa: PLE0604 - values.__all__ holds only str
