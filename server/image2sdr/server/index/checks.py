"""Kept so that ``from image2sdr.server.index.checks import ...`` goes on working.

The rules live in ``filters.py`` (filters, concept names) and ``validation.py``
(items, searches); new code imports them from there.
"""

from .filters import check_concept_name, check_filter

__all__ = ["check_concept_name", "check_filter"]
