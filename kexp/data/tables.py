"""What the tabular loaders (CSV, NPZ, scikit-learn) share: choosing feature columns, encoding targets
and inferring the task, the test split, `dataset.positive_class`, and the wording of a column's problems.

Targets: strings are class ids in sorted order of the names (binary with two, else multiclass); numbers
that are all 0 or 1 are binary; integers that are exactly 0..k-1 (3 <= k <= 50) are multiclass; anything
else is regression (float32). `dataset.positive_class` renumbers a binary target after any loader.
"""

from __future__ import annotations

import math

import numpy as np

from kexp.config import show
from kexp.data.types import Data
from kexp.errors import DataError, close_matches

MAX_CLASSES = 50  # integer targets 0..k-1 with k above this are read as regression
SHOWN_LINES = 5  # line numbers shown per column in a problem


# --------------------------------------------------------------------------- the positive class
def with_positive_class(data: Data, positive: str | dict[str, str]) -> Data:
    """`dataset.positive_class`: the named class of a binary target becomes id 1, the other id 0
    (binary metrics such as precision, recall and AUC measure class 1)."""
    if isinstance(data.task, dict):
        if not isinstance(positive, dict):
            raise DataError(
                f"dataset.positive_class: the data has several outputs ({', '.join(data.task)}); "
                f"name the output, e.g. positive_class: {{{next(iter(data.task))}: {positive}}}"
            )
        unknown = [out for out in positive if out not in data.task]
        if unknown:
            raise DataError([
                f"dataset.positive_class.{out}: unknown output{close_matches(out, data.task)}; "
                f"allowed: {', '.join(data.task)}" for out in unknown
            ])
        names, y_train, y_test = dict(data.class_names or {}), dict(data.y_train), \
            dict(data.y_test) if data.y_test is not None else None
        for out, wanted in positive.items():
            order = _positive_order(data.task[out], names.get(out), wanted, f"dataset.positive_class.{out}")
            names[out] = [names[out][i] for i in order]
            y_train[out] = _reorder(y_train[out], order)
            if y_test is not None:
                y_test[out] = _reorder(y_test[out], order)
        data.class_names, data.y_train, data.y_test = names, y_train, y_test
        return data
    if isinstance(positive, dict):
        raise DataError(f"dataset.positive_class: the data has one output; give the class name alone; "
                        f"got {show(positive)}")
    order = _positive_order(data.task, data.class_names, positive, "dataset.positive_class")
    data.class_names = [data.class_names[i] for i in order]
    data.y_train = _reorder(data.y_train, order)
    if data.y_test is not None:
        data.y_test = _reorder(data.y_test, order)
    return data


def _positive_order(task: str, names: list[str] | None, wanted: str, key: str) -> list[int]:
    """Old class ids in their new order: [the other class, the positive class]."""
    if task != "binary" or names is None:
        if task == "regression":
            what = "is a regression target"
        elif task != "binary":
            what = f"has {len(names) if names else 'more than two'} classes"
            what += f" ({', '.join(names)})" if names else ""
        else:
            what = "holds 0/1 numbers, where 1 is the positive class already"
        raise DataError(f"{key}: applies to a target of two named classes; this target {what}; remove it")
    if wanted not in names:
        raise DataError(f"{key}: not a class of the target{close_matches(wanted, names)}; got {show(wanted)}; "
                        f"allowed: {', '.join(names)}")
    positive = names.index(wanted)
    return [1 - positive, positive]


def _reorder(y: np.ndarray, order: list[int]) -> np.ndarray:
    """Class ids renumbered so that old id `order[i]` becomes i."""
    new_id = np.empty(len(order), dtype=np.int64)
    new_id[np.asarray(order)] = np.arange(len(order))
    return new_id[np.asarray(y, dtype=np.int64)].astype(np.asarray(y).dtype, copy=False)


# --------------------------------------------------------------------------- targets
def encode_cells(cells: list[str], column: str):
    """(y, task, num_classes, class_names) of a CSV target column's cells (train and test together)."""
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:  # a cell that is not a number: string labels
        return _encode_strings(np.array(cells))
    if not np.isfinite(values).all():
        bad = next(cell for cell, v in zip(cells, values) if not math.isfinite(v))
        raise DataError(f"dataset.target: column {column!r} holds {show(bad)}; targets must be finite")
    return _encode_numbers(values)


def _encode_strings(labels: np.ndarray):
    names, ids = np.unique(labels, return_inverse=True)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    task = "binary" if len(names) == 2 else "multiclass"
    return ids.astype(np.int64).reshape(-1), task, len(names), names


def _encode_numbers(values: np.ndarray):
    """(y, task, num_classes, class_names) for numeric targets; the rules are in the module docstring."""
    if values.size and values.ndim == 1 and np.array_equal(values, np.round(values)):
        distinct = np.unique(values)
        if np.isin(distinct, (0, 1)).all():
            return values.astype(np.int64), "binary", 2, None
        k = distinct.size
        if 3 <= k <= MAX_CLASSES and distinct[0] == 0 and distinct[-1] == k - 1:
            return values.astype(np.int64), "multiclass", k, None
    return values.astype(np.float32), "regression", None, None


def encode_array(y: np.ndarray, field: str):
    """(y, task, num_classes, class_names) of an NPZ target array: (n, 1) is flattened, one-hot (n, k)
    becomes class ids, any other 2-D array is regression."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind in "US":
        if y.ndim != 1:
            raise DataError(f"{field}: string labels must be 1-D; got shape {y.shape}")
        return _encode_strings(y)
    if y.dtype.kind == "b":
        return _encode_numbers(y.astype(np.float64))
    if y.dtype.kind not in "iuf":
        raise DataError(f"{field}: targets must be numbers or strings; got dtype {y.dtype}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{field}: holds NaN or infinite values")
    if y.ndim == 2 and y.size and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        return y.argmax(axis=1).astype(np.int64), "multiclass", y.shape[1], None  # one-hot
    if y.ndim != 1:
        return y.astype(np.float32), "regression", None, None
    return _encode_numbers(y.astype(np.float64))


def combine_outputs(targets: dict[str, str], encoded: dict):
    """Assemble y/task/num_classes/class_names: plain values for one unnamed target, else dicts."""
    if list(targets) == [""]:
        return encoded[targets[""]]
    parts = {name: encoded[column] for name, column in targets.items()}
    return tuple({name: part[i] for name, part in parts.items()} for i in range(4))


# --------------------------------------------------------------------------- features and splits
Selection = list[int] | dict[str, list[int]]


def select_features(features, names: list[str], key: str, default: list[str] | None = None) -> Selection:
    """Column indices for `features` (None: `default`, else every name); unknown names are errors."""
    position = {name: i for i, name in enumerate(names)}
    if features is None:
        return [position[name] for name in (names if default is None else default)]
    groups = {"": features} if isinstance(features, list) else features
    problems = []
    for group, wanted in groups.items():
        where = f"{key}.{group}" if group else key
        if not wanted:
            problems.append(f"{where}: needs at least one feature")
        for name in wanted:
            if name not in position:
                problems.append(
                    f"{where}: unknown feature{close_matches(name, names)}; got {show(name)}; "
                    f"allowed: {', '.join(names)}"
                )
    if problems:
        raise DataError(problems)
    if isinstance(features, list):
        return [position[name] for name in features]
    return {group: [position[name] for name in wanted] for group, wanted in features.items()}


def selected_names(selection: Selection, names: list[str]) -> list[str]:
    groups = selection.values() if isinstance(selection, dict) else [selection]
    return [names[i] for group in groups for i in group]


def gather_columns(matrix: np.ndarray, selection: Selection):
    if isinstance(selection, dict):
        return {name: matrix[:, columns] for name, columns in selection.items()}
    if selection == list(range(matrix.shape[1])):
        return matrix
    return matrix[:, selection]



def split_rows(n: int, test_split: float | None, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/test row indices; the test part is ceil(n * test_split) rows (as scikit-learn)."""
    fraction = 0.2 if test_split is None else test_split
    n_test = math.ceil(n * fraction)
    if n_test < 1 or n_test >= n:
        raise DataError(
            f"{where}: {n} rows are too few to split off a test part of {fraction:g}; add rows "
            "or give separate test data"
        )
    order = np.random.RandomState(seed).permutation(n)
    return order[n_test:], order[:n_test]


# --------------------------------------------------------------------------- problems
def lines_text(lines: list[int], word: str = "line") -> str:
    """`line 4`, `lines 2, 3, 5`, `lines 2, 3, 5, 6, 8 and 12 more`."""
    shown = ", ".join(map(str, lines[:SHOWN_LINES]))
    more = len(lines) - SHOWN_LINES
    return f"{word}{'s' if len(lines) != 1 else ''} {shown}" + (f" and {more} more" if more > 0 else "")


def cells_text(count: int, what: str) -> str:
    """`1 missing cell`, `3 missing cells`."""
    return f"{count} {what}{'s' if count != 1 else ''}"
