"""The scikit-learn toy datasets (breast_cancer, diabetes, digits, iris, wine): shipped inside
scikit-learn, so nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kexp.config import SklearnData
from kexp.data.tables import gather_columns, select_features, selected_names
from kexp.data.types import Data, take


def load_sklearn(spec: SklearnData, *, config_dir: Path, cache_dir=None) -> Data:
    """A scikit-learn toy dataset.

    Source: `sklearn.datasets.load_<name>()`, shipped inside scikit-learn (no network): digits
    1797 x 64 (10 classes), breast_cancer 569 x 30 (binary), wine 178 x 13 (3 classes), iris
    150 x 4 (3 classes), diabetes 442 x 10 (regression). Split by
    `train_test_split(test_size=test_split, random_state=seed)`, stratified for classification when
    `stratify` is true.
    Returns x float32 (n, features), or a dict of float32 arrays, one per input in `features`;
    y int64 class ids (class_names from `target_names`), or float32 for a set without
    `target_names` (diabetes: regression). The task is scikit-learn's: binary for two target names,
    else multiclass.
    """
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    bunch = getattr(sklearn.datasets, f"load_{spec.name}")()
    x = np.asarray(bunch.data, dtype=np.float32)
    names = [str(name) for name in bunch.feature_names]
    if "target_names" not in bunch:
        task, y, num_classes, class_names = "regression", np.asarray(bunch.target, dtype=np.float32), None, None
    else:
        y = np.asarray(bunch.target, dtype=np.int64)
        class_names = [str(name) for name in bunch.target_names]
        num_classes = len(class_names)
        task = "binary" if num_classes == 2 else "multiclass"
    selection = select_features(spec.features, names, "dataset.features")
    stratify = y if spec.stratify and task != "regression" else None
    train, test = train_test_split(np.arange(len(y)), test_size=spec.test_split,
                                   random_state=spec.seed, stratify=stratify)
    inputs = gather_columns(x, selection)
    return Data(
        x_train=take(inputs, train), y_train=y[train], x_test=take(inputs, test), y_test=y[test],
        task=task, num_classes=num_classes, class_names=class_names,
        feature_names=selected_names(selection, names), source=f"sklearn.datasets.load_{spec.name}",
    )
