"""kexp.data.types: the Ragged container of integer sequences, and take."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexp.data.types import Ragged, take


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(-2**31, 2**31 - 1), max_size=6), max_size=8))
def test_ragged_round_trips_lists(rows):
    ragged = Ragged.from_lists(rows)
    assert ragged.to_lists() == rows
    assert len(ragged) == len(rows)
    assert ragged.lengths().tolist() == [len(row) for row in rows]
    assert ragged.values.dtype == np.int32 and ragged.row_splits.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_ragged_take_matches_indexing_the_lists(data):
    rows = data.draw(st.lists(st.lists(st.integers(0, 99), max_size=5), min_size=1, max_size=8))
    index = data.draw(st.lists(st.integers(-len(rows), len(rows) - 1), max_size=12))
    taken = Ragged.from_lists(rows).take(index)
    assert taken.to_lists() == [rows[i] for i in index]


def test_ragged_take_accepts_a_mask_and_rejects_out_of_range_rows():
    ragged = Ragged.from_lists([[1], [], [2, 3]])
    assert ragged.take(np.array([True, False, True])).to_lists() == [[1], [2, 3]]
    with pytest.raises(IndexError):
        ragged.take([3])


def test_ragged_rejects_inconsistent_row_splits():
    with pytest.raises(ValueError, match="row_splits"):
        Ragged(np.array([1, 2, 3]), np.array([0, 2]))


def test_take_picks_the_same_rows_of_arrays_ragged_sequences_and_dicts_of_them():
    x = {"img": np.arange(12).reshape(4, 3), "seq": Ragged.from_lists([[1], [2, 3], [], [4, 5, 6]])}
    part = take(x, np.array([3, 0]))
    np.testing.assert_array_equal(part["img"], x["img"][[3, 0]])
    assert part["seq"].to_lists() == [[4, 5, 6], [1]]
    np.testing.assert_array_equal(take(np.arange(5), np.array([4, 4, 1])), [4, 4, 1])
