"""Encode an image, and store it when asked: one call, or a stream's batch.

A bad id, metadata or duplicate policy is refused before the image is encoded.  In a
batch, each item fails alone (its own error, in its place); the items that ask to be
stored go into the index together, consecutive ones with the same duplicate policy
in one transaction, so a stream's items are checked and stored in stream order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..encoder import EncodeOptions, Encoding, Outcome
from ..errors import Image2SdrError, InvalidInputError
from ..index.values import VISUAL, AddOutcome, DuplicateThresholds, Item, OnDuplicate
from .parts import AskedThresholds, Parts, thresholds, with_custom

__all__ = [
    "AddPolicy",
    "EncodeRequest",
    "Encoded",
    "EncodedBatch",
    "StoreAs",
    "encode",
    "encode_batch",
    "encode_only",
    "stored_item",
]


@dataclass(frozen=True)
class StoreAs:
    """Where an encoding is stored, with what, and what is done about copies already stored."""

    id: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    on_duplicate: OnDuplicate = OnDuplicate.KEEP
    thresholds: AskedThresholds = field(default_factory=AskedThresholds)


@dataclass(frozen=True)
class EncodeRequest:
    image: bytes
    options: EncodeOptions | None = None  # None: the configured values
    merge_custom: bool = False  # merge the custom concepts found into the SDR
    store: StoreAs | None = None


@dataclass(frozen=True)
class Encoded:
    """An image's encoding, what the index did with it (when it was to be stored), and the time it all took."""

    encoding: Encoding
    stored: AddOutcome | None
    total_ms: float


@dataclass(frozen=True)
class AddPolicy:
    """What an add does about copies already stored; ``thresholds`` is None under KEEP (nothing is checked)."""

    on_duplicate: OnDuplicate = OnDuplicate.KEEP
    thresholds: DuplicateThresholds | None = None


def encode(parts: Parts, request: EncodeRequest) -> Encoded:
    """Encode one image and store it when asked; every error raised."""
    policy = _check_target(parts, request)  # a bad id or policy is refused before the encode, not after
    started = time.perf_counter()
    encoding = with_custom(parts, parts.encoder.encode(request.image, _options(request)), request.merge_custom)
    stored = None
    if request.store is not None:
        (stored,) = parts.index.add_many(
            [stored_item(request.store, encoding, parts.config.index.max_concepts)],
            on_duplicate=policy.on_duplicate,
            thresholds=policy.thresholds,
        )
    return Encoded(encoding, stored, _ms_since(started))


def encode_batch(parts: Parts, requests: Sequence[EncodeRequest]) -> list[Encoded | Exception]:
    """A stream's unit of work: each item answered on its own, in order (its Encoded, or its error)."""
    return encode_only(parts, requests).store()


def encode_only(parts: Parts, requests: Sequence[EncodeRequest]) -> EncodedBatch:
    """``encode_batch``'s first half: the items checked and encoded, nothing stored yet.

    The second half (``EncodedBatch.store``) is what ``add_to_index`` adds: a stream runs
    it for one batch while it encodes the next, so storing costs the stream little.
    """
    started = time.perf_counter()
    answers: list[Encoded | Exception | None] = [None] * len(requests)
    accepted: list[_Accepted] = []
    for slot, request in enumerate(requests):
        try:
            accepted.append(_Accepted(slot, request, _check_target(parts, request)))
        except Image2SdrError as exc:
            answers[slot] = exc
    encoded = parts.encoder.encode_many([(entry.request.image, _options(entry.request)) for entry in accepted])
    outcomes = [
        _custom_outcome(parts, entry.request, outcome) for entry, outcome in zip(accepted, encoded, strict=True)
    ]
    return EncodedBatch(parts, answers, accepted, outcomes, started)


class EncodedBatch:
    """A batch encoded, to be stored: its items' answers come from ``store``, in request order."""

    def __init__(
        self,
        parts: Parts,
        answers: list[Encoded | Exception | None],
        accepted: list[_Accepted],
        outcomes: list[Outcome],
        started: float,
    ) -> None:
        self._parts = parts
        self._answers = answers  # the refused items' errors, in their places
        self._accepted = accepted
        self._outcomes = outcomes
        self._started = started

    def store(self) -> list[Encoded | Exception]:
        """Store what asks to be stored (consecutive items with one policy in one transaction); each item's answer.

        An item is answered only once stored (or refused): an answer means the index has it.
        """
        stored = _store_outcomes(self._parts, self._accepted, self._outcomes)
        total_ms = _ms_since(self._started)
        answers = list(self._answers)
        for entry, outcome, added in zip(self._accepted, self._outcomes, stored, strict=True):
            if isinstance(outcome, Exception):
                answers[entry.slot] = outcome
            elif isinstance(added, Exception):  # storing failed: the item failed
                answers[entry.slot] = added
            else:
                answers[entry.slot] = Encoded(outcome, added, total_ms)
        return [answer for answer in answers if answer is not None]


@dataclass(frozen=True)
class _Accepted:
    """A batch item that passed the checks: where its answer goes, and what it asks for."""

    slot: int
    request: EncodeRequest
    policy: AddPolicy


# What the index did with a batch item: stored or not (an AddOutcome), failed, or not asked to store.
_Stored = AddOutcome | Exception | None


def _options(request: EncodeRequest) -> EncodeOptions | None:
    """The request's options; only an encoding that will be stored asks for its thumbnail.

    Queries, examples and Explain's variants would make one for nothing.
    """
    if request.store is None:
        return request.options
    return replace(request.options or EncodeOptions(), thumbnail=True)


def _check_target(parts: Parts, request: EncodeRequest) -> AddPolicy:
    """Refuse an add the index would refuse, before any work; the add's duplicate policy."""
    target = request.store
    if target is None:
        return AddPolicy()
    checked = thresholds(target.thresholds, parts.config.index, "add_to_index.duplicate_thresholds")
    try:
        parts.index.check_item(target.id, dict(target.metadata))
    except InvalidInputError as exc:
        exc.field = f"add_to_index.{exc.field}"
        raise
    return AddPolicy(target.on_duplicate, None if target.on_duplicate is OnDuplicate.KEEP else checked)


def stored_item(target: StoreAs, encoding: Encoding, max_concepts: int) -> Item:
    """What a stored encoding becomes: its SDRs, concepts used, metadata, fingerprint, thumbnail.

    ``max_concepts`` is index.max_concepts: labels (nsfw/sfw) that would pass it are left
    out; custom concepts merged into the SDR are stored with the classifier's, searchable by tag.
    """
    return Item(
        target.id,
        encoding.sdr,
        encoding.stored_concepts(max_concepts),
        dict(target.metadata),
        spaces={} if encoding.visual is None else {VISUAL: encoding.visual},
        fingerprint=encoding.fingerprint,
        thumbnail=None if encoding.thumbnail is None else encoding.thumbnail.data,  # encoded here, when stored
        keypoints=encoding.keypoints,
    )


def _custom_outcome(parts: Parts, request: EncodeRequest, outcome: Outcome) -> Outcome:
    if not isinstance(outcome, Encoding):
        return outcome
    try:
        return with_custom(parts, outcome, request.merge_custom)
    except Exception as exc:  # that item's failure; the batch goes on
        return exc


def _store_outcomes(parts: Parts, accepted: Sequence[_Accepted], outcomes: Sequence[Outcome]) -> list[_Stored]:
    """Store the encodings that ask for it; per item, what the index did (or why it failed).

    Consecutive items with the same duplicate policy go into the index together, in
    one transaction each; if a transaction fails, that is the error of each of its items.
    """
    stored: list[_Stored] = [None] * len(accepted)
    run: list[tuple[int, Item]] = []
    policy = AddPolicy()
    for position, (entry, outcome) in enumerate(zip(accepted, outcomes, strict=True)):
        target = entry.request.store
        if not (isinstance(outcome, Encoding) and target is not None):
            continue
        if run and entry.policy != policy:
            _store_run(parts, run, policy, stored)
            run = []
        policy = entry.policy
        try:
            run.append((position, stored_item(target, outcome, parts.config.index.max_concepts)))
        except Exception as exc:  # its thumbnail would not encode: that item fails, the run goes on
            stored[position] = exc
    if run:
        _store_run(parts, run, policy, stored)
    return stored


def _store_run(parts: Parts, run: list[tuple[int, Item]], policy: AddPolicy, stored: list[_Stored]) -> None:
    items = [item for _, item in run]
    try:
        added: list[_Stored] = list(
            parts.index.add_many(items, on_duplicate=policy.on_duplicate, thresholds=policy.thresholds)
        )
    except Exception as exc:  # storing failed: those items' error, the batch goes on
        added = [exc] * len(run)
    for (position, _), outcome in zip(run, added, strict=True):
        stored[position] = outcome


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
