"""Backend snapshots on disk: written atomically off the request path, checked before anything is loaded.

One file per space (``semantic.snapshot``, ...), little-endian::

    [body: the backend's sections, as its freeze() yields them]
    [header: UTF-8 JSON of SnapshotHeader]  [header length: u32]  [CRC-32 of all bytes before it: u32]  [magic: 8 bytes]

The header sits at the end because the body's length is only known once
written. A reader checks magic, lengths against the file size, then the header
against the store (a stale snapshot is dropped without reading further), then
the CRC over the whole file, and only then builds a backend from the body,
through that backend's own ``from_snapshot``. Writing goes to a temporary
file, fsync, rename over the old snapshot, fsync of the directory: a crash
leaves either the old snapshot or the new one, plus perhaps a temp file that
the next open deletes.

Snapshots of the release before spaces (``faiss.snapshot``, magic
``I2SDRSN1``) are not read: the store is the source of truth, and the index is
rebuilt from it once.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, BinaryIO, Literal

import pydantic

from ...config import IndexConfig
from .backend import Backend, FlatState, Frozen, IvfState, Layout
from .flat import FlatBackend
from .ivf import IvfBackend

__all__ = ["SnapshotHeader", "SnapshotKey", "load_snapshot", "remove_temporaries", "write_snapshot"]

logger = logging.getLogger(__name__)

MAGIC = b"I2SDRSN2"
_TRAILER = struct.Struct("<II8s")  # header length, CRC-32, magic
_CHUNK = 8 << 20  # bytes per read call when checking or loading


@dataclass(frozen=True)
class SnapshotKey:
    """What a snapshot must match to be loaded: this store at this change, this space, layout and settings."""

    store_id: str
    changes: int
    space: str
    sdr_size: int
    equalize_bits: int
    kind: str
    ivf_nlist: int  # 0 for the exact kind, where it does not matter
    ivf_lists_per_item: int  # likewise

    @classmethod
    def of(cls, store_id: str, changes: int, space: str, layout: Layout, config: IndexConfig) -> SnapshotKey:
        ivf = config.kind == "ivf"
        return cls(
            store_id,
            changes,
            space,
            layout.sdr_size,
            layout.equalize_bits,
            config.kind,
            config.ivf_nlist if ivf else 0,
            config.ivf_lists_per_item if ivf else 0,
        )

    @property
    def layout(self) -> Layout:
        return Layout(self.sdr_size, self.equalize_bits)


@dataclass(frozen=True)
class SnapshotHeader:
    """The header of a snapshot file: its key, the body's length, and the backend's own state."""

    format: Literal[2]
    key: SnapshotKey
    body_bytes: int
    state: Annotated[FlatState | IvfState, pydantic.Field(discriminator="backend")]

    def differences(self, key: SnapshotKey) -> list[str]:
        """Why this snapshot does not match ``key``: one entry per field that differs."""
        return [
            f"{field.name} {getattr(self.key, field.name)!r} != {getattr(key, field.name)!r}"
            for field in fields(SnapshotKey)
            if getattr(self.key, field.name) != getattr(key, field.name)
        ]


_HEADER = pydantic.TypeAdapter(SnapshotHeader)
Guard = Callable[[], AbstractContextManager[object]]


class _ChecksumWriter:
    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.crc = 0
        self.written = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.written += len(data)


def write_snapshot(path: Path, key: SnapshotKey, frozen: Frozen, guard: Guard) -> None:
    """Write a frozen backend as the snapshot at ``path``, atomically and durably.

    ``guard`` is entered around the production of each chunk (the index's read
    lock): a chunk is copied out of FAISS with no writer running, and written
    to disk with none held up.
    """
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}-{id(frozen):x}")
    try:
        with open(temporary, "wb") as file:
            writer = _ChecksumWriter(file)
            for chunk in _guarded(frozen.chunks, guard):
                writer.write(chunk)
            header = SnapshotHeader(2, key, writer.written, frozen.state)
            encoded = _HEADER.dump_json(header)
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


def _guarded(chunks: Iterator[bytes], guard: Guard) -> Iterator[bytes]:
    while True:
        with guard():
            chunk = next(chunks, None)
        if chunk is None:
            return
        yield chunk


def load_snapshot(path: Path, key: SnapshotKey, config: IndexConfig) -> Backend | None:
    """The backend saved at ``path`` if it is intact and matches ``key``; else None (and why, logged)."""
    try:
        with open(path, "rb") as file:
            header = _read_header(file)
            if header is None:
                return None
            differences = header.differences(key)
            if differences:
                logger.info("snapshot %s is stale (%s), rebuilding from the store", path, ", ".join(differences))
                return None
            if not _checksum_ok(file):
                logger.warning("snapshot %s fails its checksum, rebuilding from the store", path)
                return None
            return _load(file, header, config)
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


def _read_header(file: BinaryIO) -> SnapshotHeader | None:
    size = os.fstat(file.fileno()).st_size
    if size < _TRAILER.size:
        logger.warning("snapshot %s is truncated (%d bytes), rebuilding from the store", file.name, size)
        return None
    file.seek(size - _TRAILER.size)
    header_length, _, magic = _TRAILER.unpack(file.read(_TRAILER.size))
    if magic != MAGIC or header_length > size - _TRAILER.size:
        logger.warning("snapshot %s has no valid trailer (truncated, foreign or older), rebuilding", file.name)
        return None
    file.seek(size - _TRAILER.size - header_length)
    try:
        header = _HEADER.validate_json(file.read(header_length))
    except pydantic.ValidationError:
        logger.warning("snapshot %s has a damaged header, rebuilding", file.name)
        return None
    if header.body_bytes + header_length + _TRAILER.size != size:
        logger.warning("snapshot %s sections do not add up to its size, rebuilding", file.name)
        return None
    return header


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


def _load(file: BinaryIO, header: SnapshotHeader, config: IndexConfig) -> Backend:
    """Build the backend the header names from the body, through its own constructor."""
    file.seek(0)
    remaining = header.body_bytes

    def read(count: int) -> bytes:
        nonlocal remaining
        if count > remaining:
            raise ValueError("a snapshot section runs past the body")
        block = file.read(count)
        if len(block) != count:
            raise ValueError("the snapshot file ends inside a section")
        remaining -= count
        return block

    state = header.state
    layout = header.key.layout
    backend: Backend
    if isinstance(state, IvfState):
        backend = IvfBackend.from_snapshot(layout, config, state, read)
    else:
        backend = FlatBackend.from_snapshot(layout, config, state, read)
    if remaining:
        raise ValueError(f"{remaining} bytes of the snapshot body were not read")
    return backend


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
