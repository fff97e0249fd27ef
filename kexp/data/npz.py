"""The user's .npz files (`dataset.name: npz`): named arrays, read without pickles, and their missing values."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from kexp.config import NpzData, show
from kexp.data.files import read_error, user_path
from kexp.data.tables import cells_text, combine_outputs, encode_array, lines_text, split_rows
from kexp.data.types import Data, take
from kexp.errors import DataError, close_matches


def load_npz(spec: NpzData, *, config_dir: Path, cache_dir=None) -> Data:
    """A user's `.npz` file.

    Source: `path`, relative to the config's folder, read with `allow_pickle=False` (pickled
    object arrays are refused). Returns the arrays that `x`, `y`, `x_test`, `y_test` name (each
    an array name, or input/output name -> array name, giving dict x/y).
    Float inputs become float32; integer and bool inputs (images, token ids) keep their dtype.
    Targets follow the CSV rules (strings, 0/1, 0..k-1, else regression float32); a (n, 1) y is
    flattened, a one-hot (n, k) y becomes class ids, any other 2-D y is regression. When the file
    has none of the test arrays under their default names, or `x_test`/`y_test` are null, the rows
    are shuffled with `seed` and `test_split` (default 0.2) become the test part.
    """
    path = user_path(spec.path, config_dir)
    x, y, x_test, y_test = _read_arrays(spec, path)
    w = _read_weights(spec, path)
    use_test = x_test is not None
    _common_length({"x": x, "y": y, **({"sample_weight": w} if w is not None else {})}, path)
    x, yw, problems = _npz_missing(spec.missing, x, y if w is None else {"y": y, "w": w}, "dataset.x", path)
    y, w = (yw, None) if w is None else (yw["y"], yw["w"])
    n_train = _common_length({"x": x, "y": y}, path)
    if use_test:
        _common_length({"x_test": x_test, "y_test": y_test}, path)
        x_test, y_test, test_problems = _npz_missing(spec.missing, x_test, y_test, "dataset.x_test", path)
        problems += test_problems
    if problems:
        raise DataError(problems)
    if n_train == 0:
        raise DataError(f"dataset.missing: drop leaves no row of {path}: every row has a missing value")
    outputs = y if isinstance(y, dict) else {"": y}
    if use_test:
        n_test = _common_length({"x_test": x_test, "y_test": y_test}, path)
        _same_shapes(x, x_test, "dataset.x_test", path)
        outputs_test = y_test if isinstance(y_test, dict) else {"": y_test}
        if set(outputs_test) != set(outputs):
            raise DataError("dataset.y_test: must name the same outputs as dataset.y")
        outputs = {key: _join(outputs[key], outputs_test[key], key, path) for key in outputs}
    encoded = {key: encode_array(array, f"dataset.y.{key}" if key else "dataset.y")
               for key, array in outputs.items()}
    y_all, task, num_classes, class_names = combine_outputs({key: key for key in encoded}, encoded)
    if use_test:
        train, test = np.arange(n_train), np.arange(n_train, n_train + n_test)
        x_train = x
    else:
        train, test = split_rows(n_train, spec.test_split, spec.seed, f"dataset.path: {path}")
        x_train, x_test = take(x, train), take(x, test)
    return Data(
        x_train=x_train, y_train=take(y_all, train), x_test=x_test, y_test=take(y_all, test),
        task=task, num_classes=num_classes, class_names=class_names, source=str(path),
        w_train=None if w is None else (w if use_test else w[train]),
    )


def _read_weights(spec: NpzData, path: Path) -> np.ndarray | None:
    """The `dataset.sample_weight` array (float32, one finite weight >= 0 per row of x), or None."""
    if spec.sample_weight is None:
        return None
    with np.load(path, allow_pickle=False) as archive:
        w = _npz_array(archive, spec.sample_weight, path, "sample_weight", list(archive.files))
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    where = f"dataset.sample_weight: {path}: array {spec.sample_weight!r}"
    if w.ndim != 1 or w.dtype.kind not in "iuf":
        raise DataError(f"{where}: must be numbers, one per row; got dtype {w.dtype}, shape {w.shape}")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0)) if w.dtype.kind == "f" else np.flatnonzero(w < 0)
    if bad.size:
        raise DataError(f"{where}: a sample weight must be a finite number >= 0; got {show(w[bad[0]].item())} "
                        f"({cells_text(len(bad), 'such value')}, {lines_text(bad.tolist(), 'row')} (from 0))")
    return w.astype(np.float32)


def open_npz(path: Path, key: str):
    """An .npz archive opened safely (no pickles), or a DataError under `key` for a missing, unreadable
    or single-array file. Use it as a context manager."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise read_error(path, exc, key) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{key}: {path}: is a single .npy array, not an .npz archive of named arrays")
    return archive


def _read_arrays(spec: NpzData, path: Path):
    """(x, y, x_test, y_test) as the config names them; the test pair is (None, None) when the training
    arrays are to be split (see _npz_has_test)."""
    with open_npz(path, "dataset.path") as archive:
        available = list(archive.files)
        use_test = _npz_has_test(spec, available, path)

        def fetch(field: str):
            names = getattr(spec, field)
            if isinstance(names, str):
                return _npz_array(archive, names, path, field, available)
            return {key: _npz_array(archive, name, path, f"{field}.{key}", available)
                    for key, name in names.items()}

        x, y = _npz_inputs(fetch("x"), "dataset.x"), fetch("y")
        if not use_test:
            return x, y, None, None
        return x, y, _npz_inputs(fetch("x_test"), "dataset.x_test"), fetch("y_test")


def _npz_missing(policy: str, x, y, field: str, path: Path):
    """(x, y, problems) for the NaN values of float inputs under `dataset.missing`: `error` gives one
    problem per input; `drop` drops the rows; `mean` / `most_frequent` keep them for the
    preprocessing to fill (tabular (n, features) inputs only)."""
    items = x.items() if isinstance(x, dict) else [("", x)]
    holes = {key: np.isnan(array.reshape(len(array), -1)).any(axis=1)
             for key, array in items if array.dtype.kind == "f"}
    holes = {key: rows for key, rows in holes.items() if rows.any()}
    if not holes:
        return x, y, []
    problems = []
    for key, rows in holes.items():
        where = f"{field}.{key}" if key else field
        array = x[key] if key else x
        at = np.flatnonzero(rows).tolist()
        if policy == "error":
            verb = "holds" if len(at) == 1 else "hold"
            problems.append(f"{where}: {path}: {cells_text(len(at), 'row')} {verb} missing values (NaN), "
                            f"{lines_text(at, 'row')} (from 0); to drop or fill them, set dataset.missing: "
                            "drop, mean or most_frequent")
        elif policy != "drop" and array.ndim != 2:
            problems.append(f"dataset.missing: {policy} fills tabular (n, features) inputs; {where} has "
                            f"shape {array.shape}; use drop, or fill the NaN values in the file")
    if policy == "drop":
        keep = np.flatnonzero(~np.logical_or.reduce(list(holes.values())))
        return take(x, keep), take(y, keep), []
    return x, y, problems


def _npz_has_test(spec: NpzData, available: list[str], path: Path) -> bool:
    """Whether to read test arrays (True) or split the training arrays (False)."""
    # named: set to other than the default names (a resolved config, e.g. a run's config.yaml, writes the
    # defaults out; they still mean "x_test/y_test when the file has them, else split")
    named = {k for k in ("x_test", "y_test") if getattr(spec, k) != type(spec).model_fields[k].default}
    if (spec.x_test is None) != (spec.y_test is None):
        given = "x_test" if spec.y_test is None else "y_test"
        if given in named:
            raise DataError(
                f"dataset.{given}: has no effect while the other test array is null; set both or neither"
            )
        return False
    if spec.x_test is None:
        return False
    wanted = _array_names(spec.x_test) + _array_names(spec.y_test)
    missing = [name for name in wanted if name not in available]
    if missing and not named and len(missing) == len(wanted):
        return False  # default names, none of them in the file: split
    if missing:
        raise DataError(
            f"dataset.x_test/y_test: {path}: has no array {', '.join(map(repr, missing))}; it has: "
            f"{', '.join(available)}; name the test arrays, or set dataset.x_test and "
            "dataset.y_test to null to split the training arrays"
        )
    if spec.test_split is not None:
        raise DataError(
            f"dataset.test_split: has no effect: {path} has test arrays; remove it, or set "
            "dataset.x_test and dataset.y_test to null to split the training arrays"
        )
    return True


def _array_names(value: str | dict[str, str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value.values())


def _npz_array(archive, name: str, path: Path, field: str, available: list[str]) -> np.ndarray:
    if name not in available:
        raise DataError(
            f"dataset.{field}: {path}: has no array {name!r}{close_matches(name, available)}; "
            f"it has: {', '.join(available) or 'none'}"
        )
    try:
        array = archive[name]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"dataset.{field}: {path}: array {name!r} is a pickled (object) array, which is "
                "refused (loading pickles can run code); save plain numeric or string arrays"
            ) from None
        raise read_error(path, exc, f"dataset.{field}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise read_error(path, exc, f"dataset.{field}") from None
    if array.ndim == 0:
        raise DataError(f"dataset.{field}: {path}: array {name!r} is a single value, not one row per sample")
    return array


def _npz_inputs(x, field: str):
    def convert(array: np.ndarray, where: str) -> np.ndarray:
        if array.dtype.kind == "f":
            return array.astype(np.float32, copy=False)
        if array.dtype.kind in "iub":
            return array
        raise DataError(f"{where}: inputs must be numbers; got dtype {array.dtype}")

    if isinstance(x, dict):
        return {key: convert(array, f"{field}.{key}") for key, array in x.items()}
    return convert(x, field)


def _common_length(groups: dict, path: Path) -> int:
    lengths = {}
    for field, value in groups.items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        for key, array in items:
            lengths[f"{field}.{key}" if key else field] = len(array)
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} {n}" for name, n in lengths.items())
        raise DataError(f"dataset.path: {path}: the arrays have different numbers of rows: {shown}")
    return next(iter(lengths.values()))


def _same_shapes(x, x_test, field: str, path: Path) -> None:
    pairs = [(k, x[k], x_test.get(k)) for k in x] if isinstance(x, dict) else [("", x, x_test)]
    if isinstance(x, dict) and set(x) != set(x_test):
        raise DataError(f"{field}: must name the same inputs as dataset.x")
    for key, train, test in pairs:
        if train.shape[1:] != test.shape[1:]:
            raise DataError(
                f"{field}{'.' + key if key else ''}: {path}: test rows have shape {test.shape[1:]}, "
                f"training rows {train.shape[1:]}"
            )


def _join(train: np.ndarray, test: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Training and test targets as one array, so both get the same encoding."""
    train, test = (a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a for a in (train, test))
    field = f"dataset.y_test.{key}" if key else "dataset.y_test"
    if train.shape[1:] != test.shape[1:]:
        raise DataError(f"{field}: {path}: test targets have shape {test.shape[1:]}, training {train.shape[1:]}")
    if (train.dtype.kind in "US") != (test.dtype.kind in "US"):
        raise DataError(f"{field}: {path}: training and test targets must both be strings or both numbers")
    return np.concatenate([train, test])
