"""Preprocessing: sequence encodings, scaling, standardization fitted on training rows only, labels."""

import numpy as np
import pytest

from kexp.config import validate_config
from kexp.datasets import Data, Ragged
from kexp.preprocessing import (
    MultiHot,
    Preprocessor,
    encode_labels,
    label_encoding,
    pad_sequences,
    to_tf_dataset,
)


def config(preprocessing, loss="mse"):
    return validate_config({
        "dataset": {"name": "boston_housing"},
        "preprocessing": preprocessing,
        "model": {"layers": [{"layer": "Dense", "units": 1}]},
        "compile": {"loss": loss},
    })


def data(x, y, task="regression", num_classes=None):
    return Data(x_train=x, y_train=y, x_test=None, y_test=None, task=task, num_classes=num_classes,
                class_names=None, feature_names=None, source="test", vocab_size=None)


SEQS = Ragged.from_lists([[1, 5, 3], [2], [], [4, 4, 9, 8, 7]])


def test_multi_hot_marks_each_word_present_once():
    dense = MultiHot(SEQS, 10).dense()
    assert dense.shape == (4, 10) and dense.dtype == np.float32
    assert dense[0].nonzero()[0].tolist() == [1, 3, 5]
    assert dense[2].sum() == 0
    assert dense[3].nonzero()[0].tolist() == [4, 7, 8, 9] and dense[3, 4] == 1.0


def test_multi_hot_in_the_tf_pipeline_equals_the_dense_matrix():
    x = MultiHot(SEQS, 10)
    y = np.arange(4, dtype="float32")
    batches = list(to_tf_dataset(x, y, batch_size=3).as_numpy_iterator())
    got = np.concatenate([b[0] for b in batches])
    np.testing.assert_array_equal(got, x.dense())
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


def test_pad_sequences_matches_keras_semantics():
    import keras

    lists = SEQS.to_lists()
    for padding in ("pre", "post"):
        for truncating in ("pre", "post"):
            ours = pad_sequences(SEQS, 3, padding, truncating, value=0)
            theirs = keras.utils.pad_sequences(lists, maxlen=3, padding=padding, truncating=truncating)
            np.testing.assert_array_equal(ours, theirs)


def test_standardize_statistics_come_from_the_training_rows_only():
    x_train = np.array([[1.0, 10.0], [3.0, 10.0]], dtype="float32")
    x_val = np.array([[100.0, 50.0]], dtype="float32")
    pre = Preprocessor(config({"standardize": True}), data(x_train, np.zeros(2))).fit(x_train)
    np.testing.assert_allclose(pre.transform(x_train), [[-1.0, 0.0], [1.0, 0.0]])
    # the validation row is scaled with the training mean (2, 10) and std (1, 1 for constant columns)
    np.testing.assert_allclose(pre.transform(x_val), [[98.0, 40.0]])
    assert pre.fitted()["x"]["n_samples"] == 2


def test_scale_and_flatten_images():
    images = np.full((2, 3, 3), 255, dtype="uint8")
    pre = Preprocessor(config({"scale": 1 / 255, "flatten": True}), data(images, np.zeros(2))).fit(images)
    out = pre.transform(images)
    assert out.shape == (2, 9) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)


def test_grouped_inputs_are_standardized_separately():
    x = {"a": np.array([[0.0], [2.0]]), "b": np.array([[10.0], [30.0]])}
    pre = Preprocessor(config({"standardize": True}), data(x, np.zeros(2))).fit(x)
    out = pre.transform(x)
    np.testing.assert_allclose(out["a"], [[-1.0], [1.0]])
    np.testing.assert_allclose(out["b"], [[-1.0], [1.0]])


@pytest.mark.parametrize("explicit, loss, task, expected", [
    (None, "categorical_crossentropy", "multiclass", "categorical"),
    (None, "CategoricalCrossentropy", "multiclass", "categorical"),
    (None, "sparse_categorical_crossentropy", "multiclass", "sparse"),
    (None, "binary_crossentropy", "binary", "binary"),
    (None, "mse", "regression", "raw"),
    (None, "mse", "multiclass", "sparse"),
    ("categorical", "mse", "multiclass", "categorical"),
])
def test_label_encoding_follows_the_setting_then_the_loss_then_the_task(explicit, loss, task, expected):
    assert label_encoding(explicit, loss, task) == expected


def test_encode_labels():
    y = np.array([2, 0, 1])
    np.testing.assert_array_equal(encode_labels(y, "categorical", 3), np.eye(3, dtype="float32")[[2, 0, 1]])
    assert encode_labels(y, "sparse", 3).tolist() == [2, 0, 1]
    assert encode_labels(np.array([0, 1]), "binary", 2).dtype == np.float32
