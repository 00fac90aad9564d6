"""Custom concepts in the ``concepts`` collection: each version of a document in chunks, the newest complete one read.

Rows are keyed "<name key>.<seq>.<part>"; a new version is written whole, then
older ones are deleted, so a put failing part-way leaves the concept as it was, and
of two replicas putting one name the later seq wins.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from ...errors import UpstreamError
from ..values import StoredConcept
from .calls import CONCEPTS
from .expressions import NO_MARK, in_chunks, item_key, rows_in
from .rows import MilvusRows

__all__ = ["MilvusConcepts"]

logger = logging.getLogger(__name__)


_TEXT_CHARS = 16383  # characters per stored chunk of a document: at most 65532 bytes, under VARCHAR's 65535


class MilvusConcepts(MilvusRows):
    """Custom concepts: put, get, list, remove."""

    def put_concept(self, name: str, document: str) -> StoredConcept:
        """Store a custom concept, replacing one of the same name; acknowledged once Milvus has it.

        A new version is written whole (its chunks), then older versions are deleted:
        readers take the newest complete version, so a put failing part-way leaves the
        concept as it was, and of two replicas putting one name the later seq wins.
        """
        key = item_key(name)
        with self._write_lock:
            seq = self._next_seqs(1)[0]
            chunks = [document[at : at + _TEXT_CHARS] for at in range(0, len(document), _TEXT_CHARS)] or [""]
            version = {"key": key, "name": name, "seq": seq, "parts": len(chunks), "code": NO_MARK}
            rows = [
                {**version, "row": f"{key}.{seq}.{part}", "part": part, "text": text}
                for part, text in enumerate(chunks)
            ]
            for batch in in_chunks(rows, 16):  # <= 1 MiB of text per request
                self._upsert(CONCEPTS, batch)
            try:
                old = self._query(CONCEPTS, f'key == "{key}" and seq < {seq}', ["row"], level="Strong")
                if old:
                    self._delete(CONCEPTS, rows_in([str(row["row"]) for row in old]))
            except UpstreamError as exc:  # readers take the newest version anyway
                logger.warning("old versions of concept %r stay behind: %s", name, exc)
        return StoredConcept(name, document, seq // 1_000_000)

    def get_concept(self, name: str) -> StoredConcept | None:
        """The custom concept (read Strong: another replica's put is seen at once), or None."""
        fields = ["row", "name", "seq", "part", "parts", "text"]
        found = newest_complete(self._query(CONCEPTS, f'key == "{item_key(name)}"', fields, level="Strong"))
        return found[0] if found else None

    def list_concepts(self) -> list[StoredConcept]:
        """Every custom concept, by name (read Strong)."""
        with self._reading("Strong"):
            # The versions first (no text), then the text of the newest complete ones only.
            rows = self._query_all(CONCEPTS, "parts > 0", ["row", "key", "seq", "part", "parts"])
            wanted = {str(row["row"]) for row in newest_rows(rows)}
            texts = [
                row
                for chunk in in_chunks(sorted(wanted))
                for row in self._query(CONCEPTS, rows_in(chunk), ["row", "name", "seq", "part", "parts", "text"])
            ]
        return sorted(newest_complete(texts), key=lambda concept: concept.name)

    def remove_concept(self, name: str) -> bool:
        """Remove a custom concept (every version of it); False when there is none."""
        key = item_key(name)
        with self._write_lock:
            rows = self._query(CONCEPTS, f'key == "{key}"', ["row", "key", "seq", "part", "parts"], level="Strong")
            if not newest_rows(rows):
                return False
            self._delete(CONCEPTS, rows_in([str(row["row"]) for row in rows]))
        return True


def newest_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of each concept's newest complete version (every chunk present)."""
    versions: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        versions.setdefault((str(row["row"]).split(".")[0], int(row["seq"])), []).append(row)
    newest: dict[str, tuple[int, list[Mapping[str, Any]]]] = {}
    for (key, seq), parts in versions.items():
        complete = len({int(part["part"]) for part in parts}) == int(parts[0]["parts"])
        if complete and seq > newest.get(key, (-1, []))[0]:
            newest[key] = (seq, parts)
    return [row for _, parts in newest.values() for row in parts]


def newest_complete(rows: Iterable[Mapping[str, Any]]) -> list[StoredConcept]:
    """Each concept's newest complete version, assembled from its chunks."""
    by_key: dict[str, list[Mapping[str, Any]]] = {}
    for row in newest_rows(rows):
        by_key.setdefault(str(row["row"]).split(".")[0], []).append(row)
    concepts = []
    for parts in by_key.values():
        parts.sort(key=lambda part: int(part["part"]))
        first = parts[0]
        document = "".join(str(part["text"]) for part in parts)
        concepts.append(StoredConcept(str(first["name"]), document, int(first["seq"]) // 1_000_000))
    return concepts
