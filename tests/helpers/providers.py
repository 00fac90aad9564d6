"""The remote providers' tests share these: a fake Clarifai or Cortical.io running for a module, the
provider's settings pointed at it, and the service started with the provider's key.

The settings wait as little as a loopback fake allows (``FAST``: no rate limit to speak
of, short retries), and every proxy variable is cleared (``without_proxies``) so a
proxy set on the machine never carries a test's call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from image2sdr.server.config import (
    ClarifaiConceptsConfig,
    Config,
    CorticalTermsConfig,
    HttpConfig,
    ServiceConfig,
)
from image2sdr.server.serve import Server, create_server
from tests.helpers.upstreams import FakeClarifai, FakeCortical, start_clarifai, start_cortical

__all__ = [
    "FAST",
    "PROXY_VARIABLES",
    "clarifai_running",
    "clarifai_settings",
    "cortical_running",
    "cortical_settings",
    "provider_config",
    "provider_service",
    "without_proxies",
]

# A provider's call settings against a fake on loopback: nothing to wait for.
FAST: dict[str, object] = {"rate_per_s": 1000.0, "timeout_s": 2.0, "retry_total_s": 1.0, "backoff_s": 0.01}
# What gRPC (Clarifai) and httpx (Cortical.io) would take a proxy from.
PROXY_VARIABLES = (
    "grpc_proxy",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "GRPC_PROXY",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
)


def without_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@contextmanager
def clarifai_running(key: str) -> Iterator[FakeClarifai]:
    """A fake Clarifai on a loopback port (``fake.port``) that takes ``key``."""
    fake = FakeClarifai(key)
    server, fake.port = start_clarifai(fake)  # type: ignore[attr-defined]
    try:
        yield fake
    finally:
        server.stop(None)


@contextmanager
def cortical_running(key: str) -> Iterator[FakeCortical]:
    """A fake Cortical.io on a loopback port (``fake.url``, its REST root) that takes ``key``."""
    fake = FakeCortical(key)
    server = start_cortical(fake)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/rest"  # type: ignore[attr-defined]
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def clarifai_settings(fake: FakeClarifai, key_env: str, **overrides: object) -> ClarifaiConceptsConfig:
    values = {"endpoint": f"127.0.0.1:{fake.port}", "tls": False, "api_key_env": key_env, **FAST}  # type: ignore[attr-defined]
    return ClarifaiConceptsConfig.model_validate(values | overrides)


def cortical_settings(fake: FakeCortical, key_env: str, **overrides: object) -> CorticalTermsConfig:
    values = {"base_url": fake.url, "api_key_env": key_env, **FAST}  # type: ignore[attr-defined]
    return CorticalTermsConfig.model_validate(values | overrides)


def provider_config(data_dir: Path, models_dir: Path, **parts: object) -> Config:
    """A service on port 0 with the given config parts (``concepts=``, ``terms=``, ...), gRPC only."""
    return Config(
        data_dir=data_dir,
        models_dir=models_dir,
        service=ServiceConfig(port=0, shutdown_grace_s=1.0),
        http=HttpConfig(enabled=False),  # gRPC only: no two servers share the fixed HTTP port
        **parts,  # type: ignore[arg-type]
    )


@contextmanager
def provider_service(config: Config, keys: Mapping[str, str]) -> Iterator[Server]:
    """The service over ``config``, its providers' keys in the environment while it starts; stopped after."""
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in keys.items():
            patch.setenv(variable, value)
        server = create_server(config)
    try:
        yield server
    finally:
        server.stop()
