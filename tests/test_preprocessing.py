"""Preprocessing: sequence encodings, scaling, standardization fitted on training rows only, labels."""

import numpy as np
import pytest

from kexp.config import validate_config
from kexp.data import Data, Ragged
from kexp.errors import ConfigError, DataError
from kexp.preprocessing import (
    MultiHot,
    Preprocessor,
    as_outputs,
    encode_labels,
    label_encoding,
    pad_sequences,
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


# --------------------------------------------------------------------------- behaviour of the public API
# (fast tests written against mutmut's survivors: see TESTING.md)

def test_preprocessor_labels_encode_one_output_by_its_loss():
    y = np.array([2, 0, 1])
    pre = Preprocessor(config({}, loss="categorical_crossentropy"), data(np.zeros((3, 2)), y, "multiclass", 3))
    out = pre.labels(y)
    np.testing.assert_array_equal(out, np.eye(3, dtype="float32")[[2, 0, 1]])
    assert out.dtype == np.float32
    pre = Preprocessor(config({}, loss="sparse_categorical_crossentropy"), data(np.zeros((3, 2)), y, "multiclass", 3))
    out = pre.labels(y.reshape(3, 1))
    assert out.shape == (3,) and out.dtype == np.int32 and out.tolist() == [2, 0, 1]


def test_preprocessor_labels_encode_each_output_by_its_task():
    y = {"kind": np.array([1, 0]), "size": np.array([0.5, 1.5])}
    d = data(np.zeros((2, 2)), y, {"kind": "multiclass", "size": "regression"}, {"kind": 3})
    two = {"kind": np.array([1, 0]), "sign": np.array([0, 1])}
    d2 = data(np.zeros((2, 2)), two, {"kind": "multiclass", "sign": "multiclass"}, {"kind": 3, "sign": 2})
    out = Preprocessor(config({"labels": "categorical"}), d2).labels(two)
    assert set(out) == {"kind", "sign"}
    np.testing.assert_array_equal(out["kind"], [[0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(out["sign"], [[1, 0], [0, 1]])
    pre = Preprocessor(config({}), d)  # loss mse: the tasks decide
    assert pre.label_encodings == {"kind": "sparse", "size": "raw"}
    out = pre.labels(y)
    assert out["kind"].dtype == np.int32 and out["kind"].tolist() == [1, 0]
    assert out["size"].dtype == np.float32 and out["size"].tolist() == [0.5, 1.5]


def test_preprocessor_single_output_encoding_comes_from_the_loss_then_the_task():
    x = np.zeros((2, 1))
    assert Preprocessor(config({}, loss="binary_crossentropy"), data(x, None, "multiclass")).label_encodings == "binary"
    assert Preprocessor(config({}), data(x, None, "multiclass")).label_encodings == "sparse"
    assert Preprocessor(config({}), data(x, None, "binary")).label_encodings == "binary"
    assert Preprocessor(config({"labels": "raw"}), data(x, None, "multiclass")).label_encodings == "raw"


def test_take_and_feature_shape_on_arrays_ragged_and_dicts():
    from kexp.data import take
    from kexp.preprocessing import feature_shape

    x = {"img": np.arange(24).reshape(4, 3, 2), "seq": SEQS}
    part = take(x, np.array([3, 0]))
    np.testing.assert_array_equal(part["img"], x["img"][[3, 0]])
    assert part["seq"].to_lists() == [[4, 4, 9, 8, 7], [1, 5, 3]]
    assert take(SEQS, np.array([1])).to_lists() == [[2]]
    assert feature_shape(np.zeros((5, 3, 2))) == (3, 2)
    assert feature_shape({"a": np.zeros((5, 4)), "b": np.zeros((5, 2, 2))}) == {"a": (4,), "b": (2, 2)}


@pytest.mark.parametrize("padding, truncating, value", [("pre", "pre", 0), ("post", "post", -1),
                                                         ("pre", "post", 7), ("post", "pre", 0)])
def test_preprocessor_pads_sequences_as_configured(padding, truncating, value):
    spec = {"maxlen": 3, "padding": padding, "truncating": truncating, "value": value}
    pre = Preprocessor(config({"pad_sequences": spec}), data(SEQS, np.zeros(4))).fit(SEQS)
    out = pre.transform(SEQS)
    np.testing.assert_array_equal(out, pad_sequences(SEQS, 3, padding, truncating, value))
    assert out.shape == (4, 3) and out.dtype == np.int32


def test_preprocessor_pads_with_keras_defaults():
    pre = Preprocessor(config({"pad_sequences": {"maxlen": 2}}), data(SEQS, np.zeros(4))).fit(SEQS)
    assert pre.transform(SEQS).tolist() == [[5, 3], [0, 2], [0, 0], [8, 7]]
    pre = Preprocessor(config({"pad_sequences": {"maxlen": 4, "padding": "post", "value": 9}}),
                       data(SEQS, np.zeros(4)))
    assert pre.transform({"s": SEQS})["s"].tolist() == [[1, 5, 3, 9], [2, 9, 9, 9], [9, 9, 9, 9], [4, 9, 8, 7]]


def test_preprocessor_multi_hot_is_lazy_and_as_wide_as_configured():
    pre = Preprocessor(config({"multi_hot": 6}), data(SEQS, np.zeros(4))).fit(SEQS)
    out = pre.transform(SEQS)
    assert isinstance(out, MultiHot) and out.width == 6 and out.shape == (4, 6)
    np.testing.assert_array_equal(out.dense(), MultiHot(SEQS, 6).dense())
    assert out.dense()[3].tolist() == [0, 0, 0, 0, 1, 0]  # ids 6 and up are dropped


def test_channels_last_error_names_the_input_of_a_dict():
    x = {"pic": np.zeros((2, 4))}
    with pytest.raises(DataError, match=r"input 'pic' has shape \(4,\) per sample, which is not an image"):
        Preprocessor(config({"channels_last": True}), data(x, np.zeros(2))).fit(x)
    with pytest.raises(DataError, match=r"; input has shape \(4,\) per sample"):
        Preprocessor(config({"channels_last": True}), data(x["pic"], np.zeros(2))).fit(x["pic"])


def test_channels_last_checks_the_shape_at_fit_and_keeps_values():
    images = np.arange(2 * 3 * 4, dtype="float32").reshape(2, 3, 4)
    pre = Preprocessor(config({"channels_last": True}), data(images, np.zeros(2))).fit(images)
    out = pre.transform(images)
    assert out.shape == (2, 3, 4, 1) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 0], images)


def test_flatten_keeps_every_value_in_row_order():
    images = np.arange(2 * 2 * 3).reshape(2, 2, 3)  # int64 in, float32 out
    pre = Preprocessor(config({"flatten": True}), data(images, np.zeros(2))).fit(images)
    out = pre.transform(images)
    assert out.dtype == np.float32 and out.tolist() == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]


def test_standardize_statistics_are_float32_and_listed_per_column():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    pre = Preprocessor(config({"standardize": True}), data(x, np.zeros(3))).fit(x)
    fitted = pre.fitted()["x"]
    assert fitted["n_samples"] == 3
    np.testing.assert_allclose(fitted["mean"], [3.0, 5.0])
    np.testing.assert_allclose(fitted["std"], [np.sqrt(8 / 3), 1.0], rtol=1e-6)
    out = pre.transform(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], np.array([-2, 0, 2]) / np.sqrt(8 / 3), rtol=1e-6)


def test_fitted_names_columns_from_feature_names_of_the_right_input():
    x = {"a": np.array([[1.0, np.nan], [3.0, 4.0]]), "b": np.array([[np.nan, 1.0, 2.0], [6.0, 1.0, 2.0]])}
    d = data(x, np.zeros(2))
    d.feature_names = ["a0", "a1", "b0", "b1", "b2"]
    pre = Preprocessor(csv_config({}, missing="mean"), d).fit(x)
    fitted = pre.fitted()
    assert fitted["a"]["imputed"] == {"strategy": "mean", "values": {"a0": 2.0, "a1": 4.0}}
    assert fitted["b"]["imputed"]["values"] == {"b0": 6.0, "b1": 1.0, "b2": 2.0}
    assert fitted["b"]["n_samples"] == 2
    np.testing.assert_allclose(pre.transform(x)["b"], [[6.0, 1.0, 2.0], [6.0, 1.0, 2.0]])
    d.feature_names = None  # without names: the column numbers
    assert Preprocessor(csv_config({}, missing="mean"), d).fit(x).fitted()["a"]["imputed"]["values"] == {
        "0": 2.0, "1": 4.0}


def test_each_output_takes_the_encoding_its_own_loss_expects():
    y = {"kind": np.array([2, 0]), "size": np.array([0.5, 1.5])}
    d = data(np.zeros((2, 2)), y, {"kind": "multiclass", "size": "regression"}, {"kind": 3})
    pre = Preprocessor(config({}, loss={"kind": "categorical_crossentropy", "size": "mse"}), d)
    assert pre.label_encodings == {"kind": "categorical", "size": "raw"}
    out = pre.labels(y)
    np.testing.assert_array_equal(out["kind"], [[0, 0, 1], [1, 0, 0]])
    assert out["size"].tolist() == [0.5, 1.5]
    # one loss for every output: that loss decides for each
    assert Preprocessor(config({}, loss="sparse_categorical_crossentropy"), d).label_encodings == {
        "kind": "sparse", "size": "sparse"}
    # a single output with per-output losses falls back on its task
    single = data(np.zeros((2, 2)), np.array([0, 1]), "multiclass", 2)
    assert Preprocessor(config({}, loss={"out": "categorical_crossentropy"}), single).label_encodings == "sparse"


def test_one_hot_blocks_of_several_categorical_columns_stay_in_their_columns_places():
    x = np.array([["a", 1.0, "x"], ["b", 2.0, "y"], ["a", 3.0, "z"]], dtype=object)
    d = table(x.tolist(), {"x": [0, 2]}, names=("c1", "num", "c2"))
    pre = Preprocessor(csv_config({}, categorical=["c1", "c2"]), d).fit(x)
    out = pre.transform(x)
    np.testing.assert_array_equal(out, [[1, 0, 1, 1, 0, 0], [0, 1, 2, 0, 1, 0], [1, 0, 3, 0, 0, 1]])
    fitted = pre.fitted()["x"]
    assert fitted == {"n_samples": 3, "one_hot": {"c1": ["a", "b"], "c2": ["x", "y", "z"]}}  # nothing imputed


def test_a_training_column_with_no_value_is_kept_and_filled_with_zeros():
    x_train = np.array([[1.0, np.nan], [3.0, np.nan]])
    x_val = np.array([[5.0, 7.0]])
    pre = Preprocessor(csv_config({}, missing="mean"), table(x_train.tolist(), names=("a", "b"))).fit(x_train)
    np.testing.assert_array_equal(pre.transform(x_train), [[1.0, 0.0], [3.0, 0.0]])
    np.testing.assert_array_equal(pre.transform(x_val), [[5.0, 7.0]])
    x_train = np.array([[1.0, None], [3.0, None]], dtype=object)
    pre = Preprocessor(csv_config({}, categorical=["b"], missing="most_frequent"),
                       table(x_train.tolist(), {"x": [1]}, names=("a", "b"))).fit(x_train)
    assert pre.transform(x_train).shape[0] == 2


def test_float_class_labels_encode_like_integers():
    y = np.array([2.0, 0.0, 1.0])  # labels read from a CSV column come as floats
    np.testing.assert_array_equal(encode_labels(y, "categorical", 3), np.eye(3, dtype="float32")[[2, 0, 1]])
    assert encode_labels(y, "sparse", 3).tolist() == [2, 0, 1]


def test_pad_sequences_truncates_at_the_front_by_default():
    assert pad_sequences(SEQS, 2).tolist() == [[5, 3], [0, 2], [0, 0], [8, 7]]
    assert pad_sequences(SEQS, 2, "post").tolist() == [[5, 3], [2, 0], [0, 0], [8, 7]]


def test_transform_before_fit_applies_no_statistics():
    x = np.array([[1, 2], [3, 4]])
    pre = Preprocessor(config({"standardize": True}), data(x, np.zeros(2)))
    assert pre.fitted() == {}
    out = pre.transform(x)
    assert out.dtype == np.float32 and out.tolist() == [[1, 2], [3, 4]]


def test_imputed_numeric_columns_come_out_float32():
    x = np.array([[1.0, np.nan], [3.0, 4.0]])
    pre = Preprocessor(csv_config({}, missing="mean"), table(x.tolist(), names=("a", "b"))).fit(x)
    out = pre.transform(x)
    assert out.dtype == np.float32 and out.tolist() == [[1.0, 4.0], [3.0, 4.0]]


def test_fitted_names_columns_of_same_width_inputs_after_an_image_input():
    x = {"img": np.zeros((2, 2, 2)), "a": np.array([[1.0, 2.0], [3.0, np.nan]]),
         "b": np.array([[np.nan, 5.0], [7.0, 5.0]]), "c": np.array([[0.0, 1.0], [np.nan, 3.0]])}
    d = data(x, np.zeros(2))
    d.feature_names = ["a0", "a1", "b0", "b1", "c0", "c1"]  # the image has no column names
    pre = Preprocessor(csv_config({}, missing="mean"), d).fit(x)
    fitted = pre.fitted()
    assert "img" not in fitted  # an image is not a table: nothing to impute column by column
    assert fitted["a"]["imputed"]["values"] == {"a0": 2.0, "a1": 2.0}
    assert fitted["b"]["imputed"]["values"] == {"b0": 7.0, "b1": 5.0}
    assert fitted["c"]["imputed"]["values"] == {"c0": 0.0, "c1": 2.0}
    assert pre.transform(x)["img"].shape == (2, 2, 2)


def test_labels_take_a_one_unit_output_s_rank_and_leave_the_rest_as_they_are():
    import keras

    x = keras.Input((3,))
    price = keras.layers.Dense(1, name="price")(x)
    band = keras.layers.Dense(4, activation="softmax", name="band")(x)
    two = keras.Model(x, [price, band])
    y = {"price": np.arange(5.0), "band": np.arange(5) % 4}
    out = as_outputs(y, two)
    assert out["price"].shape == (5, 1) and out["price"][:, 0].tolist() == y["price"].tolist()
    assert out["band"] is y["band"]  # class ids for a 4-unit softmax stay ids
    one = keras.Model(x, price)
    assert as_outputs(np.arange(5.0), one).shape == (5, 1)
    assert as_outputs(np.ones((5, 1)), one).shape == (5, 1)
    assert as_outputs(np.arange(5), keras.Model(x, band)).shape == (5,)
