"""The server's release: Info, the HTTP face's OpenAPI and the build_info metric all name it."""

from __future__ import annotations

__all__ = ["SERVER_VERSION"]

SERVER_VERSION = "0.1.0"
