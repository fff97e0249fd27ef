"""kexp.data.npz: the user's .npz files: named arrays, the split when there are no test arrays, refused
pickles, missing arrays and files, and NaN inputs under the missing-value policy."""

from __future__ import annotations

import numpy as np
import pytest
from keras_files import object_array

from kexp.config import NpzData
from kexp.data import load_dataset
from kexp.errors import DataError


def test_npz_named_arrays_with_test_part(tmp_path):
    rng = np.random.default_rng(6)
    np.savez(tmp_path / "d.npz", feats=rng.normal(size=(6, 3)), labels=np.array([0, 1, 2, 0, 1, 2]),
             tf=rng.normal(size=(2, 3)), tl=np.array([2, 0]))
    data = load_dataset(NpzData(name="npz", path="d.npz", x="feats", y="labels", x_test="tf",
                                y_test="tl"), config_dir=tmp_path)
    assert data.x_train.shape == (6, 3) and data.x_train.dtype == np.float32
    assert data.y_test.tolist() == [2, 0] and data.task == "multiclass" and data.num_classes == 3


def test_npz_grouped_inputs_split_when_no_test_arrays(tmp_path):
    np.savez(tmp_path / "d.npz", img=np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2),
             meta=np.arange(10.0)[:, None], y_train=np.array(["no", "yes"] * 5))
    data = load_dataset(NpzData(name="npz", path="d.npz", x={"image": "img", "meta": "meta"}, seed=2),
                        config_dir=tmp_path)
    assert len(data.y_train) == 8 and len(data.y_test) == 2
    assert data.x_train["image"].dtype == np.uint8 and data.x_train["meta"].dtype == np.float32
    rows = np.concatenate([data.x_train["meta"][:, 0], data.x_test["meta"][:, 0]]).astype(int)
    assert sorted(rows.tolist()) == list(range(10))  # every row once
    assert data.class_names == ["no", "yes"] and data.task == "binary"
    np.testing.assert_array_equal(data.x_train["image"][:, 0, 0], rows[:8] * 4)  # rows stay aligned
    np.testing.assert_array_equal(data.y_train, rows[:8] % 2)


def test_npz_pickled_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=object_array([[1], [2, 3]]), y_train=np.array([0, 1]))
    with pytest.raises(DataError, match=r"dataset\.x: .*'x_train' is a pickled \(object\) array, which is refused"):
        load_dataset(NpzData(name="npz", path="d.npz"), config_dir=tmp_path)


def test_npz_missing_array_lists_what_the_file_has(tmp_path):
    np.savez(tmp_path / "d.npz", inputs=np.zeros((4, 2)), y_train=np.zeros(4))
    with pytest.raises(DataError, match=r"dataset\.x: .*has no array 'x_train'.*; it has: inputs, y_train"):
        load_dataset(NpzData(name="npz", path="d.npz"), config_dir=tmp_path)
    with pytest.raises(DataError, match=r"has no array 'xt'"):
        load_dataset(NpzData(name="npz", path="d.npz", x="inputs", x_test="xt"), config_dir=tmp_path)


def test_npz_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=rf"dataset\.path: {tmp_path / 'nope.npz'}: no such file"):
        load_dataset(NpzData(name="npz", path="nope.npz"), config_dir=tmp_path)


# --------------------------------------------------------------------------- missing values
def npz_with_holes(tmp_path):
    x = np.arange(12, dtype="float32").reshape(6, 2)
    x[1, 0] = x[4, 1] = np.nan
    np.savez(tmp_path / "h.npz", x_train=x, y_train=np.arange(6, dtype="float32"),
             x_test=np.array([[np.nan, 1.0]], dtype="float32"), y_test=np.zeros(1, dtype="float32"))


def test_npz_nan_inputs_are_reported_for_every_array(tmp_path):
    npz_with_holes(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset(NpzData(name="npz", path="h.npz"), config_dir=tmp_path)
    path = tmp_path / "h.npz"
    assert info.value.problems == [
        (f"dataset.x: {path}: 2 rows hold missing values (NaN), rows 1, 4 (from 0); to drop or fill them, "
         "set dataset.missing: drop, mean or most_frequent"),
        (f"dataset.x_test: {path}: 1 row holds missing values (NaN), row 0 (from 0); to drop or fill them, "
         "set dataset.missing: drop, mean or most_frequent"),
    ]


def test_npz_missing_drop_and_mean(tmp_path):
    npz_with_holes(tmp_path)
    dropped = load_dataset(NpzData(name="npz", path="h.npz", missing="drop"), config_dir=tmp_path)
    assert dropped.y_train.tolist() == [0.0, 2.0, 3.0, 5.0] and len(dropped.x_test) == 0
    kept = load_dataset(NpzData(name="npz", path="h.npz", missing="mean"), config_dir=tmp_path)
    assert np.isnan(kept.x_train).sum() == 2 and kept.x_train.shape == (6, 2)
