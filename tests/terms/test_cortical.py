"""The Cortical.io term provider against a real HTTP server on loopback that answers with
Cortical.io's JSON shapes, and the image2sdr service configured to use it, end to end."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2

from image2sdr.server.config import (
    CacheConfig,
    ClarifaiConceptsConfig,
    ConceptsConfig,
    Config,
    CorticalTermsConfig,
    TermsConfig,
    VisualConfig,
)
from image2sdr.server.errors import ConfigError, UpstreamError, UpstreamKeyError
from image2sdr.server.merge import Merger, WeightedSdr
from image2sdr.server.sdr import Sdr
from image2sdr.server.serve import Server
from image2sdr.server.terms.base import SimilarTermsSource, TermSource
from image2sdr.server.terms.cache import CachedTermSource, TermCache
from image2sdr.server.terms.cortical import CorticalTermSource
from image2sdr.server.upstream import Secret
from image2sdr.server.vocabulary import Vocabulary
from image2sdr.v1 import image2sdr_pb2 as pb
from image2sdr.v1 import image2sdr_pb2_grpc as pb_grpc
from tests.helpers.providers import (
    clarifai_running,
    clarifai_settings,
    cortical_running,
    cortical_settings,
    provider_config,
    provider_service,
    without_proxies,
)
from tests.helpers.servers import serving
from tests.helpers.upstreams import (
    RETINA_SIZE,
    FakeClarifai,
    FakeCortical,
    FakeProxy,
    digest,
    fingerprint,
)

TIMEOUT = 60
KEY_ENV = "IMAGE2SDR_TEST_CORTICAL_KEY"
CLARIFAI_KEY_ENV = "IMAGE2SDR_TEST_CLARIFAI_KEY"


@pytest.fixture(scope="module")
def key() -> str:
    return secrets.token_hex(16)  # obviously fake, made for this run


@pytest.fixture(scope="module")
def fake(key: str) -> Iterator[FakeCortical]:
    with cortical_running(key) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh(fake: FakeCortical, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.reset()
    without_proxies(monkeypatch)


def settings(fake: FakeCortical, **overrides: object) -> CorticalTermsConfig:
    return cortical_settings(fake, KEY_ENV, **overrides)


@pytest.fixture
def source(fake: FakeCortical, key: str) -> Iterator[CorticalTermSource]:
    source = CorticalTermSource(settings(fake), Secret(key), dimensions=(128, 128))
    yield source
    source.close()


def sdr_of(text: str) -> Sdr:
    return Sdr.from_positions(fingerprint(text), RETINA_SIZE, (128, 128))


# -- the provider --------------------------------------------------------------------------


def test_a_single_word_uses_terms(source: CorticalTermSource, fake: FakeCortical, key: str) -> None:
    assert isinstance(source, TermSource) and isinstance(source, SimilarTermsSource)
    (cat,) = source.term_sdrs(["  Cat "])
    assert cat == sdr_of("cat") and cat.dimensions == (128, 128)
    (request,) = fake.requests
    assert (request.method, request.path) == ("GET", "/rest/terms")
    assert request.query == {
        "retina_name": ["en_associative"],
        "term": ["cat"],
        "start_index": ["0"],
        "max_results": ["1"],
        "get_fingerprint": ["true"],
    }
    assert request.headers["api-key"] == key


def test_a_phrase_uses_expressions(source: CorticalTermSource, fake: FakeCortical) -> None:
    (hat,) = source.term_sdrs(["hard hat"])
    assert hat == sdr_of("hard hat")
    (request,) = fake.requests
    assert (request.method, request.path, request.body) == ("POST", "/rest/expressions", {"text": "hard hat"})
    assert request.query == {"retina_name": ["en_associative"]}


def test_several_terms_go_in_one_bulk_request(source: CorticalTermSource, fake: FakeCortical) -> None:
    found = source.term_sdrs(["cat", "hard hat", "coffee", "cat"])
    assert found == [sdr_of("cat"), sdr_of("hard hat"), sdr_of("coffee"), sdr_of("cat")]
    (request,) = fake.requests  # each distinct term asked once, all together
    assert request.path == "/rest/expressions/bulk"
    assert request.body == [{"term": "cat"}, {"text": "hard hat"}, {"term": "coffee"}]


def test_bulk_requests_hold_at_most_max_bulk(fake: FakeCortical, key: str) -> None:
    source = CorticalTermSource(settings(fake, max_bulk=2), Secret(key))
    try:
        found = source.term_sdrs(["a", "b", "c", "d", "e"])
    finally:
        source.close()
    assert found == [Sdr.from_positions(fingerprint(t), RETINA_SIZE) for t in "abcde"]
    assert [len(r.body) for r in fake.requests] == [2, 2, 1]


def test_unknown_terms_are_none_never_empty(source: CorticalTermSource, fake: FakeCortical) -> None:
    fake.unknown |= {"xyzzy", "plugh twisty"}
    assert source.term_sdrs(["xyzzy"]) == [None]  # /terms answers []
    assert source.term_sdrs(["plugh twisty"]) == [None]  # /expressions answers no positions
    # The strict fake refuses a bulk naming an unknown word (400): asked again term by term.
    fake.requests.clear()
    found = source.term_sdrs(["cat", "xyzzy", "plugh twisty", "dog"])
    assert found == [sdr_of("cat"), None, None, sdr_of("dog")]
    bulk, cat, xyzzy, plugh, dog = (
        "/rest/expressions/bulk",
        "/rest/terms",
        "/rest/terms",
        "/rest/expressions",
        "/rest/terms",
    )
    assert [r.path for r in fake.requests] == [bulk, cat, xyzzy, plugh, dog]


def test_positions_are_sorted_deduplicated_and_checked(source: CorticalTermSource, fake: FakeCortical) -> None:
    # The fake sends every fingerprint reversed with a duplicate: it arrives sorted and unique.
    (cat,) = source.term_sdrs(["cat"])
    assert cat is not None and np.all(np.diff(cat.positions.astype(np.int64)) > 0)
    fake.script.append("out-of-range")
    with pytest.raises(UpstreamError, match=r"position 16389 outside \[0, 16384\).*terms.cortical.size"):
        source.term_sdrs(["dog"])


@pytest.mark.parametrize("positions", [[1, "2"], [1.5], None, [True, 3]])
def test_malformed_fingerprints_are_refused(source: CorticalTermSource, positions: object) -> None:
    with pytest.raises(UpstreamError, match="malformed fingerprint"):
        source._sdr(positions, "term 'x'")


def test_malformed_json_is_retried(source: CorticalTermSource, fake: FakeCortical) -> None:
    fake.script.append("malformed")  # one answer cut short on the way, then a good one
    assert source.term_sdrs(["cat"])[0] is not None
    assert len(fake.requests) == 2
    fake.always = "malformed"
    with pytest.raises(UpstreamError, match="malformed JSON"):
        source.term_sdrs(["dog"])
    assert len(fake.requests) > 3


def test_a_retry_after_beyond_the_budget_ends_the_call_and_is_passed_on(
    source: CorticalTermSource, fake: FakeCortical
) -> None:
    fake.script.append("429-60")  # the budget is 1 s: waiting 60 s cannot fit
    with pytest.raises(UpstreamError) as busy:
        source.term_sdrs(["cat"])
    assert busy.value.retry_after_s == 60.0 and "asks for 60 s" in str(busy.value)
    assert len(fake.requests) == 1


def test_unauthorized_is_not_retried_and_hides_the_key(fake: FakeCortical, caplog: pytest.LogCaptureFixture) -> None:
    wrong = secrets.token_hex(16)
    source = CorticalTermSource(settings(fake), Secret(wrong))
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(UpstreamError) as refused:
            source.term_sdrs(["cat"])
    finally:
        source.close()
    assert "refused the API key (HTTP 401)" in str(refused.value)
    assert isinstance(refused.value, UpstreamKeyError)
    assert len(fake.requests) == 1
    assert wrong not in str(refused.value) and wrong not in repr(refused.value) and wrong not in caplog.text
    assert wrong not in repr(source)


def test_429_and_503_are_retried(
    source: CorticalTermSource, fake: FakeCortical, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script.extend(["429", "503", "429"])
    with caplog.at_level(logging.WARNING):
        assert source.term_sdrs(["cat"]) == [sdr_of("cat")]
    assert len(fake.requests) == 4
    assert "HTTP 429" in caplog.text and "HTTP 503" in caplog.text


def test_retries_stop_within_the_budget(fake: FakeCortical, key: str) -> None:
    fake.always = "503"
    source = CorticalTermSource(settings(fake, retry_total_s=0.4, backoff_s=0.05), Secret(key))
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as failed:
            source.term_sdrs(["cat", "dog"])
        elapsed = time.monotonic() - started
    finally:
        source.close()
    assert elapsed < 0.4 + 0.5
    assert "Cortical.io unavailable: HTTP 503" in str(failed.value) and "gave up after" in str(failed.value)
    assert len(fake.requests) >= 2


def test_timeouts_are_retried(fake: FakeCortical, key: str) -> None:
    fake.slow_s = 0.6
    fake.script.append("slow")
    source = CorticalTermSource(settings(fake, timeout_s=0.2, retry_total_s=3.0), Secret(key))
    try:
        started = time.monotonic()
        assert source.term_sdrs(["cat"]) == [sdr_of("cat")]
    finally:
        source.close()
    assert len(fake.requests) == 2 and time.monotonic() - started < 0.6 + 1.0


def test_nothing_listening(key: str) -> None:
    config = CorticalTermsConfig(base_url="http://127.0.0.1:9/rest", retry_total_s=0.3, backoff_s=0.01, rate_per_s=1000)
    source = CorticalTermSource(config, Secret(key))
    try:
        with pytest.raises(UpstreamError, match=r"cannot reach http://127.0.0.1:9/rest \(ConnectError\)"):
            source.term_sdrs(["cat"])
    finally:
        source.close()


def test_rate_limit_spaces_requests(fake: FakeCortical, key: str) -> None:
    source = CorticalTermSource(settings(fake, rate_per_s=10.0), Secret(key))
    try:
        started = time.monotonic()
        for term in ("a", "b", "c", "d"):
            source.term_sdrs([term])
    finally:
        source.close()
    assert len(fake.requests) == 4 and time.monotonic() - started >= 3 / 10 - 0.01


def test_similar_terms(source: CorticalTermSource, fake: FakeCortical) -> None:
    query = sdr_of("cat")
    nearest = source.similar_terms(query, 3)
    assert nearest[0] == ("cat", query.active)
    assert [overlap for _, overlap in nearest] == sorted((o for _, o in nearest), reverse=True)
    (request,) = fake.requests
    assert request.path == "/rest/expressions/similar_terms" and request.query["max_results"] == ["3"]
    assert request.body == {"positions": query.positions.tolist()}


def test_the_cache_fetches_a_term_once_per_retina(fake: FakeCortical, key: str, tmp_path: Path) -> None:
    fake.unknown.add("xyzzy")
    for _ in range(2):  # a second process on the same cache directory
        source = CorticalTermSource(settings(fake), Secret(key))
        cache = TermCache(tmp_path / "terms", CacheConfig())
        try:
            cached = CachedTermSource(source, cache)
            assert cached.term_sdrs(["cat", "xyzzy", "hard hat"]) == [sdr_of("cat"), None, sdr_of("hard hat")]
        finally:
            cache.close()
            source.close()
    assert len(fake.requests) == 1 + 3  # the bulk (refused: xyzzy), then one per term; nothing the second time
    other = CorticalTermSource(settings(fake, retina="en_synonymous"), Secret(key))
    cache = TermCache(tmp_path / "terms", CacheConfig())
    try:
        CachedTermSource(other, cache).term_sdrs(["cat"])
    finally:
        cache.close()
        other.close()
    assert fake.requests[-1].query["retina_name"] == ["en_synonymous"]  # another retina: fetched again


def test_explicit_proxy_setting(fake: FakeCortical, key: str) -> None:
    proxy = FakeProxy()
    try:
        source = CorticalTermSource(settings(fake, proxy=proxy.url), Secret(key))
        try:
            assert source.term_sdrs(["cat"]) == [sdr_of("cat")]
        finally:
            source.close()
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert len(proxy.seen) == 1 and proxy.seen[0].startswith(f"GET {fake.url}/terms?")  # type: ignore[attr-defined]


def test_proxy_from_the_environment_and_no_proxy(fake: FakeCortical, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = FakeProxy()
    try:
        monkeypatch.setenv("http_proxy", proxy.url)
        source = CorticalTermSource(settings(fake), Secret(key))
        try:
            assert source.term_sdrs(["cat"]) == [sdr_of("cat")]
        finally:
            source.close()
        assert len(proxy.seen) == 1
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        source = CorticalTermSource(settings(fake), Secret(key))
        try:
            assert source.term_sdrs(["dog"]) == [sdr_of("dog")]
        finally:
            source.close()
        assert len(proxy.seen) == 1  # no_proxy: straight to the server
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_config_refuses_a_retina_of_another_size() -> None:
    with pytest.raises(ValueError, match=r"terms.cortical.size 1024 differs from sdr.size 16384"):
        Config(terms=TermsConfig(provider="cortical", cortical=CorticalTermsConfig(size=1024)))


def test_missing_key(fake: FakeCortical, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"terms.cortical.api_key_env names {KEY_ENV}, which is not set"):
        CorticalTermSource.from_config(settings(fake), Config().sdr)


# -- end to end: the image2sdr service with terms.provider = cortical -----------------------


@pytest.fixture(scope="module")
def local_concepts(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, fake: FakeCortical, key: str
) -> Iterator[Server]:
    """Local classifier + Cortical.io fingerprints."""
    terms = TermsConfig(provider="cortical", cortical=settings(fake))
    config = provider_config(tmp_path_factory.mktemp("cortical-service"), models_dir, terms=terms)
    with provider_service(config, {KEY_ENV: key}) as server:
        yield server


@pytest.fixture(scope="module")
def clarifai(key: str) -> Iterator[FakeClarifai]:
    with clarifai_running(secrets.token_hex(16)) as fake:
        yield fake


@pytest.fixture(scope="module")
def both_remote(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeCortical, clarifai: FakeClarifai, key: str
) -> Iterator[Server]:
    """Clarifai concepts + Cortical.io fingerprints: no local model at all."""
    default_timeout = ClarifaiConceptsConfig.model_fields["timeout_s"].default
    config = provider_config(
        tmp_path_factory.mktemp("remote-service"),
        tmp_path_factory.mktemp("no-models"),
        concepts=ConceptsConfig(
            provider="clarifai", clarifai=clarifai_settings(clarifai, CLARIFAI_KEY_ENV, timeout_s=default_timeout)
        ),
        terms=TermsConfig(provider="cortical", cortical=settings(fake)),
        visual=VisualConfig(enabled=False),  # the visual SDR would need the local classifier
    )
    with provider_service(config, {KEY_ENV: key, CLARIFAI_KEY_ENV: clarifai.key}) as server:
        yield server


@pytest.fixture(scope="module")
def local_stub(local_concepts: Server) -> Iterator[pb_grpc.Image2SdrStub]:
    with grpc.insecure_channel(local_concepts.address) as channel:
        yield pb_grpc.Image2SdrStub(channel)


@pytest.fixture(scope="module")
def remote_stub(both_remote: Server) -> Iterator[pb_grpc.Image2SdrStub]:
    with grpc.insecure_channel(both_remote.address) as channel:
        yield pb_grpc.Image2SdrStub(channel)


def predicted(server: Server, concepts: list[tuple[str, float]], unknown: set[str]) -> list[int]:
    """The merge of the fake retina's fingerprints, weighted by the concepts' confidences (``sdr.confidence_power``)."""
    sdr = server.encoder.config.sdr
    merger = Merger(sdr.size, sdr.dimensions, sdr.tie_break_seed, sdr.normalization, sdr.confidence_power)
    weighted = []
    for name, confidence in concepts:
        weight = merger.concept_weight(confidence)
        term, weight = (name[3:], -weight) if name.startswith("no ") else (name, weight)
        if term not in unknown:
            weighted.append(WeightedSdr(Sdr.from_positions(fingerprint(term), sdr.size, sdr.dimensions), weight))
    return merger.merge(weighted, sdr.active_bits).sdr.positions.tolist()


def test_local_concepts_with_cortical_fingerprints(
    local_concepts: Server, local_stub: pb_grpc.Image2SdrStub, fake: FakeCortical, photos: dict[str, bytes]
) -> None:
    fake.unknown.add("animal")
    response = local_stub.Encode(pb.EncodeRequest(image=photos["chelsea"]), timeout=TIMEOUT)
    names = [c.name for c in response.concepts]
    assert "cat" in names and "animal" in names
    animal = next(c for c in response.concepts if c.name == "animal")
    assert not animal.used and animal.skip_reason == "term 'animal' is unknown to the cortical term provider"
    assert all(c.used for c in response.concepts if c.name != "animal")
    concepts = [(c.name, c.confidence) for c in response.concepts]
    assert list(response.sdr.active) == predicted(local_concepts, concepts, {"animal"})
    # One bulk request per max_bulk terms; the one refused for naming an unknown word, then one request per term.
    chunk = local_concepts.encoder.config.terms.cortical.max_bulk
    expected = []
    for start in range(0, len(names), chunk):
        part = names[start : start + chunk]
        expected.append("/rest/expressions/bulk")
        if "animal" in part:
            expected += ["/rest/expressions" if " " in name else "/rest/terms" for name in part]
    assert [r.path for r in fake.requests] == expected
    # Cached: the same photo again costs Cortical.io nothing.
    fake.requests.clear()
    again = local_stub.Encode(pb.EncodeRequest(image=photos["chelsea"]), timeout=TIMEOUT)
    assert list(again.sdr.active) == list(response.sdr.active) and not fake.requests


def test_clarifai_and_cortical_together(
    both_remote: Server,
    remote_stub: pb_grpc.Image2SdrStub,
    fake: FakeCortical,
    clarifai: FakeClarifai,
    photos: dict[str, bytes],
) -> None:
    answer = [("cat", 0.96875), ("no person", 0.9375), ("hard hat", 0.5), ("whiskers", 0.25)]
    clarifai.answers[digest(photos["chelsea"])] = answer
    fake.unknown.add("whiskers")
    stub = remote_stub
    response = stub.Encode(pb.EncodeRequest(image=photos["chelsea"]), timeout=TIMEOUT)
    assert list(response.sdr.active) == predicted(both_remote, answer, {"whiskers"})
    assert [(c.name, c.used) for c in response.concepts] == [
        ("cat", True),
        ("no person", True),
        ("hard hat", True),
        ("whiskers", False),
    ]
    (bulk, *_) = fake.requests
    assert bulk.body == [{"term": "cat"}, {"term": "person"}, {"text": "hard hat"}, {"term": "whiskers"}]
    info = stub.Info(pb.InfoRequest(), timeout=TIMEOUT)
    assert (info.concepts.name, info.terms.name, info.terms.model, info.terms.version) == (
        "clarifai",
        "cortical",
        "en_associative",
        "rest-1",
    )
    assert fake.key.encode() not in info.SerializeToString() and clarifai.key.encode() not in info.SerializeToString()


def test_encode_text_and_similar_terms_ask_the_retina(remote_stub: pb_grpc.Image2SdrStub, fake: FakeCortical) -> None:
    stub = remote_stub
    text = stub.EncodeText(pb.EncodeTextRequest(text="Kitten"), timeout=TIMEOUT)
    assert list(text.sdr.active) == fingerprint("kitten")
    fake.unknown.add("xyzzy")
    with pytest.raises(grpc.RpcError) as unknown:
        stub.EncodeText(pb.EncodeTextRequest(text="xyzzy"), timeout=TIMEOUT)
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    words = stub.SimilarTerms(pb.SimilarTermsRequest(sdr=text.sdr, k=3), timeout=TIMEOUT)
    assert words.terms[0].term == "kitten" and words.terms[0].overlap == len(fingerprint("kitten"))
    assert fake.requests[-1].path == "/rest/expressions/similar_terms"


def test_the_vocabulary_counts_only_terms_with_an_sdr(source: CorticalTermSource, fake: FakeCortical) -> None:
    fake.unknown.add("xyzzy")
    vocabulary = Vocabulary(["cat", "dog", "xyzzy"], source)
    assert len(vocabulary) == 3  # Info publishes this: before the build, the terms listed (never waits on it)
    assert [term for term, _ in vocabulary.nearest(Sdr.from_positions(fingerprint("cat"), 16384), 3)] == ["cat", "dog"]
    assert len(vocabulary) == 2  # once built, what SimilarTerms can answer with


def test_the_upstream_wait_reaches_the_caller(remote_stub: pb_grpc.Image2SdrStub, fake: FakeCortical) -> None:
    fake.script.append("429-60")
    with pytest.raises(grpc.RpcError) as busy:
        remote_stub.EncodeText(pb.EncodeTextRequest(text="retry-after-word"), timeout=TIMEOUT)
    assert busy.value.code() == grpc.StatusCode.UNAVAILABLE
    status = next(value for name, value in busy.value.trailing_metadata() if name == "grpc-status-details-bin")
    retry = error_details_pb2.RetryInfo()
    assert status_pb2.Status.FromString(status).details[0].Unpack(retry)
    assert retry.retry_delay.seconds == 60  # the provider's own wait, not a guess of ours


@pytest.mark.parametrize(
    ("fault", "message", "code"),
    [
        ("503", "Cortical.io unavailable: HTTP 503", grpc.StatusCode.UNAVAILABLE),
        # A refused key is the operator's to fix: no status that invites a retry.
        ("401", "refused the API key", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_faults_give_their_status_and_the_service_recovers(
    both_remote: Server,
    remote_stub: pb_grpc.Image2SdrStub,
    fake: FakeCortical,
    clarifai: FakeClarifai,
    *,
    photos: dict[str, bytes],
    fault: str,
    message: str,
    code: grpc.StatusCode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fresh = [(f"{fault}-word-{i}", 0.5) for i in range(3)]  # not in the term cache yet
    clarifai.answers[digest(photos["coffee"])] = fresh
    fake.always = fault
    stub = remote_stub
    with caplog.at_level(logging.DEBUG):
        for call, request in (
            (stub.Encode, pb.EncodeRequest(image=photos["coffee"])),
            (stub.EncodeText, pb.EncodeTextRequest(text=f"{fault}-text")),
        ):
            with pytest.raises(grpc.RpcError) as failed:
                call(request, timeout=TIMEOUT)
            assert failed.value.code() == code
            assert message in failed.value.details()
            assert fake.key not in failed.value.details()
        stream = list(
            stub.EncodeStream(iter([pb.EncodeRequest(image=photos["coffee"], request_id="x")]), timeout=TIMEOUT)
        )
        assert stream[0].error.code == code.value[0]
    assert fake.key not in caplog.text and clarifai.key not in caplog.text
    assert serving(both_remote.address)
    fake.always = "ok"
    response = stub.Encode(pb.EncodeRequest(image=photos["coffee"]), timeout=TIMEOUT)
    assert list(response.sdr.active) == predicted(both_remote, fresh, set())
