"""FAISS snapshots on disk: written atomically, checked before anything is loaded.

Layout of one snapshot file (little-endian)::

    [FAISS index, as faiss.write_index_binary writes it]
    [weights by label: int32]  [liveness bitmap by label: uint8]
    [IVF probe table: uint8, sdr_size x nlist; absent (0 bytes) for the exact kind]
    [header: UTF-8 JSON]  [header length: u32]  [CRC-32 of all bytes before it: u32]  [magic: 8 bytes]

The header (store id, change counter, layout, kind, section lengths) sits at
the end because the FAISS section's length is only known once written. A
reader checks magic, lengths against the file size, then the header against
the store (a stale snapshot is dropped without reading further), then the CRC
over the whole file, and only then hands bytes to FAISS. Writing goes to a
temporary file, fsync, rename over the old snapshot, fsync of the directory: a
crash leaves either the old snapshot or the new one, plus perhaps a temp file
that the next open deletes.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np

from ..config import IndexConfig
from .faiss_index import FaissIndex, Layout

__all__ = ["SnapshotKey", "load_snapshot", "remove_temporaries", "write_snapshot"]

logger = logging.getLogger(__name__)

MAGIC = b"I2SDRSN1"
_TRAILER = struct.Struct("<II8s")  # header length, CRC-32, magic
_CHUNK = 8 << 20  # bytes per read/write call when streaming


@dataclass(frozen=True)
class SnapshotKey:
    """What a snapshot must match to be loaded."""

    store_id: str
    changes: int
    layout: Layout
    kind: str
    ivf_nlist: int
    ivf_lists_per_item: int

    def header(self) -> dict[str, object]:
        header: dict[str, object] = {
            "store_id": self.store_id,
            "changes": self.changes,
            "sdr_size": self.layout.sdr_size,
            "equalize_bits": self.layout.equalize_bits,
            "kind": self.kind,
            "ivf_nlist": self.ivf_nlist if self.kind == "ivf" else 0,
        }
        if self.kind == "ivf":  # absent for exact, so exact snapshots from before it still load
            header["ivf_lists_per_item"] = self.ivf_lists_per_item
        return header


class _ChecksumWriter:
    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.crc = 0
        self.written = 0

    def write(self, data: bytes) -> int:
        self.file.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.written += len(data)
        return len(data)


def write_snapshot(path: Path, key: SnapshotKey, index: FaissIndex) -> None:
    """Write ``index`` as the snapshot at ``path`` for ``key``, atomically and durably."""
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}-{id(index):x}")
    try:
        with open(temporary, "wb") as file:
            writer = _ChecksumWriter(file)
            faiss_writer = faiss.PyCallbackIOWriter(writer.write, _CHUNK)  # type: ignore[attr-defined]
            faiss.write_index_binary(index.index, faiss_writer)
            del faiss_writer  # flushes its buffer into writer
            faiss_length = writer.written
            weights, live = index.arrays()
            writer.write(weights.astype("<i4", copy=False).tobytes())
            writer.write(live.tobytes())
            probe_bytes = 0
            if index.probe_table is not None:
                probe_bytes = int(index.probe_table.nbytes)
                writer.write(index.probe_table.tobytes())
            header = dict(
                key.header(),
                faiss_bytes=faiss_length,
                labels=int(weights.size),
                probe_bytes=probe_bytes,
                ivf_trained_at=index.ivf_trained_at,
                ivf_copies=index.copies,
            )
            encoded = json.dumps(header, sort_keys=True).encode()
            writer.write(encoded)
            writer.write(struct.pack("<I", len(encoded)))
            file.write(struct.pack("<I", writer.crc) + MAGIC)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def load_snapshot(path: Path, key: SnapshotKey, config: IndexConfig) -> FaissIndex | None:
    """The index saved at ``path`` if it is intact and matches ``key``; else None (and why, logged)."""
    try:
        with open(path, "rb") as file:
            header = _read_header(file)
            if header is None:
                return None
            if not _matches(header, key):
                logger.info("snapshot %s is stale (%s), rebuilding from the store", path, _describe(header, key))
                return None
            if not _checksum_ok(file):
                logger.warning("snapshot %s fails its checksum, rebuilding from the store", path)
                return None
            return _load(file, header, key.layout, config)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RuntimeError) as exc:
        logger.warning("snapshot %s unreadable (%s), rebuilding from the store", path, exc)
        return None


def remove_temporaries(path: Path) -> None:
    """Delete temp files a crash during ``write_snapshot`` left behind."""
    for leftover in path.parent.glob(f"{path.name}.tmp-*"):
        logger.info("removing unfinished snapshot %s", leftover)
        leftover.unlink(missing_ok=True)


def _read_header(file: BinaryIO) -> dict[str, object] | None:
    size = os.fstat(file.fileno()).st_size
    if size < _TRAILER.size:
        logger.warning("snapshot %s is truncated (%d bytes), rebuilding from the store", file.name, size)
        return None
    file.seek(size - _TRAILER.size)
    header_length, _, magic = _TRAILER.unpack(file.read(_TRAILER.size))
    if magic != MAGIC or header_length > size - _TRAILER.size:
        logger.warning("snapshot %s has no valid trailer (truncated or foreign), rebuilding", file.name)
        return None
    file.seek(size - _TRAILER.size - header_length)
    try:
        header = json.loads(file.read(header_length))
    except ValueError:
        logger.warning("snapshot %s has a damaged header, rebuilding", file.name)
        return None
    if not isinstance(header, dict) or not _sizes_add_up(header, size, header_length):
        logger.warning("snapshot %s sections do not add up to its size, rebuilding", file.name)
        return None
    return header


def _sizes_add_up(header: Mapping[str, object], size: int, header_length: int) -> bool:
    faiss_bytes, labels = header.get("faiss_bytes"), header.get("labels")
    probe_bytes = header.get("probe_bytes", 0)
    if not isinstance(faiss_bytes, int) or not isinstance(labels, int) or labels % 8:
        return False
    if not isinstance(probe_bytes, int) or probe_bytes < 0:
        return False
    return faiss_bytes + labels * 4 + labels // 8 + probe_bytes + header_length + _TRAILER.size == size


def _matches(header: Mapping[str, object], key: SnapshotKey) -> bool:
    expected = key.header()
    return all(header.get(name) == value for name, value in expected.items())


def _describe(header: Mapping[str, object], key: SnapshotKey) -> str:
    expected = key.header()
    return ", ".join(
        f"{name} {header.get(name)!r} != {value!r}" for name, value in expected.items() if header.get(name) != value
    )


def _checksum_ok(file: BinaryIO) -> bool:
    size = os.fstat(file.fileno()).st_size
    covered = size - 12  # everything before the CRC and the magic
    file.seek(0)
    crc, remaining = 0, covered
    while remaining:
        block = file.read(min(_CHUNK, remaining))
        if not block:
            return False
        crc = zlib.crc32(block, crc)
        remaining -= len(block)
    stored = int(struct.unpack("<I", file.read(4))[0])
    return crc == stored


def _load(file: BinaryIO, header: Mapping[str, object], layout: Layout, config: IndexConfig) -> FaissIndex:
    faiss_bytes = int(header["faiss_bytes"])  # type: ignore[call-overload]
    labels = int(header["labels"])  # type: ignore[call-overload]
    file.seek(0)
    remaining = [faiss_bytes]

    def read(count: int) -> bytes:
        block = file.read(min(count, remaining[0]))
        remaining[0] -= len(block)
        return block

    reader = faiss.PyCallbackIOReader(read, _CHUNK)  # type: ignore[attr-defined]
    loaded = faiss.read_index_binary(reader)
    del reader
    if remaining[0] or loaded.code_size != layout.code_size:
        raise ValueError("FAISS section does not match its header")
    weights = np.frombuffer(file.read(labels * 4), dtype="<i4")
    live = np.frombuffer(file.read(labels // 8), dtype=np.uint8)
    probe_bytes = int(header.get("probe_bytes", 0))  # type: ignore[call-overload]
    index = FaissIndex(layout, config)
    index.index = loaded
    index.ivf_trained_at = int(header.get("ivf_trained_at", 0))  # type: ignore[call-overload]
    if index.is_ivf:
        index.nlist = int(loaded.nlist)  # type: ignore[attr-defined]  # an IndexBinaryIVF here
        index.copies = int(header.get("ivf_copies", 1))  # type: ignore[call-overload]
        if not 1 <= index.copies <= index.nlist or loaded.ntotal % index.copies:
            raise ValueError("IVF copies per item do not match the FAISS section")
        if probe_bytes != layout.sdr_size * index.nlist:  # IVF snapshots all carry one
            raise ValueError("probe table does not match the IVF lists")
        table = np.frombuffer(file.read(probe_bytes), dtype=np.uint8)
        index.probe_table = table.reshape(layout.sdr_size, index.nlist).copy()
    elif probe_bytes:
        raise ValueError("probe table in a snapshot of a flat index")
    index.restore_arrays(weights, live)
    if index.indexed < index.live_count:
        raise ValueError("FAISS section holds fewer items than the live labels")
    return index


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
