"""`image2sdr serve`: run the service until SIGTERM or SIGINT, then shut down gracefully."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .config import Config, load_config
from .errors import Image2SdrError
from .service import create_server

__all__ = ["main"]

logger = logging.getLogger("image2sdr")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="image2sdr serve", description="Run the image2sdr gRPC service.")
    parser.add_argument("--config", type=Path, help="YAML config (see config_example.yml); default: built-in defaults")
    parser.add_argument("--host", help="listen address (overrides service.host)")
    parser.add_argument("--port", type=int, help="listen port, 0 for any free one (overrides service.port)")
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
    if args.data_dir is not None:
        raw["data_dir"] = args.data_dir
    return Config.model_validate(raw)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = _apply(load_config(args.config), args)
        server = create_server(config)
    except (Image2SdrError, ValueError) as exc:
        logger.error("cannot start: %s", exc)
        return 1
    # Printed (not only logged) so scripts that start the service on port 0 can read it.
    print(f"image2sdr listening on {config.service.host}:{server.port}", flush=True)
    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s, shutting down (grace %.0f s)", signal.Signals(signum).name, server.grace_s)
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    stopping.wait()
    server.stop()
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
