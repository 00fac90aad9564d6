"""``HtmSdr``: htm.core's SDR interface over the service's SDRs, views without copies, checks at the door."""

from __future__ import annotations

from array import array

import numpy as np
import pytest

from image2sdr.client import HtmSdr, Sdr

ACTIVE = (3, 200, 4095, 16383)


def test_it_reads_like_htm_cores_sdr() -> None:
    sdr = HtmSdr([128, 128], sparse=[16383, 3, 4095, 200])  # htm.core sorts what it is given

    assert sdr.dimensions == (128, 128) and sdr.size == 16384 and len(sdr) == 16384
    assert sdr.sparse.dtype == np.uint32 and sdr.sparse.tolist() == list(ACTIVE)
    assert sdr.dense.dtype == np.uint8 and sdr.dense.shape == (128, 128)
    assert int(sdr.dense.sum()) == 4 and sdr.dense[0, 3] == 1 and sdr.dense[1, 72] == 1 and sdr.dense[127, 127] == 1
    assert sdr.getSum() == 4 and sdr.getSparsity() == 4 / 16384
    assert sdr.coordinates == [[0, 1, 31, 127], [3, 72, 127, 127]]


def test_the_default_topology_is_the_services_128_by_128_and_empty() -> None:
    empty = HtmSdr()
    assert empty.dimensions == (128, 128) and empty.getSum() == 0 and empty.sparse.size == 0
    assert int(empty.dense.sum()) == 0


def test_it_converts_both_ways_with_the_clients_sdr() -> None:
    client_sdr = Sdr(16384, (128, 128), ACTIVE)
    sdr = HtmSdr.from_sdr(client_sdr)
    assert sdr.dimensions == (128, 128) and sdr.active == ACTIVE
    assert sdr.to_sdr() == client_sdr
    flat = HtmSdr.from_sdr(Sdr(16384, (), ACTIVE))  # no dimensions: one flat axis
    assert flat.dimensions == (16384,)


def test_a_uint32_buffer_is_held_without_a_copy_and_views_are_read_only() -> None:
    indices = np.array(ACTIVE, dtype=np.uint32)
    sdr = HtmSdr([128, 128], sparse=indices)
    assert np.shares_memory(sdr.sparse, indices)
    assert np.shares_memory(sdr.sparse, sdr.sparse)  # each read is a view of the one buffer
    assert np.shares_memory(sdr.dense, sdr.dense)  # made once, then kept
    assert not sdr.sparse.flags.writeable and not sdr.dense.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        sdr.dense[0, 0] = 1

    held = array("I", ACTIVE)
    assert np.shares_memory(HtmSdr(sparse=held).sparse, np.frombuffer(held, dtype=np.uint32))
    reshaped = sdr.reshape([16384])
    assert reshaped.dimensions == (16384,) and np.shares_memory(reshaped.sparse, indices)


def test_other_index_types_are_copied_sorted() -> None:
    sdr = HtmSdr([128, 128], sparse=np.array([4095, 3], dtype=np.int64))
    assert sdr.active == (3, 4095)


def test_dense_converts_both_ways() -> None:
    sdr = HtmSdr([128, 128], sparse=ACTIVE)
    assert HtmSdr.from_dense(sdr.dense) == sdr  # the array's shape is the dimensions
    assert HtmSdr.from_dense(sdr.dense.ravel(), dimensions=[128, 128]) == sdr
    assert HtmSdr.from_dense(sdr.dense.tolist()) == sdr  # nested lists too
    assert HtmSdr.from_dense(sdr.dense_view) == sdr  # and the memoryview, shape and all
    assert HtmSdr.from_dense(sdr.dense.astype(bool)) == sdr
    other = HtmSdr([128, 128])
    other.dense = sdr.dense
    assert other == sdr
    with pytest.raises(ValueError, match="do not fill"):
        HtmSdr.from_dense([0, 1, 0], dimensions=[128, 128])
    with pytest.raises(ValueError, match="do not fit"):
        other.dense = np.zeros((64, 256), dtype=np.uint8)


def test_setting_sparse_leaves_earlier_views_as_they_were() -> None:
    sdr = HtmSdr([128, 128], sparse=ACTIVE)
    before_sparse, before_dense = sdr.sparse, sdr.dense
    sdr.sparse = [7]
    assert before_sparse.tolist() == list(ACTIVE) and int(before_dense.sum()) == 4
    assert sdr.sparse.tolist() == [7] and int(sdr.dense.sum()) == 1 and sdr.dense[0, 7] == 1


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([3, 3], "must not repeat"),
        ([16384], "outside an SDR of 16384 bits"),  # the size itself: brainblocks takes it silently
        ([-1], "negative"),
        (np.array([5, 5], dtype=np.uint32), "must not repeat"),
        (np.array([16384], dtype=np.uint32), "outside"),
    ],
)
def test_bad_indices_are_refused_with_what_is_wrong(indices: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HtmSdr([128, 128], sparse=indices)


def test_bad_dimensions_are_refused() -> None:
    for dimensions in ([], [0, 128], [-1]):
        with pytest.raises(ValueError, match="positive sides"):
            HtmSdr(dimensions)
    with pytest.raises(ValueError, match="do not hold"):
        HtmSdr([128, 128]).reshape([100])


def test_overlap_with_another_sdr_of_the_same_size() -> None:
    sdr = HtmSdr([128, 128], sparse=ACTIVE)
    other = HtmSdr([16384], sparse=[3, 4095, 9])
    assert sdr.getOverlap(other) == 2 and sdr.overlap(other) == 2
    with pytest.raises(ValueError, match="cannot compare"):
        sdr.getOverlap(HtmSdr([64, 64]))


def test_from_htm_reads_anything_with_dimensions_and_sparse_and_copies() -> None:
    source = HtmSdr([128, 128], sparse=np.array(ACTIVE, dtype=np.uint32))  # htm.core's SDR has the same two names
    copied = HtmSdr.from_htm(source)
    assert copied == source and not np.shares_memory(copied.sparse, source.sparse)


def test_without_numpy_the_value_still_works_through_memoryviews(monkeypatch: pytest.MonkeyPatch) -> None:
    sdr = HtmSdr([128, 128], sparse=ACTIVE)
    monkeypatch.setitem(__import__("sys").modules, "numpy", None)  # as if numpy were not installed
    assert sdr.sparse_view.tolist() == list(ACTIVE) and sdr.sparse_view.format == "I"
    assert sdr.dense_view.shape == (128, 128) and sdr.dense_view[1, 72] == 1 and sdr.dense_view[1, 73] == 0
    assert sdr.active == ACTIVE and sdr.getOverlap(HtmSdr([128, 128], sparse=[3])) == 1
    with pytest.raises(ModuleNotFoundError, match=r"image2sdr-client\[htm\]"):
        _ = sdr.sparse
