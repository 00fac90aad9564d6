"""`image2sdr serve`: run the service until SIGTERM or SIGINT, then shut down gracefully."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from .api import create_server
from .config import Config, load_config
from .errors import Image2SdrError

__all__ = ["main"]

logger = logging.getLogger("image2sdr")


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
