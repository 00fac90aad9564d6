"""The bearer token, parsed and compared in one place for both edges.

``Authorization: Bearer <token>`` (gRPC metadata ``authorization``, or the HTTP header);
the scheme is matched case-insensitively and the token compared in constant time
(``hmac.compare_digest``), so response timing does not leak how much of a guess was
right.  The token comes from the environment variable ``service.token_env`` names.
"""

from __future__ import annotations

import hmac
import os

from .config import ServiceConfig

__all__ = ["BearerToken", "token_from_env"]

_SCHEME = b"bearer "


class BearerToken:
    """The token callers must send."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an empty token would let everyone in")
        self._expected = token.encode("utf-8")

    def admits(self, authorization: str | bytes | None) -> bool:
        """Whether an Authorization value (``Bearer <token>``) carries the token."""
        if authorization is None:
            return False
        value = authorization.encode("utf-8") if isinstance(authorization, str) else authorization
        if value[: len(_SCHEME)].lower() != _SCHEME:
            return False
        return hmac.compare_digest(value[len(_SCHEME) :].strip(), self._expected)


def token_from_env(service: ServiceConfig) -> BearerToken | None:
    """The configured token (``service.token_env``), None when the variable is unset or empty: no token asked."""
    token = os.environ.get(service.token_env, "")
    return BearerToken(token) if token else None
