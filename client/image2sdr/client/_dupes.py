"""Groups of copies for ``image2sdr dupes``: which images copy which, and the groups they form.

The rules are the service's (``FindDuplicates``): the same bytes (SHA-256), a
near-exact copy (pHash within ``max_phash_distance`` bits) or a transformed one
(visual overlap at least ``min_visual_share`` of one image's visual bits).
Among files that are not stored, ``links_among`` applies them to the encodings
the server returned; among stored items the server's own answers are the links.
Copies form groups transitively: a copy of a copy is in the same group.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._types import DuplicateKind, DuplicateStage, DuplicateThresholds, Encoding, Sdr

__all__ = ["Group", "Link", "groups", "links_among", "one_link_per_pair"]

_STRENGTH: dict[DuplicateKind, int] = {"same_bytes": 0, "near_exact": 1, "transformed": 2}


@dataclass(frozen=True)
class Link:
    """``copy`` copies ``original`` (``kind``); -1 / 0.0 where a side had no pHash / visual SDR.

    ``stage`` is the cascade's stage that decided it and ``inliers`` the keypoints one
    transform explains (-1: not compared, as among files: keypoints are the server's).
    """

    original: str
    copy: str
    kind: DuplicateKind
    phash_distance: int
    visual_share: float
    stage: DuplicateStage = ""
    inliers: int = -1


@dataclass(frozen=True)
class Group:
    members: tuple[str, ...]  # in the order the names were given
    links: tuple[Link, ...]  # every link between two members

    def strongest(self, member: str) -> Link | None:
        """The closest link of ``member`` (same bytes before near-exact before transformed, then closest)."""
        touching = [link for link in self.links if member in (link.original, link.copy)]
        return min(touching, key=_rank, default=None)


@dataclass(frozen=True)
class _Looks:
    sha256: str | None
    phash: int | None
    visual: int  # the visual SDR as a bit mask (0: none)
    visual_bits: int


def _looks(encoding: Encoding) -> _Looks:
    fingerprint = encoding.fingerprint
    visual = encoding.visual
    return _Looks(
        sha256=fingerprint.sha256 if fingerprint else None,
        phash=fingerprint.phash if fingerprint else None,
        visual=_mask(visual) if visual else 0,
        visual_bits=len(visual.active) if visual else 0,
    )


def _mask(sdr: Sdr) -> int:
    bits = bytearray(sdr.size // 8 + 1)
    for position in sdr.active:
        bits[position >> 3] |= 1 << (position & 7)
    return int.from_bytes(bits, "little")


def _link(first: str, a: _Looks, second: str, b: _Looks, thresholds: DuplicateThresholds) -> Link | None:
    distance = (a.phash ^ b.phash).bit_count() if a.phash is not None and b.phash is not None else -1
    shared = (a.visual & b.visual).bit_count()
    # Either image may be the query: the larger share decides, as either upload would have found the other.
    share = max(shared / a.visual_bits if a.visual_bits else 0.0, shared / b.visual_bits if b.visual_bits else 0.0)
    kind: DuplicateKind
    stage: DuplicateStage
    if a.sha256 is not None and a.sha256 == b.sha256:
        kind, stage = "same_bytes", "file_hash"
    elif 0 <= distance <= (thresholds.max_phash_distance or 0):
        kind, stage = "near_exact", "phash"
    elif a.visual_bits and b.visual_bits and share >= (thresholds.min_visual_share or 0.0):
        kind, stage = "transformed", "visual"
    else:
        return None
    return Link(first, second, kind, distance, share, stage)


def links_among(encoded: Sequence[tuple[str, Encoding]], thresholds: DuplicateThresholds) -> list[Link]:
    """Every pair of the named encodings that copy each other (n² / 2 comparisons of bit masks)."""
    looks = [(name, _looks(encoding)) for name, encoding in encoded]
    found = []
    for i, (first, a) in enumerate(looks):
        for second, b in looks[i + 1 :]:
            link = _link(first, a, second, b, thresholds)
            if link is not None:
                found.append(link)
    return found


def one_link_per_pair(links: Iterable[Link]) -> list[Link]:
    """The closest link of each pair, pairs in the order first seen.

    Asked about every stored item, the server finds each pair from both sides, and
    the two answers may differ: a visual share is taken of the query's own bits.
    """
    best: dict[frozenset[str], Link] = {}
    for link in links:
        pair = frozenset((link.original, link.copy))
        if pair not in best or _rank(link) < _rank(best[pair]):
            best[pair] = link
    return list(best.values())


def _rank(link: Link) -> tuple[int, float]:
    """Same bytes before near-exact before transformed; then the larger visual share."""
    return _STRENGTH[link.kind], -link.visual_share


def groups(names: Iterable[str], links: Iterable[Link]) -> list[Group]:
    """The groups of two or more that ``links`` join, in the order of ``names`` (names only in links go last)."""
    order = {name: i for i, name in enumerate(dict.fromkeys(names))}
    links = list(links)
    for link in links:
        order.setdefault(link.original, len(order))
        order.setdefault(link.copy, len(order))
    parent = {name: name for name in order}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for link in links:
        a, b = root(link.original), root(link.copy)
        if a != b:
            parent[max(a, b, key=order.__getitem__)] = min(a, b, key=order.__getitem__)
    members: dict[str, list[str]] = {}
    for name in sorted(order, key=order.__getitem__):
        members.setdefault(root(name), []).append(name)
    return [_group(group, links) for group in members.values() if len(group) > 1]


def _group(members: list[str], links: list[Link]) -> Group:
    inside = set(members)
    return Group(tuple(members), tuple(link for link in links if link.original in inside))
