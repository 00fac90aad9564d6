"""Moved to ``tests.helpers.upstreams``; this name stays for the modules that still import it from here."""

from tests.helpers.upstreams import FakeClarifai, red_pixels, start_clarifai

__all__ = ["FakeClarifai", "red_pixels", "start_clarifai"]
