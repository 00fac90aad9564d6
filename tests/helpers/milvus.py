"""A real Milvus server for the tests: the standalone build that PyPI's ``milvus`` package ships.

It lives in its own virtualenv (``make milvus-server`` makes ``.venv-milvus``), since its
Python wrapper pins what it likes; the tests only run its ``milvus-server`` command.
Every port it opens is chosen free, so a developer's own Milvus on 19530 is left alone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from pymilvus import MilvusClient

from image2sdr.server.index import MilvusIndex
from image2sdr.server.index.milvus import CONCEPTS, LAYOUT, THUMBS
from image2sdr.server.index.milvus.expressions import NO_MARK

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
COMMAND = Path(os.environ.get("IMAGE2SDR_MILVUS_SERVER", ROOT / ".venv-milvus" / "bin" / "milvus-server"))
# Milvus keeps a stopped server's sessions in etcd this long (its default 30 s): a server
# started again on the same data serves no query until they expire (the old query node still
# holds the collections). Shorter here, so a restart costs the tests seconds, not half a minute.
SESSION_TTL_S = 10
# The internal ports the wrapper lets us move (etcd's peer port and the metrics port it does not).
_PORT_FLAGS = (
    "--etcd-port",
    "--root-coord-port",
    "--proxy-internal-port",
    "--query-coord-port",
    "--query-node-port",
    "--index-coord-port",
    "--index-node-port",
    "--data-coord-port",
    "--data-node-port",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MilvusServer:
    """``milvus-server --data DIR`` on free ports; ``stop`` and ``start`` again keep the data."""

    def __init__(self, data_dir: Path) -> None:
        if not COMMAND.exists():
            raise RuntimeError(f"{COMMAND} is missing: run `make milvus-server` (make test does)")
        self.data_dir = data_dir
        self.port = _free_port()
        self._ports = {flag: _free_port() for flag in _PORT_FLAGS}
        self._process: subprocess.Popen[bytes] | None = None
        self._log = data_dir.parent / "milvus-server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> None:
        args = [str(COMMAND), "--data", str(self.data_dir), "--proxy-port", str(self.port)]
        # The wrapper binds each port itself (without SO_REUSEADDR) and moves on to the next free one
        # if that fails: after a stop, the old connections in TIME_WAIT made a restarted server listen
        # on port + 1, where no client looks. Written into its config, Milvus binds the port itself.
        args += ["--extra-config", f"proxy.port={self.port}", "--extra-config", f"common.session.ttl={SESSION_TTL_S}"]
        for flag, port in self._ports.items():
            args += [flag, str(port)]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self._log, "ab") as log:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(timeout_s)
        except BaseException:  # a server that never answered is not left running (nor its wrapper)
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"milvus-server exited with {self._process.returncode}; see {self._log}")
            try:
                # dedicated: pymilvus keeps one shared connection per URI for the whole process, and
                # after a restart that one's reconnect backoff outlasted the 120 s here (bench_milvus_replicas)
                client = MilvusClient(uri=self.uri, timeout=2, dedicated=True)
                client.list_collections()
                client.close()
                logger.info("milvus-server answers on %s", self.uri)  # when, for recovery figures (-o log_cli=true)
                return
            except Exception:
                time.sleep(0.5)
        raise RuntimeError(f"milvus-server did not answer on {self.uri} within {timeout_s:.0f} s; see {self._log}")

    def stop(self) -> None:
        """SIGINT to the wrapper (SIGTERM would leave its milvus child running), then wait."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the whole group: the wrapper and its child
            process.wait(timeout=10)
        self._wait_ports_closed()

    def _wait_ports_closed(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.2)


def drop_collections(uri: str, prefix: str) -> None:
    """Drop every collection whose name starts with ``prefix`` (a test's collection set), so the server unloads it."""
    client = MilvusClient(uri=uri, timeout=30)
    try:
        for name in client.list_collections():
            if name.startswith(prefix):
                client.drop_collection(name)
    finally:
        client.close()


def as_before_thumbnails(index: MilvusIndex) -> None:
    """Leave ``index``'s collection set as the release before thumbnails did: no ``thumbs``, and a meta row
    that does not record one (since then it does, so that a ``thumbs`` missing later is known as dropped)."""
    engine = index.engine
    engine._client.drop_collection(engine._names[THUMBS])
    note = json.dumps({"layout": LAYOUT, "migrated_items": 0, "at_ms": 0})
    meta = {"row": "meta.items", "key": "meta", "name": "", "seq": LAYOUT, "part": 0, "parts": 0}
    engine._upsert(CONCEPTS, [{**meta, "text": note, "code": NO_MARK}])
