"""Helpers shared by the tests (and the benchmarks that need the same files)."""
