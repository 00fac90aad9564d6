"""The composition root and `image2sdr serve`.

``create_server(config)`` builds the core (an ``Encoder``, the index the config names,
the vocabulary), the use cases over it, and starts both edges around them: gRPC
(``grpc_api``) and, when ``http.enabled``, HTTP/JSON with the page (``http_api``).
Parts already built (an encoder) may be handed in: tests share one loaded encoder.
``main`` runs the service until SIGTERM or SIGINT, then shuts it down gracefully.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from .auth import token_from_env
from .config import Config, load_config
from .encoder import Encoder, Encoding
from .errors import Image2SdrError
from .grpc_api import SERVICE_NAME, GrpcServer, start_grpc
from .http_api import HttpServer, create_app
from .index import SdrIndex, open_index
from .index.item_index import ItemIndex
from .metrics import Metrics
from .terms.base import TermSource
from .usecases import IndexWatch, UseCases
from .usecases.terms import similar_terms_source
from .vocabulary import Vocabulary, default_terms, read_terms

__all__ = ["SERVICE_NAME", "Server", "create_server", "main", "open_index"]

logger = logging.getLogger("image2sdr")


@dataclass
class Server:
    """A started service and what it owns; ``stop`` shuts everything down in order."""

    grpc: GrpcServer
    cases: UseCases
    encoder: Encoder
    index: ItemIndex
    grace_s: float
    metrics: Metrics = field(default_factory=Metrics)  # this server's own registry (GET /metrics renders it)
    http: HttpServer | None = None  # the HTTP/JSON face (http.enabled), on its own thread and port
    watch: IndexWatch | None = None  # health follows the index (backend: milvus)
    owned: tuple[Encoder | ItemIndex, ...] = ()  # what create_server built, closed by stop
    _observer: Callable[[Encoding], None] | None = None  # what encoder.on_encoded was before this server

    @property
    def port(self) -> int:
        return self.grpc.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_port(self) -> int | None:
        """The HTTP port (the one picked, for http.port 0); None when http.enabled is false."""
        return None if self.http is None else self.http.port

    def stop(self, grace_s: float | None = None) -> None:
        # Health first, so load balancers stop sending new calls; then let the
        # calls in flight finish within the grace period; then close storage.
        if self.watch is not None:
            self.watch.stop()
        self.cases.health.stop()
        grace = self.grace_s if grace_s is None else grace_s
        if self.http is not None:  # both sides drain at once, within one grace period
            self.http.begin_stop()
        self.grpc.stop(grace)
        if self.http is not None:
            self.http.join(grace)
        self.cases.close()  # map jobs read the index: they stop before it closes
        if self.encoder.on_encoded == self.metrics.observe_encoding:  # a shared encoder outlives this server
            self.encoder.on_encoded = self._observer
        for part in reversed(self.owned):
            part.close()

    def wait(self) -> None:
        self.grpc.server.wait_for_termination()


def create_server(
    config: Config, *, encoder: Encoder | None = None, index: ItemIndex | None = None, metrics: Metrics | None = None
) -> Server:
    """Build, bind and start the service; ``config.service.port = 0`` picks a free port.

    ``encoder`` and ``index`` may be handed in: the caller keeps them (``stop`` leaves
    them open), so tests share one loaded encoder. Otherwise they are built from the
    config (``open_index``) and closed by ``stop``. ``metrics`` (default: a new registry)
    is fed by both edges, the encoder and the index: ``Server.metrics``. If anything fails
    on the way, what this call opened is closed again (the index holds a lock on its
    directory), so a caller may fix the config and retry.
    """
    opened: list[Encoder | ItemIndex] = []
    try:
        if encoder is None:
            encoder = Encoder.from_config(config)
            opened.append(encoder)
        if index is None:
            index = open_index(config)
            opened.append(index)
        return _start(config, encoder, index, metrics or Metrics(), tuple(opened))
    except BaseException:
        for resource in reversed(opened):
            resource.close()
        raise


def _start(
    config: Config, encoder: Encoder, index: ItemIndex, metrics: Metrics, owned: tuple[Encoder | ItemIndex, ...]
) -> Server:
    observer = _observe(metrics, encoder, index)
    vocabulary = Vocabulary(_vocabulary_terms(config, encoder.term_source), encoder.term_source)
    cases = UseCases(config, encoder, index, vocabulary)
    token = token_from_env(config.service)
    try:
        grpc_server = start_grpc(config, cases, metrics, token)
    except BaseException:
        cases.close()
        raise
    http = None
    if config.http.enabled:  # if it cannot start, the gRPC server stops too
        try:
            http = HttpServer.start(
                create_app(cases, config, metrics), config.http, config.service.tls, config.service.shutdown_grace_s
            )
        except BaseException:
            grpc_server.stop(0)
            cases.close()
            raise
    watch = None
    if config.index.backend == "milvus":  # a remote engine can fail while this process runs on
        watch = IndexWatch(index, cases.health, config.index.milvus.health_every_s)
        watch.start()
    return Server(
        grpc_server, cases, encoder, index, config.service.shutdown_grace_s, metrics, http, watch, owned, observer
    )


def _vocabulary_terms(config: Config, terms: TermSource) -> list[str]:
    if config.service.vocabulary_file is not None:
        return read_terms(config.service.vocabulary_file)
    if similar_terms_source(terms) is not None:
        return []  # SimilarTerms asks the provider; no word list to fingerprint
    return default_terms(config.models_dir)


def _observe(metrics: Metrics, encoder: Encoder, index: ItemIndex) -> Callable[[Encoding], None] | None:
    """Feed ``metrics`` from the core: every image encoded, every snapshot written, sizes when scraped.

    Returns what the encoder reported to before (a shared encoder reports to its newest server).
    """
    metrics.watch(encoder, index)
    before = encoder.on_encoded
    encoder.on_encoded = metrics.observe_encoding
    if isinstance(index, SdrIndex):  # Milvus keeps its own storage: no snapshots here
        index.on_snapshot = metrics.observe_snapshot
    return before


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="image2sdr serve", description="Run the image2sdr service: gRPC, and HTTP/JSON with its page."
    )
    parser.add_argument("--config", type=Path, help="YAML config (see config_example.yml); default: built-in defaults")
    parser.add_argument("--host", help="listen address (overrides service.host)")
    parser.add_argument("--port", type=int, help="listen port, 0 for any free one (overrides service.port)")
    parser.add_argument("--http-port", type=int, help="HTTP/JSON port, 0 for any free one (overrides http.port)")
    parser.add_argument("--data-dir", type=Path, help="term cache and index directory (overrides data_dir)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def _apply(config: Config, args: argparse.Namespace) -> Config:
    """Command-line flags win over the file and the environment."""
    raw = config.model_dump()
    if args.host is not None:
        raw["service"]["host"] = args.host
    if args.port is not None:
        raw["service"]["port"] = args.port
    if args.http_port is not None:
        raw["http"]["port"] = args.http_port
    if args.data_dir is not None:
        raw["data_dir"] = args.data_dir
    return Config.model_validate(raw)


# glibc's mallopt(M_MMAP_THRESHOLD): allocations at least this large get pages of their own.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1 << 20


def _return_large_frees_to_the_system() -> None:
    """Let the memory of a large decode go back to the OS once the image is freed.

    glibc raises its mmap threshold each time a large block is freed, up to 32 MiB,
    so after one big image Pillow's 16 MiB blocks and numpy's arrays come from the
    heap arenas, which keep the pages: a server that once decoded a 50 MP image
    stayed near 2 GB resident.  A fixed threshold keeps such blocks mmapped, and
    munmap returns them.  Small allocations (the 224 px crops) are not affected.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: its allocator has its own policy
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if not mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES):
        logger.debug("mallopt(M_MMAP_THRESHOLD) was refused")


def _wake_on_signals() -> int:
    """Return a pipe that receives one byte (the signal number) per SIGTERM or SIGINT.

    The byte is written by CPython's C-level handler (``set_wakeup_fd``), whichever
    thread the kernel delivers the signal to.  A Python-level handler would not do:
    it runs only in the main thread, between bytecodes, and when the kernel picks
    one of gRPC's threads the main thread's blocking read is never interrupted, so
    the handler never runs (CI saw the server ignore a SIGTERM this way).
    """
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)  # set_wakeup_fd requires it
    signal.set_wakeup_fd(wake_write)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _ignore)  # replaces the defaults (exit, KeyboardInterrupt)
    return wake_read


def _ignore(signum: int, frame: FrameType | None) -> None:
    """The wakeup byte does the work; this only keeps the default action away."""


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _return_large_frees_to_the_system()
    try:
        config = _apply(load_config(args.config), args)
        server = create_server(config)
    except (Image2SdrError, ValueError) as exc:
        logger.error("cannot start: %s", exc)
        return 1
    wake_read = _wake_on_signals()
    # Printed (not only logged) so scripts that start the service on port 0 can read it;
    # after the handlers are in place, so a signal sent as soon as this line is read
    # takes the graceful path rather than the default (instant death).
    print(f"image2sdr listening on {config.service.host}:{server.port}", flush=True)
    if server.http_port is not None:  # a line of its own: scripts read the gRPC port from the first
        scheme = "https" if config.service.tls.cert_file else "http"
        print(f"image2sdr HTTP on {scheme}://{config.http.host}:{server.http_port}/", flush=True)
    signum = os.read(wake_read, 1)[0]  # blocks until SIGTERM or SIGINT
    logger.info("received %s, shutting down (grace %.0f s)", signal.Signals(signum).name, server.grace_s)
    server.stop()
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
