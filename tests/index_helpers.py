"""Kept so that ``from tests.index_helpers import ...`` goes on working: the helpers are in tests/helpers/index.py."""

from tests.helpers.index import SIZE, brute_force, clustered_items, pairs, passing, random_sdr, semantic_backend

__all__ = ["SIZE", "brute_force", "clustered_items", "pairs", "passing", "random_sdr", "semantic_backend"]
