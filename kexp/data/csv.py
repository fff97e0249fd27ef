"""The user's CSV files (`dataset.name: csv`): reading, every bad cell reported at once, categorical
columns and missing cells."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kexp.config import CsvData, show
from kexp.data.files import read_error, user_path
from kexp.data.tables import (
    Selection,
    cells_text,
    combine_outputs,
    encode_cells,
    lines_text,
    select_features,
    selected_names,
    split_rows,
)
from kexp.data.types import Data, take
from kexp.errors import DataError, close_matches

MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null"})  # numeric feature cells read as missing


def load_csv(spec: CsvData, *, config_dir: Path, cache_dir=None) -> Data:
    """A user's CSV file.

    Source: `path` (and `test_path`), relative to the config's folder, UTF-8 with a header row,
    read with the `csv` module and `delimiter`. Returns x float32 (n, features), or a dict of
    them when `features` maps input names to columns (default: every column that is not a
    target); y an array, or a dict when `target` maps output names to columns.
    Feature cells must be finite numbers, except in the `categorical` columns, whose cells are
    category strings: an input holding one is an object array (strings there, floats elsewhere)
    that `kexp.preprocessing` one-hot encodes per fold (`Data.categorical` says which columns).
    Missing cells (empty; in numeric columns also NA, N/A, NaN, null, any case) follow
    `missing`: `error` reports them; `drop` drops their rows (in the training and the test file);
    `mean` / `most_frequent` keep them as NaN (None in categorical columns) for the preprocessing
    to impute from the training part. Every bad cell of every column is found in one pass and
    reported once per column (count and first lines). Targets:
    - strings (any cell that is not a number): classification, ids in sorted order of the names
      (class_names), binary with 2 names, else multiclass;
    - numbers that are all 0 or 1: binary, int64;
    - integers that are exactly 0..k-1, 3 <= k <= 50: multiclass, int64;
    - anything else (fractions, 1..5 ratings, counts that skip values): regression, float32.
    An empty target cell is an error, or drops its row with `missing: drop` (targets are never
    imputed). The task is inferred over train and test together. Without `test_path`, the rows are
    shuffled with `seed` and `test_split` (default 0.2) of them become the test part.
    """
    if spec.test_path is not None and spec.test_split is not None:
        raise DataError("dataset.test_split: has no effect when test_path is set; remove one of them")
    if len(spec.delimiter) != 1:
        raise DataError(f"dataset.delimiter: must be one character; got {show(spec.delimiter)}")
    path = user_path(spec.path, config_dir)
    header, rows, lines = _read_csv(path, spec.delimiter, "dataset.path")
    columns = _choose_columns(spec, header, path)
    features, labels, problems, n_train = _read_part(columns, spec.missing, "dataset.path", path, header, rows, lines)
    weights = features.pop(columns.weight) if columns.weight is not None else None
    source = str(path)
    if spec.test_path is not None:
        test_path = user_path(spec.test_path, config_dir, key="dataset.test_path")
        test_header, test_rows, test_lines = _read_csv(test_path, spec.delimiter, "dataset.test_path")
        test_features, test_labels, test_problems, _ = _read_part(
            columns, spec.missing, "dataset.test_path", test_path, test_header, test_rows, test_lines)
        problems += test_problems
        features = {n: np.concatenate([features[n], test_features[n]]) for n in columns.features}
        labels = {n: labels[n] + test_labels[n] for n in columns.targets}
        source = f"{path}; test: {test_path}"
    if problems:
        raise DataError(problems)
    if rows and n_train == 0:
        raise DataError(f"dataset.missing: drop leaves no row of {path}: every row has a missing cell")
    n_total = len(next(iter(labels.values())))
    encoded = {column: encode_cells(labels[column], column) for column in columns.targets}
    inputs, kinds = _csv_inputs(features, _reindex(columns.selection, header, columns.features), columns.features,
                                columns.categorical, n_total)
    y, task, num_classes, class_names = combine_outputs(columns.outputs, encoded)
    if spec.test_path is not None:
        train, test = np.arange(n_train), np.arange(n_train, n_total)
    else:
        train, test = split_rows(n_total, spec.test_split, spec.seed, f"dataset.path: {path}")
    if len(train) == 0:
        raise DataError(f"dataset.path: {path}: has a header but no data rows")
    return Data(
        x_train=take(inputs, train), y_train=take(y, train), x_test=take(inputs, test), y_test=take(y, test),
        task=task, num_classes=num_classes, class_names=class_names,
        feature_names=selected_names(columns.selection, header), source=source, categorical=kinds,
        w_train=None if weights is None else weights[train].astype(np.float32),
    )


@dataclass
class _Columns:
    """The columns a CSV config uses, checked against the training file's header."""

    outputs: dict[str, str]  # output name ("" for a single target) -> column
    targets: list[str]  # the target columns, each once
    selection: Selection  # header positions of the features, per input for grouped features
    features: list[str]  # the feature columns, each once
    categorical: set[str]  # the feature columns that hold category strings
    weight: str | None = None  # the sample weight column (training file only)


def _choose_columns(spec: CsvData, header: list[str], path: Path) -> _Columns:
    outputs = {"": spec.target} if isinstance(spec.target, str) else dict(spec.target)
    targets = list(dict.fromkeys(outputs.values()))
    _check_columns(targets, header, f"dataset.path: {path}", "dataset.target")
    weight = spec.sample_weight
    if weight is not None:
        if weight not in header:
            raise DataError(f"dataset.sample_weight: {path}: no column {weight!r}{close_matches(weight, header)}; "
                            f"columns: {', '.join(header)}")
        if weight in targets:
            raise DataError(f"dataset.sample_weight: {weight!r} is a target; name another column")
        if spec.features is not None and weight in selected_names(
                select_features(spec.features, header, "dataset.features"), header):
            raise DataError(f"dataset.sample_weight: {weight!r} is also one of dataset.features; a weight column "
                            "is not an input: remove it from features")
    default = [name for name in header if name not in targets and name != weight]
    selection = select_features(spec.features, header, "dataset.features", default=default)
    leaks = [name for name in selected_names(selection, header) if name in targets]
    if leaks:
        raise DataError(f"dataset.features: {', '.join(leaks)} is also a target; remove it from features")
    features = list(dict.fromkeys(selected_names(selection, header)))
    if not features:
        raise DataError(f"dataset.features: {path} has no column left to use as input besides the target")
    categorical = _check_categorical(spec.categorical, header, features, targets)
    return _Columns(outputs, targets, selection, features, categorical, weight)


def _read_part(columns: _Columns, policy: str, key: str, file: Path, head: list[str], body: list[list[str]],
               numbers: list[int]):
    """(features, labels, problems, rows kept) of one file (the training or the test file): every column
    parsed, every problem found, and with `missing: drop` the rows of missing cells dropped."""
    index = {name: i for i, name in enumerate(head)}
    _check_columns(columns.features + columns.targets, head, f"{key}: {file}", "the config")
    where = f"{key}: {file}"
    parsed = {name: _feature_column([row[index[name]] for row in body], where, name, numbers,
                                    name in columns.categorical, policy)
              for name in columns.features}
    parsed.update({name: _target_column([row[index[name]] for row in body], where, name, numbers, policy)
                   for name in columns.targets})
    weight = columns.weight if key == "dataset.path" else None  # the test file's weights are never used
    if weight is not None:
        parsed[weight] = _weight_column([row[index[weight]] for row in body], str(file), weight, numbers, policy)
    problems = [problem for _, _, problem in parsed.values() if problem]
    keep = np.ones(len(body), dtype=bool)
    if policy == "drop":
        for _, missing, _ in parsed.values():
            keep &= ~missing
    if weight is not None:
        columns = _Columns(**{**columns.__dict__, "features": [*columns.features, weight]})
    if keep.all():
        features = {name: parsed[name][0] for name in columns.features}
        labels = {name: parsed[name][0] for name in columns.targets}
    else:
        features = {name: parsed[name][0][keep] for name in columns.features}
        labels = {name: [cell for cell, kept in zip(parsed[name][0], keep) if kept] for name in columns.targets}
    return features, labels, problems, int(keep.sum())


def _check_categorical(names: list[str], header: list[str], features: list[str], targets: list[str]) -> set[str]:
    """The `dataset.categorical` columns, every one a feature column."""
    problems = []
    for name in dict.fromkeys(names):
        if name in targets:
            problems.append(f"dataset.categorical: {name!r} is a target; string labels are class ids "
                            "already; remove it from dataset.categorical")
        elif name not in header:
            problems.append(f"dataset.categorical: unknown column{close_matches(name, features)}; "
                            f"got {show(name)}; allowed: {', '.join(features)}")
        elif name not in features:
            problems.append(f"dataset.categorical: {name!r} is not one of dataset.features; add it "
                            "there or remove it here")
    if problems:
        raise DataError(problems)
    return set(names)


def _feature_column(cells: list[str], where: str, column: str, lines: list[int], categorical: bool,
                    policy: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(values, missing mask, problem) of one feature column: float64 with NaN for missing cells, or
    for a categorical column an object array of stripped strings with None for missing cells. The
    problem is one line for the column (all its bad cells), or None."""
    if categorical:
        stripped = [cell.strip() for cell in cells]
        missing = np.array([not cell for cell in stripped], dtype=bool)
        values = np.array([cell or None for cell in stripped], dtype=object)
        bad: list[int] = []
    else:
        values, missing, bad_mask = _numbers(cells)
        bad = np.flatnonzero(bad_mask).tolist()
    parts = []
    if bad:
        first = bad[0]
        parts.append(
            f"line {lines[first]}, column {column!r}: not a finite number; got {show(cells[first])} "
            f"({cells_text(len(bad), 'such cell')} in the column, {lines_text([lines[i] for i in bad])})"
        )
    if policy == "error" and missing.any():
        at = [lines[i] for i in np.flatnonzero(missing)]
        marker = "empty" if categorical else "empty or NA"
        text = f"{cells_text(len(at), 'missing cell')} ({marker}), {lines_text(at)}"
        parts.append(text if parts else f"column {column!r}: {text}")
    if not parts:
        return values, missing, None
    hints = []
    if bad:
        hints.append(f"if {column!r} holds categories, add it to dataset.categorical")
    if policy == "error" and missing.any():
        hints.append("to drop or fill missing cells, set dataset.missing: drop, mean or most_frequent")
    return values, missing, f"{where}: {'; and '.join(parts)}; {'; '.join(hints)}"


def _numbers(cells: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values, missing mask, bad mask) of a numeric column: missing markers are NaN and
    missing; a cell that is not a finite number is bad."""
    try:  # numpy skips the whitespace around numbers
        values = np.array(cells, dtype=np.float64)
        bad_mask = ~np.isfinite(values)
        missing = np.zeros(len(cells), dtype=bool)
        if bad_mask.any():  # 'nan' cells are missing, 'inf' ones bad
            missing = np.isnan(values) & np.array([c.strip().lower() in MISSING_MARKERS for c in cells])
            bad_mask &= ~missing
        return values, missing, bad_mask
    except ValueError:
        values = np.empty(len(cells), dtype=np.float64)
        missing = np.zeros(len(cells), dtype=bool)
        bad_mask = np.zeros(len(cells), dtype=bool)
        for i, cell in enumerate(cell.strip() for cell in cells):
            if cell.lower() in MISSING_MARKERS:
                values[i], missing[i] = np.nan, True
                continue
            try:
                values[i] = float(cell)
            except ValueError:
                values[i] = np.nan
            bad_mask[i] = not math.isfinite(values[i])
        return values, missing, bad_mask


def _weight_column(cells: list[str], file: str, column: str, lines: list[int],
                   policy: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(float64 weights, missing mask, problem) of the sample weight column: finite numbers >= 0; a missing
    cell is an error (weights are never imputed), or drops its row with `missing: drop`."""
    values, missing, bad_mask = _numbers(cells)
    bad = np.flatnonzero(bad_mask | (~missing & ~bad_mask & (np.nan_to_num(values) < 0))).tolist()
    parts = []
    if bad:
        shown = lines_text([lines[i] for i in bad])
        parts.append(f"line {lines[bad[0]]}, column {column!r}: a sample weight must be a finite number >= 0; got "
                     f"{show(cells[bad[0]])} ({cells_text(len(bad), 'such cell')}, {shown})")
    if policy != "drop" and missing.any():
        at = [lines[i] for i in np.flatnonzero(missing)]
        parts.append(f"{cells_text(len(at), 'missing weight')}, {lines_text(at)}; weights are never imputed; fill "
                     "them, or set dataset.missing: drop to drop those rows")
    if not parts:
        return values, missing, None
    return values, missing, f"dataset.sample_weight: {file}: {'; and '.join(parts)}"


def _target_column(cells: list[str], where: str, column: str, lines: list[int],
                   policy: str) -> tuple[list[str], np.ndarray, str | None]:
    """(stripped cells, missing mask, problem) of a target column; empty cells are missing."""
    stripped = [cell.strip() for cell in cells]
    missing = np.array([not cell for cell in stripped], dtype=bool)
    if policy == "drop" or not missing.any():
        return stripped, missing, None
    at = [lines[i] for i in np.flatnonzero(missing)]
    return stripped, missing, (
        f"{where}: column {column!r}: {cells_text(len(at), 'empty target cell')}, {lines_text(at)}; "
        "targets are never imputed; fill them, or set dataset.missing: drop to drop those rows"
    )


def _csv_inputs(features: dict[str, np.ndarray], selection: Selection, columns: list[str],
                categorical: set[str], n: int):
    """The inputs (an array, or a dict per input) and `Data.categorical` for them: float32 arrays, or
    object arrays where an input holds a categorical column."""
    groups = selection if isinstance(selection, dict) else {"": selection}
    inputs, kinds = {}, {}
    for group, positions in groups.items():
        names = [columns[i] for i in positions]
        cats = [i for i, name in enumerate(names) if name in categorical]
        if cats:
            array = np.empty((n, len(names)), dtype=object)
            for i, name in enumerate(names):
                array[:, i] = features[name]
            kinds[group or "x"] = cats
        else:
            array = np.empty((n, len(names)), dtype=np.float32)
            for i, name in enumerate(names):
                array[:, i] = features[name]
        inputs[group] = array
    return (inputs[""] if list(inputs) == [""] else inputs), (kinds or None)


def _reindex(selection: Selection, header: list[str], columns: list[str]) -> Selection:
    """Header positions -> positions in the matrix of `columns`."""
    where = {name: i for i, name in enumerate(columns)}
    if isinstance(selection, dict):
        return {k: [where[header[i]] for i in v] for k, v in selection.items()}
    return [where[header[i]] for i in selection]


def _read_csv(path: Path, delimiter: str, key: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows and each row's line number; blank lines are skipped."""
    rows, lines = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{key}: {path}: the file is empty; a CSV needs a header row")
            header = [name.strip() for name in header]
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{key}: {path}: line {reader.line_num}: {len(row)} cells, but the header "
                        f"has {len(header)}"
                    )
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise DataError(f"{key}: {path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{key}: {path}: line {reader.line_num}: {exc}") from None
    except OSError as exc:
        raise read_error(path, exc, key) from None
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"{key}: {path}: the header repeats {', '.join(duplicates)}; names must be unique")
    return header, rows, lines


def _check_columns(wanted: list[str], header: list[str], where: str, key: str) -> None:
    missing = [name for name in wanted if name not in header]
    if missing:
        hints = "".join(close_matches(name, header) for name in missing[:1])
        raise DataError(
            f"{where}: no column {', '.join(map(repr, missing))} (named by {key}){hints}; "
            f"columns: {', '.join(header)}"
        )
