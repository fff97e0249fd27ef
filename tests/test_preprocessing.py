"""Preprocessing: sequence encodings, scaling, standardization fitted on training rows only, labels."""

import numpy as np
import pytest

from kexp.config import validate_config
from kexp.datasets import Data, Ragged
from kexp.errors import ConfigError, DataError
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


# --------------------------------------------------------------------------- imputation, one-hot, channels


def csv_config(preprocessing, **dataset):
    return validate_config({
        "dataset": {"name": "csv", "path": "d.csv", "target": "y", **dataset},
        "preprocessing": preprocessing,
        "model": {"layers": [{"layer": "Dense", "units": 1}]},
        "compile": {"loss": "mse"},
    })


def table(rows, categorical=None, names=("num", "cat")):
    x = np.array(rows, dtype=object if categorical else "float32")
    d = data(x, np.zeros(len(rows)))
    d.categorical, d.feature_names = categorical, list(names)
    return d


@pytest.mark.parametrize("strategy, fill", [("mean", 2.0), ("most_frequent", 1.0)])
def test_imputed_values_come_from_the_training_rows_only(strategy, fill):
    x_train = np.array([[1.0], [1.0], [4.0], [np.nan]], dtype="float32")
    x_val = np.array([[np.nan], [100.0]], dtype="float32")  # a very different validation mean
    d = table(x_train.tolist(), names=("num",))
    pre = Preprocessor(csv_config({}, missing=strategy), d).fit(x_train)
    np.testing.assert_allclose(pre.transform(x_train)[:, 0], [1.0, 1.0, 4.0, fill])
    np.testing.assert_allclose(pre.transform(x_val)[:, 0], [fill, 100.0])
    assert pre.fitted()["x"]["imputed"] == {"strategy": strategy, "values": {"num": fill}}
    assert pre.fitted()["x"]["n_samples"] == 4


def test_without_a_missing_policy_nothing_is_imputed():
    x = np.array([[1.0], [np.nan]], dtype="float32")
    pre = Preprocessor(csv_config({}), table(x.tolist(), names=("num",))).fit(x)
    assert np.isnan(pre.transform(x)[1, 0]) and pre.fitted() == {}


def test_one_hot_categories_come_from_the_training_rows_and_unknown_ones_are_zeros():
    x_train = np.array([[1.0, "b"], [2.0, "a"], [3.0, "b"]], dtype=object)
    x_val = np.array([[4.0, "c"], [5.0, "a"]], dtype=object)  # 'c' only in validation
    pre = Preprocessor(csv_config({}, categorical=["cat"]), table(x_train.tolist(), {"x": [1]})).fit(x_train)
    out = pre.transform(x_val)
    assert out.dtype == np.float32 and out.shape == (2, 3)  # num, then cat=a, cat=b in the column's place
    np.testing.assert_array_equal(out, [[4.0, 0.0, 0.0], [5.0, 1.0, 0.0]])
    assert pre.fitted()["x"]["one_hot"] == {"cat": ["a", "b"]}


def test_standardize_leaves_one_hot_columns_0_1_and_imputes_categories_by_the_most_frequent():
    x_train = np.array([[1.0, "b"], [3.0, "a"], [np.nan, "b"], [2.0, None]], dtype=object)
    pre = Preprocessor(csv_config({"standardize": True}, categorical=["cat"], missing="mean"),
                       table(x_train.tolist(), {"x": [1]})).fit(x_train)
    out = pre.transform(x_train)
    np.testing.assert_allclose(out[:, 1:], [[0, 1], [1, 0], [0, 1], [0, 1]])  # None -> 'b', the most frequent
    np.testing.assert_allclose(out[:, 0].mean(), 0.0, atol=1e-6)
    fitted = pre.fitted()["x"]
    assert fitted["imputed"] == {"strategy": "mean", "values": {"num": 2.0, "cat": "b"}}
    assert fitted["mean"] == [2.0, 0.0, 0.0] and fitted["std"][1:] == [1.0, 1.0]


def test_channels_last_adds_a_trailing_channel_axis():
    images = np.zeros((2, 4, 5), dtype="uint8")
    pre = Preprocessor(config({"channels_last": True, "scale": 1 / 255}), data(images, np.zeros(2))).fit(images)
    assert pre.transform(images).shape == (2, 4, 5, 1)


@pytest.mark.parametrize("shape, what", [((2, 4), "is not an image"), ((2, 4, 4, 3), "has a channel axis already")])
def test_channels_last_on_other_inputs_is_an_error(shape, what):
    x = np.zeros(shape, dtype="float32")
    with pytest.raises(DataError, match=rf"preprocessing\.channels_last: .*{what}; remove it"):
        Preprocessor(config({"channels_last": True}), data(x, np.zeros(2))).fit(x)


def test_channels_last_and_flatten_exclude_each_other():
    with pytest.raises(ConfigError, match=r"preprocessing: channels_last and flatten exclude each other"):
        config({"channels_last": True, "flatten": True})


# --------------------------------------------------------------------------- mutation-testing kills (TESTING.md)
def test_encoded_labels_have_the_dtypes_and_shapes_keras_losses_take():
    from kexp.preprocessing import encode_labels

    column = np.array([[2], [0], [1]])  # (n, 1) labels, as CSV/npz columns come
    sparse = encode_labels(column, "sparse", 3)
    assert sparse.dtype == np.int32 and sparse.tolist() == [2, 0, 1]
    categorical = encode_labels(column, "categorical", 4)
    assert categorical.dtype == np.float32 and categorical.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]]
    raw = encode_labels(np.array([[0.5, 1], [2, 3]]), "raw", None)
    assert raw.dtype == np.float32 and raw.tolist() == [[0.5, 1.0], [2.0, 3.0]]
    binary = encode_labels([1, 0], "binary", 2)
    assert binary.dtype == np.float32 and binary.tolist() == [1.0, 0.0]


def test_pad_sequences_pads_with_zeros_by_default_into_int32():
    from kexp.preprocessing import pad_sequences

    padded = pad_sequences(Ragged.from_lists([[7, 8], [9]]), 3)
    assert padded.dtype == np.int32 and padded.tolist() == [[0, 7, 8], [0, 0, 9]]
    assert pad_sequences(Ragged.from_lists([[7, 8], [9]]), 3, value=5).tolist() == [[5, 7, 8], [5, 5, 9]]
