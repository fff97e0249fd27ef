"""kexp.data.sklearn: scikit-learn's toy datasets, their split, feature selection and task."""

from __future__ import annotations

import numpy as np
import pytest

from kexp.config import SklearnData
from kexp.data import load_dataset
from kexp.errors import DataError


def test_sklearn_split_is_stratified_and_seeded():
    spec = SklearnData(name="iris", test_split=0.2, seed=3)
    data = load_dataset(spec)
    assert data.x_train.shape == (120, 4) and data.x_test.shape == (30, 4)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    counts = {tuple(np.bincount(load_dataset(SklearnData(name="iris", seed=seed, stratify=stratify))
                                .y_test, minlength=3)) for seed in range(5) for stratify in (True, False)}
    assert (10, 10, 10) in counts and len(counts) > 1  # stratified: always 10 each; plain: not
    for seed in range(5):
        assert np.bincount(load_dataset(SklearnData(name="iris", seed=seed)).y_test).tolist() == [10] * 3
    assert data.class_names == ["setosa", "versicolor", "virginica"] and data.num_classes == 3
    np.testing.assert_array_equal(load_dataset(spec).y_train, data.y_train)
    assert data.source == "sklearn.datasets.load_iris"


def test_sklearn_feature_subsets_and_grouped_inputs_select_columns():
    full = load_dataset(SklearnData(name="iris"))
    subset = load_dataset(SklearnData(name="iris", features=["petal length (cm)", "sepal width (cm)"]))
    np.testing.assert_array_equal(subset.x_train, full.x_train[:, [2, 1]])
    assert subset.feature_names == ["petal length (cm)", "sepal width (cm)"]
    grouped = load_dataset(SklearnData(name="iris", features={
        "sepal": ["sepal length (cm)", "sepal width (cm)"], "petal": ["petal width (cm)"]}))
    assert set(grouped.x_train) == {"sepal", "petal"}
    np.testing.assert_array_equal(grouped.x_test["sepal"], full.x_test[:, :2])
    np.testing.assert_array_equal(grouped.x_test["petal"], full.x_test[:, [3]])


def test_sklearn_unknown_feature_lists_the_available_names():
    with pytest.raises(DataError, match=r"dataset\.features\.b: unknown feature \(did you mean petal "
                                        r"length \(cm\).*\?\); got 'petal lenght \(cm\)'; allowed: sepal"):
        load_dataset(SklearnData(name="iris", features={"a": ["sepal length (cm)"],
                                                        "b": ["petal lenght (cm)"]}))


@pytest.mark.parametrize("name, task, shape, classes", [
    ("diabetes", "regression", (442, 10), None), ("breast_cancer", "binary", (569, 30), 2),
    ("digits", "multiclass", (1797, 64), 10), ("wine", "multiclass", (178, 13), 3)])
def test_sklearn_datasets_have_their_task_and_size(name, task, shape, classes):
    data = load_dataset(SklearnData(name=name, test_split=0.25))
    assert data.task == task and data.num_classes == classes
    assert len(data.x_train) + len(data.x_test) == shape[0] and data.x_train.shape[1] == shape[1]
    assert data.y_train.dtype == (np.float32 if task == "regression" else np.int64)
