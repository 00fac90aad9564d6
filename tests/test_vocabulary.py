"""The SimilarTerms vocabulary: its size known without building it, and a build on one background thread.

A term source that records what it is asked (around the real local one) tells whether
the vocabulary was built; a gate the test holds keeps a background build waiting,
so nothing here waits on the clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from image2sdr.client import Image2SdrClient
from image2sdr.server.config import Config, HttpConfig, ServiceConfig
from image2sdr.server.encoder import Encoder
from image2sdr.server.errors import UpstreamError
from image2sdr.server.sdr import Sdr
from image2sdr.server.serve import Server, create_server
from image2sdr.server.terms.base import TermSource
from image2sdr.server.terms.local import LocalTermSource
from image2sdr.server.vocabulary import Vocabulary

TERMS = ["cat", "coffee mug", "dog", "rocket", "tea"]


class Recording:
    """A term source that records each list of terms it is asked for, and can hold or fail a call."""

    def __init__(self, source: TermSource) -> None:
        self.source = source
        self.asked: list[list[str]] = []
        self.gate: threading.Event | None = None  # set: calls go on; None: never held
        self.failures: list[Exception] = []  # raised by the next calls, one each

    def __getattr__(self, name: str) -> Any:  # name, model, version, size, hits, ...
        return getattr(self.source, name)

    def term_sdrs(self, terms: Sequence[str]) -> list[Sdr | None]:
        self.asked.append(list(terms))
        if self.gate is not None:
            self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        return self.source.term_sdrs(terms)

    def terms_asked(self) -> list[str]:
        return [term for call in self.asked for term in call]


@pytest.fixture(scope="module")
def local_terms(models_dir: Path) -> LocalTermSource:
    config = Config(models_dir=models_dir)
    return LocalTermSource(models_dir, config.terms.local, config.sdr)


@pytest.fixture
def recording(local_terms: LocalTermSource) -> Recording:
    return Recording(local_terms)


def test_the_size_is_known_without_asking_for_a_single_term(recording: Recording) -> None:
    vocabulary = Vocabulary(TERMS, recording)  # type: ignore[arg-type]  # a TermSource by its methods
    assert len(vocabulary) == len(TERMS) and not vocabulary.built
    assert recording.asked == []
    cat = recording.source.term_sdrs(["cat"])[0]
    assert cat is not None
    assert vocabulary.nearest(cat, 1) == [("cat", cat.active)]
    assert sorted(recording.terms_asked()) == TERMS and vocabulary.built
    assert len(vocabulary) == len(TERMS)  # the local provider gives every term an SDR: the number stands


def test_warm_builds_once_on_one_thread(recording: Recording) -> None:
    vocabulary = Vocabulary(TERMS, recording)  # type: ignore[arg-type]
    recording.gate = threading.Event()
    thread = vocabulary.warm()
    assert vocabulary.warm() is thread and thread.daemon  # one thread, however often asked
    assert not vocabulary.built and len(vocabulary) == len(TERMS)  # Info answers while it builds
    recording.gate.set()
    thread.join()
    assert vocabulary.built
    assert sorted(recording.terms_asked()) == TERMS  # each term asked once
    cat = recording.source.term_sdrs(["cat"])[0]
    assert cat is not None and vocabulary.nearest(cat, 1)[0][0] == "cat"
    assert len(recording.asked) == 1  # the search found it built


def test_a_failed_background_build_is_tried_again_by_the_first_search(
    recording: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    vocabulary = Vocabulary(TERMS, recording)  # type: ignore[arg-type]
    recording.failures.append(UpstreamError("term provider down"))
    with caplog.at_level(logging.WARNING, logger="image2sdr.server.vocabulary"):
        vocabulary.warm().join()
    assert not vocabulary.built and "first SimilarTerms tries again" in caplog.text
    cat = recording.source.term_sdrs(["cat"])[0]
    assert cat is not None and vocabulary.nearest(cat, 1)[0][0] == "cat"
    assert vocabulary.built


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[Server, Recording]]:
    """A server on a fresh data directory whose term source records what it is asked.

    Its vocabulary is a short word list, so that SimilarTerms builds it in a moment; the
    default one (1,800 WordNet names) goes the same way, only slower.
    """
    data = tmp_path_factory.mktemp("fresh")
    words = data / "words.txt"
    words.write_text("# a few words\n" + "\n".join(TERMS) + "\n", encoding="utf-8")
    config = Config(
        data_dir=data,
        models_dir=models_dir,
        service=ServiceConfig(port=0, shutdown_grace_s=0.5, vocabulary_file=words),
        http=HttpConfig(enabled=False),
    )
    encoder = Encoder.from_config(config)
    recording = Recording(encoder.term_source)
    encoder.term_source = recording  # type: ignore[assignment]
    server = create_server(config, encoder=encoder)
    yield server, recording
    server.stop()


def test_info_on_a_fresh_data_directory_builds_no_vocabulary(fresh: tuple[Server, Recording]) -> None:
    server, recording = fresh
    with Image2SdrClient(server.address, timeout=60) as client:
        info = client.info()
        assert info.vocabulary_size == len(TERMS)
        assert recording.asked == []  # not one term: the build (4 s for the default list, 10-21 s busy) is not Info's
        cat = client.encode_text("cat")
        assert client.similar_terms(cat, k=1)[0].term == "cat"
        assert sorted(recording.terms_asked()) == sorted(["cat", *TERMS])  # EncodeText, then SimilarTerms built it
        assert client.info().vocabulary_size == len(TERMS)
