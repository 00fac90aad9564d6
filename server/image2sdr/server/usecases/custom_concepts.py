"""Custom concepts as a caller sees them: define from examples (images or stored items), read, list, remove."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..custom_concepts import Defined, Example
from ..encoder import Outcome
from ..errors import DeadlineExceededError, InvalidInputError, NotFoundError
from ..index.values import VISUAL
from .context import NO_DEADLINE, CallContext, caller_gone
from .parts import Parts

__all__ = [
    "DefineRequest",
    "ExampleImage",
    "ExampleItem",
    "define_concept",
    "get_concept",
    "list_concepts",
    "remove_concept",
]


@dataclass(frozen=True)
class ExampleImage:
    image: bytes


@dataclass(frozen=True)
class ExampleItem:
    """A stored item, by id."""

    id: str


@dataclass(frozen=True)
class DefineRequest:
    name: str
    positives: Sequence[ExampleImage | ExampleItem | None]  # None: an example that says neither
    negatives: Sequence[ExampleImage | ExampleItem | None] = ()


def define_concept(parts: Parts, request: DefineRequest, call: CallContext = NO_DEADLINE) -> Defined:
    # Everything that can be refused without the images is, before any is encoded.
    parts.library.check_definition(request.name, len(request.positives), len(request.negatives))
    positives = _examples(parts, request.positives, "positives", call)
    negatives = _examples(parts, request.negatives, "negatives", call)
    return parts.library.define(
        request.name, positives, negatives, positive_ids=_ids(request.positives), negative_ids=_ids(request.negatives)
    )


def _ids(examples: Sequence[ExampleImage | ExampleItem | None]) -> list[str]:
    """The stored items among the examples, by id, each once (kept with the definition for refinement)."""
    return list(dict.fromkeys(example.id for example in examples if isinstance(example, ExampleItem)))


def get_concept(parts: Parts, name: str) -> Defined:
    return parts.library.get(name)


def list_concepts(parts: Parts) -> list[Defined]:
    return parts.library.all()


def remove_concept(parts: Parts, name: str) -> None:
    parts.library.remove(name)


def _examples(
    parts: Parts, examples: Sequence[ExampleImage | ExampleItem | None], field: str, call: CallContext
) -> list[Example]:
    """Examples as SDRs: stored items read first, then the images encoded a classifier batch at a time."""
    found: list[Example | None] = [None] * len(examples)
    images = [(n, example.image) for n, example in enumerate(examples) if isinstance(example, ExampleImage)]
    for n, example in enumerate(examples):
        if isinstance(example, ExampleItem):
            found[n] = _stored_example(parts, example.id, f"{field}[{n}].id")
        elif not isinstance(example, ExampleImage):
            raise InvalidInputError("an example is an image or a stored item's id", field=f"{field}[{n}]")
    for (n, _), outcome in zip(images, _encoded(parts, [image for _, image in images], call), strict=True):
        if isinstance(outcome, Exception):
            if isinstance(outcome, InvalidInputError):
                outcome.field = f"{field}[{n}].image"
            raise outcome
        found[n] = Example(outcome.sdr, outcome.visual)
    return [example for example in found if example is not None]


def _encoded(parts: Parts, images: Sequence[bytes], call: CallContext) -> Iterator[Outcome]:
    """Each image's encoding, a classifier batch at a time: at most one batch of decoded images is held.

    (One batch of all 200 examples held them all, decoded, until the last one was.)  A
    failed image stops the rest: the caller raises its error, and no later batch is encoded.
    A caller that has gone (cancelled, or past its deadline) stops it before the next batch.
    """
    chunk = max(1, parts.encoder.concept_source.max_batch)
    for start in range(0, len(images), chunk):
        if caller_gone(call):
            raise DeadlineExceededError("the caller left or its deadline passed while its examples were encoded")
        yield from parts.encoder.encode_batch(images[start : start + chunk])


def _stored_example(parts: Parts, item_id: str, field: str) -> Example:
    try:
        item = parts.index.get(item_id)
    except InvalidInputError as exc:
        exc.field = field
        raise
    except NotFoundError as exc:
        raise NotFoundError(f"{exc} ({field})", resource=item_id) from None
    return Example(item.sdr, item.in_space(VISUAL))
