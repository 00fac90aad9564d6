"""The connection to Milvus: made, dialled again after an outage, and for an embedded file, its milvus-lite process.

milvus-lite runs one process per file for the whole Python process: the engines of this
process on one file share it (and one write lock, see ``_connect``), and it is stopped
when the last of them closes; when it dies, the first engine to notice starts it again.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Any

from ...config import IndexConfig
from ...errors import UpstreamError, UpstreamKeyError
from ...upstream import Secret
from .faults import is_auth_error, plain

__all__ = ["MilvusConnection"]

logger = logging.getLogger(__name__)

# milvus-lite files open in this process, and how many engines use each (see MilvusConnection._leave_embedded).
_EMBEDDED_USERS: dict[str, int] = {}
_EMBEDDED_LOCK = threading.Lock()
_EMBEDDED_WRITE_LOCKS: dict[str, threading.Lock] = {}  # the write lock of every engine on each file


class MilvusConnection:
    """The client of one index's Milvus (``calls.MilvusCalls`` sets these up and makes the calls)."""

    config: IndexConfig
    uri: str
    embedded: bool
    shown_uri: str
    problem: str
    _token: Secret
    _client: Any
    _closed: bool
    _lite_socket: str | None
    _write_lock: threading.Lock

    def _leave_embedded(self) -> None:
        """Stop the milvus-lite process once no engine of this process uses its file (it may be opened again).

        milvus-lite runs one process per file for the whole Python process: stopping it while
        another engine (another collection set in the same file) still talks to it would cut
        that engine off mid-call.
        """
        if not self.embedded:
            return
        key = str(Path(self.uri).absolute().resolve())
        with _EMBEDDED_LOCK:
            users = _EMBEDDED_USERS.get(key, 0) - 1
            if users > 0:
                _EMBEDDED_USERS[key] = users
                return
            _EMBEDDED_USERS.pop(key, None)
            _EMBEDDED_WRITE_LOCKS.pop(key, None)
            from milvus_lite.server_manager import server_manager_instance  # noqa: PLC0415

            server_manager_instance.release_server(self.uri)

    def _redial(self) -> None:
        """A new client on a fresh connection, if Milvus answers one (else the old client stays)."""
        if self.embedded or self._closed:
            return
        try:
            fresh = self._new_client(timeout_s=min(2.0, self.config.milvus.timeout_s))
        except Exception:
            return
        old, self._client = self._client, fresh
        old.close()

    def _connect(self) -> Any:
        if self.embedded:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():  # milvus-lite 2.5 imports pkg_resources, deprecated but pinned
                warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
                client = self._new_client()
        except Exception as exc:
            if is_auth_error(exc):
                raise self._refused_credentials(exc) from None
            raise UpstreamError(f"cannot reach Milvus at {self.shown_uri}: {self._describe(exc)}") from None
        if self.embedded:
            key = str(Path(self.uri).absolute().resolve())
            with _EMBEDDED_LOCK:
                _EMBEDDED_USERS[key] = _EMBEDDED_USERS.get(key, 0) + 1
                self._lite_socket = _lite_server(key)
                # Every engine of this process on the file decides its copies under one lock: no other
                # process opens the file, so that makes SKIP exact there, near copies included.
                self._write_lock = _EMBEDDED_WRITE_LOCKS.setdefault(key, threading.Lock())
        return client

    def _revive_embedded(self) -> None:
        """Start milvus-lite again if its process died, and reconnect to the one now running.

        milvus-lite 2.5's process crashes now and then (a general protection fault in its gRPC
        thread, seen on this project's CI); the data is in its file, but pymilvus would dial
        the dead socket until every retry budget ran out. The first engine to notice starts
        a new process; every other engine on the file reconnects to it on its next failure.
        """
        if not self.embedded or self._closed:
            return
        from milvus_lite.server_manager import server_manager_instance as lite  # noqa: PLC0415

        key = str(Path(self.uri).absolute().resolve())
        with _EMBEDDED_LOCK:
            server = lite._servers.get(key)  # milvus-lite keeps no public handle on its process
            process = getattr(server, "_p", None)
            if process is not None and process.poll() is not None:
                logger.warning(
                    "milvus-lite for %s exited (code %s): starting it again", self.shown_uri, process.returncode
                )
                lite.release_server(key)
            socket = _lite_server(key)
            if socket is None or socket == self._lite_socket:
                return
            old, self._client = self._client, self._new_client()
            self._lite_socket = socket
        old.close()

    def _new_client(self, timeout_s: float | None = None) -> Any:
        from pymilvus import MilvusClient  # noqa: PLC0415 - only the milvus backend pays for the import

        # dedicated: a connection of its own, which close() really closes
        return MilvusClient(
            uri=self.uri, token=self._token.reveal(), timeout=timeout_s or self.config.milvus.timeout_s, dedicated=True
        )

    def _refused_credentials(self, exc: Exception) -> UpstreamKeyError:
        variable = self.config.milvus.token_env
        given = "the token in" if self._token.reveal() else "no token: set one in"
        self.problem = (
            f"Milvus at {self.shown_uri} refused this server's credentials ({self._describe(exc)}); it was given"
            f" {given} ${variable} (user:password or an API key)"
        )
        return UpstreamKeyError(self.problem)

    def _describe(self, exc: Exception) -> str:
        """What went wrong, in Milvus's words, without gRPC's debug text and never with the token."""
        details = getattr(exc, "details", None)
        message = getattr(exc, "message", None) or (details() if callable(details) else None) or str(exc)
        return self._token.redact(plain(str(message) or type(exc).__name__))[:300]


def _lite_server(key: str) -> str | None:
    """The socket of the milvus-lite process serving the file at ``key``, started if none runs."""
    from milvus_lite.server_manager import server_manager_instance as lite  # noqa: PLC0415

    socket: str | None = lite.start_and_get_uri(key)
    return socket
