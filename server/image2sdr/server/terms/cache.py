"""Where term SDRs are kept: a disk cache (diskcache) with a small RAM front.

A term is fetched or computed once per provider, model, version and size, and
then read from disk in every later process.  Values are bytes in a format
defined here, never pickles: diskcache unpickles by default, and a cache
directory is shared state that another process could have written (an open
CVE).  A record that is corrupt, of another format, or pickled counts as a miss
and is rewritten.  diskcache keeps its index in SQLite, so several processes
can share one directory safely.

Record layout (little-endian):
    magic b"I2S" | format 1 (u8) | flags (u8) | size (u32) | count (u32)
    | positions (u16 when size <= 65536, else u32) | crc32 of all before (u32)
flags bit 0 marks a term the provider does not know, so a remote retina is not
asked about it again.
"""

from __future__ import annotations

import logging
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import diskcache
import numpy as np

from ..config import CacheConfig
from ..sdr import Sdr
from .base import TermSource

__all__ = ["CachedTermSource", "TermCache", "decode_record", "encode_record"]

logger = logging.getLogger(__name__)

_MAGIC = b"I2S"
_FORMAT = 1
_HEADER = struct.Struct("<3sBBII")
_CRC = struct.Struct("<I")
_UNKNOWN = 1
_MISS = object()


class _ForeignRecord(OSError):
    """A pickled record: never unpickled (diskcache treats OSError as a miss)."""


class _BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    def fetch(self, mode: int, filename: str | None, value: object, read: bool) -> object:
        if mode == diskcache.core.MODE_PICKLE:
            raise _ForeignRecord("pickled cache record refused")
        return super().fetch(mode, filename, value, read)


def encode_record(sdr: Sdr | None, size: int) -> bytes:
    positions = np.zeros(0, np.uint32) if sdr is None else sdr.positions
    dtype = "<u2" if size <= 1 << 16 else "<u4"
    flags = _UNKNOWN if sdr is None else 0
    body = _HEADER.pack(_MAGIC, _FORMAT, flags, size, positions.size) + positions.astype(dtype).tobytes()
    return body + _CRC.pack(zlib.crc32(body))


def decode_record(record: object, size: int) -> Sdr | object | None:
    """The SDR (or None for a known-unknown term), or ``_MISS`` if the record is unusable."""
    if not isinstance(record, bytes) or len(record) < _HEADER.size + _CRC.size:
        return _MISS
    body, (crc,) = record[: -_CRC.size], _CRC.unpack(record[-_CRC.size :])
    magic, version, flags, stored_size, count = _HEADER.unpack_from(body)
    width = 2 if size <= 1 << 16 else 4
    if (magic, version, stored_size) != (_MAGIC, _FORMAT, size) or zlib.crc32(body) != crc:
        return _MISS
    if len(body) != _HEADER.size + count * width:
        return _MISS
    if flags & _UNKNOWN:
        return None
    positions = np.frombuffer(body, dtype="<u2" if width == 2 else "<u4", offset=_HEADER.size)
    if count == 0 or positions[-1] >= size or (count > 1 and (np.diff(positions.astype(np.int64)) <= 0).any()):
        return _MISS
    return Sdr.trusted(positions, size)


class TermCache:
    """Disk-backed map from (provider, model, version, size, term) to a term SDR."""

    def __init__(self, directory: Path, config: CacheConfig) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # least-recently-stored eviction: reads never write, so concurrent
        # readers do not contend for SQLite's write lock.
        self._disk = diskcache.Cache(
            str(directory),
            size_limit=config.size_limit,
            disk=_BytesOnlyDisk,
            eviction_policy="least-recently-stored",
        )
        self._memory: OrderedDict[str, Sdr | None] = OrderedDict()
        self._memory_items = config.memory_items
        self._lock = threading.Lock()

    @staticmethod
    def key(source: TermSource, term: str) -> str:
        # \x1f (unit separator) cannot occur in a normalised term.
        return "\x1f".join(("term", source.name, source.model, source.version, str(source.size), term))

    def get(self, key: str, size: int) -> Sdr | object | None:
        """The cached SDR, None for a known-unknown term, or ``TermCache.MISS``."""
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        value = decode_record(self._disk.get(key, default=None), size)
        if value is _MISS:
            return _MISS
        self._remember(key, value)  # type: ignore[arg-type]
        return value

    def put(self, key: str, sdr: Sdr | None, size: int) -> None:
        self._disk.set(key, encode_record(sdr, size))
        self._remember(key, sdr)

    def _remember(self, key: str, value: Sdr | None) -> None:
        if self._memory_items == 0:
            return
        with self._lock:
            self._memory[key] = value
            self._memory.move_to_end(key)
            while len(self._memory) > self._memory_items:
                self._memory.popitem(last=False)

    def __len__(self) -> int:
        return len(self._disk)

    def close(self) -> None:
        self._disk.close()

    MISS = _MISS


_FORWARDED = frozenset({"similar_terms"})  # optional provider capabilities (terms.base)


class CachedTermSource:
    """A TermSource that asks the cache first and the wrapped provider only for misses.

    The provider's optional capabilities (``similar_terms``) pass through, so
    ``isinstance(cached, SimilarTermsSource)`` holds exactly when the provider
    has them and nobody needs to unwrap the cache to find out.
    """

    def __init__(self, source: TermSource, cache: TermCache) -> None:
        self.source = source
        self.cache = cache
        # Distinct terms per lookup, found here or asked of the provider; read by the metrics at scrape time.
        self.hits = 0
        self.misses = 0
        self._counting = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this class lacks; only capabilities pass, nothing else leaks through.
        if name in _FORWARDED:
            return getattr(self.source, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def close(self) -> None:
        """Close the cache, then the provider (a remote one holds a connection)."""
        self.cache.close()
        close = getattr(self.source, "close", None)
        if callable(close):
            close()

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def model(self) -> str:
        return self.source.model

    @property
    def version(self) -> str:
        return self.source.version

    @property
    def size(self) -> int:
        return self.source.size

    def term_sdrs(self, terms: Sequence[str]) -> list[Sdr | None]:
        keys = [self.cache.key(self.source, term) for term in terms]
        found = {key: self.cache.get(key, self.size) for key in dict.fromkeys(keys)}
        missing = [term for term, key in zip(terms, keys, strict=True) if found[key] is _MISS]
        missing = list(dict.fromkeys(missing))  # each distinct term asked once
        with self._counting:
            self.hits += len(found) - len(missing)
            self.misses += len(missing)
        if missing:
            for term, sdr in zip(missing, self.source.term_sdrs(missing), strict=True):
                key = self.cache.key(self.source, term)
                self.cache.put(key, sdr, self.size)
                found[key] = sdr
        return [found[key] for key in keys]  # type: ignore[misc]
