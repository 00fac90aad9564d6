"""The Cortical.io term provider: semantic fingerprints from the Retina REST API.

- One single word: ``GET /terms?retina_name=..&term=..&get_fingerprint=true``;
  an unknown word comes back as an empty list.
- One phrase ("hard hat"): ``POST /expressions`` with ``{"text": ...}``.
- Several terms at once (the usual case: every distinct concept of a batch):
  ``POST /expressions/bulk`` with a list of ``{"term": ..}`` / ``{"text": ..}``
  expressions, ``max_bulk`` per request, so an image costs one request and
  not ten against a 2 requests/s plan.  A bulk request the API refuses with
  400 (a word it does not know can do that) is asked again one term at a time.

A term the retina does not know (empty list, empty fingerprint, or a 400 for
one phrase) is ``None``, which the encoder reports as a skipped concept; an
empty SDR never reaches the merge.  Positions are checked before they become
an ``Sdr``: integers, inside the retina, and sorted and de-duplicated here
whatever order they came in.  A refused key (HTTP 401/403) is
``UpstreamKeyError`` at once; 429, 5xx, timeouts and malformed JSON (an answer
cut short) are retried, and once the retries are spent they are
``UpstreamError``, carrying the server's Retry-After when it sent one.

Fingerprints are cached by ``CachedTermSource`` under (cortical, retina,
version, size, term), so a term is fetched once per retina.  Proxies: httpx
honours https_proxy / http_proxy / no_proxy (``trust_env``); an explicit
``proxy`` in config wins over them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from ..config import CorticalTermsConfig, SdrConfig
from ..errors import UpstreamError, UpstreamKeyError
from ..sdr import Sdr
from ..upstream import RateLimiter, Retryable, RetryPolicy, Secret, call_with_retries, read_key
from .base import normalize_term

__all__ = ["CorticalTermSource"]

logger = logging.getLogger(__name__)

PROVIDER = "Cortical.io"
# Bump when the way a term becomes a fingerprint changes (endpoint, parameters):
# it is part of every cache key.
FINGERPRINT_VERSION = "rest-1"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_KEY_STATUSES = frozenset({401, 403})
_MAX_ERROR_CHARS = 200  # of an upstream error body quoted in our message


class _Refused(UpstreamError):
    """HTTP 400: the API would not make a fingerprint of this request."""


class CorticalTermSource:
    """``TermSource`` backed by a Cortical.io retina."""

    name = "cortical"

    def __init__(
        self,
        config: CorticalTermsConfig,
        key: Secret,
        *,
        dimensions: tuple[int, ...] = (),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._config = config
        self._key = key
        self._dimensions = dimensions or (config.size,)
        self._client = httpx.Client(
            base_url=config.base_url,
            headers={"api-key": key.reveal(), "accept": "application/json"},
            timeout=config.timeout_s,
            proxy=config.proxy,
            trust_env=True,
            transport=transport,
            follow_redirects=False,  # a redirect would carry the key header to another host
        )
        self._limiter = RateLimiter(config.rate_per_s)
        self._policy = RetryPolicy(PROVIDER, config.timeout_s, config.retry_total_s, config.backoff_s)

    @classmethod
    def from_config(cls, config: CorticalTermsConfig, sdr: SdrConfig) -> CorticalTermSource:
        return cls(config, read_key(config.api_key_env, "terms.cortical.api_key_env"), dimensions=sdr.dimensions)

    def __repr__(self) -> str:
        return f"CorticalTermSource(retina={self.model!r}, base_url={self._config.base_url!r})"

    @property
    def model(self) -> str:
        return self._config.retina

    @property
    def version(self) -> str:
        return FINGERPRINT_VERSION

    @property
    def size(self) -> int:
        return self._config.size

    def close(self) -> None:
        self._client.close()

    # -- TermSource ------------------------------------------------------------------

    def term_sdrs(self, terms: Sequence[str]) -> list[Sdr | None]:
        normalized = [normalize_term(term) for term in terms]
        unique = list(dict.fromkeys(normalized))
        found: dict[str, Sdr | None] = {}
        if len(unique) == 1:
            found[unique[0]] = self._one(unique[0])
        else:
            for start in range(0, len(unique), self._config.max_bulk):
                chunk = unique[start : start + self._config.max_bulk]
                found.update(zip(chunk, self._bulk(chunk), strict=True))
        return [found[term] for term in normalized]

    def similar_terms(self, sdr: Sdr, k: int) -> list[tuple[str, int]]:
        """The retina's k terms nearest to ``sdr``: overlap descending, then term ascending."""
        answer = self._call(
            "POST",
            "expressions/similar_terms",
            "similar terms",
            {**self._retina, "start_index": 0, "max_results": k, "get_fingerprint": "true"},
            {"positions": sdr.positions.tolist()},
        )
        entries = _list_of_dicts(answer, "similar terms")
        matches: dict[str, int] = {}
        for entry in entries[:k]:
            term = entry.get("term")
            if not isinstance(term, str) or not term:
                raise UpstreamError(f"{PROVIDER} sent a similar term without a name")
            found = self._sdr(_fingerprint_positions(entry, f"term {term!r}"), f"term {term!r}")
            matches[term] = 0 if found is None else sdr.overlap(found)
        return sorted(matches.items(), key=lambda match: (-match[1], match[0]))

    # -- requests ----------------------------------------------------------------------

    @property
    def _retina(self) -> dict[str, str]:
        return {"retina_name": self._config.retina}

    def _one(self, term: str) -> Sdr | None:
        if " " in term:
            return self._phrase(term)
        try:
            answer = self._call(
                "GET",
                "terms",
                f"term {term!r}",
                {**self._retina, "term": term, "start_index": 0, "max_results": 1, "get_fingerprint": "true"},
            )
        except _Refused as exc:  # HTTP 400 for this word alone: unknown here, not an outage
            logger.info("%s has no fingerprint for %r: %s", PROVIDER, term, exc)
            return None
        entries = _list_of_dicts(answer, f"term {term!r}")
        if not entries:
            return None  # the retina does not know the word
        return self._sdr(_fingerprint_positions(entries[0], f"term {term!r}"), f"term {term!r}")

    def _phrase(self, text: str) -> Sdr | None:
        try:
            answer = self._call("POST", "expressions", f"phrase {text!r}", self._retina, {"text": text})
        except _Refused as exc:
            logger.info("%s has no fingerprint for %r: %s", PROVIDER, text, exc)
            return None
        if not isinstance(answer, dict):
            raise UpstreamError(f"{PROVIDER} sent a malformed fingerprint for phrase {text!r}")
        return self._sdr(answer.get("positions"), f"phrase {text!r}")

    def _bulk(self, terms: Sequence[str]) -> list[Sdr | None]:
        expressions = [{"text": term} if " " in term else {"term": term} for term in terms]
        try:
            answer = self._call("POST", "expressions/bulk", f"{len(terms)} terms", self._retina, expressions)
        except _Refused as exc:
            logger.info("%s refused a bulk request (%s); asking term by term", PROVIDER, exc)
            return [self._one(term) for term in terms]
        if not isinstance(answer, list) or len(answer) != len(terms):
            raise UpstreamError(f"{PROVIDER} sent a malformed bulk answer for {len(terms)} terms")
        return [
            self._sdr(entry.get("positions") if isinstance(entry, dict) else None, f"term {term!r}")
            for term, entry in zip(terms, answer, strict=True)
        ]

    def _call(self, method: str, path: str, what: str, params: dict[str, Any], body: object = None) -> object:
        request = self._client.build_request(method, path, params=params, json=body)

        def attempt(timeout: float) -> object:
            return self._attempt(request, what, timeout)

        return call_with_retries(attempt, self._policy, self._limiter)

    def _attempt(self, request: httpx.Request, what: str, timeout: float) -> object:
        request.extensions["timeout"] = httpx.Timeout(timeout).as_dict()
        try:
            response = self._client.send(request)
        except httpx.TimeoutException as exc:
            raise Retryable(f"no answer for {what} within {timeout:.1f} s") from exc
        except httpx.TransportError as exc:
            raise Retryable(f"cannot reach {self._config.base_url} ({type(exc).__name__})") from exc
        status = response.status_code
        if status in _RETRY_STATUSES:
            raise Retryable(f"HTTP {status} for {what}", retry_after_s=_retry_after(response))
        if status in _KEY_STATUSES:
            raise UpstreamKeyError(
                f"{PROVIDER} refused the API key (HTTP {status}); "
                "check the variable named by terms.cortical.api_key_env"
            )
        if status == 400:
            raise _Refused(f"HTTP 400 for {what}: {self._error_text(response)}")
        if status != 200:
            raise UpstreamError(f"{PROVIDER} answered HTTP {status} for {what}: {self._error_text(response)}")
        try:
            return response.json()
        except ValueError as exc:  # usually an answer cut short on the way: worth another try
            raise Retryable(f"{PROVIDER} sent malformed JSON for {what}") from exc

    def _error_text(self, response: httpx.Response) -> str:
        text = " ".join(response.text.split())[:_MAX_ERROR_CHARS]
        return self._key.redact(text) or "(no details)"

    # -- fingerprints -------------------------------------------------------------------

    def _sdr(self, positions: object, what: str) -> Sdr | None:
        """Validated positions as an Sdr; None for an empty fingerprint (an unknown term)."""
        if not isinstance(positions, list) or not all(type(p) is int for p in positions):
            raise UpstreamError(f"{PROVIDER} sent a malformed fingerprint for {what}")
        if not positions:
            return None
        array = np.unique(np.asarray(positions, dtype=np.int64))  # sorted, each position once
        if array[0] < 0 or array[-1] >= self.size:
            bad = int(array[0] if array[0] < 0 else array[-1])
            raise UpstreamError(
                f"{PROVIDER} fingerprint for {what} has position {bad} outside [0, {self.size}): "
                f"does terms.cortical.size match retina {self.model!r}?"
            )
        return Sdr.trusted(array, self.size, self._dimensions)


def _list_of_dicts(answer: object, what: str) -> list[dict[str, Any]]:
    if not isinstance(answer, list) or not all(isinstance(entry, dict) for entry in answer):
        raise UpstreamError(f"{PROVIDER} sent a malformed answer for {what}")
    return answer


def _fingerprint_positions(entry: dict[str, Any], what: str) -> object:
    fingerprint = entry.get("fingerprint")
    if not isinstance(fingerprint, dict):
        raise UpstreamError(f"{PROVIDER} sent {what} without a fingerprint")
    return fingerprint.get("positions")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # absent, or an HTTP date: our own backoff decides
