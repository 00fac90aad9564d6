"""The custom concepts a service keeps (custom_concepts/library.py), on a real index on disk."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from image2sdr.server.config import Config, CustomConceptsConfig, IndexConfig
from image2sdr.server.custom_concepts import ConceptLibrary, Example
from image2sdr.server.errors import ConceptNotFoundError, InvalidInputError, LimitExceededError
from image2sdr.server.index import Item, SdrIndex
from image2sdr.server.sdr import Sdr

ACTIVE = 328

SIZE = 16384


def near(base: np.ndarray, rng: np.random.Generator, keep: int = 240) -> Sdr:
    kept = rng.choice(base, keep, replace=False)
    others = rng.choice(np.setdiff1d(np.arange(SIZE), base), ACTIVE - keep, replace=False)
    return Sdr.from_positions(np.sort(np.concatenate([kept, others])), SIZE)


def examples(seed: int, count: int) -> list[Example]:
    rng = np.random.default_rng(seed)
    semantic, look = rng.choice(SIZE, ACTIVE, replace=False), rng.choice(SIZE, ACTIVE, replace=False)
    return [Example(near(semantic, rng), near(look, rng)) for _ in range(count)]


def config(tmp_path: Path, **custom: object) -> Config:
    return Config(
        data_dir=tmp_path,
        concepts={"custom": CustomConceptsConfig(**custom)},
        index=IndexConfig(),
    )


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SdrIndex]:
    with SdrIndex(tmp_path / "index", IndexConfig()) as index:
        yield index


def wait_for(condition: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_a_concept_is_detected_at_once_where_it_was_defined(index: SdrIndex, tmp_path: Path) -> None:
    library = ConceptLibrary(index, config(tmp_path, refresh_s=3600.0))
    assert library.detect(*_sdrs(examples(1, 1)[0])) == []
    library.define("storefront", examples(1, 6), [e for seed in (2, 3, 4) for e in examples(seed, 4)])
    unseen = examples(1, 8)[7]
    (found,) = library.detect(*_sdrs(unseen))
    assert found.name == "storefront" and found.confidence > 0.5
    assert not library.detect(*_sdrs(examples(9, 1)[0]))
    library.remove("storefront")
    assert library.detect(*_sdrs(unseen)) == [] and library.count() == 0


def test_another_replica_sees_a_definition_after_its_refresh(index: SdrIndex, tmp_path: Path) -> None:
    here = ConceptLibrary(index, config(tmp_path))
    there = ConceptLibrary(index, config(tmp_path, refresh_s=0.0))  # a second replica on the same index
    assert there.count() == 0
    here.define("storefront", examples(1, 6), examples(2, 6))
    assert wait_for(lambda: there.count() == 1)  # refreshed in the background, not on the caller's time
    here.remove("storefront")
    assert wait_for(lambda: there.count() == 0)


def test_an_unreadable_definition_is_left_out_not_fatal(
    index: SdrIndex, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    library = ConceptLibrary(index, config(tmp_path, refresh_s=0.0))
    library.define("storefront", examples(1, 6), examples(2, 6))
    index.put_concept("from the future", '{"version": 99}')
    fresh = ConceptLibrary(index, config(tmp_path))
    assert [defined.concept.name for defined in fresh.all()] == ["storefront"]
    assert "from the future" in caplog.text
    assert fresh.detect(*_sdrs(examples(1, 8)[7]))  # encoding goes on with the readable ones
    fresh.remove("from the future")  # and the unreadable one can still be removed
    with pytest.raises(ConceptNotFoundError):
        fresh.get("from the future")


def test_refusals_come_before_any_work_and_change_nothing(index: SdrIndex, tmp_path: Path) -> None:
    library = ConceptLibrary(index, config(tmp_path, max_defined=1, max_examples=8))
    with pytest.raises(InvalidInputError) as few:
        library.check_definition("storefront", 2, 0)
    assert few.value.field == "positives"
    with pytest.raises(InvalidInputError) as many:
        library.check_definition("storefront", 3, 9)
    assert many.value.field == "negatives"
    with pytest.raises(InvalidInputError) as unnamed:
        library.check_definition(" ", 3, 0)
    assert unnamed.value.field == "name"
    library.define("storefront", examples(1, 6), examples(2, 6))
    library.check_definition("storefront", 3, 0)  # redefining is always allowed
    with pytest.raises(LimitExceededError):
        library.define("kiosk", examples(3, 6), examples(2, 6))
    disjoint = [Example(Sdr.from_positions(np.arange(n * ACTIVE, (n + 1) * ACTIVE), SIZE)) for n in range(3)]
    with pytest.raises(InvalidInputError) as nothing_shared:
        ConceptLibrary(index, config(tmp_path)).define("noise", disjoint, [])
    assert nothing_shared.value.field == "positives"
    assert [stored.name for stored in index.list_concepts()] == ["storefront"]


def _sdrs(example: Example) -> tuple[Sdr, Sdr | None]:
    return example.semantic, example.visual


def test_without_negatives_stored_items_stand_in_for_them(index: SdrIndex, tmp_path: Path) -> None:
    strangers = [e for seed in range(20, 30) for e in examples(seed, 4)]
    index.add_many([Item(f"s{n}", e.semantic, spaces={"visual": e.semantic}) for n, e in enumerate(strangers)])
    library = ConceptLibrary(index, config(tmp_path))
    defined = library.define("storefront", examples(1, 6), [])
    assert defined.concept.negatives == 32  # spread over the stored items, none of them a positive
    assert library.detect(*_sdrs(examples(1, 8)[7]))
    assert not library.detect(*_sdrs(examples(77, 1)[0]))  # an unrelated image is not flagged


def test_refinement_suggests_unlabelled_stored_items_and_takes_them_back_as_examples(
    index: SdrIndex, tmp_path: Path
) -> None:
    shows, others = examples(1, 16)[6:], [e for seed in range(20, 35) for e in examples(seed, 4)]
    stored = {f"p{n}": e for n, e in enumerate(shows)} | {f"s{n}": e for n, e in enumerate(others)}
    index.add_many([Item(key, e.semantic, spaces={"visual": e.visual}) for key, e in stored.items()])  # type: ignore[arg-type]
    library = ConceptLibrary(index, config(tmp_path))
    positives, negatives = examples(1, 6), [e for seed in (2, 3, 4) for e in examples(seed, 4)]
    first = library.define("storefront", positives, negatives).concept
    assert first.report.background is not None and first.report.background.items == len(stored)
    suggested = [item_id for item_id, _ in first.suggestions]
    assert 0 < len(suggested) <= 10 and set(suggested) <= set(stored)
    # The user labels them (here: by what they are) and defines it again with them.
    yes = [key for key in suggested if key.startswith("p")]
    no = [key for key in suggested if key.startswith("s")]
    again = library.define(
        "storefront",
        positives + [stored[key] for key in yes],
        negatives + [stored[key] for key in no],
        positive_ids=yes,
        negative_ids=no,
    ).concept
    assert (again.positive_ids, again.negative_ids) == (tuple(yes), tuple(no))  # kept for the next round
    assert (again.positives, again.negatives) == (6 + len(yes), 12 + len(no))
    assert again.report.background is not None and again.report.background.items == len(stored) - len(suggested)
    assert not {item_id for item_id, _ in again.suggestions} & set(suggested)
    assert library.get("storefront").concept.suggestions == again.suggestions
    assert library.get("storefront").concept.negative_ids == tuple(no)  # the stored document keeps them
